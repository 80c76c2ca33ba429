"""Checks for the exercises of lesson 03, predicting noise.

03.1 reading the noise level off a noisy image, 03.2 the ideal denoiser of a finite set of images,
03.3 the loss a perfect noise predictor would reach. The checks use a fixed handful of Fashion-MNIST
test images (padded to 32x32, in [-1, 1]) and their own seeded generators, compare with the right
answer, and name the typical wrong answers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from sdlearn.exercises import Failed, exercise


@lru_cache(maxsize=1)
def _fashion_test() -> torch.Tensor:
    from sdlearn.data import fashion_for_diffusion

    images, _ = fashion_for_diffusion("test")
    return images[:64].clone()                      # (64, 1, 32, 32), all the checks need


def _fashion(n: int) -> torch.Tensor:
    """The first `n` Fashion-MNIST test images (n, 1, 32, 32) in [-1, 1], a fresh copy."""
    return _fashion_test()[:n].clone()


def _ideal(x: torch.Tensor, data: torch.Tensor, sigma: float, temperature: float | None = None,
           power: int = 2) -> torch.Tensor:
    """E[x0 | x] for x0 uniform over `data`: data weighted by softmax(-|x - data_i|^power / temperature).

    The squared distances are summed directly (not torch.cdist squared), which keeps float64 exact
    enough to be the yardstick. `temperature` defaults to 2 sigma^2.
    """
    temperature = 2 * sigma ** 2 if temperature is None else temperature
    squared = (x.flatten(1)[:, None] - data.flatten(1)[None]).pow(2).sum(-1)    # (B, N)
    distance = squared if power == 2 else squared.sqrt()
    weights = torch.softmax(-distance / temperature, dim=1)
    return (weights @ data.flatten(1)).view_as(x)


# --------------------------------------------------------------------------- 03.1

_SIGMAS_31 = (0.3, 1.0, 3.0, 10.0, 80.0)
# the largest mean relative error |sigma_hat / sigma - 1| allowed at each level. The median of the
# neighbour differences is off by about 0.13 at sigma 0.3 (the picture's own edges push it up) and by
# 0.03 to 0.05 from sigma 1 on; forgetting sqrt(2) is off by 0.4 or more. At sigma 0.1 the edges push
# the median up by about 0.3, so that level is not asked for.
_ENOUGH_31 = 0.2


def _per_image(got, batch: int, what: str) -> torch.Tensor:
    """`got` as a float64 tensor (batch,), once it holds one finite number per image; else `Failed`."""
    if not isinstance(got, torch.Tensor):
        raise Failed(f"return {what} as a tensor of shape ({batch},), got {type(got).__name__}.")
    if got.numel() == 1 and batch > 1:
        raise Failed(f"you returned one number for the whole batch: return one estimate per image, shape "
                     f"({batch},). Reduce over each image's pixels (dim=1 after x.flatten(1)), not over the batch.")
    if got.dim() == 0 or got.shape[0] != batch or got.numel() != batch:
        raise Failed(f"return one estimate per image, a tensor of shape ({batch},) (or ({batch}, 1, 1, 1)); got "
                     f"shape {tuple(got.shape)}. Reduce over all the pixels of each image.")
    got = got.detach().to(torch.float64).reshape(batch)
    if not torch.isfinite(got).all():
        raise Failed(f"some of {what} are NaN or inf: {int((~torch.isfinite(got)).sum())} of {batch}.")
    return got


def _per_sigma(values: dict, digits: int = 2) -> str:
    """{sigma: value} as "0.13 at sigma 0.3, 0.04 at 1, ..."."""
    text = ", ".join(f"{v:.{digits}f} at {s:g}" for s, v in values.items())
    return text.replace(" at ", " at sigma ", 1)


@exercise("03.1", "reading the noise level off the image")
def check_estimate_sigma(estimate_sigma):
    clean = _fashion(64)
    g = torch.Generator().manual_seed(31)
    sigma = torch.tensor(_SIGMAS_31).repeat_interleave(len(clean))            # (320,): each image its own level
    x0 = clean.repeat(len(_SIGMAS_31), 1, 1, 1)                               # the 64 images at every level
    x = x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=g)     # (320, 1, 32, 32)
    got = _per_image(estimate_sigma(x.clone()), len(x), "the estimates")
    ratio = (got / sigma.double()).view(len(_SIGMAS_31), -1)                   # (levels, images)
    errors = {s: (r - 1).abs().mean().item() for s, r in zip(_SIGMAS_31, ratio)}
    typical = {s: r.median().item() for s, r in zip(_SIGMAS_31, ratio)}       # sigma_hat / sigma, typically
    if all(e <= _ENOUGH_31 for e in errors.values()):
        return f"mean relative error {_per_sigma(errors)}: the noise level can be read off the noisy image itself."
    table = f"mean relative error |sigma_hat / sigma - 1| {_per_sigma(errors)}"
    large = [s for s in _SIGMAS_31 if s >= 3]                                # levels where the picture hardly matters
    whole_std = x.flatten(1).std(dim=1).double()
    if torch.allclose(got, whole_std, rtol=2e-2):
        raise Failed(f"that is the standard deviation of the whole noisy image ({table}). At small sigma it "
                     f"measures the picture's own contrast, about {x0.flatten(1).std(dim=1).mean().item():.1f} "
                     "here, not the noise. Take differences of neighbouring pixels, d = x[..., 1:] - x[..., :-1]: "
                     "where the picture is flat they hold noise only.")
    if all(0.5 <= typical[s] / s <= 2.5 for s in (10.0, 80.0)):
        raise Failed(f"your estimate grows like sigma squared (at sigma 80 it is about {typical[80.0] * 80:.0f}): "
                     "that is a variance. Return a standard deviation, its square root.")
    if all(1.3 <= typical[s] <= 1.55 for s in large):
        raise Failed(f"your estimate is about 41% too high at every sigma ({table}): the difference of two "
                     "pixels, each with noise of level sigma, has standard deviation sqrt(2) * sigma. Divide by "
                     "sqrt(2): sigma_hat = median(|d|) / (0.6745 * sqrt(2)).")
    if all(errors[s] <= _ENOUGH_31 for s in large):
        raise Failed(f"right at large sigma, too far off at small sigma ({table}): there the picture's own edges "
                     "and texture count as noise. Use the median of |d|, which ignores the few large differences "
                     "at edges, rather than a mean or a standard deviation over all the pixels.")
    factors = [typical[s] for s in large]
    if max(factors) / min(factors) < 1.25:
        raise Failed(f"your estimate is off by about the same factor, {sum(factors) / len(factors):.2f}, at every "
                     f"large sigma ({table}): a constant is missing or wrong. d = x[..., 1:] - x[..., :-1] has "
                     "standard deviation sqrt(2) * sigma where the picture is flat, and the median of |N(0, 1)| "
                     "is 0.6745.")
    raise Failed(f"{table}; each should be at most {_ENOUGH_31}. Estimate sigma from the differences of "
                 "neighbouring pixels: median(|d|) / (0.6745 * sqrt(2)), one number per image.")


# --------------------------------------------------------------------------- 03.2

_SIGMAS_32 = (0.05, 1.0, 5.0, 30.0)
# float32 against the float64 yardstick: torch.cdist(...) ** 2 (a square root, then its square) is off
# by up to about 1.3e-4 at sigma 5 and 30, summing the squares directly by about 2e-5; every typical
# mistake is off by 0.3 or more wherever it differs from the right answer.
_ATOL_32 = 1e-3


@exercise("03.2", "the ideal denoiser of a finite set of images")
def check_ideal_denoiser(ideal_denoiser):
    data = _fashion(16)
    g = torch.Generator().manual_seed(32)
    picks = torch.randint(len(data), (8,), generator=g)
    for sigma in _SIGMAS_32:
        x0 = data[picks]
        x = x0 + sigma * torch.randn(x0.shape, generator=g)                  # (8, 1, 32, 32)
        x_in, data_in = x.clone(), data.clone()
        got = ideal_denoiser(x_in, data_in, sigma)
        if not (torch.equal(x_in, x) and torch.equal(data_in, data)):
            raise Failed("your function changed x or data: read them, do not write into them.")
        if not isinstance(got, torch.Tensor):
            raise Failed(f"return the denoised images as a tensor, got {type(got).__name__}.")
        if tuple(got.shape) != tuple(x.shape):
            raise Failed(f"return one denoised image per noisy image, shaped like x {tuple(x.shape)}; got "
                         f"{tuple(got.shape)} (data holds {len(data)} images).")
        got = got.detach().to(torch.float64)
        if not torch.isfinite(got).all():
            raise Failed(f"NaN or inf at sigma {sigma:g}: exp(-|x - data_i|^2 / (2 sigma^2)) underflows to 0 for "
                         f"every data image in {x[0].numel()} dimensions (the exponents are around -500), and 0 / 0 "
                         "is NaN. Use torch.softmax or subtract the largest exponent before exp.")
        xd, dd = x.double(), data.double()
        expected = _ideal(xd, dd, sigma)
        if torch.allclose(got, expected, rtol=0, atol=_ATOL_32):
            continue
        squared = (xd.flatten(1)[:, None] - dd.flatten(1)[None]).pow(2).sum(-1)   # (B, N)
        logits = -squared / (2 * sigma ** 2)
        shifted = (logits - logits.max(dim=1, keepdim=True).values).exp()
        mistakes = {
            f"you returned the nearest data image: right at small sigma, where one image takes all the weight, but "
            f"at sigma {sigma:g} several images share it (the larger sigma, the closer the answer moves to the "
            "mean of the data). Average all the data images with the weights softmax(-|x - data_i|^2 / "
            "(2 sigma^2)).": dd[squared.argmin(dim=1)],
            "the weights use the distance |x - data_i|; use its square, |x - data_i|^2 (the Gaussian density "
            "is exp(-|x - x0|^2 / (2 sigma^2))).": _ideal(xd, dd, sigma, power=1),
            "you divided the squared distance by sigma^2: the Gaussian density is exp(-|x - x0|^2 / (2 sigma^2)), "
            "so the factor is 2 sigma^2.": _ideal(xd, dd, sigma, temperature=sigma ** 2),
            "you divided the squared distance by sigma: sigma is a standard deviation, and the Gaussian density is "
            "exp(-|x - x0|^2 / (2 sigma^2)), so the factor is 2 sigma^2.": _ideal(xd, dd, sigma, temperature=sigma),
            "you divided the squared distance by 2 sigma: the Gaussian density is exp(-|x - x0|^2 / (2 sigma^2)), "
            "so the factor is 2 sigma^2.": _ideal(xd, dd, sigma, temperature=2 * sigma),
            "the weights are normalised over the noisy images (softmax over dim=0): each noisy image's weights "
            "over the data images must sum to 1, softmax over dim=1 of the (B, N) table.":
                (torch.softmax(logits, dim=0) @ dd.flatten(1)).view_as(xd),
            "the weights are not normalised: divide them by their sum over the data images (torch.softmax does "
            "both the exp and the division), so that the answer is an average of the data images.":
                (shifted @ dd.flatten(1)).view_as(xd),
            "the weights are not normalised (here they all underflow to 0): divide them by their sum over the "
            "data images; torch.softmax does both the exp and the division, without underflow.":
                (logits.exp() @ dd.flatten(1)).view_as(xd),
        }
        for message, answer in mistakes.items():
            if torch.allclose(got, answer, rtol=0, atol=_ATOL_32):
                raise Failed(message)
        worst = (got - expected).abs().max().item()
        raise Failed(f"at sigma {sigma:g} the denoised images differ from the average of the data images weighted "
                     f"by softmax(-|x - data_i|^2 / (2 sigma^2)) by up to {worst:.3g}.")
    return ("E[x0 | x] of a finite set of images: at small sigma the image x came from, at large sigma an "
            "average of many.")


# --------------------------------------------------------------------------- 03.3

_SIGMAS_33 = (0.1, 1.0, 3.0, 10.0, 30.0)
_SAMPLES_33 = 4096        # the check's own estimate
_FEWEST_33 = 256          # any estimate from at least this many samples passes
_Z_33 = 4.0               # standard errors allowed
_ABS_33 = 1e-6            # float32 rounding where the floor is 0


def _reference_denoiser(x: torch.Tensor, data: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x] for x0 drawn uniformly from `data`: the denoiser the check hands to 03.3."""
    weights = torch.softmax(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2), dim=1)  # (B, N)
    return (weights @ data.flatten(1)).view_as(x)


def _losses_per_sample(data: torch.Tensor, sigma: float, n: int, generator: torch.Generator) -> dict:
    """For n draws x = x0 + sigma eps, the mean over the pixels of (eps - best guess)^2, per draw (n,).

    Two best guesses: the right one, (x - E[x0 | x]) / sigma, and the one from the nearest data image.
    """
    picks = torch.randint(len(data), (n,), generator=generator)
    x0 = data[picks]
    eps = torch.randn(x0.shape, generator=generator)
    x = x0 + sigma * eps
    nearest = data[torch.cdist(x.flatten(1), data.flatten(1)).argmin(dim=1)]
    return {"right": (eps - (x - _reference_denoiser(x, data, sigma)) / sigma).pow(2).flatten(1).mean(1).double(),
            "nearest": (eps - (x - nearest) / sigma).pow(2).flatten(1).mean(1).double()}


def _tolerance(per_sample: torch.Tensor) -> float:
    """How far a correct estimate from `_FEWEST_33` samples may be from the mean of `per_sample`."""
    spread = per_sample.std().item()
    return _Z_33 * spread * (1 / math.sqrt(_FEWEST_33) + 1 / math.sqrt(len(per_sample))) + _ABS_33


def _one_number(got, sigma: float) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Failed(f"return one number, the mean over the samples and the pixels; at sigma {sigma:g} you "
                         f"returned a tensor of shape {tuple(got.shape)}.")
        got = got.detach().item()
    if not isinstance(got, (int, float)):
        raise Failed(f"return the floor as a Python float (or a 0-d tensor), got {type(got).__name__}.")
    if not math.isfinite(got):
        raise Failed(f"at sigma {sigma:g} your floor is {got}.")
    return float(got)


@exercise("03.3", "the loss a perfect network would reach")
def check_noise_loss_floor(noise_loss_floor):
    data = _fashion(32)
    pixels = data[0].numel()
    got, floors, right, nearest = {}, {}, {}, {}
    for i, sigma in enumerate(_SIGMAS_33):
        data_in = data.clone()
        got[sigma] = _one_number(noise_loss_floor(data_in, sigma, _reference_denoiser,
                                                  torch.Generator().manual_seed(3300 + i)), sigma)
        if not torch.equal(data_in, data):
            raise Failed("your function changed data: read it, do not write into it.")
        losses = _losses_per_sample(data, sigma, _SAMPLES_33, torch.Generator().manual_seed(330 + i))
        floors[sigma] = losses["right"].mean().item()
        right[sigma] = (floors[sigma], _tolerance(losses["right"]))
        nearest[sigma] = (losses["nearest"].mean().item(), _tolerance(losses["nearest"]))

    def near(expected: dict, factor: dict | None = None) -> bool:
        """Whether every floor is within tolerance of `expected` (mean, tolerance), times `factor` per sigma."""
        factor = factor or {s: 1.0 for s in _SIGMAS_33}
        return all(abs(got[s] - factor[s] * expected[s][0]) <= factor[s] * expected[s][1] for s in _SIGMAS_33)

    table = _per_sigma(got, digits=5)
    if not near(right):
        if all(abs(v) < 1e-9 for v in got.values()):
            raise Failed("you returned 0: a perfect network would know the noise exactly only if x told which image "
                         "was noised. Once sigma is large, many images could hide under the same x, and the best "
                         "guess E[eps | x] = (x - denoiser(x, data, sigma)) / sigma averages over them: compute "
                         "the mean of (eps - E[eps | x])^2 over your samples.")
        if near(right, {s: s ** 2 for s in _SIGMAS_33}):
            raise Failed(f"your floors grow like sigma^2 times the right ones ({table}): that is the error of the "
                         "denoised image, (x0 - E[x0 | x])^2. The network predicts the noise: E[eps | x] = "
                         "(x - denoiser(x, data, sigma)) / sigma, and the loss is the mean of (eps - E[eps | x])^2.")
        if near(right, {s: pixels for s in _SIGMAS_33}):
            raise Failed(f"your floors are {pixels} times too large ({table}): you summed over the {pixels} pixels. "
                         "Take the mean over the samples and the pixels, as F.mse_loss does.")
        if near(nearest):
            raise Failed(f"those are the floors of the nearest data image ({table}), about twice the right ones at "
                         "large sigma. The best guess averages over every image that could hide under x: use "
                         "denoiser(x, data, sigma), E[x0 | x].")
        expected = ", ".join(f"{right[s][0]:.5f} +- {right[s][1]:.5f} at {s:g}" for s in _SIGMAS_33)
        expected = expected.replace(" at ", " at sigma ", 1)
        raise Failed(f"your floors are {table}; expected {expected}. Draw x0 from data and eps ~ N(0, I) with the "
                     "generator, x = x0 + sigma * eps, and return the mean over samples and pixels of (eps - (x - "
                     "denoiser(x, data, sigma)) / sigma)^2, with at least a few hundred samples.")
    again = _one_number(noise_loss_floor(data.clone(), _SIGMAS_33[3], _reference_denoiser,
                                         torch.Generator().manual_seed(3303)), _SIGMAS_33[3])
    if again != got[_SIGMAS_33[3]]:
        raise Failed("two calls with generators seeded alike gave different floors: draw x0 and eps with the "
                     "generator you are given (torch.randint(..., generator=generator), torch.randn(..., "
                     "generator=generator)), so that a seed reproduces the number.")
    message = f"floors (mean squared error per pixel) {_per_sigma(floors, digits=5)}"
    values = [floors[s] for s in _SIGMAS_33]
    peak = values.index(max(values))
    if values[0] < 1e-5 and 0 < peak < len(values) - 1:
        message += (": 0 while the noise is too weak to hide which image was noised, above 0 once it can, and "
                    "largest at middle noise levels")
    return message + "."
