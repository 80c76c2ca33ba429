"""Checks for the exercises of lesson 13, conditioning."""

from __future__ import annotations

from functools import partial

import torch

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor


_close = partial(same_tensor, atol=1e-5)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, atol=1e-5)


@exercise("13.1", "a class embedding from a one-hot vector")
def check_class_embedding(class_embedding):
    g = torch.Generator().manual_seed(131)
    table = torch.randn(11, 6, generator=g)           # 10 classes and a null class, 6 numbers each
    labels = torch.tensor([3, 0, 7, 3, 9, 1])         # the last row (10) is not asked for
    try:
        got = class_embedding(labels.clone(), table.clone())
    except RuntimeError as error:
        text = str(error)
        if "cannot be multiplied" in text or "size mismatch" in text or "must match" in text:
            raise Failed("the shapes do not fit for a matrix product. torch.nn.functional.one_hot(labels) makes as "
                         "many columns as the largest label plus one (here 10, but the table has 11 rows): pass "
                         "num_classes=table.shape[0]. The product is one_hot (B, C) @ table (C, D).") from None
        if "dtype" in text or "expected" in text or "not implemented" in text.lower():
            raise Failed("one_hot returns integers (int64); turn it into floats (.float() or .to(table.dtype)) "
                         "before multiplying with the table.") from None
        raise
    expected = table[labels]                          # (6, 6): one row of the table per label
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor, one row of the table per label: shape (B, D).")
    if tuple(got.shape) == (6, 11):
        raise Failed("that looks like the one-hot vectors themselves (B, C); multiply them by the table.")
    if tuple(got.shape) == (6,):
        raise Failed("return one embedding per label, shape (B, D), not a single vector (did you sum over the batch?).")
    if got.shape != expected.shape:
        raise Failed(f"for 6 labels and a table of 11 rows of 6 numbers the result should have shape (6, 6), "
                     f"got {tuple(got.shape)}.")
    wrong = {
        "each label seems shifted by one: class y is row y of the table (classes count from 0).": table[labels + 1],
        "every row is the same, the sum of several rows of the table: it looks like one_hot[:, labels] = 1, which "
        "puts a 1 for every label into every row. Use one_hot[torch.arange(B), labels] = 1, or "
        "torch.nn.functional.one_hot.": table[labels.unique()].sum(dim=0).expand(6, 6),
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the result differs from the rows of the table picked by the labels, table[labels].")
    labels_10 = torch.tensor([10, 2])
    if not _close(class_embedding(labels_10, table), table[labels_10]):
        raise Failed("right for these labels, wrong when a label is the last row (10): use all C rows of the table.")
    return "one_hot(labels) @ table is table[labels]: an nn.Embedding is this product without building the one-hot."


@exercise("13.2", "a null class for classifier-free training")
def check_labels_for_training(labels_for_training):
    labels = torch.tensor([0, 9, 4, 7, 0, 2])
    drop = torch.tensor([True, False, False, True, False, True])
    original = labels.clone()
    got = labels_for_training(labels, drop.clone(), 10)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of labels, one per image.")
    if not torch.equal(labels, original):
        raise Failed("you changed the caller's labels in place; work on a copy (labels.clone(), or torch.where), "
                     "the same labels may be used again, for instance to measure accuracy.")
    if got.shape != labels.shape:
        raise Failed(f"keep one label per image, shape {tuple(labels.shape)}, got {tuple(got.shape)}; a dropped "
                     "label is replaced, not removed (the image is still trained on, without its class).")
    if got.is_floating_point():
        raise Failed("labels index an embedding table: keep them integers (torch.long), not floats.")
    expected = torch.where(drop, torch.tensor(10), labels)
    null_values = got[drop]
    if torch.equal(got[~drop], labels[~drop]) and null_values.unique().numel() == 1:
        null = null_values[0].item()
        if null == 0:
            raise Failed("0 is a real class (t-shirt): a dropped label would be trained as a t-shirt. Use the extra "
                         "row of the table, index num_classes.")
        if null == 9:
            raise Failed("9 is the last real class (ankle boot), not a new one. The null class is num_classes, one "
                         "past the last label.")
        if null == -1:
            raise Failed("-1 is not a row of an embedding table (nn.Embedding raises an IndexError; in plain indexing "
                         "it would silently pick the last row). Use num_classes.")
        if null == 11:
            raise Failed("with labels 0 to 9, the null class is 10 (num_classes), the 11th row of an 11-row table; "
                         "11 would need a 12th row.")
    if torch.equal(got, torch.where(~drop, torch.tensor(10), labels)):
        raise Failed("you replaced the labels that are kept: replace those where drop is True.")
    if not torch.equal(got, expected):
        raise Failed("where drop is True the label should be num_classes (10 here), elsewhere unchanged.")
    again = labels_for_training(torch.tensor([1, 2]), torch.tensor([False, True]), 3)
    if not torch.equal(again, torch.tensor([1, 3])):
        raise Failed("right for 10 classes, wrong for 3: use num_classes, not a fixed 10.")
    return "the table has num_classes + 1 rows; the last one learns what 'no class' means."


@exercise("13.3", "cross-attention, one head")
def check_cross_attention(cross_attention):
    g = torch.Generator().manual_seed(133)
    b, n, m, c, d = 2, 6, 5, 8, 4                    # 6 image positions, 5 text tokens; C = D = 8 channels
    image_tokens = torch.randn(b, n, c, generator=g)
    text_tokens = torch.randn(b, m, c, generator=g)
    w_q, w_k, w_v = (torch.randn(c, d, generator=g) for _ in range(3))
    got = cross_attention(image_tokens.clone(), text_tokens.clone(), w_q.clone(), w_k.clone(), w_v.clone())

    def attend(queries_from, keys_from, scale=d ** -0.5, dim=-1, value_weight=w_v):
        q = queries_from @ w_q                                          # (B, N, d)
        k = keys_from @ w_k                                             # (B, M, d)
        v = keys_from @ value_weight                                    # (B, M, d)
        weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=dim)    # (B, N, M)
        return weights @ v, weights

    expected, _ = attend(image_tokens, text_tokens)
    if not isinstance(got, torch.Tensor):
        raise Failed("return the output tensor, (B, N, d): one vector per image position.")
    if tuple(got.shape) == (b, m, d):
        raise Failed("your output has one vector per text token (B, M, d). The queries come from the image "
                     "(image_tokens @ w_q), so there is one output per image position.")
    if tuple(got.shape) == (b, n, m):
        raise Failed("that is the attention weights (B, N, M); return weights @ values, (B, N, d).")
    if got.shape != expected.shape:
        raise Failed(f"for {n} image positions the output should have shape ({b}, {n}, {d}), got {tuple(got.shape)}.")
    wrong = {
        "that is self-attention: the keys and values came from the image tokens. In cross-attention they come "
        "from the text tokens (text_tokens @ w_k, text_tokens @ w_v).": attend(image_tokens, image_tokens)[0],
        "divide the scores by sqrt(d), the square root of the width of a head (d = w_q.shape[1]), so that the "
        "softmax does not saturate as d grows.": attend(image_tokens, text_tokens, scale=1.0)[0],
        "you divided by d; divide by its square root, sqrt(d).": attend(image_tokens, text_tokens, scale=1 / d)[0],
        "you divided by sqrt of the channels of the tokens (C); divide by sqrt(d), the width of q and k.":
            attend(image_tokens, text_tokens, scale=c ** -0.5)[0],
        "the softmax ran over the image positions (dim=1); each query's weights must sum to 1 over the text "
        "tokens: softmax over the last dimension.": attend(image_tokens, text_tokens, dim=1)[0],
        "you multiplied the weights by the keys; multiply them by the values (text_tokens @ w_v).":
            attend(image_tokens, text_tokens, value_weight=w_k)[0],
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the output differs from softmax(q k^T / sqrt(d)) v with q = image_tokens @ w_q and "
                     "k, v = text_tokens @ w_k, text_tokens @ w_v.")
    return "queries from the pixels, keys and values from the words: the layer `attn2` of every spatial transformer."


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
