"""Checks for the exercises of lesson 14, guidance."""

from __future__ import annotations

from functools import partial

import math

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor
from sdlearn.guidance import classifier_free_guidance


_close = partial(same_tensor, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, atol=1e-5)


@exercise("14.1", "classifier-free guidance")
def check_cfg(cfg):
    g = torch.Generator().manual_seed(141)
    uncond = torch.randn(2, 4, 8, 8, generator=g)
    cond = uncond + 0.5 * torch.randn(2, 4, 8, 8, generator=g)
    scale = 3.0
    kept_uncond, kept_cond = uncond.clone(), cond.clone()
    got = cfg(uncond, cond, scale)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor, the guided prediction, of the same shape as the two predictions.")
    if not (torch.equal(uncond, kept_uncond) and torch.equal(cond, kept_cond)):
        raise Failed("your function changed its inputs (an in-place operation such as += or .mul_()); the caller "
                     "still needs both predictions. Compute a new tensor instead.")
    if got.shape != cond.shape:
        raise Failed(f"the guided prediction should have the shape of the predictions, {tuple(cond.shape)}, "
                     f"got {tuple(got.shape)}.")
    expected = classifier_free_guidance(uncond, cond, scale)
    wrong = {
        "cond and uncond are swapped: you start from the prompt's prediction and step towards the unconditional "
        "one. Start from uncond and step towards cond: uncond + scale * (cond - uncond).":
            cond + scale * (uncond - cond),
        "you start from cond; start from the unconditional prediction: uncond + scale * (cond - uncond).":
            cond + scale * (cond - uncond),
        "the unconditional prediction is missing: scale * (cond - uncond) is only the step. Add it to uncond.":
            scale * (cond - uncond),
        "the scale multiplies uncond; it belongs to the difference: uncond + scale * (cond - uncond).":
            scale * uncond + (cond - uncond),
        "that scales the prompt's prediction alone; guidance scales the difference between the two predictions.":
            scale * cond,
        "subtract uncond from cond before scaling: uncond + scale * (cond - uncond), not uncond + scale * cond.":
            uncond + scale * cond,
        "you divided the difference by the scale; multiply the difference by it.": uncond + (cond - uncond) / scale,
        "that is the conditional prediction alone; at a scale of 3 guidance goes past it.": cond,
        "that is the unconditional prediction alone; step from it towards cond, scale times the difference.": uncond,
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the result differs from uncond + scale * (cond - uncond).")
    if not _close(cfg(uncond, cond, 0.0), uncond) or not _close(cfg(uncond, cond, 1.0), cond):
        raise Failed("right at scale 3 but not at 0 and 1: scale 0 must give uncond and scale 1 cond. Use the "
                     "scale you are given.")
    if not _close(cfg(uncond, cond, 7.5), classifier_free_guidance(uncond, cond, 7.5), atol=1e-4):
        raise Failed("right at scale 3, wrong at 7.5: use the scale you are given.")
    return "uncond + scale * (cond - uncond): 0 is the unconditional model, 1 the conditional one."


class _CountingUNet:
    """A stand-in for a diffusers UNet2DConditionModel: a made-up, nonlinear function of (x, t, context).

    Each batch element's output depends only on its own latents and context, as in a real U-Net.
    It records the batch size of every call.
    """

    def __init__(self):
        self.batch_sizes: list[int] = []

    def __call__(self, sample, timestep, encoder_hidden_states=None, return_dict=True, **kwargs):
        context = encoder_hidden_states
        if context is None:
            raise Failed("pass the context to the U-Net: unet(x, t, encoder_hidden_states=context).")
        if sample.ndim != 4 or sample.shape[1] != 4:
            raise Failed(f"the U-Net takes latents (batch, 4, h, w); it got {tuple(sample.shape)}. Stack the "
                         "latents along the batch dimension: torch.cat([latents, latents]) (dim=0).")
        if context.ndim != 3 or context.shape[1] != 77:
            raise Failed(f"the U-Net takes contexts (batch, 77, D); it got {tuple(context.shape)}. Stack the "
                         "contexts along the batch dimension (dim=0).")
        if sample.shape[0] != context.shape[0]:
            raise Failed(f"the U-Net got {sample.shape[0]} latents and {context.shape[0]} contexts: the doubled "
                         "batch needs the latents twice, torch.cat([latents, latents]), beside "
                         "torch.cat([negative_context, context]).")
        self.batch_sizes.append(sample.shape[0])
        t = float(timestep)
        summary = context.mean(dim=1)                                       # (B, D)
        gain = 1 + 0.5 * torch.tanh(summary[:, 0])[:, None, None, None]    # (B, 1, 1, 1)
        shift = summary[:, 1:5, None, None]                                 # (B, 4, 1, 1)
        out = gain * sample + torch.sin(sample + shift) * shift.abs() + 1e-3 * t
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def _prediction(unet, latents, t, context) -> torch.Tensor:
    return unet(latents, t, encoder_hidden_states=context).sample


@exercise("14.2", "guidance on the doubled batch, with a negative prompt")
def check_guided_prediction(guided_prediction):
    g = torch.Generator().manual_seed(142)
    latents = torch.randn(2, 4, 8, 8, generator=g)                         # a batch of 2 images
    context = torch.randn(2, 77, 16, generator=g)
    negative = torch.randn(2, 77, 16, generator=g)
    t = torch.tensor(500)
    reference = _CountingUNet()
    cond = _prediction(reference, latents, t, context)
    uncond = _prediction(reference, latents, t, negative)
    scale = 4.0

    unet = _CountingUNet()
    got = guided_prediction(unet, latents.clone(), t, context.clone(), negative.clone(), scale)
    if not isinstance(got, torch.Tensor):
        raise Failed("return the guided prediction as a tensor, (B, 4, h, w). unet(...) returns an output object: "
                     "take its .sample.")
    if tuple(got.shape) == (4, 4, 8, 8):
        raise Failed("that is the U-Net's output for the whole doubled batch; split it in two (.chunk(2)) and "
                     "combine the halves.")
    if got.shape != latents.shape:
        raise Failed(f"the guided prediction should have the shape of the latents, {tuple(latents.shape)}, "
                     f"got {tuple(got.shape)}.")
    if len(unet.batch_sizes) > 1:
        raise Failed(f"you called the U-Net {len(unet.batch_sizes)} times; call it once on the doubled batch "
                     "(latents twice, the negative and the prompt's contexts stacked), as diffusers does.")
    if unet.batch_sizes != [4]:
        raise Failed(f"for a scale above 1 the U-Net should see the doubled batch, 4 latents for 2 images; it saw "
                     f"{unet.batch_sizes[0]}.")
    expected = classifier_free_guidance(uncond, cond, scale)
    wrong = {
        "the halves are swapped: you guided towards the negative prompt. Put the negative context first in the "
        "batch and take the first half of the output as the reference: torch.cat([negative_context, context]).":
            classifier_free_guidance(cond, uncond, scale),
        "that is the prompt's prediction alone: the negative prompt took no part (did you use the prompt's "
        "context in both halves?). The first half of the batch takes negative_context.": cond,
        "the scale went on the reference: uncond + scale * (cond - uncond) scales the difference only.":
            scale * uncond + (cond - uncond),
    }
    _name_the_mistake(got, wrong, atol=1e-4)
    if not _close(got, expected, atol=1e-4):
        raise Failed("the result differs from reference + scale * (prompt - reference), with the U-Net's "
                     "predictions for the negative context (reference) and the context (prompt).")

    for low in (1.0, 0.5):
        unet = _CountingUNet()
        got = guided_prediction(unet, latents, t, context, negative, low)
        if unet.batch_sizes != [2]:
            raise Failed(f"at a guidance scale of {low:g} diffusers switches guidance off: one U-Net call on the "
                         f"prompt alone (a batch of 2 here), not {unet.batch_sizes}. Check `guidance_scale <= 1` "
                         "first.")
        if not isinstance(got, torch.Tensor) or not _close(got, cond, atol=1e-4):
            raise Failed(f"at a guidance scale of {low:g} return the prompt's prediction, unguided, as diffusers "
                         "does (it does not give the unconditional model at 0).")
    return "one U-Net call per step, guidance only above 1: what StableDiffusionPipeline does."


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
