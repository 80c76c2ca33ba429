"""Recording cross-attention maps: the U-Net's output is unchanged, the maps are the softmax, and everything is restored."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from sdlearn.attention_maps import CrossAttentionRecorder, RecordingAttnProcessor

from test_pipelines import _parts


@pytest.fixture(scope="module")
def unet():
    unet, _, _ = _parts()
    return unet


def _inputs(batch=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, size, size, generator=g)
    context = torch.randn(batch, 77, 32, generator=g)
    return sample, context


def _cross_attention_names(unet):
    return [name for name in unet.attn_processors if name.endswith("attn2.processor")]


@torch.no_grad()
def test_recording_gives_the_outputs_of_diffusers_attention(unet):
    sample, context = _inputs()
    unet.set_attn_processor(AttnProcessor())
    plain = unet(sample, 500, encoder_hidden_states=context).sample
    unet.set_attn_processor(AttnProcessor2_0())
    fused = unet(sample, 500, encoder_hidden_states=context).sample
    with CrossAttentionRecorder(unet) as recorder:
        recorded = unet(sample, 500, encoder_hidden_states=context).sample
    assert recorder.calls and all(count == 1 for count in recorder.calls.values())
    torch.testing.assert_close(recorded, plain, rtol=0, atol=1e-6)      # the same operations as AttnProcessor
    torch.testing.assert_close(recorded, fused, rtol=1e-5, atol=1e-5)    # and as the default (SDPA) processor


@torch.no_grad()
def test_processors_are_restored_even_after_an_error(unet):
    unet.set_attn_processor(AttnProcessor2_0())
    before = dict(unet.attn_processors)
    recorder = CrossAttentionRecorder(unet)
    with pytest.raises(RuntimeError, match="boom"):
        with recorder:
            during = unet.attn_processors
            assert all(isinstance(during[name], RecordingAttnProcessor) for name in _cross_attention_names(unet))
            assert not any(isinstance(p, RecordingAttnProcessor) for name, p in during.items()
                           if not name.endswith("attn2.processor"))             # self-attention is left alone
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] for name in before)
    assert not recorder.unet._forward_pre_hooks


@torch.no_grad()
def test_maps_are_the_softmax_over_tokens_averaged_over_heads(unet):
    sample, context = _inputs(batch=1)
    unet.set_attn_processor(AttnProcessor2_0())
    name = _cross_attention_names(unet)[0]
    attn = unet.get_submodule(name.removesuffix(".processor"))
    seen = {}

    def keep_input(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["context"] = kwargs["encoder_hidden_states"]

    handle = attn.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with CrossAttentionRecorder(unet) as recorder:
            unet(sample, 300, encoder_hidden_states=context)
    finally:
        handle.remove()
    # the same probabilities written out: heads split, softmax(q k^T / sqrt(d)), mean over heads
    q = attn.to_q(seen["hidden"])                                        # (1, N, H * D)
    k = attn.to_k(seen["context"])                                       # (1, 77, H * D)
    b, n, inner = q.shape
    d = inner // attn.heads
    q = q.view(b, n, attn.heads, d).transpose(1, 2)                      # (1, H, N, D)
    k = k.view(b, 77, attn.heads, d).transpose(1, 2)                     # (1, H, 77, D)
    expected = (q @ k.transpose(-1, -2) / d ** 0.5).softmax(-1).mean(1)  # (1, N, 77)
    side = int(n ** 0.5)
    got = recorder.layer_maps()[name]                                    # (1, 77, h, w)
    assert got.shape == (1, 77, side, side)
    torch.testing.assert_close(got.flatten(2).transpose(1, 2), expected, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_map_shapes_and_rows_that_sum_to_one(unet):
    sample, context = _inputs(batch=3)
    with CrossAttentionRecorder(unet) as recorder:
        for t in (900, 500, 100):                                        # three denoising steps
            unet(sample, t, encoder_hidden_states=context)
    assert all(count == 3 for count in recorder.calls.values())
    layers = recorder.layer_maps()
    assert len(layers) == len(_cross_attention_names(unet))
    by_resolution = recorder.resolution_maps()
    sizes = {tuple(m.shape[-2:]) for m in layers.values()}
    assert set(by_resolution) == sizes and (8, 8) in sizes and len(sizes) >= 2
    assert list(by_resolution)[0] == (8, 8)                              # largest first
    for maps in [*layers.values(), *by_resolution.values()]:
        assert maps.shape[:2] == (3, 77)
        torch.testing.assert_close(maps.sum(1), torch.ones(3, *maps.shape[-2:]), rtol=0, atol=1e-5)
    token = recorder.token_maps(size=32)
    assert token.shape == (3, 77, 32, 32)
    torch.testing.assert_close(token.sum(1), torch.ones(3, 32, 32), rtol=0, atol=1e-5)
    assert recorder.token_maps().shape == (3, 77, 8, 8)
    # different images attend differently: the maps are per batch element, not shared
    assert not torch.allclose(token[0], token[1])


@torch.no_grad()
def test_average_over_calls_and_reset(unet):
    sample, context = _inputs(batch=1)
    with CrossAttentionRecorder(unet) as recorder:
        unet(sample, 800, encoder_hidden_states=context)
        first = recorder.token_maps()
        recorder.reset()
        unet(sample, 100, encoder_hidden_states=context)
        second = recorder.token_maps()
        unet(sample, 800, encoder_hidden_states=context)
        both = recorder.token_maps()
    assert not torch.allclose(first, second)
    torch.testing.assert_close(both, (first + second) / 2, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_non_square_latents_and_bad_use(unet):
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 8, 16, generator=g)
    context = torch.randn(1, 77, 32, generator=g)
    recorder = CrossAttentionRecorder(unet)
    with pytest.raises(RuntimeError, match="nothing recorded"):
        recorder.layer_maps()
    with recorder:
        with pytest.raises(RuntimeError, match="already installed"):
            recorder.install()
        unet(sample, 500, encoder_hidden_states=context)
        assert {tuple(m.shape[-2:]) for m in recorder.layer_maps().values()} >= {(8, 16), (4, 8)}
        with pytest.raises(ValueError, match="reset"):
            unet(torch.randn(2, 4, 8, 16, generator=g), 500, encoder_hidden_states=context.repeat(2, 1, 1))
