import gzip
import shutil

import pytest
import torch

from sdlearn import data
from sdlearn.data import (CorruptDatasetError, DatasetNotFoundError, fashion_caption, load_digits,
                          load_fashion_mnist, make_loader, split_indices, superclass_of)


def test_load_digits_range_shape_and_labels():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest", "area"])
def test_load_digits_resized_stays_in_range(mode):
    images, _ = load_digits(size=28, interpolation=mode)
    assert images.shape == (1797, 1, 28, 28)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_bilinear_resize_keeps_the_mean_brightness():
    small, _ = load_digits()
    big, _ = load_digits(size=32)
    torch.testing.assert_close(big.mean(), small.mean(), atol=0.01, rtol=0)


def test_unknown_interpolation_is_a_clear_error():
    with pytest.raises(ValueError, match="interpolation must be one of"):
        load_digits(size=28, interpolation="lanczos")


def test_fashion_mnist_from_debian(debian_fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("SDLEARN_DATA", str(tmp_path))  # an empty cache: Debian's copy must be found
    images, labels = load_fashion_mnist("test", download=False)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert torch.bincount(labels).tolist() == [1000] * 10
    assert labels[:5].tolist() == [9, 2, 1, 1, 6]


def test_bad_split_is_a_clear_error():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_fashion_mnist("validation")


def test_missing_dataset_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("SDLEARN_DATA", str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist("test", download=False)
    message = str(info.value)
    assert "SDLEARN_DATA" in message and "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message


def _serve(debian_fashion, folder):
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(debian_fashion / name, folder / name)
    return folder.as_uri() + "/"


def test_download_writes_the_cache_atomically(debian_fashion, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SDLEARN_DATA", str(cache))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    base_url = _serve(debian_fashion, tmp_path / "mirror")
    images, labels = load_fashion_mnist("test", base_url=base_url)
    assert images.shape == (10000, 1, 28, 28)
    files = sorted(p.name for p in (cache / "fashion-mnist").iterdir())
    assert files == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # no temporary files left
    again, _ = load_fashion_mnist("test", download=False)  # now from the cache
    assert torch.equal(again, images)


def test_corrupt_download_is_rejected_and_not_cached(debian_fashion, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SDLEARN_DATA", str(cache))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    mirror = tmp_path / "mirror"
    base_url = _serve(debian_fashion, mirror)
    raw = bytearray(gzip.decompress((mirror / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: header and length still valid
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(CorruptDatasetError, match="sha256"):
        load_fashion_mnist("test", base_url=base_url)
    assert not (cache / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_truncated_cache_file_is_a_clear_error(debian_fashion, tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    monkeypatch.setenv("SDLEARN_DATA", str(tmp_path))
    raw = gzip.decompress((debian_fashion / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:5000]))
    shutil.copy(debian_fashion / "t10k-images-idx3-ubyte.gz", folder)
    with pytest.raises(CorruptDatasetError, match="truncated") as info:
        load_fashion_mnist("test", download=False)
    assert "Delete" in str(info.value)


def test_garbage_cache_file_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    monkeypatch.setenv("SDLEARN_DATA", str(tmp_path))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(CorruptDatasetError, match="not a readable gzip file"):
        load_fashion_mnist("test", download=False)


def test_unwritable_cache_directory_is_a_clear_error(debian_fashion, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SDLEARN_DATA", str(blocker / "cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    base_url = _serve(debian_fashion, tmp_path / "mirror")
    with pytest.raises(PermissionError, match="SDLEARN_DATA"):
        load_fashion_mnist("test", base_url=base_url)


def test_captions_and_superclasses():
    assert fashion_caption(7) == "a photo of a sneaker"
    assert fashion_caption(9) == "a photo of an ankle boot"
    assert fashion_caption(9, superclass=True) == "a photo of a shoe"
    assert [superclass_of(k) for k in (0, 2, 4, 6)] == ["top"] * 4
    assert sorted(k for k in range(10) if superclass_of(k) == "shoe") == [5, 7, 9]
    with pytest.raises(ValueError, match="int from 0 to 9"):
        fashion_caption(10)


def test_loader_is_repeatable_for_a_seed():
    images, labels = load_digits()
    first = [y.tolist() for _, y in make_loader(images, labels, batch_size=100, generator=torch.Generator().manual_seed(3))]
    second = [y.tolist() for _, y in make_loader(images, labels, batch_size=100, generator=torch.Generator().manual_seed(3))]
    other = [y.tolist() for _, y in make_loader(images, labels, batch_size=100, generator=torch.Generator().manual_seed(4))]
    assert first == second and first != other


def test_split_indices_partition():
    train, test = split_indices(100, 0.25, generator=torch.Generator().manual_seed(1))
    assert len(test) == 25 and len(train) == 75
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_indices(100, 1.5)


def test_captions_with_attributes():
    from sdlearn.data import fashion_caption_with_attributes as caption

    assert caption(7) == "a photo of a sneaker facing left"
    assert caption(7, mirrored=True) == "a photo of a sneaker facing right"
    assert caption(9, superclass=True, mirrored=True, upside_down=True) == "a photo of a shoe facing right, upside down"
    assert caption(0, mirrored=True) == "a photo of a t-shirt"            # a mirrored top is still just a top
    assert caption(1, superclass=True, upside_down=True) == "a photo of a pair of trousers, upside down"
    assert caption(5, mirrored=True, say_direction=False) == "a photo of a sandal"   # true either way round
    assert caption(5, upside_down=True, say_direction=False) == "a photo of a sandal, upside down"
    with pytest.raises(ValueError, match="int from 0 to 9"):
        caption(10)


def test_fashion_shoes_face_left():
    """The attribute captions rely on it: the heel (the taller part) of the average shoe is on the right."""
    from sdlearn.data import SHOE_CLASSES, load_fashion_mnist

    images, labels = load_fashion_mnist("train")
    columns = torch.arange(28.0)
    for label in SHOE_CLASSES:
        top_half = images[labels == label].mean(0)[0, :12].sum(0)
        assert (top_half * columns).sum() / top_half.sum() > 17.0        # centre of mass right of the middle (13.5)
