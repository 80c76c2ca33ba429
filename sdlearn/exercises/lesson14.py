"""Checks for the exercises of lesson 14, guidance."""

from __future__ import annotations

from functools import partial

import math

import torch

from sdlearn.exercises import Failed, as_number, exercise, name_the_mistake, same_tensor


_close = partial(same_tensor, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, atol=1e-5)


@exercise("14.1", "the scale of a loop with its halves swapped")
def check_equivalent_scale(equivalent_scale):
    g = torch.Generator().manual_seed(141)
    reference = torch.randn(1, 4, 8, 8, generator=g)                  # the negative (or empty) prompt's prediction
    prompt = reference + 0.5 * torch.randn(1, 4, 8, 8, generator=g)   # the prompt's prediction
    for scale in (7.5, 3.0, 1.0, 0.0):
        got = as_number(equivalent_scale(scale), "a guidance scale")
        swapped = prompt + scale * (reference - prompt)                 # the colleague's loop: halves swapped
        correct = reference + got * (prompt - reference)                # the right loop at your scale
        if _close(correct, swapped, atol=1e-4):
            continue
        where = f"at a scale of {scale:g} you said {got:g}"
        named = {
            -scale: "the swapped loop computes prompt + s (reference - prompt). Write it as reference + "
                    "s' (prompt - reference): the step starts from the prompt's prediction, not the reference's, "
                    "and that moves s' by one.",
            scale - 1: "close: expand prompt + s (reference - prompt) = reference + (prompt - reference) - "
                       "s (prompt - reference) and read off the factor of (prompt - reference); mind the sign.",
            scale: "the halves are not interchangeable: the prediction of the first half is the point the step "
                   "starts from, the second half is where it points. Swapping them changes the result.",
        }
        if scale != 0:
            named[1 / scale] = "the scale enters linearly; nothing is divided. Expand prompt + s (reference - prompt)."
        for value, message in named.items():
            if abs(got - value) < 1e-6:
                raise Failed(f"{where}: {message}")
        raise Failed(f"{where}, but reference + {got:g} (prompt - reference) differs from what the swapped loop "
                     f"computes, prompt + {scale:g} (reference - prompt).")
    return ("1 - s: at 7.5 the swapped loop guides with -6.5, away from the prompt and towards the negative "
            "prompt; at 1 it returns the negative prompt's prediction alone.")


SHOE_PROMPT = "a photo of a shoe"
MAX_SATURATION = 0.006           # the bar of exercise 14.2: at most 0.6% of the pixels burnt out
_pipeline = {}


def _shoe_measurements(negative_prompt, guidance_scale, n=16):
    """What evaluate_prompt(pipe, SHOE_PROMPT, SHOE_CLASSES, ..., n=16, seed 0) measures: classes and saturation."""
    from sdlearn.metrics import SATURATION_LEVEL, classify, shipped_classifier
    from sdlearn.pipelines import load

    if "pipe" not in _pipeline:
        _pipeline["pipe"] = load("fashion_text2image")
    pipe = _pipeline["pipe"]
    images = pipe([SHOE_PROMPT] * n, negative_prompt=[negative_prompt] * n if negative_prompt else None,
                  guidance_scale=guidance_scale, num_inference_steps=25,
                  generator=torch.Generator().manual_seed(0), output_type="pt").images.float()
    inner = images[..., 2:30, 2:30]                                     # the classifier reads 28x28
    probabilities, _ = classify(shipped_classifier(), inner)
    histogram = torch.bincount(probabilities.argmax(-1), minlength=10).tolist()
    return histogram, (inner >= SATURATION_LEVEL).float().mean().item()


@exercise("14.2", "a negative prompt and a scale, chosen by experiment")
def check_no_sneakers(no_sneakers):
    from sdlearn.data import FASHION_CLASSES, SHOE_CLASSES

    answer = no_sneakers()
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Failed("return two things, (negative_prompt, guidance_scale), for example (\"a photo of a bag\", 4.0).")
    negative, scale = answer
    if negative is not None and not isinstance(negative, str):
        raise Failed(f"the negative prompt is a string (or None), not {type(negative).__name__}.")
    if isinstance(scale, torch.Tensor):
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise Failed(f"the guidance scale is a number, not {type(scale).__name__}.")
    scale = float(scale)
    if scale <= 1:
        raise Failed(f"at a guidance scale of {scale:g} diffusers switches guidance off (uses_guidance is False): "
                     "the U-Net runs on the prompt alone and the negative prompt is never used. Choose a scale "
                     "above 1.")
    if negative is not None and negative.strip() == SHOE_PROMPT:
        raise Failed("with the prompt as its own negative prompt the two predictions are the same, their difference "
                     "is zero, and guidance does nothing at any scale.")
    histogram, saturation = _shoe_measurements(negative, scale)
    n = sum(histogram)
    sneakers = histogram[7]
    shoes = sum(histogram[c] for c in SHOE_CLASSES)
    setting = f"with negative prompt {negative!r} at {scale:g}"
    if sneakers:
        if not negative:
            raise Failed(f"{setting}, {sneakers} of {n} images are sneakers: without a negative prompt guidance "
                         "pushes towards shoes, all three kinds, and away from nothing. Name what you do not want.")
        raise Failed(f"{setting}, {sneakers} of {n} images are still sneakers: push harder (a larger scale) or with "
                     "a negative prompt that describes sneakers.")
    if shoes < n:
        others = ", ".join(f"{FASHION_CLASSES[c]} {k}" for c, k in enumerate(histogram) if k and c not in SHOE_CLASSES)
        raise Failed(f"{setting}, only {shoes} of {n} images are shoes ({others}): the push away from the negative "
                     "prompt also pushed away from shoes.")
    if saturation > MAX_SATURATION:
        raise Failed(f"{setting}, no sneakers and {n} shoes, but {saturation:.2%} of the pixels are burnt out, more "
                     f"than {MAX_SATURATION:.1%}: the push overshoots. Lower the scale, or use a vaguer negative "
                     "prompt (the table above: the caption at 7.5 burns out far more than the bare word).")
    counts = ", ".join(f"{FASHION_CLASSES[c]} {histogram[c]}" for c in SHOE_CLASSES)
    return (f"{counts}, {saturation:.2%} of the pixels burnt out: no sneakers, all shoes, within the bar. The window "
            "is narrow: too weak a push leaves sneakers, too strong a one burns the images out.")


@exercise("14.3", "choosing a guidance scale from a measured table")
def check_pick_scale(pick_scale):
    #        scale, accuracy, diversity
    table = [(7.5, 0.95, 0.62),
             (5.0, 0.93, 0.70),
             (1.0, 0.70, 1.10),
             (3.0, 0.90, 0.80),
             (2.0, 0.90, 0.85),
             (12.0, 0.97, 0.50)]
    got = pick_scale(list(table), 0.70)
    if type(got) is int and got == 1:
        raise Failed("you returned the row number; return the guidance scale of the best row.")
    if got in (0.93, 0.95, 0.97, 0.90, 0.70):
        raise Failed("you returned an accuracy; return the guidance scale of the best row.")
    messages = {
        12.0: "12 has the highest accuracy, but its diversity 0.50 is below the floor: keep only the rows whose "
              "diversity is at least min_diversity.",
        7.5: "7.5 has diversity 0.62, below the floor of 0.70: keep the rows above the floor first, then take the "
             "best accuracy among them.",
        1.0: "1 is the most diverse row; among the rows that pass the floor, take the one with the highest accuracy.",
        3.0: "5 (accuracy 0.93) has diversity exactly 0.70, which meets a floor of 0.70: 'at least' means >=, not >.",
        2.0: "5 (accuracy 0.93) has diversity exactly 0.70, which meets a floor of 0.70: 'at least' means >=, not >.",
    }
    if got in messages:
        raise Failed(messages[got])
    if got != 5.0:
        raise Failed(f"for a diversity floor of 0.70 the answer is 5 (accuracy 0.93, diversity 0.70), got {got!r}.")
    got = pick_scale(list(table), 0.71)
    if got == 5.0:
        raise Failed("with a floor of 0.71 the row with diversity 0.70 no longer qualifies: use the floor you "
                     "are given.")
    if got == 3.0:
        raise Failed("3 and 2 tie at accuracy 0.90 above a floor of 0.71: on a tie take the smaller scale, 2.")
    if got != 2.0:
        raise Failed(f"with a floor of 0.71 the answer is 2 (3 and 2 tie at accuracy 0.90, and on a tie the "
                     f"smaller scale wins), got {got!r}.")
    if pick_scale(list(reversed(table)), 0.71) != 2.0:
        raise Failed("with the rows in the opposite order your answer changes: on a tie take the smaller scale, "
                     "whatever the order of the table.")
    got = pick_scale(list(table), 1.5)
    if got is not None:
        raise Failed(f"no row has diversity 1.5 or more: return None, not {got!r}.")
    if pick_scale([], 0.5) is not None:
        raise Failed("an empty table has no answer: return None.")
    return "the most accurate scale that keeps enough variety."


@exercise("14.4", "a cross-attention map from queries and keys")
def check_cross_attention_map(cross_attention_map):
    g = torch.Generator().manual_seed(144)
    b, n, m, heads, d = 2, 12, 7, 4, 6              # N image positions and M tokens differ, so a transpose shows
    query = 2 * torch.randn(b, n, heads * d, generator=g)
    key = 2 * torch.randn(b, m, heads * d, generator=g)
    q = query.view(b, n, heads, d).transpose(1, 2)                     # (B, heads, N, d)
    k = key.view(b, m, heads, d).transpose(1, 2)                       # (B, heads, M, d)
    scores = q @ k.transpose(-1, -2)                                   # (B, heads, N, M)
    expected = (scores / math.sqrt(d)).softmax(-1).mean(1)             # (B, N, M)
    got = cross_attention_map(query.clone(), key.clone(), heads)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of attention probabilities, shape (B, N, M).")
    if tuple(got.shape) == (b, heads, n, m):
        raise Failed("that is one map per head, (B, heads, N, M); average over the heads (dim=1).")
    if tuple(got.shape) == (b, m, n):
        raise Failed("that is (B, M, N); return one row per image position: (B, N, M).")
    if got.shape != expected.shape:
        raise Failed(f"for B=2, N=12 positions and M=7 tokens return (2, 12, 7), got {tuple(got.shape)}.")
    got = got.detach().float()
    if torch.allclose(got.sum(1), torch.ones(b, m), atol=1e-4) and not torch.allclose(got.sum(-1), torch.ones(b, n),
                                                                                          atol=1e-4):
        raise Failed("your weights sum to 1 over the image positions; cross-attention takes the softmax over the "
                     "tokens (the last dimension, the keys), so that each position's weights sum to 1.")
    q_wrong = query.view(b, n, d, heads).transpose(-1, -2).transpose(1, 2)   # heads taken as the last, fast axis
    k_wrong = key.view(b, m, d, heads).transpose(-1, -2).transpose(1, 2)
    wrong = {
        "you did not divide by sqrt(d): the scores are q k^T / sqrt(d), with d the width of one head.":
            scores.softmax(-1).mean(1),
        "divide by the square root of one head's width d, not of the whole width heads * d.":
            (scores / math.sqrt(heads * d)).softmax(-1).mean(1),
        "you divided by d; divide by sqrt(d).": (scores / d).softmax(-1).mean(1),
        "you summed over the heads; take the mean, so that the weights still sum to 1 over the tokens.":
            (scores / math.sqrt(d)).softmax(-1).sum(1),
        "the heads are split the wrong way: each head is a block of d consecutive numbers, so reshape to "
        "(B, N, heads, d), not (B, N, d, heads).":
            (q_wrong @ k_wrong.transpose(-1, -2) / math.sqrt(d)).softmax(-1).mean(1),
        "you did not split into heads: one softmax over all heads * d numbers is a single-head attention. Reshape "
        "to (B, N, heads, d), take a softmax per head, then average.":
            (query @ key.transpose(-1, -2) / math.sqrt(d)).softmax(-1),
        "that is a single head over the whole width: split into heads, with sqrt(d) of one head.":
            (query @ key.transpose(-1, -2) / math.sqrt(heads * d)).softmax(-1),
        "you averaged the scores over the heads and then took one softmax; take the softmax per head, then "
        "average the probabilities.": (scores / math.sqrt(d)).mean(1).softmax(-1),
    }
    _name_the_mistake(got, wrong, atol=1e-5)
    if not torch.allclose(got.sum(-1), torch.ones(b, n), atol=1e-4):
        raise Failed("each image position's weights should sum to 1 over the tokens: a softmax over the last "
                     "dimension of q k^T.")
    if not _close(got, expected, atol=1e-5):
        raise Failed("the map differs from softmax(q k^T / sqrt(d)) per head, averaged over the heads.")
    again = cross_attention_map(query, key, 2)
    q2 = query.view(b, n, 2, 12).transpose(1, 2)
    k2 = key.view(b, m, 2, 12).transpose(1, 2)
    if not _close(again, (q2 @ k2.transpose(-1, -2) / math.sqrt(12)).softmax(-1).mean(1), atol=1e-5):
        raise Failed("right for 4 heads, wrong for 2: use the number of heads you are given, d = width // heads.")
    return "what sdlearn.attention_maps records from every cross-attention layer."
