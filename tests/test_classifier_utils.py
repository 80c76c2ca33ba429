import pytest
import torch

from sdlearn.models.classifier import ClassifierConfig, SmallClassifier, accuracy
from sdlearn.training import train_classifier
from sdlearn.utils import atomic_write, seed_everything


def test_classifier_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    torch.manual_seed(0)
    model = SmallClassifier(ClassifierConfig(image_size=8, n_classes=2, channels=4, hidden=16))
    losses = train_classifier(model, x, y, epochs=30, lr=1e-2, batch_size=50, progress=False)
    assert losses[-1] < losses[0] / 3
    assert accuracy(model, x, y) > 0.9


def test_training_is_repeatable_for_a_seed():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(64) % 3
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        model = SmallClassifier(ClassifierConfig(image_size=8, n_classes=3, channels=4, hidden=8))
        results.append(train_classifier(model, x, y, epochs=2, generator=torch.Generator().manual_seed(7), progress=False))
    assert results[0] == results[1]


def test_classifier_rejects_wrong_shapes_and_configs():
    model = SmallClassifier()
    with pytest.raises(ValueError, match=r"expects a batch \(N, 1, 28, 28\)"):
        model(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match="divisible by 4"):
        SmallClassifier(ClassifierConfig(image_size=30))
    with pytest.raises(ValueError, match="activation must be one of"):
        SmallClassifier(ClassifierConfig(activation="tanh"))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half-writ")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"


def test_seed_everything_returns_a_seeded_generator():
    a = torch.rand(3, generator=seed_everything(3))
    b = torch.rand(3, generator=seed_everything(3))
    assert torch.equal(a, b)
    with pytest.raises(TypeError):
        seed_everything("3")


# --------------------------------------------------------------------------- printed differences

@pytest.mark.parametrize("difference, expected", [
    (0.0, "0"),
    (9.5e-07, "below 1e-05"),                 # two CPUs' rounding: 9.5e-07 here, 1.2e-06 there ...
    (1.2e-06, "below 1e-05"),                 # ... read the same
    (1e-05, "1.0e-05 (above 1e-05)"),
    (0.0213, "2.1e-02 (above 1e-05)"),
    (float("nan"), "nan"),
])
def test_agreement_hides_only_the_digits_below_the_tolerance(difference, expected):
    from sdlearn.utils import agreement

    assert agreement(difference) == expected


def test_agreement_takes_a_tensor_of_differences_and_a_tolerance():
    from sdlearn.utils import agreement

    assert agreement(torch.tensor([3e-4, -2e-3]), tolerance=1e-2) == "below 1e-02"
    assert agreement(torch.tensor([3e-4, -2e-3]), tolerance=1e-3) == "2.0e-03 (above 1e-03)"
    assert agreement(0.0, exact_zero=False) == "below 1e-05"
    with pytest.raises(ValueError, match="tolerance must be positive"):
        agreement(1.0, tolerance=0)


@pytest.mark.parametrize("error, expected", [
    (3.13e-07, "below 1e-06"), (3.57e-07, "below 1e-06"),   # the same size, other last digits
    (4e-04, "below 1e-03"), (6e-04, "below 1e-03"),
    (1e-04, "below 1e-03"),                                  # a power of ten is not below itself
    (-2.0e-10, "below 1e-09"), (0.0, "0"),
])
def test_magnitude_gives_the_power_of_ten_above(error, expected):
    from sdlearn.utils import magnitude

    assert magnitude(error) == expected


def test_a_passing_gradient_check_prints_sizes_a_failing_one_digits():
    from sdlearn.gradients import GradCheck

    assert str(GradCheck(2.39e-10, 3.57e-07, 1e-5, 1e-4)) == (
        "GradCheck passed: max relative error below 1e-06 (tolerance 1e-04), max absolute error below 1e-09, eps 1e-05")
    assert "FAILED: max relative error 1.93e+00" in str(GradCheck(0.201, 1.93, 1e-5, 1e-4))
