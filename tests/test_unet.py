"""The from-scratch U-Net: weight-for-weight parity with diffusers' U-Nets, and clear errors."""

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from safetensors import safe_open

from sdlearn import weights
from sdlearn.models.conversion import (SD15_UNET_CONFIG, config_from_diffusers, diffusers_config, from_diffusers,
                                       load_state_dict_strict, sd15_unet_config, to_diffusers)
from sdlearn.models.unet import UNet, UNetConfig, count_parameters, timestep_embedding

PIXEL_CONFIGS = {
    "shipped-ddpm": UNetConfig(block_out_channels=(16, 32, 64, 128), layers_per_block=1,
                               attention_levels=(False, False, False, True)),
    "two-levels-rgb": UNetConfig(block_out_channels=(32, 64), layers_per_block=2, attention_levels=(False, True),
                                 in_channels=3, out_channels=3, norm_num_groups=8),
    "no-attention": UNetConfig(block_out_channels=(16, 32, 32), layers_per_block=1,
                               attention_levels=(False, False, False), mid_attention=False, attention_head_dim=8),
    "class-conditional": UNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(True, False),
                                    attention_head_dim=8, num_class_embeds=10),
}

CONDITION_CONFIGS = {
    "sd-layout-small": UNetConfig(in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64),
                                  layers_per_block=2, attention_levels=(True, True, True, False),
                                  cross_attention_dim=24, num_attention_heads=4, norm_num_groups=8),
    "one-layer-mixed": UNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, True),
                                  cross_attention_dim=12, attention_head_dim=8, norm_num_groups=8),
    "linear-proj-2-layers": UNetConfig(in_channels=4, out_channels=4, block_out_channels=(32, 48), layers_per_block=2,
                                       attention_levels=(True, True), cross_attention_dim=16,
                                       num_attention_heads=(2, 3), transformer_layers_per_block=2,
                                       use_linear_projection=True, norm_num_groups=16),
    "class-and-text": UNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(True, True),
                                 cross_attention_dim=8, num_attention_heads=2, norm_num_groups=8,
                                 num_class_embeds=5),
}


def _randomise(model):
    """Random weights everywhere, norms included, so that every parameter matters in the comparison."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def _inputs(config, batch=2, size=32, tokens=7):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, config.in_channels, size, size, generator=g)
    t = torch.tensor([3, 871][:batch])
    context = torch.randn(batch, tokens, config.cross_attention_dim, generator=g) if config.conditional else None
    labels = torch.tensor([1, config.num_class_embeds - 1][:batch]) if config.num_class_embeds else None
    return x, t, context, labels


@pytest.mark.parametrize("name", list(PIXEL_CONFIGS))
def test_pixel_unet_equals_UNet2DModel_both_ways(name):
    config = PIXEL_CONFIGS[name]
    torch.manual_seed(0)
    ours = _randomise(UNet(config)).eval()
    theirs = to_diffusers(ours).eval()
    assert isinstance(theirs, UNet2DModel)
    x, t, _, labels = _inputs(config)
    with torch.no_grad():
        expected = theirs(x, t, class_labels=labels).sample
        torch.testing.assert_close(ours(x, t, class_labels=labels), expected, atol=1e-4, rtol=0)
        back = from_diffusers(theirs).eval()
        assert back.config == config
        torch.testing.assert_close(back(x, t, class_labels=labels), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(CONDITION_CONFIGS))
def test_conditional_unet_equals_UNet2DConditionModel_both_ways(name):
    config = CONDITION_CONFIGS[name]
    torch.manual_seed(0)
    theirs = UNet2DConditionModel(**diffusers_config(config)).eval()
    _randomise(theirs)
    ours = from_diffusers(theirs).eval()                   # their weights into ours
    x, t, context, labels = _inputs(config)
    with torch.no_grad():
        expected = theirs(x, t, encoder_hidden_states=context, class_labels=labels).sample
        got = ours(x, t, encoder_hidden_states=context, class_labels=labels)
        assert (expected - got).abs().max() <= 1e-4
        # diffusers' argument names, by keyword as by position
        same = ours(sample=x, timestep=t, encoder_hidden_states=context, class_labels=labels)
        torch.testing.assert_close(same, got, atol=0, rtol=0)
        again = to_diffusers(ours).eval()                  # and back
        torch.testing.assert_close(again(x, t, encoder_hidden_states=context, class_labels=labels).sample,
                                   expected, atol=1e-4, rtol=0)
    # the context matters: another prompt embedding gives another output
    with torch.no_grad():
        assert (ours(x, t, torch.randn_like(context), class_labels=labels) - got).abs().max() > 1e-3


def test_context_length_is_free_and_gradients_reach_every_parameter():
    config = CONDITION_CONFIGS["one-layer-mixed"]
    model = UNet(config)
    x, t, _, _ = _inputs(config)
    for tokens in (1, 77):
        assert model(x, t, torch.randn(2, tokens, 12)).shape == x.shape
    model(x, t, torch.randn(2, 5, 12)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_stable_diffusion_15_layout_matches_diffusers_on_the_meta_device():
    config = sd15_unet_config()
    assert config.cross_attention_dim == 768 and config.num_attention_heads == 8
    with torch.device("meta"):
        ours = UNet(config)
        theirs = UNet2DConditionModel(**{k: v for k, v in SD15_UNET_CONFIG.items() if not k.startswith("_")})
    assert count_parameters(ours) == count_parameters(theirs) == 859_520_964
    own, other = ours.state_dict(), theirs.state_dict()
    assert set(own) == set(other)
    assert all(own[k].shape == other[k].shape for k in own)
    assert config_from_diffusers(theirs.config) == config


@pytest.mark.parametrize("name", ["ddpm_fashion", "ldm_fashion", "flow_fashion"])
def test_shipped_unet_files_load_every_key(name):
    """The module names are the state dict's keys: the shipped files load, none missing, none left over."""
    with safe_open(str(weights.resolve(name)), framework="pt") as handle:
        stored = set(handle.keys())
    model = weights.load(name)
    assert set(model.state_dict()) == stored
    assert not model.config.conditional
    size = model.config.sample_size
    x = torch.zeros(1, model.config.in_channels, size, size)
    assert torch.isfinite(model(x, torch.tensor([500]))).all()


def test_shipped_text_to_image_unet_converts_both_ways():
    theirs = UNet2DConditionModel.from_pretrained(weights.resolve("fashion_text2image") / "unet").eval()
    ours = from_diffusers(theirs).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    g = torch.Generator().manual_seed(5)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, ours.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        expected = theirs(sample, torch.tensor([20, 980]), encoder_hidden_states=context).sample
        torch.testing.assert_close(ours(sample, torch.tensor([20, 980]), context), expected, atol=1e-4, rtol=0)
        again = to_diffusers(ours).eval()
        torch.testing.assert_close(again(sample, torch.tensor([20, 980]), encoder_hidden_states=context).sample,
                                   expected, atol=1e-4, rtol=0)


def test_time_embedding_equals_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding
    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    torch.testing.assert_close(timestep_embedding(t, 32), get_timestep_embedding(t, 32, flip_sin_to_cos=True,
                                                                                   downscale_freq_shift=0))


def test_errors_name_the_offending_values():
    model = UNet(PIXEL_CONFIGS["shipped-ddpm"])
    with pytest.raises(ValueError, match=r"divisible by 8 .* got \(30, 30\)"):
        model(torch.zeros(1, 1, 30, 30), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"expected a batch \(B, 1, H, W\)"):
        model(torch.zeros(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="takes no encoder_hidden_states"):
        model(torch.zeros(1, 1, 32, 32), torch.tensor([1]), torch.zeros(1, 4, 8))
    with pytest.raises(ValueError, match="24 is not divisible by norm_num_groups=16"):
        UNetConfig(block_out_channels=(16, 24), attention_levels=(False, False), norm_num_groups=16)
    with pytest.raises(ValueError, match="one flag per level"):
        UNetConfig(block_out_channels=(16, 32), attention_levels=(False,))
    with pytest.raises(ValueError, match="48 channels, which cannot be split into 5 attention heads"):
        UNetConfig(block_out_channels=(16, 48), attention_levels=(False, True), num_attention_heads=5)


def test_context_errors():
    config = CONDITION_CONFIGS["one-layer-mixed"]
    model = UNet(config)
    x, t, _, _ = _inputs(config)
    with pytest.raises(ValueError, match=r"encoder_hidden_states has shape \(2, 7, 768\), but this U-Net's "
                                         r"cross_attention_dim is 12: expected \(B, tokens, 12\)"):
        model(x, t, encoder_hidden_states=torch.zeros(2, 7, 768))
    with pytest.raises(ValueError, match=r"pass encoder_hidden_states of shape \(B, tokens, 12\)"):
        model(x, t)
    with pytest.raises(ValueError, match="2 images but encoder_hidden_states for 1"):
        model(x, t, torch.zeros(1, 7, 12))
    labelled = UNet(CONDITION_CONFIGS["class-and-text"])
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 5\), got \[1, 5\]"):
        labelled(x, t, torch.zeros(2, 3, 8), class_labels=torch.tensor([1, 5]))


def test_state_dict_errors_name_the_keys():
    model = UNet(PIXEL_CONFIGS["shipped-ddpm"])
    state = model.state_dict()
    state.pop("conv_in.bias")
    state["mid_block.extra.weight"] = torch.zeros(1)
    state["conv_out.weight"] = torch.zeros(3, 16, 3, 3)
    with pytest.raises(ValueError) as error:
        load_state_dict_strict(model, state)
    message = str(error.value)
    assert "missing keys (1): conv_in.bias" in message
    assert "unexpected keys (1): mid_block.extra.weight" in message
    assert "conv_out.weight: (3, 16, 3, 3) given, (1, 16, 3, 3) expected" in message
    with pytest.raises(ValueError, match="upcast_attention=True"):
        config_from_diffusers({**SD15_UNET_CONFIG, "upcast_attention": True})
