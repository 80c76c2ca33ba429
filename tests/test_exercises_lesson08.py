"""Lesson 08's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one,
so that a clearer message later is a deliberate change.
"""

import math

import pytest
import torch

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 08.1 query_for(keys, target)

def query_for(keys, target):
    one_hot = torch.zeros(keys.shape[0])
    one_hot[target] = 1.0
    return 100 * torch.linalg.pinv(keys) @ one_hot        # score 100 for the target, 0 for the others


def query_by_gradient_ascent(keys, target):
    """Any query that works is right: here one found by maximising the target's log-weight."""
    q = torch.zeros(keys.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([q], lr=1.0)
    for _ in range(300):
        loss = -(keys @ q / math.sqrt(keys.shape[1])).log_softmax(0)[target]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return q.detach()


def query_as_row(keys, target):
    return query_for(keys, target)[None]                  # (1, d) is accepted too


def query_is_the_key(keys, target):
    return keys[target]


def query_along_the_key(keys, target):
    return 100 * keys[target]


def query_too_short(keys, target):
    return query_for(keys, target) / 25


def query_for_the_wrong_key(keys, target):
    return query_for(keys, (target + 1) % keys.shape[0])


def query_of_the_wrong_size(keys, target):
    return torch.ones(keys.shape[0])


# --------------------------------------------------------------------------- 08.2 my_split_heads, my_merge_heads

def my_split_heads(x, heads):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)


def my_merge_heads(x):
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).flatten(2)


def split_without_transpose(x, heads):
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads)


def split_by_reshape(x, heads):
    b, n, c = x.shape
    return x.reshape(b, heads, n, c // heads)


def split_strided(x, heads):
    b, n, c = x.shape
    return x.view(b, n, c // heads, heads).permute(0, 3, 1, 2)


def merge_by_reshape(x):
    b, h, n, d = x.shape
    return x.reshape(b, n, h * d)


def merge_keeping_heads(x):
    return x.transpose(1, 2)


# --------------------------------------------------------------------------- 08.3 largest_side(budget, batch, bytes)

def largest_side(budget_bytes, batch_size, bytes_per_number):
    """Solve batch * 8 * (s / 8)^4 * bytes <= budget for s, then round down to a multiple of 64."""
    latent_side = (budget_bytes / (batch_size * 8 * bytes_per_number)) ** 0.25
    side = int(latent_side + 1e-9) * 8 // 64 * 64
    return side if side >= 64 else None


def _search(budget, batch_size, bytes_per_number, *, heads=8, tokens=lambda side: (side // 8) ** 2, step=64,
            fits=lambda size, budget: size <= budget):
    best = None
    for side in range(step, 20_000, step):
        n = tokens(side)
        if fits(batch_size * heads * n * n * bytes_per_number, budget):
            best = side
    return best


def side_without_heads(budget, batch_size, bytes_per_number):
    return _search(budget, batch_size, bytes_per_number, heads=1)


def side_without_batch(budget, batch_size, bytes_per_number):
    return _search(budget, 1, bytes_per_number)


def side_counting_numbers(budget, batch_size, bytes_per_number):
    return _search(budget, batch_size, 1)


def side_with_image_pixels_as_tokens(budget, batch_size, bytes_per_number):
    return _search(budget, batch_size, bytes_per_number, tokens=lambda side: side * side)


def side_strictly_below(budget, batch_size, bytes_per_number):
    return _search(budget, batch_size, bytes_per_number, fits=lambda size, budget: size < budget)


def side_in_multiples_of_8(budget, batch_size, bytes_per_number):
    return _search(budget, batch_size, bytes_per_number, step=8)


def latent_side(budget, batch_size, bytes_per_number):
    side = largest_side(budget, batch_size, bytes_per_number)
    return None if side is None else side // 8


def side_never_none(budget, batch_size, bytes_per_number):
    return largest_side(budget, batch_size, bytes_per_number) or 64


# --------------------------------------------------------------------------- 08.4 looks_right(attention_fn)

def _reference(q, k, v):
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ v.double()


def _tester(*, batch=(2, 3), n=5, m=7, d=8, d_v=4, sizes=(1.0, 30.0), same_qkv=False, atol=1e-4, exact=False,
            shapes_only=False):
    """A looks_right built from choices of test inputs; the defaults catch every mistake."""
    def looks_right(attention_fn):
        g = torch.Generator().manual_seed(0)
        for size in sizes:
            q = size * torch.randn(*batch, n, d, generator=g)
            k, v = size * torch.randn(*batch, m, d, generator=g), torch.randn(*batch, m, d_v, generator=g)
            if same_qkv:
                k, v = q, q
            try:
                got = attention_fn(q, k, v)
            except Exception:
                return False
            expected = _reference(q, k, v).float()
            if got.shape != expected.shape:
                return False
            if shapes_only:
                continue
            if exact and not torch.equal(got, expected):
                return False
            if not torch.allclose(got, expected, atol=atol):
                return False
        return True
    return looks_right


looks_right = _tester()
detector_shapes_only = _tester(shapes_only=True)
detector_with_equality = _tester(exact=True)
detector_with_q_k_v_the_same = _tester(n=7, same_qkv=True, sizes=(1.0,))
detector_with_d_one = _tester(d=1)
detector_as_many_keys_as_channels = _tester(m=8)
detector_without_batch = _tester(batch=())
detector_small_entries_only = _tester(sizes=(1.0,))


def detector_always_true(attention_fn):
    return True


def detector_returns_a_string(attention_fn):
    return "yes"


RIGHT = [
    ("08.1", (query_for,)),
    ("08.1", (query_by_gradient_ascent,)),
    ("08.1", (query_as_row,)),
    ("08.2", (my_split_heads, my_merge_heads)),
    ("08.3", (largest_side,)),
    ("08.4", (looks_right,)),
]


@pytest.mark.parametrize("exercise_id, answers", RIGHT, ids=[r[0] + "-" + r[1][0].__name__ for r in RIGHT])
def test_right_answers_pass(exercise_id, answers):
    verdict = check(exercise_id, *answers)
    assert verdict.passed, verdict.message


WRONG = [
    ("08.1", (query_is_the_key,), "your query is key 1 itself, and key 1 gets only 45% of the weight"),
    ("08.1", (query_along_the_key,), "Pointing at a key is not enough"),
    ("08.1", (query_too_short,), "make the query longer"),
    ("08.1", (query_for_the_wrong_key,), "must beat every other key's"),
    ("08.1", (query_of_the_wrong_size,), "return one query of 4 numbers"),
    ("08.2", (split_without_transpose, my_merge_heads), "swap the token and head axes"),
    ("08.2", (split_by_reshape, my_merge_heads), "mixes tokens together"),
    ("08.2", (split_strided, my_merge_heads), "each head takes a contiguous block"),
    ("08.2", (my_split_heads, merge_by_reshape), "transpose(1, 2) first"),
    ("08.2", (my_split_heads, merge_keeping_heads), "into (B, N, heads*d) = (2, 5, 12), got (2, 5, 3, 4)"),
    ("08.3", (side_without_heads,), "multiply by the number of heads"),
    ("08.3", (side_without_batch,), "multiply by batch_size"),
    ("08.3", (side_counting_numbers,), "multiply the number of weights by bytes_per_number"),
    ("08.3", (side_with_image_pixels_as_tokens,), "the tokens are the latent's pixels"),
    ("08.3", (side_strictly_below,), "compare with <=, not <"),
    ("08.3", (side_in_multiples_of_8,), "the image side by 64"),
    ("08.3", (latent_side,), "or you returned the latent's side"),
    ("08.3", (side_never_none,), "return None, not 64"),
    ("08.4", (detector_shapes_only,), "takes the softmax over the queries"),
    ("08.4", (detector_with_equality,), "compare with a tolerance"),
    ("08.4", (detector_with_q_k_v_the_same,), "averages the keys instead of the values"),
    ("08.4", (detector_with_d_one,), "does not divide by sqrt(d)"),
    ("08.4", (detector_as_many_keys_as_channels,), "use a number of keys different from d"),
    ("08.4", (detector_without_batch,), "test with batch (and head) axes in front"),
    ("08.4", (detector_small_entries_only,), "overflows to NaN for large scores"),
    ("08.4", (detector_always_true,), "takes the softmax over the queries"),
    ("08.4", (detector_returns_a_string,), "should return True or False, got str"),
]


@pytest.mark.parametrize("exercise_id, answers, message", WRONG, ids=[w[1][0].__name__ + "-" + w[1][-1].__name__
                                                                      for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answers, message):
    verdict = check(exercise_id, *answers)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
