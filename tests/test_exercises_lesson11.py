"""Lesson 11's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check

START, END = 49406, 49407


def pad_with_zeros(pieces):
    kept = pieces[:75]
    return [START] + kept + [END] + [0] * (75 - len(kept))


def no_padding(pieces):
    return [START] + pieces[:75] + [END]


def no_truncation(pieces):
    ids = [START] + pieces + [END]
    return ids + [END] * (77 - len(ids))


def keep_the_end(pieces):
    kept = pieces[-75:] if len(pieces) > 75 else pieces
    return [START] + kept + [END] * (76 - len(kept))


def cut_after_the_end(pieces):
    ids = [START] + pieces + [END]
    return (ids + [END] * 77)[:77]


def in_place(pieces):
    pieces.insert(0, START)
    pieces[:] = (pieces[:76] + [END] * 77)[:77]
    return list(pieces)


def tokens_only(ids, token_table, position_table):
    return token_table[ids]


def whole_position_table(ids, token_table, position_table):
    return token_table[ids] + position_table


def concatenated(ids, token_table, position_table):
    n = ids.shape[1]
    return torch.cat([token_table[ids], position_table[:n].expand(ids.shape[0], -1, -1)], dim=-1)


def dot_product(a, b):
    return (a * b).sum(-1)


def normalised_by_column(a, b):
    return (F.normalize(a, dim=0) * F.normalize(b, dim=0)).sum(-1)


def all_pairs(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def last_slot(features, ids):
    return features[:, -1]


def start_token(features, ids):
    return features[:, 0]


def mean_of_all(features, ids):
    return features.mean(1)


def one_position_for_all(features, ids):
    return features[:, ids[0].argmax()]


WRONG = [
    ("11.1", pad_with_zeros, "Stable Diffusion 1.x pads with the end token"),
    ("11.1", no_padding, "now pad"),
    ("11.1", no_truncation, "keep pieces[:75]"),
    ("11.1", keep_the_end, "keeps the first 75"),
    ("11.1", cut_after_the_end, "must still close the prompt"),
    ("11.1", in_place, "changed the list"),
    ("11.2", tokens_only, "add the position embeddings"),
    ("11.2", whole_position_table, "position_table[:N]"),
    ("11.2", concatenated, "concatenated"),
    ("11.3", dot_product, "divide by the lengths"),
    ("11.3", normalised_by_column, "normalise each row"),
    ("11.3", all_pairs, "same position"),
    ("11.4", last_slot, "take the first 49407"),
    ("11.4", start_token, "causal"),
    ("11.4", mean_of_all, "average"),
    ("11.4", one_position_for_all, "row by row"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
