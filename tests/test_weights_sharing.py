"""A weights file can leave tensors to another file: clip_fashion's text encoder lives in the pipeline folder."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdlearn import weights
from sdlearn.weights import WEIGHTS_DIR

TEXT_ENCODER = "fashion_text2image/text_encoder/model.safetensors"


def full_state(name):
    return {k: v.detach().clone() for k, v in weights.load(name).state_dict().items()}


@pytest.fixture
def copy_of_clip(tmp_path):
    """clip_fashion and the pipeline's text encoder, copied with the same layout, text tower put back in."""
    (tmp_path / "fashion_text2image" / "text_encoder").mkdir(parents=True)
    shutil.copy(WEIGHTS_DIR / TEXT_ENCODER, tmp_path / TEXT_ENCODER)
    state = weights.load("clip_fashion").state_dict()
    with safe_open(str(WEIGHTS_DIR / "clip_fashion.safetensors"), framework="pt") as handle:
        metadata = {k: v for k, v in handle.metadata().items() if k != "shared"}
    path = tmp_path / "clip_fashion.safetensors"
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def test_shipped_clip_takes_its_text_encoder_from_the_pipeline_folder():
    with safe_open(str(WEIGHTS_DIR / "clip_fashion.safetensors"), framework="pt") as handle:
        shared = json.loads(handle.metadata()["shared"])
        own = list(handle.keys())
    assert shared == {"prefix": "text_model.", "file": TEXT_ENCODER}
    assert not any(k.startswith("text_model.") for k in own)
    clip = weights.load("clip_fashion")
    pipeline_text = load_file(str(WEIGHTS_DIR / TEXT_ENCODER))
    state = clip.text_model.state_dict()
    assert set(state) == set(pipeline_text)
    assert all(torch.equal(state[k], pipeline_text[k].float()) for k in state)


def test_sharing_keeps_the_model_and_shrinks_the_file(copy_of_clip):
    before = full_state(copy_of_clip)
    size = copy_of_clip.stat().st_size
    weights.share_tensors(copy_of_clip, "text_model.", copy_of_clip.parent / TEXT_ENCODER)
    after = full_state(copy_of_clip)
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert copy_of_clip.stat().st_size < size - 6_000_000        # the 49,408 x 64 token table alone is 6.3 MB
    weights.share_tensors(copy_of_clip, "text_model.", TEXT_ENCODER)   # again: a no-op, relative path accepted
    assert all(torch.equal(before[k], v) for k, v in full_state(copy_of_clip).items())


def test_sharing_refuses_tensors_that_differ_and_changes_nothing(copy_of_clip):
    source = copy_of_clip.parent / TEXT_ENCODER
    tensors = load_file(str(source))
    tensors["final_layer_norm.weight"] = tensors["final_layer_norm.weight"] + 1
    save_file(tensors, str(source))
    original = copy_of_clip.read_bytes()
    with pytest.raises(ValueError, match="does not hold .*final_layer_norm.weight"):
        weights.share_tensors(copy_of_clip, "text_model.", source)
    assert copy_of_clip.read_bytes() == original


def test_a_missing_shared_file_is_a_clear_error(copy_of_clip):
    weights.share_tensors(copy_of_clip, "text_model.", copy_of_clip.parent / TEXT_ENCODER)
    (copy_of_clip.parent / TEXT_ENCODER).unlink()
    with pytest.raises(FileNotFoundError, match="keeps its 'text_model.' weights in .*missing.*Reinstall"):
        weights.load(copy_of_clip)
