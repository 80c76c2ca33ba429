"""The from-scratch U-Net: shapes, clear errors, and parity with diffusers' UNet2DModel."""

import pytest
import torch
from diffusers import UNet2DModel

from sdlearn.models.unet import UNet, UNetConfig, timestep_embedding


def diffusers_twin(config: UNetConfig) -> UNet2DModel:
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
    return UNet2DModel(sample_size=config.sample_size, in_channels=config.in_channels,
                       out_channels=config.out_channels, block_out_channels=config.block_out_channels,
                       layers_per_block=config.layers_per_block, down_block_types=down, up_block_types=up,
                       attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_num_groups,
                       norm_eps=config.norm_eps, add_attention=config.mid_attention)


CONFIGS = [
    UNetConfig(block_out_channels=(16, 32, 64, 128), layers_per_block=1, attention_levels=(False, False, False, True)),
    UNetConfig(block_out_channels=(32, 64), layers_per_block=2, attention_levels=(False, True), in_channels=3,
               out_channels=3, norm_num_groups=8),
    UNetConfig(block_out_channels=(16, 32, 32), layers_per_block=1, attention_levels=(False, False, False),
               mid_attention=False, attention_head_dim=8),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["shipped", "two-levels", "no-attention"])
def test_same_weights_same_outputs_as_diffusers(config):
    torch.manual_seed(0)
    ours = UNet(config).eval()
    theirs = diffusers_twin(config).eval()
    theirs.load_state_dict(ours.state_dict())   # same names, same shapes: loads strictly
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, config.in_channels, 32, 32, generator=g)
    t = torch.tensor([3, 871])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), theirs(x, t).sample, atol=1e-4, rtol=0)


def test_time_embedding_equals_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding
    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    torch.testing.assert_close(timestep_embedding(t, 32), get_timestep_embedding(t, 32, flip_sin_to_cos=True,
                                                                                   downscale_freq_shift=0))


def test_errors_name_the_offending_values():
    model = UNet(CONFIGS[0])
    with pytest.raises(ValueError, match=r"divisible by 8 .* got \(30, 30\)"):
        model(torch.zeros(1, 1, 30, 30), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"expected a batch \(B, 1, H, W\)"):
        model(torch.zeros(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="24 is not divisible by norm_num_groups=16"):
        UNetConfig(block_out_channels=(16, 24), attention_levels=(False, False), norm_num_groups=16)
    with pytest.raises(ValueError, match="one flag per level"):
        UNetConfig(block_out_channels=(16, 32), attention_levels=(False,))
