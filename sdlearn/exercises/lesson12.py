"""Checks for the exercises of lesson 12, CLIP."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor
from sdlearn.models.clip import retrieve


_close = partial(same_tensor, atol=1e-4)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, atol=1e-4)


def _features(n, d, generator, low=0.3, high=4.0):
    """n random vectors of d numbers with very different lengths, so that forgetting to normalise shows."""
    lengths = low + (high - low) * torch.rand(n, 1, generator=generator)
    return F.normalize(torch.randn(n, d, generator=generator), dim=-1) * lengths


@exercise("12.1", "the similarity grid as logits")
def check_clip_logits(clip_logits):
    g = torch.Generator().manual_seed(121)
    images, texts = _features(5, 8, g), _features(4, 8, g)     # 5 images and 4 captions: rows and columns differ
    temperature = 0.1
    got = clip_logits(images.clone(), texts.clone(), temperature)
    cosine = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T     # (5, 4)
    expected = cosine / temperature
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of logits, shape (N_images, N_texts).")
    if tuple(got.shape) == (4, 5):
        raise Failed("that is (N_texts, N_images); one row per image: image_features @ text_features.T.")
    if got.shape != expected.shape:
        raise Failed(f"for 5 images and 4 captions the logits should have shape (5, 4), got {tuple(got.shape)}.")
    if torch.allclose(got.detach().sum(-1), torch.ones(5), atol=1e-4):
        raise Failed("each row sums to 1: those are probabilities. Return the logits (scaled similarities); the "
                     "softmax belongs to the loss.")
    normalised_images = F.normalize(images, dim=-1)
    normalised_texts = F.normalize(texts, dim=-1)
    wrong = {
        "you did not normalise: divide each embedding by its length (F.normalize(x, dim=-1)) so that the "
        "similarity is the cosine, between -1 and 1, whatever the lengths.": images @ texts.T / temperature,
        "normalise the text embeddings too, not only the image embeddings.": normalised_images @ texts.T / temperature,
        "normalise the image embeddings too, not only the text embeddings.": images @ normalised_texts.T / temperature,
        "you normalised each column (dim=0); normalise each embedding, one row of D numbers (dim=-1).":
            F.normalize(images, dim=0) @ F.normalize(texts, dim=0).T / temperature,
        "you multiplied by the temperature; divide by it. A small temperature makes the logits larger and the "
        "softmax sharper (CLIP's logit_scale is 1 / temperature).": cosine * temperature,
        "those are the cosine similarities; divide them by the temperature.": cosine,
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the logits differ from cos(image_i, text_j) / temperature.")
    again = clip_logits(images, texts, 0.02)
    if not _close(again, cosine / 0.02, atol=1e-3):
        raise Failed("right for temperature 0.1, wrong for 0.02: use the temperature you are given.")
    return "cos(image_i, text_j) / temperature, what SmallCLIP's forward returns."


def _filter_data():
    """60 pairs whose similarities are all different, listed in a random order, with 12 wrong captions.

    Ranked from the most similar down, the wrong captions sit at ranks 2 (so the share of wrong pairs
    among the kept first rises above any small limit, then falls again), 30, 33, 41, ... (the tail).
    The similarities lie between -0.25 and 0.35, a scale other than the lesson's.
    """
    g = torch.Generator().manual_seed(122)
    n = 60
    ranked = torch.linspace(0.35, -0.25, n, dtype=torch.float64)
    ranked = ranked + 0.004 * torch.rand(n, generator=g, dtype=torch.float64)    # distinct, not evenly spaced
    wrong_ranks = [2, 30, 33, 41, 45, 47, 49, 52, 53, 55, 56, 58]
    wrong_ranked = torch.zeros(n, dtype=torch.bool)
    wrong_ranked[wrong_ranks] = True
    shuffle = torch.randperm(n, generator=g)
    return ranked[shuffle].float(), wrong_ranked[shuffle]


def _as_threshold(answer):
    """The student's threshold as a Python float, or Failed."""
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1:
            raise Failed(f"return one threshold, a single number, not a tensor of shape {tuple(answer.shape)}.")
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        try:
            answer = float(answer)              # numpy numbers
        except (TypeError, ValueError):
            raise Failed(f"return the threshold, one number, not {type(answer).__name__}.") from None
    if math.isnan(answer):
        raise Failed("the threshold is NaN: a comparison with NaN keeps nothing.")
    return float(answer)


def _grade_threshold(filter_threshold, similarity, wrong, max_wrong_share):
    """Run the student's function once and judge the pairs its threshold keeps."""
    threshold = _as_threshold(filter_threshold(similarity.clone(), wrong.clone(), max_wrong_share))
    ranked, order = similarity.double().sort(descending=True)
    wrong_ranked = wrong[order]
    counts = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    wrong_counts = wrong_ranked.double().cumsum(0)
    allowed = wrong_counts <= max_wrong_share * counts + 1e-9          # keeping the first k passes the limit
    best = allowed.nonzero().max().item() + 1                           # the most pairs one may keep
    best_right = (~wrong_ranked[:best]).sum().item()
    kept = similarity.double() > threshold
    n_kept, n_wrong = kept.sum().item(), (kept & wrong).sum().item()
    n_right = n_kept - n_wrong
    first_failure = (~allowed).nonzero().min().item() if not allowed.all() else len(ranked)
    limit = f"{max_wrong_share:.0%}"
    if n_kept == 0:
        raise Failed(f"your threshold {threshold:.3f} keeps no pair at all (the similarities here lie between "
                     f"{similarity.min().item():.2f} and {similarity.max().item():.2f}). A threshold belongs to "
                     "its model and data: compute it from the similarities you are given, not from the lesson's table.")
    in_given_order = wrong.double().cumsum(0) <= max_wrong_share * counts + 1e-9     # as if already sorted
    k = in_given_order.nonzero().max().item() + 1
    if k < len(similarity) and torch.equal(kept, similarity.double() > similarity[k].double()):
        raise Failed("the pairs come in no particular order: you counted the wrong captions in the order given. "
                     "Rank the pairs by similarity first (most similar first), then count.")
    if n_wrong > max_wrong_share * n_kept + 1e-9:
        overall = n_wrong / len(similarity)
        if overall <= max_wrong_share + 1e-9:
            raise Failed(f"of the {n_kept} pairs your threshold keeps, {n_wrong} ({n_wrong / n_kept:.1%}) have a wrong "
                         f"caption, more than the {limit} allowed. You divided by all {len(similarity)} pairs "
                         f"({overall:.1%}); the limit is on the share among the pairs kept: wrong kept / kept.")
        raise Failed(f"of the {n_kept} pairs your threshold keeps, {n_wrong} ({n_wrong / n_kept:.1%}) have a wrong "
                     f"caption, more than the {limit} allowed.")
    if n_right < best_right:
        if n_kept == best - 1 and abs(threshold - ranked[best - 1].item()) < 1e-6:
            raise Failed("your threshold is the similarity of the last pair you meant to keep, and a pair is kept "
                         "only when its similarity is above the threshold (>), so that pair is lost. Return something "
                         "just below it, for example the next pair's similarity.")
        if n_kept <= first_failure:
            raise Failed(f"your threshold keeps only the {n_kept} most similar pairs: it stops where the share of wrong "
                         f"captions first goes over {limit}. Further down that share falls again, as right pairs "
                         f"are added: a lower threshold keeps {best_right} right pairs within the limit. Look at every "
                         "possible threshold, not only the first that fails.")
        raise Failed(f"your threshold keeps {n_right} right pairs; a lower one keeps {best_right} with at most "
                     f"{limit} wrong captions among the kept. Lower it as far as the limit allows.")
    return threshold


@exercise("12.2", "a threshold for the CLIP filter")
def check_filter_threshold(filter_threshold):
    similarity, wrong = _filter_data()
    _grade_threshold(filter_threshold, similarity, wrong, 0.06)
    _grade_threshold(filter_threshold, similarity, wrong, 0.15)      # another limit: use the one you are given
    threshold = _grade_threshold(filter_threshold, similarity, wrong, 0.3)   # every pair may be kept
    if not (similarity.double() > threshold).all():
        raise Failed("with a limit of 30% every pair may be kept: return a threshold below the smallest similarity.")
    return ("the longest list of most similar pairs whose share of wrong captions stays within the limit, and a "
            "threshold just below its last pair.")


@exercise("12.3", "zero-shot prediction from embeddings")
def check_zero_shot_predict(zero_shot_predict):
    g = torch.Generator().manual_seed(123)
    images = _features(40, 8, g)
    texts = _features(5, 8, g, low=0.2, high=5.0)           # one prompt embedding per class, of very different lengths
    cosine = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T       # (40, 5)
    expected = cosine.argmax(dim=1)
    got = zero_shot_predict(images.clone(), texts.clone())
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of class indices, one per image.")
    if tuple(got.shape) == (5,):
        raise Failed("that is one answer per class (the argmax over the images, dim=0); take the argmax over the "
                     "classes (dim=1) to get one class per image.")
    if tuple(got.shape) == (40, 5):
        raise Failed("that is the whole similarity matrix; return the index of the best class for each image "
                     "(argmax over dim=1), shape (N,).")
    if got.shape != expected.shape:
        raise Failed(f"for 40 images and 5 classes return 40 class indices, shape (40,), got {tuple(got.shape)}.")
    if got.dtype.is_floating_point:
        raise Failed("return class indices (integers, as argmax gives them), not similarities or probabilities.")
    got = got.long()
    if torch.equal(got, (images @ texts.T).argmax(1)) and not torch.equal(got, expected):
        raise Failed("normalise the text embeddings: with raw dot products, a class whose prompt embedding is "
                     "longer wins for many images whatever they show. Compare directions: the cosine.")
    if torch.equal(got, cosine.argmin(1)):
        raise Failed("that is the least similar class; take the most similar one (argmax).")
    if not torch.equal(got, expected):
        raise Failed("for each image, predict the class whose prompt embedding has the largest cosine similarity "
                     "with the image embedding.")
    return "the class whose prompt is most similar to the image: zero-shot classification."


@exercise("12.4", "top-k retrieval")
def check_top_k_images(top_k_images):
    g = torch.Generator().manual_seed(124)
    gallery = _features(30, 8, g, low=0.1, high=6.0)
    query = _features(1, 8, g)[0]                            # one caption embedding, shape (D,)
    _, expected = retrieve(query[None], gallery, k=5)
    expected = expected[0]
    got = top_k_images(query.clone(), gallery.clone(), 5)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of k image indices.")
    if tuple(got.shape) == (1, 5):
        raise Failed("return a 1-D tensor of k indices for the one query, shape (k,), not (1, k).")
    if got.shape != expected.shape:
        raise Failed(f"with k = 5 return 5 indices, shape (5,), got {tuple(got.shape)}.")
    if got.dtype.is_floating_point:
        raise Failed("return the indices of the images (topk's .indices or argsort), not their similarities.")
    got = got.long()
    cosine = F.normalize(gallery, dim=-1) @ F.normalize(query, dim=0)        # (30,)
    dots = gallery @ query
    if torch.equal(got, dots.topk(5).indices) and not torch.equal(got, expected):
        raise Failed("normalise the image embeddings: a raw dot product ranks long vectors first whatever their "
                     "direction. Rank by cosine similarity.")
    if torch.equal(got, cosine.topk(5, largest=False).indices):
        raise Failed("those are the 5 least similar images; take the largest similarities.")
    if not torch.equal(got, expected):
        if sorted(got.tolist()) == sorted(expected.tolist()):
            raise Failed("the right images in the wrong order: sort them best first.")
        raise Failed("return the indices of the k images with the largest cosine similarity to the query, best first.")
    got = top_k_images(query, gallery, 12)
    if not isinstance(got, torch.Tensor) or got.shape != (12,) or not torch.equal(
            got.long(), retrieve(query[None], gallery, k=12)[1][0]):
        raise Failed("right for k = 5, wrong for k = 12: return as many indices as k asks for.")
    return "equal to sdlearn.models.clip.retrieve."
