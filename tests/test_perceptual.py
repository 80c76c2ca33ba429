"""sdlearn.losses.PerceptualDistance: the LPIPS recipe on the shipped classifier's features."""

import pytest
import torch

from sdlearn.data import load_fashion_mnist
from sdlearn.losses import PerceptualDistance
from sdlearn.metrics import shipped_classifier


@pytest.fixture(scope="module")
def perceptual():
    return PerceptualDistance(shipped_classifier())


@pytest.fixture(scope="module")
def garments():
    images, _ = load_fashion_mnist("test")
    return images[:64]


def _reference(classifier, x, y):
    """LPIPS with unit weights written out once more, layer by layer, from the classifier's modules."""
    def layers(image):
        h1 = torch.relu(classifier.conv1(image))
        h2 = torch.relu(classifier.conv2(torch.nn.functional.max_pool2d(h1, 2)))
        f = torch.relu(classifier.fc1(torch.nn.functional.max_pool2d(h2, 2).flatten(1)))
        return [h1, h2, f[:, :, None, None]]
    total = 0
    for a, b in zip(layers(x), layers(y)):
        a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        total = total + ((a - b) ** 2).sum(dim=1).flatten(1).mean(dim=1)
    return total


def test_matches_the_recipe_written_out(perceptual, garments):
    assert shipped_classifier().config.activation == "relu" and shipped_classifier().config.pool == "max"
    x, y = garments[:8], garments[8:16]
    with torch.no_grad():
        torch.testing.assert_close(perceptual(x, y), _reference(shipped_classifier(), x, y), rtol=1e-5, atol=1e-6)


def test_zero_for_the_same_image_symmetric_and_positive_otherwise(perceptual, garments):
    x, y = garments[:8], garments[8:16]
    with torch.no_grad():
        assert perceptual(x, x).abs().max() < 1e-6
        torch.testing.assert_close(perceptual(x, y), perceptual(y, x))
        assert (perceptual(x, y) > 0.01).all()


def test_one_image_against_a_batch(perceptual, garments):
    with torch.no_grad():
        torch.testing.assert_close(perceptual(garments[:5], garments[5:6]),
                                   perceptual(garments[:5], garments[5:6].expand(5, -1, -1, -1)))


def test_a_shift_is_closer_than_noise_of_the_same_squared_error(perceptual, garments):
    shifted = torch.roll(garments, 1, dims=-1)
    mse = (shifted - garments).pow(2).mean(dim=(1, 2, 3), keepdim=True)
    noise = torch.randn(garments.shape, generator=torch.Generator().manual_seed(0))
    noisy = garments + noise * (mse / noise.pow(2).mean(dim=(1, 2, 3), keepdim=True)).sqrt()
    with torch.no_grad():
        assert (perceptual(shifted, garments) < perceptual(noisy, garments)).float().mean() >= 0.95


def test_differentiable_in_the_images_with_the_network_frozen(perceptual, garments):
    x = garments[:4].clone().requires_grad_(True)
    perceptual(x, garments[4:8]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in perceptual.classifier.parameters())


def test_a_subset_of_layers(garments):
    conv1_only = PerceptualDistance(shipped_classifier(), layers=("conv1",))
    full = PerceptualDistance(shipped_classifier())
    with torch.no_grad():
        per_layer = full.per_layer(garments[:4], garments[4:8])
        torch.testing.assert_close(conv1_only(garments[:4], garments[4:8]), per_layer["conv1"])
    with pytest.raises(ValueError, match="layers must be"):
        PerceptualDistance(shipped_classifier(), layers=("conv3",))


@pytest.mark.parametrize("x_shape, y_shape, message", [
    ((2, 1, 28, 28), (2, 1, 32, 32), "same size and channels"),
    ((2, 3, 28, 28), (2, 1, 28, 28), "same size and channels"),
    ((2, 1, 32, 32), (2, 1, 32, 32), "to_classifier_range"),
    ((2, 1, 28, 28), (3, 1, 28, 28), "same number"),
    ((1, 28, 28), (1, 28, 28), r"batch of images \(N, C, H, W\)"),
])
def test_images_that_cannot_be_compared_get_a_clear_error(perceptual, x_shape, y_shape, message):
    with pytest.raises(ValueError, match=message):
        perceptual(torch.rand(x_shape), torch.rand(y_shape))
