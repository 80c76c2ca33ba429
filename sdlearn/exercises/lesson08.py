"""Checks for the exercises of lesson 08, attention."""

from __future__ import annotations

import math

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.models.attention import merge_heads, split_heads


def _weights_on_keys(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention weights of one query (d,) over keys (M, d), in float64."""
    return (keys.double() @ q.double() / math.sqrt(keys.shape[1])).softmax(dim=0)


def _query_cases():
    g = torch.Generator().manual_seed(81)
    cases = [("three unit keys in 4 dimensions", torch.eye(4)[:3], 1)]
    longer_neighbour = torch.tensor([[1.0, 0.0, 0.0, 0.0],       # key 0, the target
                                     [2.0, 1.0, 0.0, 0.0],       # longer, and leaning the same way
                                     [0.0, 0.0, 1.0, 0.0]])
    cases.append(("key 0 next to a longer key 1 that leans the same way", longer_neighbour, 0))
    lengths = torch.tensor([0.5, 1.0, 3.0, 1.5, 2.0])[:, None]
    cases.append(("five random keys of different lengths in 8 dimensions",
                  lengths * torch.randn(5, 8, generator=g), 0))
    cases.append(("six random keys in 6 dimensions", torch.randn(6, 6, generator=g), 4))
    return cases


@exercise("08.1", "a query that finds one key")
def check_query_for(query_for):
    for name, keys, target in _query_cases():
        q = query_for(keys.clone(), target)
        if not isinstance(q, torch.Tensor) or q.numel() != keys.shape[1]:
            shape = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
            raise Failed(f"for keys of shape {tuple(keys.shape)} return one query of {keys.shape[1]} numbers, "
                         f"shape ({keys.shape[1]},); got {shape}.")
        q = q.detach().reshape(-1)
        if not torch.isfinite(q).all():
            raise Failed(f"for {name} your query has infinite or NaN entries; a finite query is enough.")
        weights = _weights_on_keys(q, keys)
        share = weights[target].item()
        if share >= 0.99:
            continue
        winner = int(weights.argmax())
        cosine = torch.nn.functional.cosine_similarity(q.double(), keys[target].double(), dim=0).item()
        if torch.allclose(q, keys[target]):
            raise Failed(f"for {name}, your query is key {target} itself, and key {target} gets only {share:.0%} "
                         f"of the weight: the scores q . k are divided by sqrt(d) = {math.sqrt(keys.shape[1]):.1f} "
                         f"and the softmax is soft. A longer query makes the lookup sharper.")
        if cosine > 0.9999 and winner != target:
            raise Failed(f"for {name}, your query points along key {target}, but key {winner} gets "
                         f"{weights[winner]:.0%} of the weight: its dot product with your query is larger, because "
                         f"it is longer and leans the same way. Pointing at a key is not enough; find a query whose "
                         f"dot product with key {target} beats every other key's (for example, solve keys @ q = "
                         f"one-hot(target) with torch.linalg.lstsq or torch.linalg.pinv), then make it longer.")
        if winner == target:
            raise Failed(f"for {name}, key {target} gets the most weight but only {share:.1%} of it: make the query "
                         f"longer, so that its score beats the others' by enough after the division by "
                         f"sqrt(d) = {math.sqrt(keys.shape[1]):.1f}.")
        raise Failed(f"for {name}, key {winner} gets {weights[winner]:.0%} of the weight and key {target} only "
                     f"{share:.0%}: the query's dot product with key {target} must beat every other key's.")
    return ("at least 99% of the weight on the chosen key, whatever the keys' lengths and directions. The query "
            "does not have to look like its key; its score must beat the others' by about "
            "sqrt(d) * ln(99 (M - 1)).")


@exercise("08.2", "splitting and merging heads")
def check_heads(my_split_heads, my_merge_heads):
    x = torch.arange(2 * 5 * 12, dtype=torch.float32).view(2, 5, 12)      # (B, N, C), every entry distinct
    got = my_split_heads(x.clone(), 3)
    expected = split_heads(x, 3)                                             # (2, 3, 5, 4)
    if not isinstance(got, torch.Tensor):
        raise Failed("my_split_heads should return a tensor.")
    if tuple(got.shape) == (2, 5, 3, 4):
        raise Failed("the shape is (B, N, heads, d); swap the token and head axes with .transpose(1, 2) to get "
                     "(B, heads, N, d).")
    if got.shape != expected.shape:
        raise Failed(f"split into 3 heads, (2, 5, 12) should become (B, heads, N, d) = (2, 3, 5, 4), "
                     f"got {tuple(got.shape)}.")
    if torch.equal(got, x.reshape(2, 3, 5, 4)):
        raise Failed("reshaping (B, N, C) straight to (B, heads, N, d) mixes tokens together: head 0 gets the "
                     "first tokens instead of the first channels of every token. Reshape to (B, N, heads, d) first, "
                     "then transpose(1, 2).")
    if torch.equal(got, x.view(2, 5, 4, 3).permute(0, 3, 1, 2)):
        raise Failed("head 0 got channels 0, 3, 6, 9 (every third channel); each head takes a contiguous block: "
                     "head 0 channels 0-3, head 1 channels 4-7. View as (B, N, heads, d), not (B, N, d, heads).")
    if not torch.equal(got, expected):
        raise Failed("head i should hold channels i*d .. (i+1)*d - 1 of every token, in token order.")

    heads = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).view(2, 3, 5, 4)   # (B, h, N, d)
    merged = my_merge_heads(heads.clone())
    expected = merge_heads(heads)                                                 # (2, 5, 12)
    if not isinstance(merged, torch.Tensor) or merged.shape != expected.shape:
        shape = None if not isinstance(merged, torch.Tensor) else tuple(merged.shape)
        raise Failed(f"my_merge_heads should turn (B, heads, N, d) = (2, 3, 5, 4) into (B, N, heads*d) = (2, 5, 12), "
                     f"got {shape}.")
    if torch.equal(merged, heads.reshape(2, 5, 12)):
        raise Failed("reshaping (B, heads, N, d) straight to (B, N, heads*d) mixes tokens; transpose(1, 2) first "
                     "(to (B, N, heads, d)), then reshape.")
    if not torch.equal(merged, expected):
        raise Failed("my_merge_heads should undo my_split_heads: the heads' outputs side by side, head 0 first.")
    if not torch.equal(my_merge_heads(my_split_heads(x.clone(), 4)), x):
        raise Failed("merging the split of x should give x back exactly (try it with 4 heads).")
    return "head i holds channels i*d to (i+1)*d - 1, and merging undoes splitting."


HEADS = 8                      # every attention layer of Stable Diffusion 1.5
LATENT_FACTOR = 8              # its VAE shrinks each side 8 times
SIDE_STEP = 64                 # the U-Net halves the latent three times: the latent side must divide by 8


def _largest_side(budget, batch_size, bytes_per_number, *, heads=HEADS, per_pixel=False, squared=True,
                  step=SIDE_STEP, strict=False, latent=False):
    """The largest image side whose outer self-attention weights fit in the budget (or a typical mistake's)."""
    best = None
    for side in range(step, 64 * 1024 + 1, step):
        n = side * side if per_pixel else (side // LATENT_FACTOR) ** 2       # tokens: latent pixels
        if not squared:
            n = side // LATENT_FACTOR
        size = batch_size * heads * n * (n if squared else 1) * bytes_per_number
        if size < budget or (size == budget and not strict):
            best = side
    if best is not None and latent:
        return best // LATENT_FACTOR
    return best


def _side_cases():
    GiB, MiB = 2 ** 30, 2 ** 20
    return [(512 * MiB, 1, 4), (24 * GiB, 2, 4), (8 * GiB, 2, 2), (80 * GiB, 2, 2), (100_000, 1, 4)]


@exercise("08.3", "the largest image for a memory budget")
def check_largest_side(largest_side):
    for budget, batch_size, bytes_per_number in _side_cases():
        got = largest_side(budget, batch_size, bytes_per_number)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        right = _largest_side(budget, batch_size, bytes_per_number)
        if got == right:
            continue
        case = f"for a budget of {budget:,} bytes, a batch of {batch_size} and {bytes_per_number} bytes per number"
        if right is None:
            raise Failed(f"{case} not even a 64x64 image fits (its weights take "
                         f"{batch_size * HEADS * 64 ** 2 * bytes_per_number:,} bytes): return None, not {got!r}.")
        if got is None:
            raise Failed(f"{case} a {right}x{right} image fits; you returned None.")
        if not isinstance(got, int):
            raise Failed(f"return the side in pixels as an int (or None), got {type(got).__name__}.")
        mistakes = [
            ("a tensor that fills the budget exactly still fits: compare with <=, not <.",
             _largest_side(budget, batch_size, bytes_per_number, strict=True)),
            ("every one of the 8 heads stores its own N x N weights: multiply by the number of heads.",
             _largest_side(budget, batch_size, bytes_per_number, heads=1)),
            ("every image of the batch has its own weights: multiply by batch_size.",
             _largest_side(budget, 1, bytes_per_number)),
            ("the budget is in bytes: multiply the number of weights by bytes_per_number.",
             _largest_side(budget, batch_size, 1)),
            ("N is the number of tokens, the latent's side squared, and the weights are N x N: (s / 8)^4 numbers "
             "per head and image.",
             _largest_side(budget, batch_size, bytes_per_number, squared=False)),
        ]
        eight_times_too_small = ("your answer is about 8 times too small: either you counted the image's pixels as "
                                 "tokens (the tokens are the latent's pixels: an image of side s has a latent of "
                                 "side s / 8, so N = (s / 8)^2), or you returned the latent's side instead of the "
                                 "image's.")
        mistakes += [(eight_times_too_small, _largest_side(budget, batch_size, bytes_per_number, per_pixel=True)),
                     (eight_times_too_small, _largest_side(budget, batch_size, bytes_per_number, latent=True))]
        for message, answer in mistakes:
            if answer is not None and got == answer and answer != right:
                raise Failed(f"{case}: {message}")
        if got % SIDE_STEP:
            raise Failed(f"{case} you returned {got}, which the U-Net cannot take: its latent (side {got} / 8) is "
                         f"halved three times, so the latent side must divide by 8 and the image side by 64.")
        raise Failed(f"{case} the answer is {right} (weights of {batch_size} x 8 x N x N numbers with "
                     f"N = ({right} / 8)^2); you gave {got}.")
    return (f"512 MiB holds the outer self-attention weights of one 512x512 image in float32; at 1024x1024 the "
            f"same weights take 16 times as much. That is why pipelines use the fused kernel.")


def _fused(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _float64(q, k, v):
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    return (scores.softmax(dim=-1) @ v.double()).to(q.dtype)


def _einsum(q, k, v):
    weights = torch.einsum("...nd,...md->...nm", q, k).mul(q.shape[-1] ** -0.5).softmax(dim=-1)
    return torch.einsum("...nm,...md->...nd", weights, v)


def _in_chunks(q, k, v):
    chunks = [_einsum(part, k, v) for part in q.split(2, dim=-2)]       # a few queries at a time
    return torch.cat(chunks, dim=-2)


def _scores(q, k, scale):
    return q @ k.transpose(-2, -1) * scale


def _over_queries(q, k, v):
    return _scores(q, k, q.shape[-1] ** -0.5).softmax(dim=-2) @ v


def _unscaled(q, k, v):
    return _scores(q, k, 1.0).softmax(dim=-1) @ v


def _divided_by_d(q, k, v):
    return _scores(q, k, 1.0 / q.shape[-1]).softmax(dim=-1) @ v


def _divided_by_number_of_keys(q, k, v):
    return _scores(q, k, k.shape[-2] ** -0.5).softmax(dim=-1) @ v


def _keys_as_values(q, k, v):
    return _scores(q, k, q.shape[-1] ** -0.5).softmax(dim=-1) @ k


def _transposed_scores(q, k, v):
    return (k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1) @ v


def _two_dimensional_only(q, k, v):
    return (q @ k.transpose(0, 1) / math.sqrt(q.shape[-1])).softmax(dim=-1) @ v


def _naive_softmax(q, k, v):
    e = _scores(q, k, q.shape[-1] ** -0.5).exp()
    return (e / e.sum(dim=-1, keepdim=True)) @ v


CORRECT = [("PyTorch's fused scaled_dot_product_attention", _fused),
           ("a version that computes in float64", _float64),
           ("a version written with einsum", _einsum),
           ("a version that processes two queries at a time", _in_chunks)]
BUGGY = [
    (_over_queries, "takes the softmax over the queries (dim=-2) instead of the keys; compare the values, not only "
                    "the shapes"),
    (_unscaled, "does not divide by sqrt(d); compare the values with a reference, and use d > 1 (for d = 1 the "
                "scale is 1)"),
    (_divided_by_d, "divides by d instead of sqrt(d); compare the values, and use d > 1 (and not d = 1, where "
                    "both are 1)"),
    (_divided_by_number_of_keys, "divides by the square root of the number of keys, k.shape[-2], instead of "
                                 "sqrt(d): use a number of keys different from d"),
    (_keys_as_values, "averages the keys instead of the values: use different tensors for k and v"),
    (_transposed_scores, "computes k @ q^T instead of q @ k^T: use different tensors for q and k, and a number "
                         "of queries different from the number of keys"),
    (_two_dimensional_only, "transposes axes 0 and 1, right only for 2-D inputs: the spec is (..., N, d), so "
                            "test with batch (and head) axes in front"),
    (_naive_softmax, "writes the softmax as exp(s) / sum(exp(s)), which overflows to NaN for large scores: test "
                     "with large queries and keys too (entries around 30 or more)"),
]


def _verdict(looks_right, fn) -> bool | Exception:
    try:
        result = looks_right(fn)
    except NotImplementedError:         # the exercise is not done yet: let check() say so
        raise
    except Exception as error:          # the student's test crashed on this implementation
        return error
    if isinstance(result, torch.Tensor) and result.numel() == 1:
        result = bool(result.item())
    if not isinstance(result, bool):
        raise Failed(f"looks_right should return True or False, got {type(result).__name__}.")
    return result


@exercise("08.4", "a test that catches wrong attention")
def check_looks_right(looks_right):
    for name, fn in CORRECT:
        verdict = _verdict(looks_right, fn)
        if isinstance(verdict, Exception):
            raise Failed(f"your test raised {type(verdict).__name__} ({verdict}) on {name}, which is correct.")
        if not verdict:
            raise Failed(f"your test rejected {name}, which is correct. Two right implementations add their numbers "
                         f"in different orders and differ in the last digits: compare with a tolerance "
                         f"(torch.allclose(got, expected, rtol=1e-4, atol=1e-4)), not with ==.")
    for fn, bug in BUGGY:
        verdict = _verdict(looks_right, fn)
        if verdict is True:
            raise Failed(f"your test accepted an attention that {bug}.")
    return f"all {len(CORRECT)} right implementations accepted and all {len(BUGGY)} wrong ones caught."
