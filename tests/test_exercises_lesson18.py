"""Lesson 18's checks: typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check

# 18.1: put the other rows back


def restore_rows(table, original, new_ids):
    keep = torch.ones(len(table), dtype=torch.bool)
    keep[new_ids] = False
    with torch.no_grad():
        table[keep] = original[keep]


def restore_everything(table, original, new_ids):
    with torch.no_grad():
        table.copy_(original)


def restore_only_the_new(table, original, new_ids):
    with torch.no_grad():
        table[new_ids] = original[new_ids]


def returns_a_copy(table, original, new_ids):
    restored = original.clone()
    restored[new_ids] = table.detach()[new_ids]
    return restored


def copy_into_a_copy(table, original, new_ids):
    keep = torch.ones(len(table), dtype=torch.bool)
    keep[new_ids] = False
    with torch.no_grad():
        table[keep].copy_(original[keep])


def first_new_id_only(table, original, new_ids):
    restore_rows(table, original, new_ids[:1])


def without_no_grad(table, original, new_ids):
    keep = torch.ones(len(table), dtype=torch.bool)
    keep[new_ids] = False
    table[keep] = original[keep]


def into_the_original(table, original, new_ids):
    with torch.no_grad():
        original[new_ids] = table[new_ids]
        table.copy_(original)


@pytest.mark.parametrize("answer,message", [
    (restore_everything, "put the new rows back too"), (restore_only_the_new, "the other way round"),
    (returns_a_copy, "did not change"), (copy_into_a_copy, "writes into a copy"),
    (first_new_id_only, "wrong with two"), (without_no_grad, "torch.no_grad()"),
    (into_the_original, "`original` changed"),
])
def test_18_1_names_the_mistake(answer, message):
    verdict = check("18.1", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_18_1_right_answer_passes():
    assert check("18.1", restore_rows).passed


# 18.2: start from a one-token word

def initial_row(tokenizer, table, word):
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens, not one")
    return table[ids[0]].clone()


def with_special_tokens(tokenizer, table, word):
    return table[tokenizer.encode(word)[0]].clone()


def end_token(tokenizer, table, word):
    return table[tokenizer.encode(word)[-1]].clone()


def token_string(tokenizer, table, word):
    return table[tokenizer.convert_tokens_to_ids(word)].clone()


def a_view(tokenizer, table, word):
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens")
    return table[ids[0]]


def first_piece(tokenizer, table, word):
    return table[tokenizer.encode(word, add_special_tokens=False)[0]].clone()


def average_of_pieces(tokenizer, table, word):
    return table[tokenizer.encode(word, add_special_tokens=False)].mean(0)


def asserts(tokenizer, table, word):
    ids = tokenizer.encode(word, add_special_tokens=False)
    assert len(ids) == 1
    return table[ids[0]].clone()


@pytest.mark.parametrize("answer,message", [
    (with_special_tokens, "<|startoftext|>"), (end_token, "<|endoftext|>"), (token_string, "</w>"),
    (a_view, "view into the table"), (first_piece, "you took the first"), (average_of_pieces, "averaged"),
    (asserts, "raise a ValueError"),
])
def test_18_2_names_the_mistake(answer, message):
    verdict = check("18.2", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_18_2_right_answer_passes():
    assert check("18.2", initial_row).passed


# 18.3: the nearest words

def nearest_tokens(table, vector, k, exclude):
    similarity = torch.nn.functional.cosine_similarity(table, vector[None], dim=1)
    similarity[exclude] = -math.inf
    return similarity.topk(k).indices.tolist()


def dot_product(table, vector, k, exclude):
    scores = table @ vector
    scores[exclude] = -math.inf
    return scores.topk(k).indices.tolist()


def euclidean(table, vector, k, exclude):
    distance = (table - vector).norm(dim=1)
    distance[exclude] = math.inf
    return distance.topk(k, largest=False).indices.tolist()


def least_similar(table, vector, k, exclude):
    similarity = torch.nn.functional.cosine_similarity(table, vector[None], dim=1)
    similarity[exclude] = math.inf
    return similarity.topk(k, largest=False).indices.tolist()


def keeps_excluded(table, vector, k, exclude):
    return torch.nn.functional.cosine_similarity(table, vector[None], dim=1).topk(k).indices.tolist()


def by_id(table, vector, k, exclude):
    return sorted(nearest_tokens(table, vector, k, exclude))


@pytest.mark.parametrize("answer,message", [
    (dot_product, "dot product"), (euclidean, "Euclidean"), (least_similar, "least similar"),
    (keeps_excluded, "exclude"), (by_id, "wrong order"),
])
def test_18_3_names_the_mistake(answer, message):
    verdict = check("18.3", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_18_3_right_answer_passes():
    assert check("18.3", nearest_tokens).passed


# 18.4: weight decay without a gradient

def decayed_row(row, lr, weight_decay, steps):
    return row * (1 - lr * weight_decay) ** steps


def unchanged(row, lr, weight_decay, steps):
    return row.clone()


def without_lr(row, lr, weight_decay, steps):
    return row * (1 - weight_decay) ** steps


def one_step(row, lr, weight_decay, steps):
    return row * (1 - lr * weight_decay)


def linear(row, lr, weight_decay, steps):
    return row * (1 - lr * weight_decay * steps)


def exponential(row, lr, weight_decay, steps):
    return row * math.exp(-lr * weight_decay * steps)


def adam_l2(row, lr, weight_decay, steps):
    weights = torch.nn.Parameter(row.clone())
    optimizer = torch.optim.Adam([weights], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        weights.grad = torch.zeros_like(weights)
        optimizer.step()
    return weights.detach()


@pytest.mark.parametrize("answer,message", [
    (unchanged, "did not move"), (without_lr, "left out the learning rate"), (one_step, "that is one step"),
    (linear, "linear"), (exponential, "exp("), (adam_l2, "torch.optim.Adam's weight_decay"),
])
def test_18_4_names_the_mistake(answer, message):
    verdict = check("18.4", answer)
    assert not verdict.passed and message in verdict.message, verdict


def test_18_4_right_answer_passes():
    assert check("18.4", decayed_row).passed
