"""Lesson 14's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import math

import pytest
import torch

from sdlearn.exercises import check


# 14.1: classifier-free guidance

def cfg_right(uncond, cond, scale):
    return uncond + scale * (cond - uncond)


def cfg_other_form(uncond, cond, scale):          # the same thing, written as diffusers' docs sometimes do
    return scale * cond + (1 - scale) * uncond


def cfg_swapped(uncond, cond, scale):
    return cond + scale * (uncond - cond)


def cfg_from_cond(uncond, cond, scale):
    return cond + scale * (cond - uncond)


def cfg_missing_uncond(uncond, cond, scale):
    return scale * (cond - uncond)


def cfg_scale_on_uncond(uncond, cond, scale):
    return scale * uncond + (cond - uncond)


def cfg_scaled_cond(uncond, cond, scale):
    return scale * cond


def cfg_no_difference(uncond, cond, scale):
    return uncond + scale * cond


def cfg_divided(uncond, cond, scale):
    return uncond + (cond - uncond) / scale


def cfg_cond_only(uncond, cond, scale):
    return cond


def cfg_in_place(uncond, cond, scale):
    uncond += scale * (cond - uncond)
    return uncond


def cfg_fixed_scale(uncond, cond, scale):
    return uncond + 3.0 * (cond - uncond)


# 14.2: guidance on the doubled batch

def guided_right(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    out = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([negative_context, context]))[0]
    reference, prompt = out.chunk(2)
    return reference + guidance_scale * (prompt - reference)


def guided_swapped(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    out = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([context, negative_context])).sample
    reference, prompt = out.chunk(2)
    return reference + guidance_scale * (prompt - reference)


def guided_two_calls(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    reference = unet(latents, t, encoder_hidden_states=negative_context).sample
    prompt = unet(latents, t, encoder_hidden_states=context).sample
    return reference + guidance_scale * (prompt - reference)


def guided_always(unet, latents, t, context, negative_context, guidance_scale):
    out = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([negative_context, context])).sample
    reference, prompt = out.chunk(2)
    return reference + guidance_scale * (prompt - reference)


def guided_latents_once(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    out = unet(latents, t, encoder_hidden_states=torch.cat([negative_context, context])).sample
    reference, prompt = out.chunk(2)
    return reference + guidance_scale * (prompt - reference)


def guided_no_split(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    return unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([negative_context, context])).sample


def guided_prompt_twice(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    out = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([context, context])).sample
    reference, prompt = out.chunk(2)
    return reference + guidance_scale * (prompt - reference)


def guided_channels(unet, latents, t, context, negative_context, guidance_scale):
    if guidance_scale <= 1:
        return unet(latents, t, encoder_hidden_states=context).sample
    out = unet(torch.cat([latents, latents], dim=1), t,
               encoder_hidden_states=torch.cat([negative_context, context])).sample
    reference, prompt = out.chunk(2)
    return reference + guidance_scale * (prompt - reference)


def guided_output_object(unet, latents, t, context, negative_context, guidance_scale):
    return unet(latents, t, encoder_hidden_states=context)


# 14.3: picking a scale

def pick_right(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    if not allowed:
        return None
    return max(allowed, key=lambda row: (row[1], -row[0]))[0]


def pick_no_floor(table, min_diversity):
    return max(table, key=lambda row: (row[1], -row[0]))[0]


def pick_strict(table, min_diversity):
    allowed = [row for row in table if row[2] > min_diversity]
    return max(allowed, key=lambda row: (row[1], -row[0]))[0] if allowed else None


def pick_most_diverse(table, min_diversity):
    return max(table, key=lambda row: row[2])[0]


def pick_accuracy(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: row[1])[1] if allowed else None


def pick_row_number(table, min_diversity):
    allowed = [i for i, row in enumerate(table) if row[2] >= min_diversity]
    return max(allowed, key=lambda i: table[i][1]) if allowed else None


def pick_first_in_table(table, min_diversity):       # ties go to whichever row comes first
    best = None
    for row in table:
        if row[2] >= min_diversity and (best is None or row[1] > best[1]):
            best = row
    return None if best is None else best[0]


def pick_last_in_table(table, min_diversity):        # ties go to whichever row comes last
    best = None
    for row in table:
        if row[2] >= min_diversity and (best is None or row[1] >= best[1]):
            best = row
    return None if best is None else best[0]


def pick_larger_on_tie(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: (row[1], row[0]))[0] if allowed else None


def pick_raises_when_empty(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: (row[1], -row[0]))[0]


def pick_zero_when_empty(table, min_diversity):
    allowed = [row for row in table if row[2] >= min_diversity]
    return max(allowed, key=lambda row: (row[1], -row[0]))[0] if allowed else 0.0


# 14.4: a cross-attention map

def _split(x, heads):
    b, n, width = x.shape
    return x.view(b, n, heads, width // heads).transpose(1, 2)        # (B, heads, N, d)


def attention_right(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1).mean(1)


def attention_over_positions(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-2).mean(1)


def attention_unscaled(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2)).softmax(-1).mean(1)


def attention_full_width_scale(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(query.shape[-1])).softmax(-1).mean(1)


def attention_per_head(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)


def attention_summed_heads(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1).sum(1)


def attention_wrong_split(query, key, heads):
    b, n, width = query.shape
    m, d = key.shape[1], width // heads
    q = query.view(b, n, d, heads).permute(0, 3, 1, 2)                # heads as the fast axis: wrong
    k = key.view(b, m, d, heads).permute(0, 3, 1, 2)
    return (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1).mean(1)


def attention_one_head(query, key, heads):
    d = query.shape[-1] // heads
    return (query @ key.transpose(-1, -2) / math.sqrt(d)).softmax(-1)


def attention_transposed(query, key, heads):
    return attention_right(query, key, heads).transpose(1, 2)


def attention_mean_before_softmax(query, key, heads):
    q, k = _split(query, heads), _split(key, heads)
    return (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).mean(1).softmax(-1)


def attention_fixed_heads(query, key, heads):
    return attention_right(query, key, 4)


RIGHT = [("14.1", cfg_right), ("14.1", cfg_other_form), ("14.2", guided_right), ("14.3", pick_right),
         ("14.4", attention_right)]

WRONG = [
    ("14.1", cfg_swapped, "cond and uncond are swapped"),
    ("14.1", cfg_from_cond, "you start from cond"),
    ("14.1", cfg_missing_uncond, "the unconditional prediction is missing"),
    ("14.1", cfg_scale_on_uncond, "the scale multiplies uncond"),
    ("14.1", cfg_scaled_cond, "scales the prompt's prediction alone"),
    ("14.1", cfg_no_difference, "subtract uncond from cond"),
    ("14.1", cfg_divided, "multiply the difference"),
    ("14.1", cfg_cond_only, "the conditional prediction alone"),
    ("14.1", cfg_in_place, "changed its inputs"),
    ("14.1", cfg_fixed_scale, "Use the scale you are given"),
    ("14.2", guided_swapped, "the halves are swapped"),
    ("14.2", guided_two_calls, "call it once on the doubled batch"),
    ("14.2", guided_always, "switches guidance off"),
    ("14.2", guided_latents_once, "needs the latents twice"),
    ("14.2", guided_no_split, "split it in two"),
    ("14.2", guided_prompt_twice, "the negative prompt took no part"),
    ("14.2", guided_channels, "along the batch dimension"),
    ("14.2", guided_output_object, "take its .sample"),
    ("14.3", pick_no_floor, "below the floor"),
    ("14.3", pick_strict, "'at least' means >="),
    ("14.3", pick_most_diverse, "most diverse"),
    ("14.3", pick_accuracy, "you returned an accuracy"),
    ("14.3", pick_row_number, "row number"),
    ("14.3", pick_first_in_table, "on a tie take the smaller scale, 2."),
    ("14.3", pick_last_in_table, "whatever the order"),
    ("14.3", pick_larger_on_tie, "on a tie take the smaller scale, 2."),
    ("14.3", pick_raises_when_empty, "raised ValueError"),
    ("14.3", pick_zero_when_empty, "return None"),
    ("14.4", attention_over_positions, "sum to 1 over the image positions"),
    ("14.4", attention_unscaled, "did not divide by sqrt(d)"),
    ("14.4", attention_full_width_scale, "not of the whole width"),
    ("14.4", attention_per_head, "average over the heads"),
    ("14.4", attention_summed_heads, "you summed over the heads"),
    ("14.4", attention_wrong_split, "the heads are split the wrong way"),
    ("14.4", attention_one_head, "you did not split into heads"),
    ("14.4", attention_transposed, "(B, M, N)"),
    ("14.4", attention_mean_before_softmax, "averaged the scores over the heads"),
    ("14.4", attention_fixed_heads, "use the number of heads you are given"),
]


@pytest.mark.parametrize("exercise_id, answer", RIGHT, ids=[f"{r[0]}-{r[1].__name__}" for r in RIGHT])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
