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


# 12.2: a threshold for the CLIP filter

def filter_threshold(similarity, wrong, max_wrong_share):
    ranked, order = similarity.sort(descending=True)
    wrong_kept = wrong[order].float().cumsum(0)
    allowed = wrong_kept <= max_wrong_share * torch.arange(1, len(ranked) + 1)
    k = allowed.nonzero().max().item() + 1
    return ranked[k].item() if k < len(ranked) else ranked[-1].item() - 1.0


def midpoint(similarity, wrong, max_wrong_share):            # another right answer, as a tensor
    ranked, order = similarity.sort(descending=True)
    best = 0
    for k in range(1, len(ranked) + 1):
        if wrong[order[:k]].sum() <= max_wrong_share * k:
            best = k
    if best == len(ranked):
        return ranked[-1] - 0.5
    return (ranked[best - 1] + ranked[best]) / 2


def first_failure(similarity, wrong, max_wrong_share):
    ranked, order = similarity.sort(descending=True)
    for k in range(1, len(ranked) + 1):
        if wrong[order[:k]].sum() > max_wrong_share * k:
            return ranked[k - 1].item()
    return ranked[-1].item() - 1.0


def share_of_all_pairs(similarity, wrong, max_wrong_share):
    ranked, order = similarity.sort(descending=True)
    wrong_kept = wrong[order].float().cumsum(0)
    k = (wrong_kept <= max_wrong_share * len(ranked)).nonzero().max().item() + 1
    return ranked[k].item() if k < len(ranked) else ranked[-1].item() - 1.0


def last_kept_similarity(similarity, wrong, max_wrong_share):     # as if a pair were kept at >= threshold
    ranked, order = similarity.sort(descending=True)
    wrong_kept = wrong[order].float().cumsum(0)
    k = (wrong_kept <= max_wrong_share * torch.arange(1, len(ranked) + 1)).nonzero().max().item() + 1
    return ranked[k - 1].item()


def lessons_threshold(similarity, wrong, max_wrong_share):
    return 0.4


def count_not_threshold(similarity, wrong, max_wrong_share):
    ranked, order = similarity.sort(descending=True)
    wrong_kept = wrong[order].float().cumsum(0)
    return (wrong_kept <= max_wrong_share * torch.arange(1, len(ranked) + 1)).nonzero().max().item() + 1


def limit_fixed(similarity, wrong, max_wrong_share):
    return filter_threshold(similarity, wrong, 0.06)


def assumes_sorted(similarity, wrong, max_wrong_share):
    wrong_kept = wrong.float().cumsum(0)
    k = (wrong_kept <= max_wrong_share * torch.arange(1, len(similarity) + 1)).nonzero().max().item() + 1
    return similarity[k].item() if k < len(similarity) else similarity.min().item() - 1.0


def every_threshold(similarity, wrong, max_wrong_share):
    return similarity.sort(descending=True).values


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
    ("12.2", first_failure, "not only the first that fails"),
    ("12.2", share_of_all_pairs, "You divided by all 60 pairs"),
    ("12.2", last_kept_similarity, "above the threshold (>)"),
    ("12.2", lessons_threshold, "not from the lesson's table"),
    ("12.2", count_not_threshold, "keeps no pair at all"),
    ("12.2", limit_fixed, "Lower it as far as the limit allows"),
    ("12.2", assumes_sorted, "no particular order"),
    ("12.2", every_threshold, "return one threshold"),
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


@pytest.mark.parametrize("answer", [filter_threshold, midpoint])
def test_12_2_every_right_threshold_passes(answer):
    verdict = check("12.2", answer)
    assert verdict.passed, verdict.message
