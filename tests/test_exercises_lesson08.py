"""Lesson 08's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one,
so that a clearer message later is a deliberate change.
"""

import math

import pytest
import torch

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 08.1 my_attention(q, k, v)

def _weights(q, k, scale, dim=-1):
    return (q @ k.transpose(-2, -1) * scale).softmax(dim=dim)


def my_attention(q, k, v):
    weights = torch.softmax(torch.einsum("...nd,...md->...nm", q, k) / q.shape[-1] ** 0.5, dim=-1)
    return torch.einsum("...nm,...md->...nd", weights, v), weights


def attention_unscaled(q, k, v):
    weights = _weights(q, k, 1.0)
    return weights @ v, weights


def attention_divided_by_d(q, k, v):
    weights = _weights(q, k, 1 / q.shape[-1])
    return weights @ v, weights


def attention_multiplied_by_sqrt_d(q, k, v):
    weights = _weights(q, k, math.sqrt(q.shape[-1]))
    return weights @ v, weights


def attention_scaled_by_value_width(q, k, v):
    weights = _weights(q, k, 1 / math.sqrt(v.shape[-1]))
    return weights @ v, weights


def attention_softmax_over_queries(q, k, v):
    weights = _weights(q, k, 1 / math.sqrt(q.shape[-1]), dim=-2)
    return weights @ v, weights


def attention_keys_first(q, k, v):                 # k @ q^T: one row per key
    weights = (k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    return weights.transpose(-2, -1) @ v, weights


def attention_output_only(q, k, v):
    return _weights(q, k, 1 / math.sqrt(q.shape[-1])) @ v


def attention_output_not_weighted(q, k, v):
    weights = _weights(q, k, 1 / math.sqrt(q.shape[-1]))
    return weights @ (v - v.mean(-2, keepdim=True)), weights


# --------------------------------------------------------------------------- 08.2 my_split_heads, my_merge_heads

def my_split_heads(x, heads):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)


def my_merge_heads(x):
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).flatten(2)


def split_without_transpose(x, heads):
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads)


def split_by_reshape(x, heads):
    b, n, c = x.shape
    return x.reshape(b, heads, n, c // heads)


def split_strided(x, heads):
    b, n, c = x.shape
    return x.view(b, n, c // heads, heads).permute(0, 3, 1, 2)


def merge_by_reshape(x):
    b, h, n, d = x.shape
    return x.reshape(b, n, h * d)


def merge_keeping_heads(x):
    return x.transpose(1, 2)


# --------------------------------------------------------------------------- 08.3 image_to_tokens, tokens_to_image

def image_to_tokens(x):
    return x.flatten(2).transpose(1, 2)             # (B, C, H*W) -> (B, H*W, C)


def tokens_to_image(tokens, height, width):
    return tokens.transpose(1, 2).unflatten(2, (height, width))


def tokens_per_channel(x):
    return x.flatten(2)


def tokens_by_reshape(x):
    b, c, h, w = x.shape
    return x.reshape(b, h * w, c)


def tokens_column_by_column(x):
    b, c, h, w = x.shape
    return x.permute(0, 3, 2, 1).reshape(b, h * w, c)


def image_by_reshape(tokens, height, width):
    b, n, c = tokens.shape
    return tokens.reshape(b, c, height, width)


def image_height_and_width_swapped(tokens, height, width):
    b, n, c = tokens.shape
    return tokens.reshape(b, width, height, c).permute(0, 3, 2, 1)


# --------------------------------------------------------------------------- 08.4 my_cross_attention

def _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, *, keys_from=None, scale=None, project=True, d=None):
    b, n, _ = x.shape
    source = context if keys_from is None else keys_from
    m = source.shape[1]
    d = w_q.shape[0] // heads if d is None else d
    heads = w_q.shape[0] // d
    q = (x @ w_q.T).view(b, n, heads, d).transpose(1, 2)            # (B, h, N, d)
    k = (source @ w_k.T).view(b, m, heads, d).transpose(1, 2)       # (B, h, M, d)
    v = (source @ w_v.T).view(b, m, heads, d).transpose(1, 2)       # (B, h, M, d)
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = ((q @ k.transpose(-2, -1)) * scale).softmax(-1) @ v        # (B, h, N, d)
    out = out.transpose(1, 2).reshape(b, n, heads * d)               # (B, N, h*d)
    return out @ w_o.T if project else out


def my_cross_attention(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads)


def cross_attention_is_self_attention(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, keys_from=x)


def cross_attention_one_head(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, d=w_q.shape[0])


def cross_attention_unscaled(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, scale=1.0)


def cross_attention_scaled_by_width(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, scale=1 / math.sqrt(w_q.shape[0]))


def cross_attention_not_projected(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, project=False)


def cross_attention_scale_hard_coded(x, context, w_q, w_k, w_v, w_o, heads):
    return _cross_attention(x, context, w_q, w_k, w_v, w_o, heads, scale=1 / math.sqrt(6))   # the first case's d


RIGHT = [
    ("08.1", (my_attention,)),
    ("08.2", (my_split_heads, my_merge_heads)),
    ("08.3", (image_to_tokens, tokens_to_image)),
    ("08.4", (my_cross_attention,)),
]


@pytest.mark.parametrize("exercise_id, answers", RIGHT, ids=[r[0] for r in RIGHT])
def test_right_answers_pass(exercise_id, answers):
    verdict = check(exercise_id, *answers)
    assert verdict.passed, verdict.message


WRONG = [
    ("08.1", (attention_unscaled,), "you did not scale the scores"),
    ("08.1", (attention_divided_by_d,), "you divided by d; divide by sqrt(d)"),
    ("08.1", (attention_multiplied_by_sqrt_d,), "you multiplied by sqrt(d); divide by it"),
    ("08.1", (attention_scaled_by_value_width,), "not of the values"),
    ("08.1", (attention_softmax_over_queries,), "the softmax runs over the queries"),
    ("08.1", (attention_keys_first,), "compute q @ k^T (shape (..., N, M))"),
    ("08.1", (attention_output_only,), "return a tuple (out, weights)"),
    ("08.1", (attention_output_not_weighted,), "the weights are right but the output is not"),
    ("08.2", (split_without_transpose, my_merge_heads), "swap the token and head axes"),
    ("08.2", (split_by_reshape, my_merge_heads), "mixes tokens together"),
    ("08.2", (split_strided, my_merge_heads), "each head takes a contiguous block"),
    ("08.2", (my_split_heads, merge_by_reshape), "transpose(1, 2) first"),
    ("08.2", (my_split_heads, merge_keeping_heads), "into (B, N, heads*d) = (2, 5, 12), got (2, 5, 3, 4)"),
    ("08.3", (tokens_per_channel, tokens_to_image), "one row per channel"),
    ("08.3", (tokens_by_reshape, tokens_to_image), "mixes channels and pixels; move the channels last first"),
    ("08.3", (tokens_column_by_column, tokens_to_image), "the tokens go column by column"),
    ("08.3", (image_to_tokens, image_by_reshape), "reshape to (B, H, W, C) first, then permute(0, 3, 1, 2)"),
    ("08.3", (image_to_tokens, image_height_and_width_swapped), "should undo image_to_tokens exactly"),
    ("08.4", (cross_attention_is_self_attention,), "that is self-attention"),
    ("08.4", (cross_attention_one_head,), "that is one head over all heads*d channels"),
    ("08.4", (cross_attention_unscaled,), "the scores are not scaled"),
    ("08.4", (cross_attention_scaled_by_width,), "you scaled by 1/sqrt(heads*d)"),
    ("08.4", (cross_attention_not_projected,), "project back to C channels with w_o"),
    ("08.4", (cross_attention_scale_hard_coded,), "take d from the weights"),
]


@pytest.mark.parametrize("exercise_id, answers, message", WRONG, ids=[w[1][0].__name__ + "-" + w[1][-1].__name__
                                                                      for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answers, message):
    verdict = check(exercise_id, *answers)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
