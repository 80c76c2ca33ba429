"""Lesson 12's checks: typical wrong answers fail with a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check


# 12.1: the similarity grid as logits

def unnormalised(image_features, text_features, temperature):
    return image_features @ text_features.T / temperature


def only_images_normalised(image_features, text_features, temperature):
    return F.normalize(image_features, dim=-1) @ text_features.T / temperature


def normalised_by_column(image_features, text_features, temperature):
    return F.normalize(image_features, dim=0) @ F.normalize(text_features, dim=0).T / temperature


def times_temperature(image_features, text_features, temperature):
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T * temperature


def no_temperature(image_features, text_features, temperature):
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def texts_by_images(image_features, text_features, temperature):
    return F.normalize(text_features, dim=-1) @ F.normalize(image_features, dim=-1).T / temperature


def probabilities(image_features, text_features, temperature):
    return (F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T / temperature).softmax(-1)


def fixed_temperature(image_features, text_features, temperature):
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T / 0.1


# 12.2: the symmetric contrastive loss

def rows_only(logits):
    return F.cross_entropy(logits, torch.arange(len(logits)))


def columns_only(logits):
    return logits.log_softmax(dim=0).diagonal().neg().mean()


def both_rows(logits):                       # the softmax taken over the same axis twice
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits, targets)) / 2


def summed_directions(logits):
    targets = torch.arange(len(logits))
    return F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)


def summed_over_batch(logits):
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets, reduction="sum") + F.cross_entropy(logits.T, targets, reduction="sum")) / 2


def without_minus(logits):
    return (logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2


def without_log(logits):
    return -(logits.softmax(1).diagonal().mean() + logits.softmax(0).diagonal().mean()) / 2


def as_float(logits):
    targets = torch.arange(len(logits))
    return ((F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2).item()


def per_pair(logits):
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets, reduction="none") + F.cross_entropy(logits.T, targets, reduction="none")) / 2


# 12.3: zero-shot prediction

def dot_products(image_features, text_features):
    return (image_features @ text_features.T).argmax(dim=1)


def best_image_per_class(image_features, text_features):
    return (F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T).argmax(dim=0)


def similarity_matrix(image_features, text_features):
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def least_similar(image_features, text_features):
    return (F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T).argmin(dim=1)


def best_similarity(image_features, text_features):
    return (F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T).max(dim=1).values


# 12.4: top-k retrieval

def _cosine(text_feature, image_features):
    return F.normalize(image_features, dim=-1) @ F.normalize(text_feature, dim=0)


def raw_dot_topk(text_feature, image_features, k):
    return (image_features @ text_feature).topk(k).indices


def smallest_first(text_feature, image_features, k):
    return _cosine(text_feature, image_features).topk(k, largest=False).indices


def unsorted(text_feature, image_features, k):
    return _cosine(text_feature, image_features).topk(k).indices.sort().values


def scores_not_indices(text_feature, image_features, k):
    return _cosine(text_feature, image_features).topk(k).values


def kept_batch_axis(text_feature, image_features, k):
    return _cosine(text_feature, image_features)[None].topk(k, dim=-1).indices


def always_five(text_feature, image_features, k):
    return _cosine(text_feature, image_features).topk(5).indices


WRONG = [
    ("12.1", unnormalised, "you did not normalise"),
    ("12.1", only_images_normalised, "normalise the text embeddings too"),
    ("12.1", normalised_by_column, "normalised each column"),
    ("12.1", times_temperature, "divide by it"),
    ("12.1", no_temperature, "divide them by the temperature"),
    ("12.1", texts_by_images, "one row per image"),
    ("12.1", probabilities, "those are probabilities"),
    ("12.1", fixed_temperature, "use the temperature you are given"),
    ("12.2", rows_only, "only the image-to-text half"),
    ("12.2", columns_only, "only the text-to-image half"),
    ("12.2", both_rows, "only the image-to-text half"),
    ("12.2", summed_directions, "average them"),
    ("12.2", summed_over_batch, "take the mean"),
    ("12.2", without_minus, "minus the log-probability"),
    ("12.2", without_log, "take the log"),
    ("12.2", as_float, "not a Python float"),
    ("12.2", per_pair, "return one number"),
    ("12.3", dot_products, "normalise the text embeddings"),
    ("12.3", best_image_per_class, "argmax over the classes"),
    ("12.3", similarity_matrix, "whole similarity matrix"),
    ("12.3", least_similar, "least similar class"),
    ("12.3", best_similarity, "not similarities"),
    ("12.4", raw_dot_topk, "normalise the image embeddings"),
    ("12.4", smallest_first, "least similar images"),
    ("12.4", unsorted, "wrong order"),
    ("12.4", scores_not_indices, "not their similarities"),
    ("12.4", kept_batch_axis, "not (1, k)"),
    ("12.4", always_five, "as many indices as k"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
