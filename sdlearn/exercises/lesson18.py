"""Checks for the exercises of lesson 18, textual inversion."""

from __future__ import annotations

from functools import lru_cache, partial

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor

_close = partial(same_tensor, rtol=1e-5, atol=1e-7)
_name_the_mistake = partial(name_the_mistake, rtol=1e-5, atol=1e-7)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether writing into `b` would change `a` (a view, or the same storage)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# --------------------------------------------------------------------------- 18.1

def _table_after_a_step(rows: int, width: int, seed: int) -> tuple[torch.nn.Parameter, torch.Tensor]:
    """A trainable table and its original: every row has moved a little, as after an AdamW step."""
    g = torch.Generator().manual_seed(seed)
    original = torch.randn((rows, width), generator=g) * 0.2
    table = torch.nn.Parameter(original + torch.randn((rows, width), generator=g) * 0.01)
    return table, original


def _restored(table: torch.Tensor, original: torch.Tensor, new_ids) -> torch.Tensor:
    expected = original.clone()
    expected[list(new_ids)] = table.detach()[list(new_ids)]
    return expected


@exercise("18.1", "put the other rows back")
def check_restore_rows(restore_rows):
    for new_ids in ([11], [3, 11]):
        table, original = _table_after_a_step(12, 4, seed=181 + len(new_ids))
        moved, kept_original = table.detach().clone(), original.clone()
        expected = _restored(table, original, new_ids)
        try:
            restore_rows(table, original, list(new_ids))
        except RuntimeError as exc:
            if "leaf Variable" in str(exc) or "requires grad" in str(exc):
                raise Failed("autograd refused to write into a parameter that requires gradients: do the copy "
                             "inside `with torch.no_grad():`, as diffusers' script does.") from exc
            raise
        if not isinstance(table, torch.nn.Parameter) or not table.requires_grad:
            raise Failed("the table must stay a parameter that requires gradients, or the new row stops training.")
        got = table.detach()
        if not torch.equal(original, kept_original):
            raise Failed("`original` changed: copy from it into the table, never the other way.")
        if torch.equal(got, moved):
            raise Failed("the table itself did not change: write into it in place (table[keep] = original[keep] "
                         "under torch.no_grad()). Returning a new tensor or rebinding a name leaves the optimizer's "
                         "parameter as it was, and table[keep].copy_(...) writes into a copy (indexing with a mask "
                         "copies).")
        _name_the_mistake(got, {
            "you put the new rows back too: the learned rows return to their start after every step, so training "
            "never moves them. Keep every row except the ones in new_ids.": original,
            "that is the other way round: you reset the new rows and left the others where the step put them. "
            "Copy back every row that is *not* in new_ids.": _restored(original, table.detach(), new_ids),
        })
        one_kept = [_restored(table, original, new_ids[:1]), _restored(table, original, new_ids[-1:])]
        if len(new_ids) > 1 and any(_close(got, wrong) for wrong in one_kept):
            raise Failed("right with one new row, wrong with two: keep every id in new_ids (diffusers trains "
                         "several vectors per placeholder with --num_vectors).")
        if not _close(got, expected):
            raise Failed("the table differs from the original in rows that are not in new_ids, or lost the new "
                         "rows' values.")
    return "the step diffusers' textual inversion script runs after every optimizer step."


# --------------------------------------------------------------------------- 18.2

@lru_cache(maxsize=1)
def _tokenizer():
    """The shipped pipeline's tokenizer (CLIP's vocabulary), without loading the models."""
    from transformers import CLIPTokenizer

    from sdlearn import weights

    return CLIPTokenizer.from_pretrained(str(weights.resolve("fashion_text2image") / "tokenizer"))


@exercise("18.2", "start from a one-token word")
def check_initial_row(initial_row):
    tokenizer = _tokenizer()
    table = torch.randn((len(tokenizer), 8), generator=torch.Generator().manual_seed(182))
    before = table.clone()
    for word in ("shoe", "bag"):
        token_id = tokenizer.encode(word, add_special_tokens=False)[0]
        got = initial_row(tokenizer, table, word)
        if not isinstance(got, torch.Tensor):
            raise Failed(f"return the row as a tensor, got {type(got).__name__}.")
        if not torch.equal(table, before):
            raise Failed("the table changed: read the word's row, do not write into the table here.")
        got_values = got.detach().reshape(-1) if got.numel() == table.shape[1] else got.detach()
        _name_the_mistake(got_values, {
            "that is the row of <|startoftext|>: tokenizer.encode adds the start and end tokens unless you pass "
            "add_special_tokens=False.": table[tokenizer.bos_token_id],
            "that is the row of <|endoftext|>: tokenizer.encode adds the start and end tokens unless you pass "
            "add_special_tokens=False.": table[tokenizer.eos_token_id],
            f"that is the row of the piece {word!r} inside a longer word: a whole word is stored as "
            f"'{word}</w>', so convert_tokens_to_ids({word!r}) finds another entry. Use "
            "tokenizer.encode(word, add_special_tokens=False).": table[tokenizer.convert_tokens_to_ids(word)],
        })
        if got.shape != (table.shape[1],):
            raise Failed(f"return one row of shape ({table.shape[1]},), got {tuple(got.shape)}.")
        if not torch.equal(got_values, table[token_id]):
            raise Failed(f"that is not the row of {word!r} (id {token_id}).")
        if _shares_memory(got, table):
            raise Failed("you returned a view into the table: when training later moves the new row in place, or "
                         "the table is restored, this 'copy' moves with it. Return table[token_id].clone().")
    pieces = tokenizer.encode("ankle boot", add_special_tokens=False)
    try:
        got = initial_row(tokenizer, table, "ankle boot")
    except ValueError:
        return "the check diffusers' script makes before it copies the initializer's row."
    except Exception as exc:
        raise Failed(f"for 'ankle boot' your code raised {type(exc).__name__}; raise a ValueError that says the "
                     f"word is {len(pieces)} tokens.") from exc
    if isinstance(got, torch.Tensor) and got.numel() == table.shape[1]:
        got = got.detach().reshape(-1)
        if torch.equal(got, table[pieces[0]]):
            raise Failed("'ankle boot' is two tokens, ['ankle</w>', 'boot</w>'], and you took the first: the new word "
                         "would start as 'ankle'. Refuse it with a ValueError, as diffusers does.")
        if _close(got, table[pieces].mean(0)):
            raise Failed("'ankle boot' is two tokens and you averaged their rows: one vector that is neither word. "
                         "Refuse a multi-token initializer with a ValueError, as diffusers does.")
    raise Failed("'ankle boot' is two tokens: raise a ValueError instead of returning a row.")


# --------------------------------------------------------------------------- 18.3

def _similarity_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of very different lengths, so that cosine, dot product and distance rank them differently."""
    g = torch.Generator().manual_seed(183)
    table = torch.randn((40, 6), generator=g)
    table = table * torch.linspace(0.1, 3.0, 40)[torch.randperm(40, generator=g)][:, None]
    vector = table[7] * 0.5 + 0.05 * torch.randn(6, generator=g)
    return table, vector


def _ids(got, what: str = "the ids") -> list[int]:
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if not isinstance(got, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in got):
        raise Failed(f"return {what} as a list of ints (or a tensor of them), got {got!r}.")
    return list(got)


def _ranked(scores: torch.Tensor, k: int, exclude=(), largest: bool = True) -> list[int]:
    scores = scores.clone().double()
    for i in exclude:
        scores[i] = float("-inf") if largest else float("inf")
    return scores.topk(k, largest=largest).indices.tolist()


@exercise("18.3", "the nearest words")
def check_nearest_tokens(nearest_tokens):
    table, vector = _similarity_table()
    k, exclude = 5, [7]
    cosine = torch.nn.functional.cosine_similarity(table, vector[None], dim=1)
    expected = _ranked(cosine, k, exclude)
    got = _ids(nearest_tokens(table.clone(), vector.clone(), k, list(exclude)))
    if len(got) != k:
        raise Failed(f"return k = {k} ids, got {len(got)}.")
    wrong = {
        "you ranked by the dot product, which favours long rows whatever their direction: divide by both "
        "lengths (cosine similarity).": _ranked(table @ vector, k, exclude),
        "you ranked by Euclidean distance, which favours short rows near the origin; the question is the "
        "direction, so use cosine similarity.": _ranked((table - vector).norm(dim=1), k, exclude, largest=False),
        "those are the least similar rows: sort from the largest cosine similarity down.":
            _ranked(cosine, k, exclude, largest=False),
        "the row in `exclude` came first (it is the vector's own row, or the word it started from): leave out "
        "every id in exclude.": _ranked(cosine, k),
    }
    for message, answer in wrong.items():
        if got == answer:
            raise Failed(message)
    if got != expected and sorted(got) == sorted(expected):
        raise Failed("the right ids in the wrong order: the most similar first.")
    if got != expected:
        raise Failed(f"expected {expected} (cosine similarity, largest first, without {exclude}), got {got}.")
    return "the look-up that shows which words of the vocabulary a learned vector lies near."


# --------------------------------------------------------------------------- 18.4

@exercise("18.4", "weight decay without a gradient")
def check_decayed_row(decayed_row):
    g = torch.Generator().manual_seed(184)
    row = torch.randn(8, generator=g)
    lr, weight_decay, steps = 0.1, 0.5, 10
    table = torch.nn.Parameter(row.clone()[None])
    optimizer = torch.optim.AdamW([table], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        table.grad = torch.zeros_like(table)
        optimizer.step()
    expected = table.detach()[0]
    adam = torch.nn.Parameter(row.clone()[None])               # the same with Adam's L2 weight decay
    optimizer = torch.optim.Adam([adam], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        adam.grad = torch.zeros_like(adam)
        optimizer.step()
    got = decayed_row(row.clone(), lr, weight_decay, steps)
    if not isinstance(got, torch.Tensor) or got.shape != row.shape:
        raise Failed(f"return the row as a tensor of shape {tuple(row.shape)}, got {got!r}.")
    got = got.detach().float()
    _name_the_mistake(got, {
        "the row did not move: with a zero gradient Adam's own step is zero, but AdamW also multiplies every "
        "weight by (1 - lr * weight_decay) at every step, whatever its gradient.": row,
        "you left out the learning rate: AdamW's decay per step is lr * weight_decay, not weight_decay.":
            row * (1 - weight_decay) ** steps,
        "that is one step; the factor (1 - lr * weight_decay) applies at every step, so raise it to the power "
        "steps.": row * (1 - lr * weight_decay),
        "you subtracted the decay of the first step every time (linear); each step shrinks what the last "
        "left, so the factors multiply: (1 - lr * weight_decay) ** steps.": row * (1 - lr * weight_decay * steps),
        "close, but exp(-lr * weight_decay * steps) is the limit of many small steps; AdamW multiplies by "
        "(1 - lr * weight_decay) once per step.": row * torch.exp(torch.tensor(-lr * weight_decay * steps)),
        "that is torch.optim.Adam's weight_decay: an L2 term added to the gradient, which Adam then scales to "
        "about lr per step. AdamW decays the weights directly, apart from the gradient.":
            adam.detach()[0],
    }, rtol=1e-4, atol=1e-6)
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
        raise Failed("the row differs from what torch.optim.AdamW leaves after those steps with a zero gradient.")
    return "why zeroing the other rows' gradients does not freeze them under AdamW."
