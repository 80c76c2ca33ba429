"""Checks for the exercises of lesson 13, conditioning."""

from __future__ import annotations

from functools import partial

import torch

from sdlearn.exercises import Failed, as_number, exercise, name_the_mistake, same_tensor


_close = partial(same_tensor, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, atol=1e-5)


def _as_rows(answer, num_rows):
    """The student's rows as a sorted list of ints, or Failed."""
    if isinstance(answer, torch.Tensor):
        if answer.dtype == torch.bool:
            if answer.shape != (num_rows,):
                raise Failed(f"a boolean mask should have one entry per row of the table, {num_rows}, "
                             f"got shape {tuple(answer.shape)}.")
            answer = answer.nonzero()[:, 0]
        if answer.is_floating_point():
            raise Failed("return row indices (integers), not gradients or other numbers.")
        answer = answer.flatten().tolist()
    try:
        rows = [int(row) for row in answer]
    except (TypeError, ValueError):
        raise Failed(f"return the rows as a list of integers, not {type(answer).__name__}.") from None
    if len(set(rows)) != len(rows):
        raise Failed(f"you listed a row more than once ({rows}): name each row once.")
    return sorted(rows)


def _rows_with_gradient(labels, drop, num_classes):
    """The experiment: one backward pass through an nn.Embedding, and the rows whose gradient is not zero."""
    g = torch.Generator().manual_seed(131)
    table = torch.nn.Embedding(num_classes + 1, 4)
    used = torch.where(drop, torch.full_like(labels, num_classes), labels)
    loss = (table(used) * torch.randn(len(labels), 4, generator=g)).sum()
    loss.backward()
    return (table.weight.grad.abs().sum(dim=1) > 0).nonzero()[:, 0].tolist()


@exercise("13.1", "which rows of the class table learn")
def check_rows_that_learn(rows_that_learn):
    cases = [   # labels, drop, num_classes: a class seen only dropped, no drops at all, every label dropped
        (torch.tensor([3, 0, 7, 3, 9, 1]), torch.tensor([False, True, False, True, False, False]), 10),
        (torch.tensor([2, 2, 5]), torch.tensor([False, False, False]), 10),
        (torch.tensor([4, 1]), torch.tensor([True, True]), 6),
    ]
    for labels, drop, num_classes in cases:
        original = labels.clone()
        got = _as_rows(rows_that_learn(labels, drop.clone(), num_classes), num_classes + 1)
        if not torch.equal(labels, original):
            raise Failed("you changed the labels you were given; work on a copy (torch.where, or labels.clone()).")
        expected = _rows_with_gradient(labels, drop, num_classes)
        if got == expected:
            continue
        kept = set(labels[~drop].tolist())
        shown = f"for labels {labels.tolist()} with drop {drop.int().tolist()} (num_classes = {num_classes}) you said " \
                f"{got}, the experiment says {expected}"
        if got == list(range(num_classes + 1)):
            raise Failed(f"{shown}. Not every row: the gradient of one_hot @ table with respect to the table is "
                         "one_hot.T @ (gradient of the output), so a row with no 1 in its column of the one-hot "
                         "matrix gets exactly zero.")
        if got == sorted(set(labels.tolist())):
            raise Failed(f"{shown}. A dropped label is not looked up: its image trains the null row "
                         f"({num_classes}) instead of its class's row.")
        if set(got) == kept | {num_classes} and not drop.any():
            raise Failed(f"{shown}. The null row learns only from images whose label was dropped, and none was.")
        if got == sorted(kept) and drop.any():
            raise Failed(f"{shown}. The dropped labels became the null class, and its row ({num_classes}) is looked "
                         "up for those images: it learns too.")
        others = sorted(set(got) - kept)
        if drop.any() and len(others) == 1 and num_classes not in got:
            raise Failed(f"{shown}. The null class is row {num_classes}, one past the last class, not {others[0]}.")
        raise Failed(f"{shown}. A row learns when some image of the batch looks it up: the kept labels, and the "
                     "null class if any label was dropped.")
    return ("only the rows looked up in this batch get a gradient: a class whose images were all dropped does not "
            "learn from this step, and the null row learns only from dropped labels.")


@exercise("13.2", "choosing the label-drop probability")
def check_smallest_drop_p(smallest_drop_p):
    for counts in ([30, 50, 20, 20], [100] * 10):
        got = as_number(smallest_drop_p(list(counts)), "a probability")
        n, n_max, n_min, c = sum(counts), max(counts), min(counts), len(counts)
        right = n_max / (n + n_max)
        if abs(got - right) < 1e-6:
            continue
        where = f"for {counts} images per class you returned {got:.4f}"
        if 1 < got <= 100 and abs(got / 100 - right) < 1e-6:
            raise Failed(f"{where}: a probability lies between 0 and 1, not a percentage.")
        named = {
            "that assumes equally common classes, 1 / (C + 1). The busiest class sets the bar: solve "
            "p = (1 - p) n_max / N.": 1 / (c + 1),
            "the dropped images come out of the classes: class c keeps (1 - p) n_c / N of each batch, not n_c / N. "
            "Solve p = (1 - p) n_max / N.": n_max / n,
            "that is 1 / C, the share of a class when classes are equally common and nothing is dropped.": 1 / c,
            "that keeps up with the rarest class only; the null row should get at least as many images as every "
            "class, so the busiest one sets the bar.": n_min / (n + n_min),
            "that is the lesson's 0.1, a common choice; compute the smallest p for these counts.": 0.1,
        }
        for message, value in named.items():
            if abs(got - value) < 1e-6 and abs(value - right) > 1e-6:
                raise Failed(f"{where}: {message}")
        if got > right:
            raise Failed(f"{where}: enough, but not the smallest. At p = {right:.4f} the null row already gets as "
                         "many images per step as the busiest class.")
        busiest = (1 - got) * n_max / n
        raise Failed(f"{where}: the null row would get {got:.3f} of each batch and the busiest class "
                     f"{busiest:.3f}. Find the p at which the two are equal.")
    return "p = n_max / (N + n_max): for ten equally common classes 1/11, and less the more classes there are."


@exercise("13.3", "cross-attention to a constant context")
def check_constant_context_output(constant_context_output):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(133)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4).eval()   # C = 8, D = 6
    g = torch.Generator().manual_seed(133)
    e = torch.randn(6, generator=g)
    image = torch.randn(2, 5, 8, generator=g)                    # 2 images, 5 positions each, C = 8
    context = e.expand(2, 7, 6)                                  # 7 tokens, all the same vector
    with torch.no_grad():
        measured = attn(image, encoder_hidden_states=context)   # (2, 5, 8)
        got = constant_context_output(attn, e.clone())
        values = attn.to_v(e)
    expected = measured[0, 0]
    if not torch.allclose(measured, expected.expand_as(measured), atol=1e-5):
        raise AssertionError("the experiment should give one vector at every position")
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor, the output at one image position, shape (C,).")
    got = got.detach()
    if got.ndim > 1 and got.shape[-1] == 8 and got.numel() > 8:
        raise Failed(f"return the output at one position, shape (C,) = (8,), not {tuple(got.shape)}: without an "
                     "image you cannot know N, and the answer does not depend on it.")
    if got.shape == (6,):
        raise Failed("that has the context's width D = 6; the layer's output has the image's width, C = 8. The "
                     "values are projected by to_v, and the heads' outputs by to_out.")
    got = got.reshape(-1)
    if got.shape != (8,):
        raise Failed(f"return one vector of C = 8 numbers, got shape {tuple(got.shape)}.")
    wrong = {
        "that is to_v(e), the value of every token. The heads' outputs are then projected by to_out[0] (a linear "
        "layer with a bias), as at the end of every attention layer.": values,
        "to_out[0] has a bias; apply the whole layer, attn.to_out[0](...), not only its weight.":
            values @ attn.to_out[0].weight.T,
        "all M tokens are equal, so the softmax gives each 1/M and the weighted sum of M equal values is one value, "
        "not M of them.": attn.to_out[0](7 * values),
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the output differs from what attn gives at every position for a context of e repeated. With "
                     "equal keys, what do the attention weights become, and what is a weighted average of equal values?")
    return ("equal keys give equal scores, the softmax gives each token 1/M, and every position receives "
            "to_out(to_v(e)): the same vector everywhere, whatever the image, like a class embedding.")


@exercise("13.4", "the shapes of cross-attention in a U-Net")
def check_cross_attention_shapes(cross_attention_shapes):
    def right(batch, channels, height, width, heads, tokens, cross_attention_dim):
        n, d = height * width, channels // heads
        return (batch, heads, n, d), (batch, heads, tokens, d), (batch, heads, n, tokens), (batch, n, channels)

    args = dict(batch=2, channels=128, height=4, width=6, heads=4, tokens=77, cross_attention_dim=64)
    got = cross_attention_shapes(*args.values())
    got = tuple(tuple(int(s) for s in shape) for shape in got) if isinstance(got, (tuple, list)) else got
    expected = right(**args)
    if not isinstance(got, tuple) or len(got) != 4:
        raise Failed("return four shapes, (q, k, weights, out), each a tuple of integers.")
    q, k, weights, out = got
    if q != expected[0]:
        if q[2:3] == (10,):
            raise Failed(f"q has {q}: the queries are the H*W = 24 positions of the feature map, not H + W.")
        if len(q) == 3:
            raise Failed(f"q has {q}; split the channels into heads: (batch, heads, H*W, channels / heads).")
        raise Failed(f"q should be (batch, heads, H*W, channels / heads) = {expected[0]}, got {q}.")
    if k != expected[1]:
        if k[-1] == args["cross_attention_dim"] // args["heads"]:
            raise Failed(f"k has {k}: to_k projects each token from cross_attention_dim (64) to the image's width "
                         f"(channels = 128), so that q and k can be compared; per head that is 128 / 4 = 32.")
        if k[2] == 24:
            raise Failed(f"k has {k}: the keys come from the {args['tokens']} text tokens, not from the image.")
        raise Failed(f"k should be (batch, heads, tokens, channels / heads) = {expected[1]}, got {k}.")
    if weights != expected[2]:
        if weights == (2, 4, 77, 24):
            raise Failed(f"weights has {weights}, the transpose: one row per query (image position), one column "
                         f"per key (token): (batch, heads, H*W, tokens).")
        raise Failed(f"weights should be (batch, heads, H*W, tokens) = {expected[2]}, got {weights}.")
    if out != expected[3]:
        if out == (2, 4, 24, 32):
            raise Failed(f"out has {out}: the heads' outputs are put side by side again and projected back by "
                         f"to_out, (batch, H*W, channels).")
        raise Failed(f"out should be (batch, H*W, channels) = {expected[3]}, got {out}.")
    other = dict(batch=1, channels=64, height=8, width=8, heads=2, tokens=77, cross_attention_dim=768)
    again = cross_attention_shapes(*other.values())
    again = tuple(tuple(int(s) for s in shape) for shape in again)
    if again != right(**other):
        raise Failed(f"right for the first layer, wrong for {other}: compute the shapes from the arguments.")
    return "the context never changes the output's shape: any number of tokens, any width, the image stays (B, HW, C)."
