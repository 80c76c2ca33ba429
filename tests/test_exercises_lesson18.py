"""Lesson 18's checks: typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check

# 18.1: where Adam moves a row


def adam_row_after(row, gradient, lr, steps):
    return row - lr * steps * gradient.sign()


def adam_by_experiment(row, gradient, lr, steps):          # another right answer: run the optimizer
    parameter = torch.nn.Parameter(row.clone())
    optimizer = torch.optim.Adam([parameter], lr=lr)
    for _ in range(steps):
        parameter.grad = gradient.clone()
        optimizer.step()
    return parameter.detach()


def adam_as_sgd(row, gradient, lr, steps):
    return row - lr * steps * gradient


def adam_one_step(row, gradient, lr, steps):
    return row - lr * gradient.sign()


def adam_uphill(row, gradient, lr, steps):
    return row + lr * steps * gradient.sign()


def adam_vector_norm(row, gradient, lr, steps):
    return row - lr * steps * gradient / gradient.norm()


def adam_zero_moves_too(row, gradient, lr, steps):
    return row - lr * steps * torch.where(gradient >= 0, 1.0, -1.0)


def adam_fixed_arguments(row, gradient, lr, steps):
    return row - 1e-2 * 5 * gradient.sign()


@pytest.mark.parametrize("answer,message", [
    (adam_as_sgd, "plain gradient descent"), (adam_one_step, "that is one step"), (adam_uphill, "downhill"),
    (adam_vector_norm, "length of the whole gradient vector"), (adam_zero_moves_too, "exactly 0 does not move"),
    (adam_fixed_arguments, "use the arguments you are given"),
])
def test_18_1_names_the_mistake(answer, message):
    verdict = check("18.1", answer)
    assert not verdict.passed and message in verdict.message, verdict


@pytest.mark.parametrize("answer", [adam_row_after, adam_by_experiment])
def test_18_1_right_answers_pass(answer):
    assert check("18.1", answer).passed


# 18.2: how long until a frozen row has shrunk

def steps_to_shrink(lr, weight_decay, factor):
    return math.ceil(math.log(factor) / math.log(1 - lr * weight_decay))


def steps_by_counting(lr, weight_decay, factor):           # another right answer: count the steps
    length, steps = 1.0, 0
    while length > factor:
        length *= 1 - lr * weight_decay
        steps += 1
    return steps


def steps_rounded_down(lr, weight_decay, factor):
    return math.floor(math.log(factor) / math.log(1 - lr * weight_decay))


def steps_approximated(lr, weight_decay, factor):
    return math.ceil(-math.log(factor) / (lr * weight_decay))


def steps_without_lr(lr, weight_decay, factor):
    return math.ceil(math.log(factor) / math.log(1 - weight_decay))


def steps_as_float(lr, weight_decay, factor):
    return math.log(factor) / math.log(1 - lr * weight_decay)


@pytest.mark.parametrize("answer,message", [
    (steps_rounded_down, "round up"), (steps_approximated, "ln(1 - x) ~ -x"),
    (steps_without_lr, "not 1 - weight_decay"), (steps_as_float, "whole number of steps"),
])
def test_18_2_names_the_mistake(answer, message):
    verdict = check("18.2", answer)
    assert not verdict.passed and message in verdict.message, verdict


@pytest.mark.parametrize("answer", [steps_to_shrink, steps_by_counting])
def test_18_2_right_answers_pass(answer):
    assert check("18.2", answer).passed


# 18.3: how similar is a random row by chance

def chance_similarity(num_rows, dim):
    generator = torch.Generator().manual_seed(0)
    largest = []
    for _ in range(20):
        vector = torch.randn(dim, generator=generator)
        rows = torch.randn(num_rows, dim, generator=generator)
        largest.append(torch.nn.functional.cosine_similarity(rows, vector[None], dim=1).max())
    return torch.stack(largest).median().item()


def chance_mean(num_rows, dim):
    generator = torch.Generator().manual_seed(0)
    vector, rows = torch.randn(dim, generator=generator), torch.randn(num_rows, dim, generator=generator)
    return torch.nn.functional.cosine_similarity(rows, vector[None], dim=1).mean().item()


def chance_dot_products(num_rows, dim):
    generator = torch.Generator().manual_seed(0)
    vector, rows = torch.randn(dim, generator=generator), torch.randn(num_rows, dim, generator=generator)
    return (rows @ vector).max().item()


def chance_positive_rows(num_rows, dim):
    generator = torch.Generator().manual_seed(0)
    vector, rows = torch.rand(dim, generator=generator), torch.rand(num_rows, dim, generator=generator)
    return torch.nn.functional.cosine_similarity(rows, vector[None], dim=1).max().item()


def chance_limit(num_rows, dim):
    return math.sqrt(2 * math.log(num_rows) / dim)


def chance_fixed(num_rows, dim):
    return 0.49


@pytest.mark.parametrize("answer,message", [
    (chance_mean, "the largest of them"), (chance_dot_products, "at most 1"), (chance_positive_rows, "torch.randn"),
    (chance_limit, "large-n limit"), (chance_fixed, "many draws give about 0.24"),
])
def test_18_3_names_the_mistake(answer, message):
    verdict = check("18.3", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_18_3_right_answer_passes():
    assert check("18.3", chance_similarity).passed
