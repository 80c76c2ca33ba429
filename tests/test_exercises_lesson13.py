"""Lesson 13's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check


# 13.1: a class embedding from a one-hot vector

def class_embedding_right(labels, table):
    one_hot = torch.nn.functional.one_hot(labels, num_classes=table.shape[0]).float()
    return one_hot @ table


def class_embedding_no_num_classes(labels, table):
    return torch.nn.functional.one_hot(labels).float() @ table


def class_embedding_integers(labels, table):
    return torch.nn.functional.one_hot(labels, num_classes=table.shape[0]) @ table


def class_embedding_one_hot_only(labels, table):
    return torch.nn.functional.one_hot(labels, num_classes=table.shape[0]).float()


def class_embedding_every_row(labels, table):
    one_hot = torch.zeros(len(labels), table.shape[0])
    one_hot[:, labels] = 1
    return one_hot @ table


def class_embedding_shifted(labels, table):
    return table[labels + 1]


def class_embedding_summed(labels, table):
    return (torch.nn.functional.one_hot(labels, num_classes=table.shape[0]).float() @ table).sum(dim=0)


def class_embedding_ten_rows(labels, table):
    return torch.nn.functional.one_hot(labels, num_classes=10).float() @ table[:10]


# 13.2: a null class

def null_right(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def null_in_place(labels, drop, num_classes):
    labels[drop] = num_classes
    return labels


def null_zero(labels, drop, num_classes):
    return torch.where(drop, torch.zeros_like(labels), labels)


def null_last_class(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, num_classes - 1), labels)


def null_minus_one(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, -1), labels)


def null_one_too_far(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, num_classes + 1), labels)


def null_removed(labels, drop, num_classes):
    return labels[~drop]


def null_inverted(labels, drop, num_classes):
    return torch.where(~drop, torch.full_like(labels, num_classes), labels)


def null_float(labels, drop, num_classes):
    return torch.where(drop, torch.tensor(float(num_classes)), labels.float())


def null_fixed_ten(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, 10), labels)


# 13.3: cross-attention, one head

def attend(queries_from, keys_from, values_from, w_q, w_k, w_v, scale, dim=-1):
    q, k, v = queries_from @ w_q, keys_from @ w_k, values_from @ w_v
    return (q @ k.transpose(-2, -1) * scale).softmax(dim=dim) @ v


def cross_right(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(image_tokens, text_tokens, text_tokens, w_q, w_k, w_v, w_q.shape[1] ** -0.5)


def cross_self(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(image_tokens, image_tokens, image_tokens, w_q, w_k, w_v, w_q.shape[1] ** -0.5)


def cross_queries_from_text(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(text_tokens, image_tokens, image_tokens, w_q, w_k, w_v, w_q.shape[1] ** -0.5)


def cross_unscaled(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(image_tokens, text_tokens, text_tokens, w_q, w_k, w_v, 1.0)


def cross_divided_by_d(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(image_tokens, text_tokens, text_tokens, w_q, w_k, w_v, 1 / w_q.shape[1])


def cross_softmax_over_queries(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(image_tokens, text_tokens, text_tokens, w_q, w_k, w_v, w_q.shape[1] ** -0.5, dim=1)


def cross_weights_only(image_tokens, text_tokens, w_q, w_k, w_v):
    q, k = image_tokens @ w_q, text_tokens @ w_k
    return (q @ k.transpose(-2, -1) / math_sqrt(w_q.shape[1])).softmax(dim=-1)


def cross_times_keys(image_tokens, text_tokens, w_q, w_k, w_v):
    return attend(image_tokens, text_tokens, text_tokens, w_q, w_k, w_k, w_q.shape[1] ** -0.5)


def math_sqrt(x):
    return x ** 0.5


# 13.4: shapes

def shapes_right(batch, channels, height, width, heads, tokens, cross_attention_dim):
    n, d = height * width, channels // heads
    return (batch, heads, n, d), (batch, heads, tokens, d), (batch, heads, n, tokens), (batch, n, channels)


def shapes_h_plus_w(batch, channels, height, width, heads, tokens, cross_attention_dim):
    n, d = height + width, channels // heads
    return (batch, heads, n, d), (batch, heads, tokens, d), (batch, heads, n, tokens), (batch, n, channels)


def shapes_keys_context_width(batch, channels, height, width, heads, tokens, cross_attention_dim):
    n, d = height * width, channels // heads
    return (batch, heads, n, d), (batch, heads, tokens, cross_attention_dim // heads), (batch, heads, n, tokens), \
        (batch, n, channels)


def shapes_weights_transposed(batch, channels, height, width, heads, tokens, cross_attention_dim):
    n, d = height * width, channels // heads
    return (batch, heads, n, d), (batch, heads, tokens, d), (batch, heads, tokens, n), (batch, n, channels)


def shapes_heads_not_merged(batch, channels, height, width, heads, tokens, cross_attention_dim):
    n, d = height * width, channels // heads
    return (batch, heads, n, d), (batch, heads, tokens, d), (batch, heads, n, tokens), (batch, heads, n, d)


def shapes_no_heads(batch, channels, height, width, heads, tokens, cross_attention_dim):
    n = height * width
    return (batch, n, channels), (batch, tokens, channels), (batch, n, tokens), (batch, n, channels)


def shapes_hard_coded(batch, channels, height, width, heads, tokens, cross_attention_dim):
    return (2, 4, 24, 32), (2, 4, 77, 32), (2, 4, 24, 77), (2, 24, 128)


@pytest.mark.parametrize("exercise_id, answer", [
    ("13.1", class_embedding_right), ("13.2", null_right), ("13.3", cross_right), ("13.4", shapes_right),
])
def test_right_answers_pass(exercise_id, answer):
    result = check(exercise_id, answer)
    assert result.passed, result.message


@pytest.mark.parametrize("exercise_id, answer, words", [
    ("13.1", class_embedding_no_num_classes, "num_classes"),
    ("13.1", class_embedding_integers, "integers"),
    ("13.1", class_embedding_one_hot_only, "one-hot vectors themselves"),
    ("13.1", class_embedding_every_row, "one_hot[:, labels]"),
    ("13.1", class_embedding_shifted, "shifted by one"),
    ("13.1", class_embedding_summed, "one embedding per label"),
    ("13.1", class_embedding_ten_rows, "num_classes"),
    ("13.2", null_in_place, "in place"),
    ("13.2", null_zero, "t-shirt"),
    ("13.2", null_last_class, "ankle boot"),
    ("13.2", null_minus_one, "-1"),
    ("13.2", null_one_too_far, "12th row"),
    ("13.2", null_removed, "replaced, not removed"),
    ("13.2", null_inverted, "that are kept"),
    ("13.2", null_float, "integers"),
    ("13.2", null_fixed_ten, "not a fixed 10"),
    ("13.3", cross_self, "self-attention"),
    ("13.3", cross_queries_from_text, "one vector per text token"),
    ("13.3", cross_unscaled, "sqrt(d)"),
    ("13.3", cross_divided_by_d, "divided by d"),
    ("13.3", cross_softmax_over_queries, "over the image positions"),
    ("13.3", cross_weights_only, "attention weights"),
    ("13.3", cross_times_keys, "by the keys"),
    ("13.4", shapes_h_plus_w, "H*W"),
    ("13.4", shapes_keys_context_width, "to_k projects"),
    ("13.4", shapes_weights_transposed, "transpose"),
    ("13.4", shapes_heads_not_merged, "side by side"),
    ("13.4", shapes_no_heads, "split the channels into heads"),
    ("13.4", shapes_hard_coded, "compute the shapes from the arguments"),
])
def test_typical_mistakes_are_named(exercise_id, answer, words):
    result = check(exercise_id, answer)
    assert not result.passed
    assert words in result.message, result.message


@pytest.mark.parametrize("exercise_id, arity", [("13.1", 2), ("13.2", 3), ("13.3", 5), ("13.4", 7)])
def test_unfinished_exercises_say_not_done(exercise_id, arity):
    def stub(*args):
        raise NotImplementedError("Exercise: write your code here")

    result = check(exercise_id, stub)
    assert not result.passed and "not done yet" in result.message
