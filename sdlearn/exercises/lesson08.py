"""Checks for the exercises of lesson 08, attention."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.models.attention import Attention, attention, merge_heads, split_heads


def _randn(*shape, generator):
    return torch.randn(*shape, generator=generator)


def _same(a, b, atol=1e-5) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=0)


@exercise("08.1", "scaled dot-product attention")
def check_attention(my_attention):
    g = torch.Generator().manual_seed(8)
    # d = 16 for queries and keys, d_v = 4 for values: the scale must come from the queries' width
    q, k, v = _randn(2, 3, 5, 16, generator=g), _randn(2, 3, 7, 16, generator=g), _randn(2, 3, 7, 4, generator=g)
    result = my_attention(q.clone(), k.clone(), v.clone())
    if not isinstance(result, tuple) or len(result) != 2:
        raise Failed("return a tuple (out, weights): the output and the attention weights.")
    out, weights = result
    expected_out, expected_weights = attention(q, k, v)
    if not isinstance(weights, torch.Tensor) or weights.shape != expected_weights.shape:
        shape = None if not isinstance(weights, torch.Tensor) else tuple(weights.shape)
        if shape == (2, 3, 7, 5):
            raise Failed("the weights have shape (..., M, N); compute q @ k^T (shape (..., N, M)), one row per query.")
        raise Failed(f"the weights should have shape (..., N, M) = {tuple(expected_weights.shape)}, got {shape}.")
    if not isinstance(out, torch.Tensor) or out.shape != expected_out.shape:
        shape = None if not isinstance(out, torch.Tensor) else tuple(out.shape)
        raise Failed(f"the output should have shape (..., N, d_v) = {tuple(expected_out.shape)}, got {shape}.")
    scores = q @ k.transpose(-2, -1)
    wrong_weights = {
        "you did not scale the scores: divide q @ k^T by sqrt(d), d = q.shape[-1], so that the softmax does not "
        "saturate as d grows.": scores.softmax(-1),
        "you divided by d; divide by sqrt(d) (math.sqrt(d) or d ** 0.5).": (scores / 16).softmax(-1),
        "you multiplied by sqrt(d); divide by it.": (scores * 4).softmax(-1),
        "the scale must use the width of the queries and keys, q.shape[-1], not of the values.":
            (scores / 2).softmax(-1),
        "the softmax runs over the queries (dim=-2); take it over the keys (dim=-1), so that each query's weights "
        "sum to 1.": (scores / 4).softmax(-2),
    }
    for message, wrong in wrong_weights.items():
        if _same(weights, wrong):
            raise Failed(message)
    if not _same(weights, expected_weights):
        if not torch.allclose(weights.sum(-1), torch.ones(2, 3, 5), atol=1e-4):
            raise Failed("each query's weights should sum to 1: a softmax over the last axis (the keys).")
        raise Failed("the weights differ from softmax(q @ k^T / sqrt(d), dim=-1).")
    if not _same(out, expected_out):
        raise Failed("the weights are right but the output is not: it is weights @ v.")
    return "equal to sdlearn.models.attention.attention (and to torch's scaled_dot_product_attention)."


@exercise("08.2", "splitting and merging heads")
def check_heads(my_split_heads, my_merge_heads):
    x = torch.arange(2 * 5 * 12, dtype=torch.float32).view(2, 5, 12)      # (B, N, C), every entry distinct
    got = my_split_heads(x.clone(), 3)
    expected = split_heads(x, 3)                                             # (2, 3, 5, 4)
    if not isinstance(got, torch.Tensor):
        raise Failed("my_split_heads should return a tensor.")
    if tuple(got.shape) == (2, 5, 3, 4):
        raise Failed("the shape is (B, N, heads, d); swap the token and head axes with .transpose(1, 2) to get "
                     "(B, heads, N, d).")
    if got.shape != expected.shape:
        raise Failed(f"split into 3 heads, (2, 5, 12) should become (B, heads, N, d) = (2, 3, 5, 4), "
                     f"got {tuple(got.shape)}.")
    if torch.equal(got, x.reshape(2, 3, 5, 4)):
        raise Failed("reshaping (B, N, C) straight to (B, heads, N, d) mixes tokens together: head 0 gets the "
                     "first tokens instead of the first channels of every token. Reshape to (B, N, heads, d) first, "
                     "then transpose(1, 2).")
    if torch.equal(got, x.view(2, 5, 4, 3).permute(0, 3, 1, 2)):
        raise Failed("head 0 got channels 0, 3, 6, 9 (every third channel); each head takes a contiguous block: "
                     "head 0 channels 0-3, head 1 channels 4-7. View as (B, N, heads, d), not (B, N, d, heads).")
    if not torch.equal(got, expected):
        raise Failed("head i should hold channels i*d .. (i+1)*d - 1 of every token, in token order.")

    heads = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).view(2, 3, 5, 4)   # (B, h, N, d)
    merged = my_merge_heads(heads.clone())
    expected = merge_heads(heads)                                                 # (2, 5, 12)
    if not isinstance(merged, torch.Tensor) or merged.shape != expected.shape:
        shape = None if not isinstance(merged, torch.Tensor) else tuple(merged.shape)
        raise Failed(f"my_merge_heads should turn (B, heads, N, d) = (2, 3, 5, 4) into (B, N, heads*d) = (2, 5, 12), "
                     f"got {shape}.")
    if torch.equal(merged, heads.reshape(2, 5, 12)):
        raise Failed("reshaping (B, heads, N, d) straight to (B, N, heads*d) mixes tokens; transpose(1, 2) first "
                     "(to (B, N, heads, d)), then reshape.")
    if not torch.equal(merged, expected):
        raise Failed("my_merge_heads should undo my_split_heads: the heads' outputs side by side, head 0 first.")
    if not torch.equal(my_merge_heads(my_split_heads(x.clone(), 4)), x):
        raise Failed("merging the split of x should give x back exactly (try it with 4 heads).")
    return "head i holds channels i*d to (i+1)*d - 1, and merging undoes splitting."


@exercise("08.3", "feature maps as tokens")
def check_tokens(image_to_tokens, tokens_to_image):
    b, c, h, w = 2, 4, 3, 5                       # H != W, so that mixing them up shows
    x = torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)
    tokens = image_to_tokens(x.clone())
    expected = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    if not isinstance(tokens, torch.Tensor):
        raise Failed("image_to_tokens should return a tensor.")
    if tuple(tokens.shape) == (b, c, h * w):
        raise Failed("that is (B, C, H*W): one row per channel. Tokens are one row per pixel, (B, H*W, C); "
                     "transpose the last two axes.")
    if tokens.shape != expected.shape:
        raise Failed(f"a (2, 4, 3, 5) feature map should give tokens (B, H*W, C) = (2, 15, 4), "
                     f"got {tuple(tokens.shape)}.")
    if torch.equal(tokens, x.reshape(b, h * w, c)):
        raise Failed("reshaping (B, C, H, W) straight to (B, H*W, C) mixes channels and pixels; move the channels "
                     "last first: x.permute(0, 2, 3, 1), then reshape.")
    if torch.equal(tokens, x.permute(0, 3, 2, 1).reshape(b, h * w, c)):
        raise Failed("the tokens go column by column; they should go row by row (token i*W + j is pixel (i, j)): "
                     "permute to (B, H, W, C), not (B, W, H, C).")
    if not torch.equal(tokens, expected):
        raise Failed("token i*W + j should hold the C channels of pixel (i, j).")

    image = tokens_to_image(expected.clone(), h, w)
    if not isinstance(image, torch.Tensor) or image.shape != x.shape:
        shape = None if not isinstance(image, torch.Tensor) else tuple(image.shape)
        raise Failed(f"tokens (2, 15, 4) with height 3 and width 5 should give (B, C, H, W) = (2, 4, 3, 5), "
                     f"got {shape}.")
    if torch.equal(image, expected.reshape(b, c, h, w)):
        raise Failed("reshaping tokens (B, H*W, C) straight to (B, C, H, W) mixes channels and pixels; reshape to "
                     "(B, H, W, C) first, then permute(0, 3, 1, 2).")
    if not torch.equal(image, x):
        raise Failed("tokens_to_image should undo image_to_tokens exactly.")
    return "one token per pixel, row by row, and back."


def _random_weights(inner, query_dim, cross_attention_dim, g):
    scale = 0.5
    return (scale * _randn(inner, query_dim, generator=g), scale * _randn(inner, cross_attention_dim, generator=g),
            scale * _randn(inner, cross_attention_dim, generator=g), scale * _randn(query_dim, inner, generator=g))


def _reference(x, context, w_q, w_k, w_v, w_o, heads):
    layer = Attention(x.shape[-1], cross_attention_dim=context.shape[-1], heads=heads,
                      dim_head=w_q.shape[0] // heads, bias=False, out_bias=False)
    with torch.no_grad():
        layer.to_q.weight.copy_(w_q)
        layer.to_k.weight.copy_(w_k)
        layer.to_v.weight.copy_(w_v)
        layer.to_out[0].weight.copy_(w_o)
        return layer(x, context)


@exercise("08.4", "multi-head cross-attention")
def check_cross_attention(my_cross_attention):
    g = torch.Generator().manual_seed(80)
    # First the context has the same width as x, so that using x for the keys runs and can be recognised.
    heads, d = 4, 6
    x, context = _randn(2, 9, 16, generator=g), _randn(2, 5, 16, generator=g)
    w_q, w_k, w_v, w_o = _random_weights(heads * d, 16, 16, g)
    got = my_cross_attention(x.clone(), context.clone(), w_q, w_k, w_v, w_o, heads)
    expected = _reference(x, context, w_q, w_k, w_v, w_o, heads)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of shape (B, N, C).")
    if tuple(got.shape) == (2, 9, heads * d):
        raise Failed("the output has heads*d channels: project back to C channels with w_o (out @ w_o.T).")
    if got.shape != expected.shape:
        raise Failed(f"for x (2, 9, 16) and a context (2, 5, 16) the output should be (2, 9, 16), "
                     f"got {tuple(got.shape)}.")
    if _same(got, _reference(x, x, w_q, w_k, w_v, w_o, heads), atol=1e-4):
        raise Failed("that is self-attention: the keys and values must come from the context, "
                     "context @ w_k.T and context @ w_v.T; only the queries come from x.")
    one_head = [_reference(x, context, w_q, w_k, w_v, w_o, 1),                      # scaled by 1/sqrt(heads*d)
                _reference(x, context, w_q * math.sqrt(heads), w_k, w_v, w_o, 1)]   # scaled by 1/sqrt(d)
    if any(_same(got, wrong, atol=1e-4) for wrong in one_head):
        raise Failed("that is one head over all heads*d channels; split the queries, keys and values into `heads` "
                     "groups of d channels and attend in each group separately.")
    unscaled = _reference(x, context, w_q * math.sqrt(d), w_k, w_v, w_o, heads)   # undoes the 1/sqrt(d)
    if _same(got, unscaled, atol=1e-4):
        raise Failed("the scores are not scaled: divide q @ k^T by sqrt(d), where d = w_q.shape[0] // heads is "
                     "one head's width.")
    scaled_by_width = _reference(x, context, w_q * math.sqrt(d) / math.sqrt(heads * d), w_k, w_v, w_o, heads)
    if _same(got, scaled_by_width, atol=1e-4):
        raise Failed("you scaled by 1/sqrt(heads*d); each head is scaled by its own width: 1/sqrt(d).")
    if not _same(got, expected, atol=1e-4):
        raise Failed("the result differs from multi-head cross-attention: check that each head takes a contiguous "
                     "block of d channels ((B, N, heads, d), then transpose(1, 2)), that the softmax is over the "
                     "context tokens (dim=-1), and that you merge the heads back in the same order.")
    # Then a context of another width (as for a text encoder) and another number of heads.
    heads, d = 2, 8
    x, context = _randn(1, 4, 10, generator=g), _randn(1, 3, 7, generator=g)
    w_q, w_k, w_v, w_o = _random_weights(heads * d, 10, 7, g)
    got = my_cross_attention(x, context, w_q, w_k, w_v, w_o, heads)
    if not _same(got, _reference(x, context, w_q, w_k, w_v, w_o, heads), atol=1e-4):
        raise Failed("right for 4 heads and a context as wide as x, wrong for 2 heads and a 7-channel context: "
                     "take d from the weights (w_q.shape[0] // heads) and the sizes from the inputs.")
    return "equal to sdlearn's Attention (and so to diffusers') with the same weights."
