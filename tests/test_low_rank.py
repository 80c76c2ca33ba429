"""A model stored as a low-rank change of another (sdlearn.finetune.low_rank, weights.save_low_rank):
the adapted forward pass equals the merged model's, step 0 is the base model, the file is a small
fraction of the base's, and a change that does not fit its model is refused before anything changes."""

import pytest
import torch

from sdlearn import weights
from sdlearn.finetune.low_rank import LowRankAdapted, low_rank_targets, merge_low_rank
from sdlearn.models.unet import UNet, UNetConfig

CONFIG = UNetConfig(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                    attention_levels=(False, True), mid_attention=True, attention_head_dim=8, norm_num_groups=8)


def small_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(CONFIG).eval()


def trained_change(base, rank=4):
    adapted = LowRankAdapted(base, rank, seed=1)
    with torch.no_grad():                                   # as if trained: B away from zero
        for b in adapted.lora_B.values():
            b.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return adapted


X, T = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 500.0, 990.0])


def test_the_adapted_model_starts_as_its_base_and_trains_only_the_change():
    base = small_unet()
    with torch.no_grad():
        expected = base(X, T)
    adapted = LowRankAdapted(base, 4)
    with torch.no_grad():
        assert torch.equal(adapted(X, T), expected)          # B = 0: exactly the base model
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("lora_A.", "lora_B.")) for name in trainable)
    adapted(X, T).square().mean().backward()
    assert all(p.grad is None for p in base.parameters())
    # with B = 0 the first step moves B only (A's gradient is B^T times something, zero)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in adapted.lora_A.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapted.lora_B.values())


def test_merging_the_change_gives_the_adapted_forward_pass():
    adapted = trained_change(small_unet())
    with torch.no_grad():
        expected = adapted(X, T)
    other = merge_low_rank(small_unet(), adapted.low_rank_tensors(), adapted.scale)
    with torch.no_grad():
        merged = other(X, T)
    assert (merged - expected).abs().max().item() < 1e-5
    assert (merged - small_unet()(X, T)).abs().max().item() > 1e-3      # the change does change the model


def test_a_kernel_is_changed_as_an_out_by_in_k_k_matrix_of_rank_r():
    adapted = trained_change(small_unet(), rank=2)
    kernels = [n for n in adapted.targets if dict(adapted.base.named_parameters())[n].dim() == 4]
    assert kernels
    name = kernels[0]
    before = dict(small_unet().named_parameters())[name].detach()
    after = dict(merge_low_rank(small_unet(), adapted.low_rank_tensors(), adapted.scale).named_parameters())[name]
    delta = (after.detach() - before).reshape(before.shape[0], -1)
    assert torch.linalg.matrix_rank(delta, atol=1e-6).item() == 2


def test_the_stored_change_loads_as_the_merged_model_beside_its_base(tmp_path):
    base = small_unet()
    weights.save(base, tmp_path / "base.safetensors", {"note": "the base"})
    adapted = trained_change(small_unet())
    out = weights.save_low_rank(adapted.low_rank_tensors(), adapted.scale, "base", tmp_path / "change.safetensors",
                                {"recipe": "test"})
    assert weights.read_info(out) == {"recipe": "test"}
    loaded = weights.load(out)
    with torch.no_grad():
        assert (loaded(X, T) - adapted(X, T)).abs().max().item() < 1e-5
    assert out.stat().st_size < 0.6 * (tmp_path / "base.safetensors").stat().st_size


def test_a_change_without_its_base_names_what_is_missing(tmp_path):
    adapted = trained_change(small_unet())
    out = weights.save_low_rank(adapted.low_rank_tensors(), adapted.scale, "no_such_model", tmp_path / "c.safetensors")
    with pytest.raises(FileNotFoundError, match="low-rank change of 'no_such_model'.*no_such_model.safetensors next to it"):
        weights.load(out)


def test_a_change_for_another_model_is_refused_and_leaves_the_model_alone():
    adapted = trained_change(small_unet())
    tensors = adapted.low_rank_tensors()
    other_config = UNetConfig(**{**CONFIG.__dict__, "block_out_channels": (16, 48)})
    other = UNet(other_config)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="belongs to another model"):
        merge_low_rank(other, tensors, 1.0)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    with pytest.raises(ValueError, match="which this model does not have"):
        merge_low_rank(small_unet(), {"nowhere.weight.lora_A": torch.zeros(2, 3),
                                      "nowhere.weight.lora_B": torch.zeros(3, 2)}, 1.0)
    with pytest.raises(ValueError, match="pairs NAME.lora_A and NAME.lora_B"):
        merge_low_rank(small_unet(), {"down.weight": torch.zeros(2)}, 1.0)


@pytest.mark.parametrize("rank", [0, 2.5, True])
def test_a_rank_that_is_not_a_positive_whole_number_is_refused(rank):
    with pytest.raises(ValueError, match="rank must be a whole number >= 1"):
        LowRankAdapted(small_unet(), rank)


def test_targets_that_are_not_weight_matrices_are_refused():
    base = small_unet()
    bias = next(name for name, p in base.named_parameters() if p.dim() == 1)
    with pytest.raises(ValueError, match="not weight matrices or kernels"):
        LowRankAdapted(base, 2, targets=[bias])
    assert all(p.dim() >= 2 for name, p in base.named_parameters() if name in low_rank_targets(base))
