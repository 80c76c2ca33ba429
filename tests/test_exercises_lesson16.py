"""Lesson 16's checks: typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check

# 16.1: a start and a budget

def budget_right():
    return 5, 0.6


def budget_rounded_down():                  # another right answer: 5 * 0.75 still runs 3 steps
    return 5, 0.75


def budget_as_list_and_tensor():
    return [5, torch.tensor(0.7)]


def budget_low_strength():
    return 10, 0.3


def budget_too_many_calls():
    return 10, 0.6


def budget_four_calls():
    return 5, 0.8


def budget_too_high():
    return 3, 1.0


def budget_strength_percent():
    return 5, 60


def budget_one_number():
    return 0.6


# 16.2: the strength that keeps a share of the signal

def _signals(scheduler, num_inference_steps):
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    return [scheduler.alphas_cumprod[timesteps[num_inference_steps - k]].sqrt().item()
            for k in range(1, num_inference_steps + 1)]


def signal_right(scheduler, num_inference_steps, min_signal):
    signals = _signals(scheduler, num_inference_steps)
    best = max(k for k in range(1, num_inference_steps + 1) if signals[k - 1] >= min_signal)
    return best / num_inference_steps


def signal_midway(scheduler, num_inference_steps, min_signal):     # another right answer: inside the same step
    return min(signal_right(scheduler, num_inference_steps, min_signal) + 0.5 / num_inference_steps, 1.0)


def signal_linear(scheduler, num_inference_steps, min_signal):
    return 1 - min_signal


def signal_alpha_bar(scheduler, num_inference_steps, min_signal):
    signals = _signals(scheduler, num_inference_steps)
    return max(k for k in range(1, num_inference_steps + 1) if signals[k - 1] ** 2 >= min_signal) / num_inference_steps


def signal_smallest(scheduler, num_inference_steps, min_signal):
    return 1 / num_inference_steps


def signal_one_too_many(scheduler, num_inference_steps, min_signal):
    return signal_right(scheduler, num_inference_steps, min_signal) + 1 / num_inference_steps


def signal_paper_t0(scheduler, num_inference_steps, min_signal):      # t0 = strength x 1000, as in SDEdit
    strengths = [k / num_inference_steps for k in range(1, num_inference_steps + 1)]
    kept = [scheduler.alphas_cumprod[min(int(s * 1000), 999)].sqrt().item() for s in strengths]
    return max(s for s, signal in zip(strengths, kept) if signal >= min_signal)


def signal_fixed(scheduler, num_inference_steps, min_signal):
    return 0.4


# 16.3: choosing the strength

def choose_strength(strengths, to_prompt_class, to_input_class, distance):
    best = None
    for s, switched, d in zip(strengths, to_prompt_class, distance):
        if switched >= 0.9 and (best is None or d < best[1]):
            best = (s, d)
    return None if best is None else best[0]


def choose_with_tensors(strengths, to_prompt_class, to_input_class, distance):
    switched, distance = torch.tensor(to_prompt_class), torch.tensor(distance)
    if not (switched >= 0.9).any():
        return None
    distance[switched < 0.9] = float("inf")
    return strengths[int(distance.argmin())]


def strictly_above(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if to_prompt_class[k] > 0.9]
    return strengths[min(ok, key=distance.__getitem__)] if ok else None


def left_the_input_class(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if 1 - to_input_class[k] >= 0.9]
    return strengths[min(ok, key=distance.__getitem__)] if ok else None


def smallest_that_switches(strengths, to_prompt_class, to_input_class, distance):
    for s, switched in zip(strengths, to_prompt_class):
        if switched >= 0.9:
            return s
    return None


def strongest(strengths, to_prompt_class, to_input_class, distance):
    return strengths[-1]


def most_switched(strengths, to_prompt_class, to_input_class, distance):
    return strengths[to_prompt_class.index(max(to_prompt_class))]


def closest_of_all(strengths, to_prompt_class, to_input_class, distance):
    return strengths[distance.index(min(distance))]


def returns_index(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if to_prompt_class[k] >= 0.9]
    return min(ok, key=distance.__getitem__) if ok else None


def returns_distance(strengths, to_prompt_class, to_input_class, distance):
    ok = [distance[k] for k in range(len(strengths)) if to_prompt_class[k] >= 0.9]
    return min(ok) if ok else None


def never_none(strengths, to_prompt_class, to_input_class, distance):
    ok = [k for k in range(len(strengths)) if to_prompt_class[k] >= 0.9]
    if not ok:
        return strengths[-1]
    return strengths[min(ok, key=distance.__getitem__)]


WRONG = [
    ("16.1", budget_low_strength, "Keep the strength near 0.6 and use fewer steps"),
    ("16.1", budget_too_many_calls, "the right start, but over the budget"),
    ("16.1", budget_four_calls, "over the budget of 3 calls, and not between"),
    ("16.1", budget_too_high, "start lower"),
    ("16.1", budget_strength_percent, "a number in (0, 1]"),
    ("16.1", budget_one_number, "return two things"),
    ("16.2", signal_linear, "straight line"),
    ("16.2", signal_alpha_bar, "its square root"),
    ("16.2", signal_smallest, "the question is the largest"),
    ("16.2", signal_one_too_many, "too strong"),
    ("16.2", signal_paper_t0, "as the SDEdit paper sets t0"),
    ("16.2", signal_fixed, "Take the largest strength that passes"),
    ("16.3", strictly_above, "not > 0.9"),
    ("16.3", left_the_input_class, "a third class"),
    ("16.3", smallest_that_switches, "do not always grow with strength"),
    ("16.3", strongest, "the furthest from the input"),
    ("16.3", most_switched, "switches the most"),
    ("16.3", closest_of_all, "does not switch 90%"),
    ("16.3", returns_index, "not its position"),
    ("16.3", returns_distance, "not its distance"),
    ("16.3", never_none, "return None"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


@pytest.mark.parametrize("exercise_id, answer", [("16.1", budget_right), ("16.1", budget_rounded_down),
                                                 ("16.1", budget_as_list_and_tensor), ("16.2", signal_right),
                                                 ("16.2", signal_midway),
                                                 ("16.3", choose_strength), ("16.3", choose_with_tensors)])
def test_other_right_answers_pass(exercise_id, answer):
    """Right answers written differently from the lesson's solutions pass too."""
    verdict = check(exercise_id, answer)
    assert verdict.passed, repr(verdict)


def test_the_strength_tables_have_the_features_the_check_relies_on():
    """Each table of 16.3 has what it is there for: an exact 90%, a third class, a dip, no switch."""
    from sdlearn.exercises.lesson16 import _right, _tables

    tables = dict(_tables())
    exact, third, dip, none, ordinary = tables.values()
    assert 0.9 in exact["to_prompt_class"]
    assert any(1 - i >= 0.9 > p for p, i in zip(third["to_prompt_class"], third["to_input_class"]))
    assert any(b < a for a, b in zip(dip["distance"], dip["distance"][1:]))
    assert _right(none) is None and _right(ordinary) is not None
    for table in tables.values():
        for p, i in zip(table["to_prompt_class"], table["to_input_class"]):
            assert 0 <= p and 0 <= i and p + i <= 1 + 1e-12
