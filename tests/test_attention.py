"""Attention written out: equal to PyTorch's fused kernel and to diffusers' modules; the map recorder."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention as DiffusersAttention
from diffusers import Transformer2DModel

from sdlearn.models.attention import (Attention, SpatialTransformer, attention, merge_heads, record_attention,
                                      split_heads)
from sdlearn.models.unet import UNet, UNetConfig

G = torch.Generator().manual_seed(0)


def _randomise(module, scale=0.3):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def test_written_out_attention_equals_scaled_dot_product_attention():
    q, k, v = (torch.randn(2, 3, n, 8, generator=G) for n in (5, 7, 7))
    out, weights = attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    mask = torch.rand(5, 7, generator=G) > 0.3
    mask[:, 0] = True                                         # every query may see at least one key
    out, weights = attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=0)
    assert (weights[..., ~mask] == 0).all()
    bias = torch.randn(5, 7, generator=G)
    torch.testing.assert_close(attention(q, k, v, bias)[0], F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                               atol=1e-6, rtol=0)


def test_a_one_hot_query_is_a_dictionary_lookup():
    keys = torch.eye(4) * 50                                  # four very distinct keys
    values = torch.arange(4.0)[:, None] * 10
    out, weights = attention(keys[2:3], keys, values, scale=1.0)
    assert weights.argmax().item() == 2 and out.item() == pytest.approx(20.0)


def test_heads_split_and_merge_back():
    x = torch.randn(2, 5, 12, generator=G)
    assert split_heads(x, 3).shape == (2, 3, 5, 4)
    torch.testing.assert_close(merge_heads(split_heads(x, 3)), x, atol=0, rtol=0)


@pytest.mark.parametrize("cross,bias", [(False, False), (True, False), (False, True)])
def test_attention_module_equals_diffusers_attention(cross, bias):
    context_dim = 6 if cross else None
    ours = _randomise(Attention(16, context_dim=context_dim, heads=4, head_dim=8, bias=bias)).eval()
    theirs = DiffusersAttention(16, cross_attention_dim=context_dim, heads=4, dim_head=8, bias=bias).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 9, 16, generator=G)
    context = torch.randn(2, 5, 6, generator=G) if cross else None
    with torch.no_grad():
        expected = theirs(x, encoder_hidden_states=context)
        torch.testing.assert_close(ours(x, context), expected, atol=1e-5, rtol=0)
        ours.explicit = True                                  # the written-out path gives the same
        torch.testing.assert_close(ours(x, context), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("linear", [False, True])
def test_spatial_transformer_equals_diffusers_transformer2d(linear):
    ours = _randomise(SpatialTransformer(32, heads=4, context_dim=12, groups=8, layers=2,
                                         linear_projection=linear)).eval()
    theirs = Transformer2DModel(num_attention_heads=4, attention_head_dim=8, in_channels=32, num_layers=2,
                                cross_attention_dim=12, norm_num_groups=8, use_linear_projection=linear).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 6, 6, generator=G)
    context = torch.randn(2, 7, 12, generator=G)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, context), theirs(x, encoder_hidden_states=context).sample,
                                   atol=1e-4, rtol=0)


def _small_conditional_unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(True, True),
                           cross_attention_dim=8, num_attention_heads=2, norm_num_groups=8)).eval()


def test_recording_cross_attention_maps():
    model = _small_conditional_unet()
    x, t, context = torch.randn(3, 1, 16, 16, generator=G), torch.tensor([10, 500, 900]), torch.randn(3, 5, 8)
    with torch.no_grad():
        plain = model(x, t, context)
        with record_attention(model, kind="cross") as maps:
            recorded = model(x, t, context)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=0)     # recording changes nothing
    # down: 1 + 1, mid: 1, up: 2 + 2 spatial transformers, one cross-attention each
    assert len(maps) == 7 and all(len(calls) == 1 for calls in maps.values())
    assert all(name.endswith("attn2") for name in maps)
    first = maps["down_blocks.0.attentions.0.transformer_blocks.0.attn2"][0]
    assert first.shape == (3, 2, 16 * 16, 5)                           # (B, heads, H*W, tokens)
    torch.testing.assert_close(first.sum(-1), torch.ones(3, 2, 256))
    token_maps = maps.token_maps()
    assert token_maps.shape == (3, 5, 16, 16)
    torch.testing.assert_close(token_maps.sum(1), torch.ones(3, 16, 16), atol=1e-5, rtol=0)
    assert all(layer.recorder is None for layer in model.modules() if isinstance(layer, Attention))
    with torch.no_grad(), record_attention(model, kind="self") as self_maps:
        model(x, t, context)
    assert len(self_maps) == 7 and first.shape[-1] != self_maps[next(iter(self_maps))][0].shape[-1]


def test_cross_attention_follows_the_context():
    """A query aligned with one token's key puts its weight on that token."""
    layer = Attention(4, context_dim=4, heads=1, head_dim=4)
    with torch.no_grad():
        for linear in (layer.to_q, layer.to_k, layer.to_v):
            linear.weight.copy_(torch.eye(4) * 4)
    context = torch.eye(4)[None]                                       # 4 tokens, orthogonal keys
    x = torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])                         # looks for token 2
    with record_attention(layer) as maps:
        layer(x, context)
    assert maps[""][0][0, 0, 0].argmax().item() == 2


def test_attention_errors():
    with pytest.raises(ValueError, match="queries have 8 channels but keys have 4"):
        attention(torch.zeros(1, 2, 8), torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    layer = Attention(16, context_dim=6, heads=2, head_dim=8)
    with pytest.raises(ValueError, match="the context has embedding size 768 but this attention layer expects 6"):
        layer(torch.zeros(1, 4, 16), torch.zeros(1, 3, 768))
    with pytest.raises(ValueError, match="cross-attention layer: pass a context"):
        layer(torch.zeros(1, 4, 16))
    with pytest.raises(ValueError, match="has no cross-attention layers"):
        with record_attention(UNet(UNetConfig(block_out_channels=(16, 32), attention_levels=(False, True)))):
            pass
    with pytest.raises(ValueError, match="kind must be"):
        with record_attention(_small_conditional_unet(), kind="both"):
            pass
