"""Lesson 19's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check

# 19.1: the prior-preservation loss


def prior_preservation_loss(prediction, target, num_instance, prior_loss_weight):
    instance_loss = F.mse_loss(prediction[:num_instance], target[:num_instance])
    prior_loss = F.mse_loss(prediction[num_instance:], target[num_instance:])
    return instance_loss + prior_loss_weight * prior_loss


def one_mse(prediction, target, num_instance, prior_loss_weight):
    return F.mse_loss(prediction, target)


def weight_on_the_subject(prediction, target, num_instance, prior_loss_weight):
    instance_loss = F.mse_loss(prediction[:num_instance], target[:num_instance])
    prior_loss = F.mse_loss(prediction[num_instance:], target[num_instance:])
    return prior_loss_weight * instance_loss + prior_loss


def weight_ignored(prediction, target, num_instance, prior_loss_weight):
    return prior_preservation_loss(prediction, target, num_instance, 1.0)


def summed(prediction, target, num_instance, prior_loss_weight):
    instance_loss = F.mse_loss(prediction[:num_instance], target[:num_instance], reduction="sum")
    prior_loss = F.mse_loss(prediction[num_instance:], target[num_instance:], reduction="sum")
    return instance_loss + prior_loss_weight * prior_loss


def averaged(prediction, target, num_instance, prior_loss_weight):
    return prior_preservation_loss(prediction, target, num_instance, prior_loss_weight) / 2


def class_first(prediction, target, num_instance, prior_loss_weight):
    num_class = len(prediction) - num_instance
    prior_loss = F.mse_loss(prediction[:num_class], target[:num_class])
    instance_loss = F.mse_loss(prediction[num_class:], target[num_class:])
    return instance_loss + prior_loss_weight * prior_loss


def chunked(prediction, target, num_instance, prior_loss_weight):
    instance_pred, prior_pred = prediction.chunk(2)
    instance_target, prior_target = target.chunk(2)
    return F.mse_loss(instance_pred, instance_target) + prior_loss_weight * F.mse_loss(prior_pred, prior_target)


def a_python_number(prediction, target, num_instance, prior_loss_weight):
    return prior_preservation_loss(prediction, target, num_instance, prior_loss_weight).item()


def per_element(prediction, target, num_instance, prior_loss_weight):
    instance_loss = F.mse_loss(prediction[:num_instance], target[:num_instance], reduction="none")
    prior_loss = F.mse_loss(prediction[num_instance:], target[num_instance:], reduction="none")
    return torch.cat([instance_loss, prior_loss_weight * prior_loss])


def detached(prediction, target, num_instance, prior_loss_weight):
    return prior_preservation_loss(prediction.detach(), target, num_instance, prior_loss_weight)


@pytest.mark.parametrize("answer,message", [
    (one_mse, "one MSE over the whole batch"), (weight_on_the_subject, "multiplied the subject's part"),
    (weight_ignored, "left out prior_loss_weight"), (summed, "reduction='sum'"), (averaged, "averaged the two parts"),
    (class_first, "from the front of the batch"), (chunked, "need not be the same size"),
    (a_python_number, "not a Python number"), (per_element, "return one number"), (detached, "not connected"),
])
def test_19_1_names_the_mistake(answer, message):
    verdict = check("19.1", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_19_1_right_answer_passes():
    verdict = check("19.1", prior_preservation_loss)
    assert verdict.passed, verdict
    assert "train_dreambooth.py" in verdict.message


def test_19_1_chunk_is_told_where_to_split():
    verdict = check("19.1", chunked)
    assert "3 subject and 5 class examples" in verdict.message and "split at num_instance" in verdict.message.lower()


# 19.2: the LoRA forward

def lora_forward(x, weight, bias, A, B, alpha):
    out = x @ weight.T + (alpha / A.shape[0]) * (x @ A.T) @ B.T
    return out if bias is None else out + bias


def lora_forward_linear(x, weight, bias, A, B, alpha):
    return F.linear(x, weight, bias) + alpha / A.shape[0] * F.linear(F.linear(x, A), B)


def lora_forward_merged(x, weight, bias, A, B, alpha):
    return F.linear(x, weight + alpha / A.shape[0] * B @ A, bias)


def no_scale(x, weight, bias, A, B, alpha):
    return lora_forward(x, weight, bias, A, B, A.shape[0])


def scale_alpha(x, weight, bias, A, B, alpha):
    return lora_forward(x, weight, bias, A, B, alpha * A.shape[0])


def r_over_alpha(x, weight, bias, A, B, alpha):
    r = A.shape[0]
    return lora_forward(x, weight, bias, A, B, r * r / alpha)


def one_over_r(x, weight, bias, A, B, alpha):
    return lora_forward(x, weight, bias, A, B, 1.0)


def no_bias(x, weight, bias, A, B, alpha):
    return lora_forward(x, weight, None, A, B, alpha)


def bias_always(x, weight, bias, A, B, alpha):
    return x @ weight.T + bias + (alpha / A.shape[0]) * (x @ A.T) @ B.T


def b_then_a(x, weight, bias, A, B, alpha):
    return F.linear(x, weight, bias) + (alpha / A.shape[0]) * (x @ B) @ A


def untransposed_update(x, weight, bias, A, B, alpha):
    return F.linear(x, weight, bias) + (alpha / A.shape[0]) * x @ (B @ A)


def frozen_only(x, weight, bias, A, B, alpha):
    return F.linear(x, weight, bias)


def adapter_under_no_grad(x, weight, bias, A, B, alpha):
    with torch.no_grad():
        return lora_forward(x, weight, bias, A, B, alpha)


def merges_in_place(x, weight, bias, A, B, alpha):
    with torch.no_grad():
        weight += alpha / A.shape[0] * B @ A
    return F.linear(x, weight, bias)


@pytest.mark.parametrize("answer,message", [
    (no_scale, "left out the scale"), (scale_alpha, "not alpha"), (r_over_alpha, "upside down"),
    (one_over_r, "left out alpha"), (no_bias, "forgot the bias"), (bias_always, "bias is None here"),
    (b_then_a, "shape error"), (untransposed_update, "shape error"), (frozen_only, "the frozen layer alone"),
    (adapter_under_no_grad, "not connected to A and B"), (merges_in_place, "changed one of its inputs"),
])
def test_19_2_names_the_mistake(answer, message):
    verdict = check("19.2", answer)
    assert not verdict.passed and message in verdict.message, verdict


@pytest.mark.parametrize("answer", [lora_forward, lora_forward_linear, lora_forward_merged])
def test_19_2_right_answers_pass(answer):
    verdict = check("19.2", answer)
    assert verdict.passed, verdict


def weight_not_transposed(x, weight, bias, A, B, alpha):
    return x @ weight + (alpha / A.shape[0]) * (x @ A.T) @ B.T


@pytest.mark.parametrize("wrong_on_a_square_layer,message", [
    (untransposed_update, r"without transposing (x @ B @ A"), (weight_not_transposed, "x @ weight is the wrong way"),
])
def test_19_2_names_what_runs_only_on_a_square_layer(wrong_on_a_square_layer, message):
    def answer(x, weight, bias, A, B, alpha):                  # right on the rectangular layer, wrong on the square
        if weight.shape[0] != weight.shape[1]:
            return lora_forward(x, weight, bias, A, B, alpha)
        return wrong_on_a_square_layer(x, weight, bias, A, B, alpha)

    verdict = check("19.2", answer)
    assert not verdict.passed and message in verdict.message, verdict


# 19.3: merge the adapter

def merge_lora(weight, A, B, alpha, scale=1.0):
    return weight + scale * (alpha / A.shape[0]) * (B @ A)


def a_times_b(weight, A, B, alpha, scale=1.0):
    return weight + scale * (alpha / A.shape[0]) * (A @ B)


def transposed(weight, A, B, alpha, scale=1.0):
    return weight + scale * (alpha / A.shape[0]) * (A.T @ B.T)


def no_alpha_over_r(weight, A, B, alpha, scale=1.0):
    return weight + scale * (B @ A)


def alpha_only(weight, A, B, alpha, scale=1.0):
    return weight + scale * alpha * (B @ A)


def scale_ignored(weight, A, B, alpha, scale=1.0):
    return weight + (alpha / A.shape[0]) * (B @ A)


def scales_everything(weight, A, B, alpha, scale=1.0):
    return scale * (weight + (alpha / A.shape[0]) * (B @ A))


def in_place(weight, A, B, alpha, scale=1.0):
    weight += scale * (alpha / A.shape[0]) * (B @ A)
    return weight


def update_only(weight, A, B, alpha, scale=1.0):
    return scale * (alpha / A.shape[0]) * (B @ A)


@pytest.mark.parametrize("answer,message", [
    (a_times_b, "A @ B and A.T @ B.T do not fit"), (transposed, "shape error"), (no_alpha_over_r, "left out alpha / r"),
    (alpha_only, "not alpha"), (scale_ignored, "ignored `scale`"), (scales_everything, "not the frozen weight"),
    (in_place, "in place"), (update_only, "the update alone"),
])
def test_19_3_names_the_mistake(answer, message):
    verdict = check("19.3", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_19_3_right_answer_passes():
    verdict = check("19.3", merge_lora)
    assert verdict.passed, verdict


def test_19_3_names_the_transposed_update_on_a_square_weight():
    def answer(weight, A, B, alpha, scale=1.0):                # right on the rectangular weight, wrong on the square
        if weight.shape[0] != weight.shape[1]:
            return merge_lora(weight, A, B, alpha, scale)
        return transposed(weight, A, B, alpha, scale)

    verdict = check("19.3", answer)
    assert not verdict.passed and "transpose of the update" in verdict.message, verdict


# 19.4: memorisation: the nearest training copy

def nearest_copy_distance(samples, copies):
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    return diff.pow(2).mean(-1).sqrt().min(dim=1).values


def nearest_copy_distance_cdist(samples, copies):
    pixels = samples[0].numel()
    return torch.cdist(samples.flatten(1), copies.flatten(1)).min(dim=1).values / pixels ** 0.5


def nearest_copy_distance_expanded(samples, copies):     # |s - c|^2 = |s|^2 + |c|^2 - 2 s.c: rounds differently
    s, c = samples.flatten(1), copies.flatten(1)
    squared = s.pow(2).sum(1)[:, None] + c.pow(2).sum(1)[None] - 2 * s @ c.T
    return (squared / s.shape[1]).clamp_min(0).sqrt().min(dim=1).values


def nearest_copy_distance_loop(samples, copies):
    return torch.stack([torch.stack([((s - c) ** 2).mean().sqrt() for c in copies]).min() for s in samples])


def mean_over_copies(samples, copies):
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    return diff.pow(2).mean(-1).sqrt().mean(dim=1)


def farthest(samples, copies):
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    return diff.pow(2).mean(-1).sqrt().max(dim=1).values


def euclidean(samples, copies):
    return torch.cdist(samples.flatten(1), copies.flatten(1)).min(dim=1).values


def squared(samples, copies):
    return nearest_copy_distance(samples, copies) ** 2


def absolute(samples, copies):
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    return diff.abs().mean(-1).min(dim=1).values


def one_number(samples, copies):
    return nearest_copy_distance(samples, copies).mean()


def nearest_over_everything(samples, copies):
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    return diff.pow(2).mean(-1).sqrt().min()


def the_table(samples, copies):
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    return diff.pow(2).mean(-1).sqrt()


def per_copy(samples, copies):
    return the_table(samples, copies).min(dim=0).values


def the_pair(samples, copies):
    return the_table(samples, copies).min(dim=1)


def the_indices(samples, copies):
    return the_table(samples, copies).argmin(dim=1)


def fixed_size(samples, copies):
    return euclidean(samples, copies) / 28


@pytest.mark.parametrize("answer,message", [
    (mean_over_copies, "mean distance to all the copies"), (farthest, "farthest"), (euclidean, "Euclidean distance"),
    (squared, "mean squared difference"), (absolute, "mean absolute difference"), (one_number, "one number"),
    (nearest_over_everything, "one number"), (the_table, "whole table"), (per_copy, "one number per copy"),
    (the_pair, "(values, indices)"), (the_indices, "indices of the nearest copies"), (fixed_size, "wrong for 12x20"),
])
def test_19_4_names_the_mistake(answer, message):
    verdict = check("19.4", answer)
    assert not verdict.passed and message in verdict.message, verdict


@pytest.mark.parametrize("answer", [nearest_copy_distance, nearest_copy_distance_cdist, nearest_copy_distance_expanded,
                                    nearest_copy_distance_loop])
def test_19_4_right_answers_pass(answer):
    verdict = check("19.4", answer)
    assert verdict.passed, verdict


# all four

def test_lesson_19_has_four_exercises():
    from sdlearn.exercises import registered

    assert registered("19") == ["19.1", "19.2", "19.3", "19.4"]


def test_unfinished_answers_say_not_done_yet():
    def unfinished(*args, **kwargs):
        raise NotImplementedError("Exercise: write your code here")

    for exercise_id in ("19.1", "19.2", "19.3", "19.4"):
        verdict = check(exercise_id, unfinished)
        assert not verdict.passed and "not done yet" in verdict.message, verdict
