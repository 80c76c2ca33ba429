"""Lesson 13's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch

from sdlearn.exercises import check


# 13.1: which rows of the class table learn

def rows_right(labels, drop, num_classes):
    used = torch.where(drop, torch.full_like(labels, num_classes), labels)
    return used.unique().tolist()


def rows_as_mask(labels, drop, num_classes):                 # another right answer: a mask over the rows
    mask = torch.zeros(num_classes + 1, dtype=torch.bool)
    for label, dropped in zip(labels.tolist(), drop.tolist()):
        mask[num_classes if dropped else label] = True
    return mask


def rows_every_one(labels, drop, num_classes):
    return list(range(num_classes + 1))


def rows_ignoring_drop(labels, drop, num_classes):
    return labels.unique().tolist()


def rows_null_always(labels, drop, num_classes):
    return sorted(set(labels[~drop].tolist()) | {num_classes})


def rows_without_null(labels, drop, num_classes):
    return labels[~drop].unique().tolist()


def rows_null_is_minus_one(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, -1), labels).unique().tolist()


def rows_in_place(labels, drop, num_classes):
    labels[drop] = num_classes
    return labels.unique().tolist()


def rows_repeated(labels, drop, num_classes):
    return torch.where(drop, torch.full_like(labels, num_classes), labels).tolist()


# 13.2: choosing the label-drop probability

def drop_p_right(images_per_class):
    return max(images_per_class) / (sum(images_per_class) + max(images_per_class))


def drop_p_as_tensor(images_per_class):
    counts = torch.tensor(images_per_class, dtype=torch.float64)
    return counts.max() / (counts.sum() + counts.max())


def drop_p_balanced(images_per_class):
    return 1 / (len(images_per_class) + 1)


def drop_p_without_one_minus_p(images_per_class):
    return max(images_per_class) / sum(images_per_class)


def drop_p_rarest(images_per_class):
    return min(images_per_class) / (sum(images_per_class) + min(images_per_class))


def drop_p_lesson(images_per_class):
    return 0.1


def drop_p_percent(images_per_class):
    return 100 * drop_p_right(images_per_class)


def drop_p_too_much(images_per_class):
    return 2 * drop_p_right(images_per_class)


# 13.3: cross-attention to a constant context

def constant_right(attn, e):
    return attn.to_out[0](attn.to_v(e))


def constant_by_hand(attn, e):                               # another right answer: the weights written out
    value = e @ attn.to_v.weight.T
    return value @ attn.to_out[0].weight.T + attn.to_out[0].bias


def constant_values_only(attn, e):
    return attn.to_v(e)


def constant_no_bias(attn, e):
    return attn.to_v(e) @ attn.to_out[0].weight.T


def constant_summed_over_tokens(attn, e):
    return attn.to_out[0](7 * attn.to_v(e))


def constant_the_vector(attn, e):
    return e


def constant_every_position(attn, e):
    return attn.to_out[0](attn.to_v(e)).expand(5, -1)


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
    ("13.1", rows_right), ("13.1", rows_as_mask), ("13.2", drop_p_right), ("13.2", drop_p_as_tensor),
    ("13.3", constant_right), ("13.3", constant_by_hand), ("13.4", shapes_right),
])
def test_right_answers_pass(exercise_id, answer):
    result = check(exercise_id, answer)
    assert result.passed, result.message


@pytest.mark.parametrize("exercise_id, answer, words", [
    ("13.1", rows_every_one, "Not every row"),
    ("13.1", rows_ignoring_drop, "A dropped label is not looked up"),
    ("13.1", rows_null_always, "none was"),
    ("13.1", rows_without_null, "it learns too"),
    ("13.1", rows_null_is_minus_one, "not -1"),
    ("13.1", rows_in_place, "you changed the labels"),
    ("13.1", rows_repeated, "more than once"),
    ("13.2", drop_p_balanced, "equally common classes"),
    ("13.2", drop_p_without_one_minus_p, "come out of the classes"),
    ("13.2", drop_p_rarest, "rarest class"),
    ("13.2", drop_p_lesson, "lesson's 0.1"),
    ("13.2", drop_p_percent, "not a percentage"),
    ("13.2", drop_p_too_much, "not the smallest"),
    ("13.3", constant_values_only, "that is to_v(e)"),
    ("13.3", constant_no_bias, "has a bias"),
    ("13.3", constant_summed_over_tokens, "not M of them"),
    ("13.3", constant_the_vector, "context's width"),
    ("13.3", constant_every_position, "at one position"),
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


@pytest.mark.parametrize("exercise_id, arity", [("13.1", 3), ("13.2", 1), ("13.3", 2), ("13.4", 7)])
def test_unfinished_exercises_say_not_done(exercise_id, arity):
    def stub(*args):
        raise NotImplementedError("Exercise: write your code here")

    result = check(exercise_id, stub)
    assert not result.passed and "not done yet" in result.message
