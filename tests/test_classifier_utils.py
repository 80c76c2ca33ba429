import pytest
import torch

from sdlearn.models.classifier import ClassifierConfig, SmallClassifier, accuracy, train_classifier
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
        results.append(train_classifier(model, x, y, epochs=2, seed=7, progress=False))
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
