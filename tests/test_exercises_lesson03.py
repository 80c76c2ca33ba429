"""Lesson 03's checks: right answers pass, typical wrong answers fail with a message that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check, registered


# --------------------------------------------------------------------------- 03.1 estimate_sigma(x)

def estimate_sigma(x):                                         # the lesson's answer
    d = x[..., 1:] - x[..., :-1]                               # (B, 1, 32, 31): horizontal neighbours
    return d.abs().flatten(1).median(dim=1).values / (0.6745 * 2 ** 0.5)


def sigma_from_vertical_neighbours(x):
    d = x[..., 1:, :] - x[..., :-1, :]
    return d.abs().flatten(1).median(dim=1).values / (0.6745 * 2 ** 0.5)


def sigma_from_both_directions(x):
    across = (x[..., 1:] - x[..., :-1]).flatten(1)
    down = (x[..., 1:, :] - x[..., :-1, :]).flatten(1)
    return torch.cat([across, down], dim=1).abs().quantile(0.5, dim=1) / (0.6745 * 2 ** 0.5)


def sigma_from_wavelet(x):                                     # Donoho's: the finest diagonal Haar coefficients
    diagonal = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return diagonal.abs().flatten(1).median(dim=1).values / 0.6745


def sigma_kept_4d(x):
    d = x[..., 1:] - x[..., :-1]
    return (d.abs().flatten(1).median(dim=1).values / (0.6745 * 2 ** 0.5)).view(-1, 1, 1, 1)


def sigma_as_whole_image_std(x):
    return x.std(dim=(1, 2, 3))


def sigma_without_sqrt2(x):
    d = x[..., 1:] - x[..., :-1]
    return d.abs().flatten(1).median(dim=1).values / 0.6745


def sigma_squared(x):
    return estimate_sigma(x) ** 2


def sigma_from_std_of_differences(x):                          # right idea, but edges spoil the standard deviation
    d = x[..., 1:] - x[..., :-1]
    return d.flatten(1).std(dim=1) / 2 ** 0.5


def sigma_without_0_6745(x):
    d = x[..., 1:] - x[..., :-1]
    return d.abs().flatten(1).median(dim=1).values / 2 ** 0.5


def sigma_of_the_whole_batch(x):
    return (x[..., 1:] - x[..., :-1]).abs().median() / (0.6745 * 2 ** 0.5)


def sigma_not_reduced(x):
    return (x[..., 1:] - x[..., :-1]).abs() / (0.6745 * 2 ** 0.5)


def sigma_as_a_list(x):
    return estimate_sigma(x).tolist()


def sigma_with_nan(x):
    sigma = estimate_sigma(x)
    sigma[0] = float("nan")
    return sigma


def sigma_always_one(x):
    return torch.ones(len(x))


# --------------------------------------------------------------------------- 03.2 ideal_denoiser(x, data, sigma)

def ideal_denoiser(x, data, sigma):                            # the lesson's answer
    w = torch.softmax(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2), dim=1)
    return (w @ data.flatten(1)).view_as(x)


def denoiser_summing_squares(x, data, sigma):
    squared = ((x.flatten(1)[:, None] - data.flatten(1)[None]) ** 2).sum(-1)        # (B, N)
    w = torch.softmax(-squared / (2 * sigma ** 2), dim=1)
    return (w @ data.flatten(1)).view_as(x)


def denoiser_expanded(x, data, sigma):                         # |x|^2 + |d|^2 - 2 x.d: rounds differently
    a, b = x.flatten(1), data.flatten(1)
    squared = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T
    w = torch.softmax(-squared / (2 * sigma ** 2), dim=1)
    return (w @ b).view_as(x)


def denoiser_logsumexp(x, data, sigma):
    logits = -torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2)
    w = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).exp()
    return torch.einsum("bn,nchw->bchw", w, data)


def denoiser_loop(x, data, sigma):
    out = []
    for image in x:
        logits = torch.stack([-((image - d) ** 2).sum() / (2 * sigma ** 2) for d in data])
        w = torch.softmax(logits, dim=0)
        out.append((w[:, None, None, None] * data).sum(0))
    return torch.stack(out)


def denoiser_in_float64(x, data, sigma):
    return ideal_denoiser(x.double(), data.double(), sigma)


def denoiser_naive_exp(x, data, sigma):
    w = torch.exp(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2))
    w = w / w.sum(dim=1, keepdim=True)
    return (w @ data.flatten(1)).view_as(x)


def denoiser_distance_not_squared(x, data, sigma):
    w = torch.softmax(-torch.cdist(x.flatten(1), data.flatten(1)) / (2 * sigma ** 2), dim=1)
    return (w @ data.flatten(1)).view_as(x)


def _temperature(x, data, temperature):
    w = torch.softmax(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / temperature, dim=1)
    return (w @ data.flatten(1)).view_as(x)


def denoiser_over_sigma_squared(x, data, sigma):
    return _temperature(x, data, sigma ** 2)


def denoiser_over_sigma(x, data, sigma):
    return _temperature(x, data, sigma)


def denoiser_over_two_sigma(x, data, sigma):
    return _temperature(x, data, 2 * sigma)


def denoiser_nearest(x, data, sigma):
    return data[torch.cdist(x.flatten(1), data.flatten(1)).argmin(dim=1)]


def denoiser_softmax_over_the_batch(x, data, sigma):
    w = torch.softmax(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2), dim=0)
    return (w @ data.flatten(1)).view_as(x)


def denoiser_not_normalised(x, data, sigma):
    logits = -torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2)
    w = (logits - logits.max(dim=1, keepdim=True).values).exp()
    return (w @ data.flatten(1)).view_as(x)


def denoiser_not_normalised_underflowing(x, data, sigma):
    w = torch.exp(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2))
    return (w @ data.flatten(1)).view_as(x)


def denoiser_flat(x, data, sigma):
    w = torch.softmax(-torch.cdist(x.flatten(1), data.flatten(1)) ** 2 / (2 * sigma ** 2), dim=1)
    return w @ data.flatten(1)                                 # (B, C*H*W)


def denoiser_in_place(x, data, sigma):
    denoised = ideal_denoiser(x, data, sigma)
    x.zero_()                                                  # right answer, but x is gone
    return denoised


def denoiser_identity(x, data, sigma):
    return x


# --------------------------------------------------------------------------- 03.3 noise_loss_floor(...)

def noise_loss_floor(data, sigma, denoiser, generator):        # the lesson's answer
    picks = torch.randint(len(data), (512,), generator=generator)
    x0 = data[picks]                                           # (512, C, H, W)
    eps = torch.randn(x0.shape, generator=generator)
    x = x0 + sigma * eps
    best = (x - denoiser(x, data, sigma)) / sigma              # E[eps | x]
    return ((eps - best) ** 2).mean().item()


def floor_with_mse_loss_as_tensor(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (256,), generator=generator)
    eps = torch.randn((256, *data.shape[1:]), generator=generator)
    x = data[picks] + sigma * eps
    return F.mse_loss((x - denoiser(x, data, sigma)) / sigma, eps)               # a 0-d tensor


def floor_every_image_equally(data, sigma, denoiser, generator):                 # 16 noise draws per image
    x0 = data.repeat(16, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x = x0.double() + sigma * eps
    best = (x - denoiser(x, data.double(), sigma)) / sigma
    return float(((eps - best) ** 2).mean())


def floor_zero(data, sigma, denoiser, generator):
    return 0.0


def floor_of_the_denoised_image(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (512,), generator=generator)
    x0 = data[picks]
    x = x0 + sigma * torch.randn(x0.shape, generator=generator)
    return ((x0 - denoiser(x, data, sigma)) ** 2).mean().item()


def floor_summed_over_pixels(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (512,), generator=generator)
    eps = torch.randn((512, *data.shape[1:]), generator=generator)
    x = data[picks] + sigma * eps
    best = (x - denoiser(x, data, sigma)) / sigma
    return ((eps - best) ** 2).sum(dim=(1, 2, 3)).mean().item()


def floor_of_the_nearest_image(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (512,), generator=generator)
    eps = torch.randn((512, *data.shape[1:]), generator=generator)
    x = data[picks] + sigma * eps
    nearest = data[torch.cdist(x.flatten(1), data.flatten(1)).argmin(dim=1)]
    return (((x - nearest) / sigma - eps) ** 2).mean().item()


def floor_per_sample(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (512,), generator=generator)
    eps = torch.randn((512, *data.shape[1:]), generator=generator)
    x = data[picks] + sigma * eps
    return ((eps - (x - denoiser(x, data, sigma)) / sigma) ** 2).flatten(1).mean(1)


def floor_without_the_generator(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (512,))
    eps = torch.randn((512, *data.shape[1:]))
    x = data[picks] + sigma * eps
    return ((eps - (x - denoiser(x, data, sigma)) / sigma) ** 2).mean().item()


def floor_not_divided_by_sigma(data, sigma, denoiser, generator):
    picks = torch.randint(len(data), (512,), generator=generator)
    eps = torch.randn((512, *data.shape[1:]), generator=generator)
    x = data[picks] + sigma * eps
    return ((eps - (x - denoiser(x, data, sigma))) ** 2).mean().item()


def floor_nan(data, sigma, denoiser, generator):
    return float("nan")


# --------------------------------------------------------------------------- the tests

RIGHT = [
    ("03.1", estimate_sigma), ("03.1", sigma_from_vertical_neighbours), ("03.1", sigma_from_both_directions),
    ("03.1", sigma_from_wavelet), ("03.1", sigma_kept_4d),
    ("03.2", ideal_denoiser), ("03.2", denoiser_summing_squares), ("03.2", denoiser_expanded),
    ("03.2", denoiser_logsumexp), ("03.2", denoiser_loop), ("03.2", denoiser_in_float64),
    ("03.3", noise_loss_floor), ("03.3", floor_with_mse_loss_as_tensor), ("03.3", floor_every_image_equally),
]


@pytest.mark.parametrize("exercise_id, answer", RIGHT, ids=[r[1].__name__ for r in RIGHT])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("03.1", sigma_as_whole_image_std, "standard deviation of the whole noisy image"),
    ("03.1", sigma_without_sqrt2, "41% too high at every sigma"),
    ("03.1", sigma_squared, "that is a variance"),
    ("03.1", sigma_from_std_of_differences, "right at large sigma, too far off at small sigma"),
    ("03.1", sigma_without_0_6745, "off by about the same factor, 0.68"),
    ("03.1", sigma_of_the_whole_batch, "one number for the whole batch"),
    ("03.1", sigma_not_reduced, "got shape (320, 1, 32, 31)"),
    ("03.1", sigma_as_a_list, "as a tensor of shape (320,), got list"),
    ("03.1", sigma_with_nan, "NaN or inf: 1 of 320"),
    ("03.1", sigma_always_one, "each should be at most 0.2"),
    ("03.2", denoiser_naive_exp, "Use torch.softmax or subtract the largest exponent"),
    ("03.2", denoiser_distance_not_squared, "use its square"),
    ("03.2", denoiser_over_sigma_squared, "you divided the squared distance by sigma^2"),
    ("03.2", denoiser_over_sigma, "you divided the squared distance by sigma:"),
    ("03.2", denoiser_over_two_sigma, "you divided the squared distance by 2 sigma:"),
    ("03.2", denoiser_nearest, "you returned the nearest data image"),
    ("03.2", denoiser_softmax_over_the_batch, "normalised over the noisy images"),
    ("03.2", denoiser_not_normalised, "the weights are not normalised:"),
    ("03.2", denoiser_not_normalised_underflowing, "here they all underflow to 0"),
    ("03.2", denoiser_flat, "shaped like x (8, 1, 32, 32); got (8, 1024)"),
    ("03.2", denoiser_in_place, "changed x or data"),
    ("03.2", denoiser_identity, "at sigma 0.05 the denoised images differ"),
    ("03.3", floor_zero, "you returned 0"),
    ("03.3", floor_of_the_denoised_image, "that is the error of the denoised image"),
    ("03.3", floor_summed_over_pixels, "1024 times too large"),
    ("03.3", floor_of_the_nearest_image, "floors of the nearest data image"),
    ("03.3", floor_per_sample, "return one number, the mean over the samples and the pixels"),
    ("03.3", floor_not_divided_by_sigma, "expected 0.00000 +- 0.00000 at sigma 0.1"),
    ("03.3", floor_nan, "your floor is nan"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


def test_03_3_asks_for_the_generator():
    torch.manual_seed(0)                                       # the answer draws from the global generator
    verdict = check("03.3", floor_without_the_generator)
    assert not verdict.passed and "draw x0 and eps with the generator" in verdict.message, verdict.message


@pytest.mark.slow
def test_03_3_tolerance_accepts_any_seed():
    """A correct estimate from 512 or 256 samples lies within the check's tolerance whatever its draws (20 of each)."""
    from sdlearn.exercises.lesson03 import (_SAMPLES_33, _SIGMAS_33, _fashion, _losses_per_sample,
                                            _reference_denoiser, _tolerance)

    data, worst = _fashion(32), 0.0
    for i, sigma in enumerate(_SIGMAS_33):                     # the check's own estimate, as it makes it
        losses = _losses_per_sample(data, sigma, _SAMPLES_33, torch.Generator().manual_seed(330 + i))["right"]
        floor, tolerance = losses.mean().item(), _tolerance(losses)
        for samples in (512, 256):
            for seed in range(20):
                generator = torch.Generator().manual_seed(1000 * samples + seed)
                picks = torch.randint(len(data), (samples,), generator=generator)
                eps = torch.randn((samples, *data.shape[1:]), generator=generator)
                x = data[picks] + sigma * eps
                got = ((eps - (x - _reference_denoiser(x, data, sigma)) / sigma) ** 2).mean().item()
                worst = max(worst, abs(got - floor) / tolerance)
                assert abs(got - floor) <= tolerance, (sigma, samples, seed, got, floor, tolerance)
    assert worst < 0.75, worst                                 # with room to spare: about half of it here


def test_success_messages_report_the_numbers():
    errors = check("03.1", estimate_sigma).message
    assert errors.startswith("mean relative error 0.13 at sigma 0.3, 0.04 at 1, "), errors
    floors = check("03.3", noise_loss_floor).message
    assert floors.startswith("floors (mean squared error per pixel) 0.00000 at sigma 0.1, 0.00000 at 1, "), floors
    assert "largest at middle noise levels" in floors, floors


def test_lesson_03_has_three_exercises():
    assert registered("03") == ["03.1", "03.2", "03.3"]


def test_unfinished_answers_say_not_done_yet():
    def unfinished(*args, **kwargs):
        raise NotImplementedError("Exercise: write your code here")

    for exercise_id in ("03.1", "03.2", "03.3"):
        verdict = check(exercise_id, unfinished)
        assert not verdict.passed and "not done yet" in verdict.message, verdict
