"""Attention written out: equal to PyTorch's fused kernel and to diffusers' modules, with diffusers' names."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import Transformer2DModel
from diffusers.models.attention_processor import Attention as DiffusersAttention

from sdlearn.models.attention import Attention, SpatialTransformer, attention, merge_heads, split_heads


def _randomise(module, scale=0.3):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def test_written_out_attention_equals_scaled_dot_product_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (5, 7, 7))
    out, weights = attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    mask = torch.rand(5, 7, generator=g) > 0.3
    mask[:, 0] = True                                         # every query may see at least one key
    out, weights = attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=0)
    assert (weights[..., ~mask] == 0).all()
    bias = torch.randn(5, 7, generator=g)
    torch.testing.assert_close(attention(q, k, v, bias)[0], F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                               atol=1e-6, rtol=0)


def test_a_one_hot_query_is_a_dictionary_lookup():
    keys = torch.eye(4) * 50                                  # four very distinct keys
    values = torch.arange(4.0)[:, None] * 10
    out, weights = attention(keys[2:3], keys, values, scale=1.0)
    assert weights.argmax().item() == 2 and out.item() == pytest.approx(20.0)


def test_heads_split_and_merge_back():
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(1))
    assert split_heads(x, 3).shape == (2, 3, 5, 4)
    torch.testing.assert_close(merge_heads(split_heads(x, 3)), x, atol=0, rtol=0)


@pytest.mark.parametrize("cross,bias", [(False, False), (True, False), (False, True)])
def test_attention_module_equals_diffusers_attention(cross, bias):
    cross_attention_dim = 6 if cross else None
    ours = _randomise(Attention(16, cross_attention_dim=cross_attention_dim, heads=4, dim_head=8, bias=bias)).eval()
    theirs = DiffusersAttention(16, cross_attention_dim=cross_attention_dim, heads=4, dim_head=8, bias=bias).eval()
    theirs.load_state_dict(ours.state_dict())
    # the same names as diffusers' module, for the arguments and the attributes
    assert (ours.heads, ours.is_cross_attention, ours.cross_attention_dim) == \
        (theirs.heads, theirs.is_cross_attention, theirs.cross_attention_dim)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 16, generator=g)
    context = torch.randn(2, 5, 6, generator=g) if cross else None
    with torch.no_grad():
        expected = theirs(x, encoder_hidden_states=context)
        torch.testing.assert_close(ours(x, context), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x, encoder_hidden_states=context), expected, atol=1e-5, rtol=0)
        # the forward pass uses the fused kernel; the written-out `attention` gives the same
        source = x if context is None else context
        q = split_heads(ours.to_q(x), 4)                      # (B, h, N, d)
        k = split_heads(ours.to_k(source), 4)                 # (B, h, M, d)
        v = split_heads(ours.to_v(source), 4)
        written_out = ours.to_out[0](merge_heads(attention(q, k, v)[0]))
        torch.testing.assert_close(written_out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("linear", [False, True])
def test_spatial_transformer_equals_diffusers_transformer2d(linear):
    ours = _randomise(SpatialTransformer(32, heads=4, cross_attention_dim=12, groups=8, layers=2,
                                         use_linear_projection=linear)).eval()
    theirs = Transformer2DModel(num_attention_heads=4, attention_head_dim=8, in_channels=32, num_layers=2,
                                cross_attention_dim=12, norm_num_groups=8, use_linear_projection=linear).eval()
    theirs.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 32, 6, 6, generator=g)
    context = torch.randn(2, 7, 12, generator=g)
    with torch.no_grad():
        expected = theirs(x, encoder_hidden_states=context).sample
        torch.testing.assert_close(ours(x, context), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours(x, encoder_hidden_states=context), expected, atol=1e-4, rtol=0)


def test_attention_errors():
    with pytest.raises(ValueError, match="queries have 8 channels but keys have 4"):
        attention(torch.zeros(1, 2, 8), torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="3 keys but 2 values"):
        attention(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))
    layer = Attention(16, cross_attention_dim=6, heads=2, dim_head=8)
    with pytest.raises(ValueError, match="encoder_hidden_states has embedding size 768 but this attention layer "
                                         "expects 6"):
        layer(torch.zeros(1, 4, 16), torch.zeros(1, 3, 768))
    with pytest.raises(ValueError, match=r"cross-attention layer: pass encoder_hidden_states \(B, tokens, 6\)"):
        layer(torch.zeros(1, 4, 16))
    with pytest.raises(ValueError, match="48 channels cannot be split into 5 heads"):
        SpatialTransformer(48, heads=5, cross_attention_dim=8, groups=8)
