"""Checks for the exercises of lesson 19, DreamBooth and LoRA.

19.1 the prior-preservation loss, 19.2 the LoRA forward, 19.3 merging the adapter into the
weight, 19.4 the distance from a sample to its nearest training copy. Every check runs the
student's function on seeded inputs, compares with the right answer, and names the typical
wrong answers.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, as_tensor, exercise, name_the_mistake, same_tensor

# this lesson's tolerances: float32 rounding differs between x @ (W + B @ A).T and x @ W.T + (x @ A.T) @ B.T by
# up to about 1e-6 where an output is near 0; the typical mistakes are off by far more than 1e-5.
_close = partial(same_tensor, rtol=1e-5, atol=1e-5)
_name_the_mistake = partial(name_the_mistake, rtol=1e-5, atol=1e-5)


def _is_shape_error(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(words in text for words in ("cannot be multiplied", "size of tensor", "shape", "must match"))


# --------------------------------------------------------------------------- 19.1

def _prior_batch(num_instance: int, num_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A U-Net's prediction and its target for `num_instance` subject examples, then `num_class` class examples.

    The class part is much further off than the subject part, so that every way of weighting the
    two parts gives another number.
    """
    g = torch.Generator().manual_seed(seed)
    target = torch.randn((num_instance + num_class, 4, 8, 8), generator=g)
    off = torch.randn(target.shape, generator=g)
    off[:num_instance] *= 0.4
    off[num_instance:] *= 1.5
    return target + off, target


def _two_parts(prediction, target, split: int, first_weight: float, second_weight: float,
               reduction: str = "mean") -> torch.Tensor:
    """first_weight * MSE(batch[:split]) + second_weight * MSE(batch[split:])."""
    first = F.mse_loss(prediction[:split], target[:split], reduction=reduction)
    second = F.mse_loss(prediction[split:], target[split:], reduction=reduction)
    return first_weight * first + second_weight * second


def _prior_mistakes(prediction, target, n: int, w: float) -> dict:
    """The typical wrong losses, each with the message that names it."""
    size = len(prediction)
    return {
        "that is one MSE over the whole batch, which weights the two parts by their sizes and ignores "
        "prior_loss_weight: split the batch at num_instance, take F.mse_loss of each part, then add "
        "prior_loss_weight times the class part's.": F.mse_loss(prediction, target),
        "prior_loss_weight multiplied the subject's part (or the two parts are swapped): the first num_instance "
        "examples are the subject's and count once; the weight multiplies the MSE of the class (prior) "
        "examples that follow.": _two_parts(prediction, target, n, w, 1.0),
        "you left out prior_loss_weight: the class part's MSE is multiplied by it before it is added.":
            _two_parts(prediction, target, n, 1.0, 1.0),
        "you summed the squared errors (reduction='sum'): the loss should not grow with the batch and picture "
        "size. Take the mean of each part, F.mse_loss's default.": _two_parts(prediction, target, n, 1.0, w, "sum"),
        "you averaged the two parts: add them, loss = subject MSE + prior_loss_weight * class MSE.":
            _two_parts(prediction, target, n, 0.5, 0.5 * w),
        "you took the class examples from the front of the batch: the batch holds the num_instance subject "
        "examples first, then the class examples.": _two_parts(prediction, target, size - n, w, 1.0),
        f"the two parts need not be the same size: here {n} subject and {size - n} class examples, and you split "
        "the batch in halves. Split at num_instance: prediction[:num_instance] and prediction[num_instance:] "
        "(diffusers' script can use chunk(2) only because its batches always hold as many of each).":
            _two_parts(prediction, target, size // 2, 1.0, w) if 2 * n != size else None,
    }


@exercise("19.1", "the prior-preservation loss")
def check_prior_preservation_loss(prior_preservation_loss):
    for n, m, w in ((3, 5, 0.8), (2, 2, 0.5)):          # the parts need not be the same size
        prediction, target = _prior_batch(n, m, seed=191 + m)
        expected = _two_parts(prediction, target, n, 1.0, w)
        leaf = prediction.clone().requires_grad_(True)
        got = prior_preservation_loss(leaf, target.clone(), n, w)
        if isinstance(got, (int, float)):
            raise Failed("return the loss as a tensor, what F.mse_loss gives, not a Python number: the training "
                         "step calls loss.backward() on it.")
        if not isinstance(got, torch.Tensor):
            raise Failed(f"return the loss as a tensor, got {type(got).__name__}.")
        if got.numel() != 1:
            raise Failed(f"return one number, the loss of the whole batch; got a tensor of shape "
                         f"{tuple(got.shape)} (reduction='none' keeps one loss per element: use the default mean).")
        if not got.requires_grad:
            raise Failed("the loss is not connected to the prediction (.item(), .detach() or torch.no_grad()): "
                         "loss.backward() would have nothing to follow back to the U-Net.")
        got = got.detach().float().reshape(())
        _name_the_mistake(got, _prior_mistakes(prediction, target, n, w))
        if not _close(got, expected):
            if n == m:
                raise Failed(f"right for one batch, wrong for another ({n} subject and {m} class examples, "
                             f"prior_loss_weight {w}): use num_instance and prior_loss_weight as they are given.")
            raise Failed("the loss differs from F.mse_loss(prediction[:n], target[:n]) + prior_loss_weight * "
                         "F.mse_loss(prediction[n:], target[n:]), with n = num_instance.")
    return "the loss diffusers' train_dreambooth.py minimises with --with_prior_preservation."


# --------------------------------------------------------------------------- 19.2

def _lora_layer(n: int, d_in: int, d_out: int, r: int, bias: bool, seed: int):
    """Input, frozen weight and bias, and trained A (r, in) and B (out, r), all of similar size."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, d_in), generator=g)
    weight = torch.randn((d_out, d_in), generator=g) / d_in ** 0.5
    b = torch.randn(d_out, generator=g) if bias else None
    A = torch.randn((r, d_in), generator=g) / d_in ** 0.5
    B = torch.randn((d_out, r), generator=g) / r ** 0.5
    return x, weight, b, A, B


def _lora_output(x, weight, bias, A, B, scale: float, *, with_bias: bool = True, update=None) -> torch.Tensor:
    """x @ weight.T (+ bias) + scale * x @ update.T, with update = B @ A unless given."""
    update = B @ A if update is None else update
    out = x @ weight.T + scale * (x @ update.T)
    return out + bias if with_bias and bias is not None else out


_LORA_ORDER = ("a linear layer computes x @ W.T, so the adapter's part is x @ (B @ A).T = (x @ A.T) @ B.T: x goes "
               "through A first, A (r, in) takes it to (N, r), then B (out, r) to (N, out).")


def _call_lora_forward(lora_forward, x, weight, bias, A, B, alpha):
    try:
        return lora_forward(x, weight, bias, A, B, alpha)
    except RuntimeError as exc:
        if _is_shape_error(exc):
            raise Failed(f"your code raised a shape error ({exc}): A and B are multiplied in the wrong order or "
                         f"without transposing; {_LORA_ORDER}") from exc
        raise
    except TypeError as exc:
        if bias is None and "NoneType" in str(exc):
            raise Failed("bias is None here (a layer built with bias=False) and your code raised TypeError: add "
                         "the bias only when it is given (if bias is not None), or use F.linear(x, weight, bias), "
                         "which accepts None.") from exc
        raise


@exercise("19.2", "the LoRA forward")
def check_lora_forward(lora_forward):
    # a rectangular layer with a bias, then a square one without (as the attention projections are)
    for n, d_in, d_out, r, alpha, bias in ((5, 12, 7, 3, 6.0, True), (4, 8, 8, 2, 8.0, False)):
        x, weight, b, A, B = _lora_layer(n, d_in, d_out, r, bias, seed=192 + d_in)
        inputs = [x, weight, b, A, B]
        kept = [t.clone() if t is not None else None for t in inputs]
        A_leaf, B_leaf = A.clone().requires_grad_(True), B.clone().requires_grad_(True)
        got = _call_lora_forward(lora_forward, x, weight, b, A_leaf, B_leaf, alpha)
        if not all(t is None or torch.equal(t, k) for t, k in zip(inputs, kept)) \
                or not (torch.equal(A_leaf.detach(), A) and torch.equal(B_leaf.detach(), B)):
            raise Failed("your function changed one of its inputs: the frozen weight and the adapter stay as they "
                         "are; compute the output beside them.")
        expected = _lora_output(x, weight, b, A, B, alpha / r)
        connected = isinstance(got, torch.Tensor) and got.requires_grad
        got = as_tensor(got, "the layer's output", expected.shape)
        square = d_in == d_out                                  # where x @ B @ A and x @ weight run
        _name_the_mistake(got, {
            "you left out the scale: the adapter's part is multiplied by alpha / r.":
                _lora_output(x, weight, b, A, B, 1.0),
            "the scale is alpha / r, not alpha: divide by the rank r = A.shape[0].":
                _lora_output(x, weight, b, A, B, alpha),
            "the scale is upside down: alpha / r, not r / alpha.": _lora_output(x, weight, b, A, B, r / alpha),
            "you divided by the rank but left out alpha: the scale is alpha / r.":
                _lora_output(x, weight, b, A, B, 1.0 / r),
            "you forgot the bias: the frozen layer's output is x @ weight.T + bias.":
                _lora_output(x, weight, b, A, B, alpha / r, with_bias=False) if b is not None else None,
            f"you multiplied by B first and A second without transposing (x @ B @ A, or x @ (B @ A)); "
            f"{_LORA_ORDER}": _lora_output(x, weight, b, A, B, alpha / r, update=(B @ A).T) if square else None,
            "x @ weight is the wrong way round: a linear layer's weight is (out, in) and it computes x @ weight.T.":
                x @ weight + alpha / r * (x @ A.T) @ B.T if square else None,
            "that is the frozen layer alone: add the adapter's part, (alpha / r) * (x @ A.T) @ B.T.":
                _lora_output(x, weight, b, A, B, 0.0),
        })
        if not _close(got, expected):
            raise Failed("the output differs from x @ weight.T + bias + (alpha / r) * (x @ A.T) @ B.T, "
                         "with r = A.shape[0].")
        if not connected:
            raise Failed("the numbers are right, but the output is not connected to A and B (torch.no_grad(), "
                         ".detach()): training could not move the adapter.")
    return "what a LoRA layer computes: the frozen layer plus a rank-r update, scaled by alpha / r."


# --------------------------------------------------------------------------- 19.3

@exercise("19.3", "merge the adapter")
def check_merge_lora(merge_lora):
    # a rectangular weight with the default scale, the same with scale 0.5, then a square weight
    for d_in, d_out, r, alpha, scale in ((12, 7, 3, 6.0, None), (12, 7, 3, 6.0, 0.5), (8, 8, 2, 8.0, 0.5)):
        _, weight, _, A, B = _lora_layer(1, d_in, d_out, r, False, seed=193 + d_in)
        kept = weight.clone(), A.clone(), B.clone()
        try:
            got = merge_lora(weight, A, B, alpha) if scale is None else merge_lora(weight, A, B, alpha, scale)
        except RuntimeError as exc:
            if _is_shape_error(exc):
                raise Failed(f"your code raised a shape error ({exc}): the update is B @ A, (out, r) @ (r, in) = "
                             "(out, in), the weight's shape; A @ B and A.T @ B.T do not fit.") from exc
            raise
        if not torch.equal(weight, kept[0]):
            raise Failed("you changed `weight` in place (weight += ..., weight.add_(...)): return the merged weight "
                         "as a new tensor, weight + ..., and leave the original as it is, to compare with or to go "
                         "back to (unfuse_lora).")
        if not (torch.equal(A, kept[1]) and torch.equal(B, kept[2])):
            raise Failed("you changed A or B: read them, do not write into them.")
        s = 1.0 if scale is None else scale
        delta = B @ A
        expected = weight + s * (alpha / r) * delta
        if isinstance(got, torch.Tensor) and d_in != d_out and tuple(got.shape) == (d_in, d_out):
            raise Failed(f"the merged weight has shape {(d_in, d_out)}, the transpose of the weight's "
                         f"{(d_out, d_in)}: the update is B @ A, (out, r) @ (r, in), not A.T @ B.T.")
        got = as_tensor(got, "the merged weight", expected.shape)
        _name_the_mistake(got, {
            "you left out alpha / r: the update fuse_lora adds is scale * (alpha / r) * B @ A.":
                weight + s * delta,
            "the update is scaled by alpha / r, not alpha: divide by the rank r = A.shape[0].":
                weight + s * alpha * delta,
            "the scale is upside down: alpha / r, not r / alpha.": weight + s * (r / alpha) * delta,
            "you ignored `scale`: fuse_lora(lora_scale=...) multiplies the update by it, on top of alpha / r.":
                weight + (alpha / r) * delta if scale is not None else None,
            "the scale multiplies only the adapter's update, not the frozen weight: weight + scale * (alpha / r) * "
            "B @ A.": s * (weight + (alpha / r) * delta) if scale is not None else None,
            "that is the transpose of the update: (B @ A).T, or A.T @ B.T. The update is B @ A, shaped like the "
            "weight (out, in).": weight + s * (alpha / r) * delta.T if d_in == d_out else None,
            "that is the update alone: add it to the weight.": s * (alpha / r) * delta,
            "that is the weight unchanged: add the update scale * (alpha / r) * B @ A.": weight,
        })
        if not _close(got, expected):
            raise Failed("the merged weight differs from weight + scale * (alpha / r) * B @ A, with r = A.shape[0].")
    return "the weight fuse_lora writes into each layer, after which the adapter costs nothing at sampling time."


# --------------------------------------------------------------------------- 19.4

def _pictures(n: int, m: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` samples and `m` training copies in [0, 1]; the first sample is nearly a copy, the second half one."""
    g = torch.Generator().manual_seed(seed)
    copies = torch.rand((m, 1, height, width), generator=g)
    samples = torch.rand((n, 1, height, width), generator=g) ** 2
    samples[0] = (copies[m - 1] + 0.03 * torch.randn((1, height, width), generator=g)).clamp(0, 1)
    samples[1] = 0.5 * copies[0] + 0.5 * samples[1]
    return samples, copies


def _distances(samples, copies, kind: str = "rms") -> torch.Tensor:
    """The table (N, M) of distances between every sample and every copy."""
    diff = samples.flatten(1)[:, None] - copies.flatten(1)[None]
    if kind == "abs":
        return diff.abs().mean(-1)
    squared = diff.pow(2)
    return {"rms": squared.mean(-1).sqrt(), "mse": squared.mean(-1), "euclid": squared.sum(-1).sqrt()}[kind]


@exercise("19.4", "memorisation: the nearest training copy")
def check_nearest_copy_distance(nearest_copy_distance):
    for n, m, height, width in ((4, 6, 28, 28), (3, 5, 12, 20)):
        samples, copies = _pictures(n, m, height, width, seed=194 + height)
        kept = samples.clone(), copies.clone()
        table = _distances(samples, copies)
        expected = table.min(1).values
        got = nearest_copy_distance(samples, copies)
        if not (torch.equal(samples, kept[0]) and torch.equal(copies, kept[1])):
            raise Failed("your function changed the samples or the copies: read them, do not write into them.")
        if not isinstance(got, torch.Tensor) and hasattr(got, "values") and hasattr(got, "indices"):
            raise Failed("torch.min(..., dim=...) returns a pair (values, indices): return its .values, the "
                         "distances.")
        if isinstance(got, torch.Tensor):
            if not got.is_floating_point():
                raise Failed("you returned whole numbers, the indices of the nearest copies (argmin): return the "
                             "distances themselves, .min(dim=1).values.")
            if got.numel() == 1:
                raise Failed(f"return one distance per sample, a tensor of shape ({n},): you returned one number "
                             "for them all. Take the minimum over the copies only (dim=1), not over everything.")
            if tuple(got.shape) == (n, m):
                raise Failed(f"that is the whole table of distances ({n} samples x {m} copies): keep, for each "
                             "sample, the smallest, .min(dim=1).values.")
            if tuple(got.shape) == (m,):
                raise Failed(f"you returned one number per copy ({m}); return one per sample ({n}): minimise over "
                             "the copies (dim=1), not over the samples.")
        got = as_tensor(got, "the distances", expected.shape)
        _name_the_mistake(got, {
            "that is the mean distance to all the copies: memorisation is about the nearest one, take the minimum "
            "over the copies.": table.mean(1),
            "that is the distance to the farthest copy: take the minimum over the copies, not the maximum.":
                table.max(1).values,
            f"that is the Euclidean distance (square root of the sum over the pixels), which grows with the size of "
            f"the picture: divide the sum of squares by the number of pixels, H * W = {height * width}, before "
            "the square root (use .mean(), not .sum()).": _distances(samples, copies, "euclid").min(1).values,
            "that is the mean squared difference: take its square root (root-mean-square), so that the distance "
            "is in pixel units.": _distances(samples, copies, "mse").min(1).values,
            "that is the mean absolute difference: square the differences, average them, then take the square "
            "root (root-mean-square).": _distances(samples, copies, "abs").min(1).values,
        }, rtol=1e-4, atol=1e-6)                     # 1e-4: |s|^2 + |c|^2 - 2 s.c (torch.cdist's fast path) is fine
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
            if (height, width) != (28, 28):
                raise Failed(f"right for 28x28 pictures, wrong for {height}x{width}: take the size from the pictures "
                             "you are given, and the mean over all their pixels.")
            raise Failed("the distances differ from sqrt(mean over the pixels of (sample - copy)^2), minimised over "
                         "the copies.")
    return "the number that says whether a fine-tuned model draws its training pictures back."
