"""frechet_bootstrap: the same distances as frechet_distance, and a spread that is the real one."""

import pytest
import torch

from sdlearn.metrics import frechet_distance
from sdlearn.metrics.images import frechet_bootstrap


def _gaussian(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 0.5, 2.0, 1.5])
    return shift + scale * torch.randn(n, 4, generator=g)


def test_each_resample_is_frechet_distance_of_its_rows():
    features = _gaussian(150, torch.tensor([1.0, 0.0, -0.5, 0.0]), seed=1)
    reference = _gaussian(2000, 0.0, seed=2) @ torch.tensor([[1.0, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.2],
                                                                [0, 0, 0, 1]])
    distances = frechet_bootstrap(features, reference, 5, generator=torch.Generator().manual_seed(7))
    rows = torch.randint(150, (5, 150), generator=torch.Generator().manual_seed(7))
    expected = torch.tensor([frechet_distance(features[r], reference) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(distances, expected, rtol=1e-8, atol=1e-8)


def test_same_generator_same_distances_and_default_seed():
    features, reference = _gaussian(100, 0.5, seed=3), _gaussian(500, 0.0, seed=4)
    first = frechet_bootstrap(features, reference, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, frechet_bootstrap(features, reference, 20))
    assert not torch.equal(first, frechet_bootstrap(features, reference, 20, generator=torch.Generator().manual_seed(1)))


def test_spread_matches_the_spread_over_fresh_draws():
    """The bootstrap's standard deviation from ONE draw of 200 samples estimates how much the
    distance varies over many independent draws of 200 (resampling without replacement would give 0)."""
    shift = torch.tensor([1.0, 0.0, 0.0, 0.5])
    reference = _gaussian(20000, 0.0, seed=5)
    fresh = torch.tensor([frechet_distance(_gaussian(200, shift, seed=100 + i), reference) for i in range(200)])
    boot = frechet_bootstrap(_gaussian(200, shift, seed=6), reference, 200)
    ratio = boot.std().item() / fresh.std().item()
    assert 0.7 < ratio < 1.4, f"bootstrap standard error {boot.std():.3f} against {fresh.std():.3f} over fresh draws"


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="share D"):
        frechet_bootstrap(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_bootstrap(torch.zeros(1, 3), torch.zeros(10, 3))
