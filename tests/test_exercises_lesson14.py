"""Lesson 14's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check


# 14.1: the scale of a loop with its halves swapped

def scale_right(guidance_scale):
    return 1 - guidance_scale


def scale_as_tensor(guidance_scale):
    return torch.tensor(1.0) - guidance_scale


def scale_negated(guidance_scale):
    return -guidance_scale


def scale_sign_flipped(guidance_scale):
    return guidance_scale - 1


def scale_unchanged(guidance_scale):
    return guidance_scale


def scale_inverted(guidance_scale):
    return 1 / guidance_scale if guidance_scale else 1.0


def scale_as_text(guidance_scale):
    return f"1 - {guidance_scale}"


# 14.2: a negative prompt and a scale, chosen by experiment

def no_sneakers_right():
    return "sneaker", 5.0


def no_sneakers_without_negative():
    return None, 7.5


def no_sneakers_caption():
    return "a photo of a sneaker", 7.5


def no_sneakers_default_scale():
    return "sneaker", 7.5


def no_sneakers_too_gentle():
    return "sneaker", 3.0


def no_sneakers_guidance_off():
    return "sneaker", 1.0


def no_sneakers_prompt_as_negative():
    return "a photo of a shoe", 7.5


def no_sneakers_one_value():
    return "sneaker"


# 14.3: picking a scale

def pick_right(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    if not allowed:
        return None
    return max(allowed, key=lambda row: (row[1], -row[0]))[0]


def pick_no_floor(table, min_diversity):
    return max(table, key=lambda row: (row[1], -row[0]))[0]


def pick_strict(table, min_diversity):
    allowed = [row for row in table if row[2] > min_diversity]
    return max(allowed, key=lambda row: (row[1], -row[0]))[0] if allowed else None


def pick_most_diverse(table, min_diversity):
    return max(table, key=lambda row: row[2])[0]


def pick_accuracy(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: row[1])[1] if allowed else None


def pick_row_number(table, min_diversity):
    allowed = [i for i, row in enumerate(table) if row[2] >= min_diversity]
    return max(allowed, key=lambda i: table[i][1]) if allowed else None


def pick_first_in_table(table, min_diversity):       # ties go to whichever row comes first
    best = None
    for row in table:
        if row[2] >= min_diversity and (best is None or row[1] > best[1]):
            best = row
    return None if best is None else best[0]


def pick_last_in_table(table, min_diversity):        # ties go to whichever row comes last
    best = None
    for row in table:
        if row[2] >= min_diversity and (best is None or row[1] >= best[1]):
            best = row
    return None if best is None else best[0]


def pick_larger_on_tie(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: (row[1], row[0]))[0] if allowed else None


def pick_raises_when_empty(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: (row[1], -row[0]))[0]


def pick_zero_when_empty(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: (row[1], -row[0]))[0] if allowed else 0.0


# 14.4: a cross-attention map

def _split(x, heads):
    b, n, width = x.shape
    return x.view(b, n, heads, width // heads).transpose(1, 2)        # (B, heads, N, d)


def attention_right(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1).mean(1)


def attention_over_positions(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-2).mean(1)


def attention_unscaled(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2)).softmax(-1).mean(1)


def attention_full_width_scale(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(query.shape[-1])).softmax(-1).mean(1)


def attention_per_head(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)


def attention_summed_heads(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1).sum(1)


def attention_wrong_split(query, key, heads):
    b, n, width = query.shape
    m, d = key.shape[1], width // heads
    q = query.view(b, n, d, heads).permute(0, 3, 1, 2)                # heads as the fast axis: wrong
    k = key.view(b, m, d, heads).permute(0, 3, 1, 2)
    return (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1).mean(1)


def attention_one_head(query, key, heads):
    d = query.shape[-1] // heads
    return (query @ key.transpose(-1, -2) / math.sqrt(d)).softmax(-1)


def attention_transposed(query, key, heads):
    return attention_right(query, key, heads).transpose(1, 2)


def attention_mean_before_softmax(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).mean(1).softmax(-1)


def attention_fixed_heads(query, key, heads):
    return attention_right(query, key, 4)


RIGHT = [("14.1", scale_right), ("14.1", scale_as_tensor), ("14.2", no_sneakers_right), ("14.3", pick_right),
         ("14.4", attention_right)]

WRONG = [
    ("14.1", scale_negated, "moves s' by one"),
    ("14.1", scale_sign_flipped, "mind the sign"),
    ("14.1", scale_unchanged, "not interchangeable"),
    ("14.1", scale_inverted, "nothing is divided"),
    ("14.1", scale_as_text, "not str"),
    ("14.2", no_sneakers_guidance_off, "switches guidance off"),
    ("14.2", no_sneakers_prompt_as_negative, "guidance does nothing"),
    ("14.2", no_sneakers_one_value, "return two things"),
    ("14.3", pick_no_floor, "below the floor"),
    ("14.3", pick_strict, "'at least' means >="),
    ("14.3", pick_most_diverse, "most diverse"),
    ("14.3", pick_accuracy, "you returned an accuracy"),
    ("14.3", pick_row_number, "row number"),
    ("14.3", pick_first_in_table, "on a tie take the smaller scale, 2."),
    ("14.3", pick_last_in_table, "whatever the order"),
    ("14.3", pick_larger_on_tie, "on a tie take the smaller scale, 2."),
    ("14.3", pick_raises_when_empty, "raised ValueError"),
    ("14.3", pick_zero_when_empty, "return None"),
    ("14.4", attention_over_positions, "sum to 1 over the image positions"),
    ("14.4", attention_unscaled, "did not divide by sqrt(d)"),
    ("14.4", attention_full_width_scale, "not of the whole width"),
    ("14.4", attention_per_head, "average over the heads"),
    ("14.4", attention_summed_heads, "you summed over the heads"),
    ("14.4", attention_wrong_split, "the heads are split the wrong way"),
    ("14.4", attention_one_head, "you did not split into heads"),
    ("14.4", attention_transposed, "(B, M, N)"),
    ("14.4", attention_mean_before_softmax, "averaged the scores over the heads"),
    ("14.4", attention_fixed_heads, "use the number of heads you are given"),
]


@pytest.mark.parametrize("exercise_id, answer", RIGHT, ids=[f"{r[0]}-{r[1].__name__}" for r in RIGHT])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


# 14.2 generates 16 images per answer (about 3 s on a quiet 2-core CPU): the measured wrong answers are slow
SLOW_WRONG = [
    (no_sneakers_without_negative, "Name what you do not want"),
    (no_sneakers_caption, "the push overshoots"),
    (no_sneakers_default_scale, "the push overshoots"),
    (no_sneakers_too_gentle, "are still sneakers"),
]


@pytest.mark.slow
@pytest.mark.parametrize("answer, message", SLOW_WRONG, ids=[w[0].__name__ for w in SLOW_WRONG])
def test_14_2_measured_wrong_answers_fail(answer, message):
    verdict = check("14.2", answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


@pytest.mark.slow
def test_14_2_measures_what_evaluate_prompt_measures():
    from sdlearn.data import SHOE_CLASSES
    from sdlearn.exercises.lesson14 import SHOE_PROMPT, _pipeline, _shoe_measurements
    from sdlearn.metrics import evaluate_prompt

    histogram, saturation = _shoe_measurements("sneaker", 5.0)
    report = evaluate_prompt(_pipeline["pipe"], SHOE_PROMPT, SHOE_CLASSES, negative_prompt="sneaker",
                             guidance_scale=5.0, n=16, generator=torch.Generator().manual_seed(0))
    assert histogram == report.histogram
    assert saturation == pytest.approx(report.saturation, abs=1e-7)
