"""The attention-map recorder: on our models through forward hooks, on diffusers' through processors.

Recording changes no output, the maps are the softmax written out, everything is restored, and
our U-Net and the diffusers U-Net converted from it give the same maps under the same names.
"""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from sdlearn.attention_maps import AttentionRecorder, RecordingAttnProcessor, attention_weights
from sdlearn.models.attention import Attention, split_heads
from sdlearn.models.conversion import to_diffusers
from sdlearn.models.unet import UNet, UNetConfig

# a text-conditional U-Net: cross-attention at 8x8 and 4x4 (for 8x8 inputs), two heads of 8 channels
TEXT_UNET = UNetConfig(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                       attention_levels=(True, True), mid_attention=True, attention_head_dim=8, norm_num_groups=8,
                       cross_attention_dim=32)
# a pixel U-Net (UNet2DModel layout): self-attention only, at the 8x8 level of 16x16 images
PIXEL_UNET = UNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, True),
                        attention_head_dim=8, norm_num_groups=8)


def _ours(config=TEXT_UNET, seed=0):
    torch.manual_seed(seed)
    return UNet(config).eval()


@pytest.fixture(scope="module")
def unet():
    """The diffusers twin of our text-conditional U-Net (a UNet2DConditionModel)."""
    return to_diffusers(_ours()).eval()


def _inputs(batch=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, size, size, generator=g)
    context = torch.randn(batch, 77, 32, generator=g)
    return sample, context


def _cross_attention_names(unet):
    return [name.removesuffix(".processor") for name in unet.attn_processors if name.endswith("attn2.processor")]


# --------------------------------------------------------------------------- a diffusers U-Net

@torch.no_grad()
def test_recording_gives_the_outputs_of_diffusers_attention(unet):
    sample, context = _inputs()
    unet.set_attn_processor(AttnProcessor())
    plain = unet(sample, 500, encoder_hidden_states=context).sample
    unet.set_attn_processor(AttnProcessor2_0())
    fused = unet(sample, 500, encoder_hidden_states=context).sample
    with AttentionRecorder(unet) as recorder:
        recorded = unet(sample, 500, encoder_hidden_states=context).sample
    assert sorted(recorder.calls) == sorted(_cross_attention_names(unet))
    assert all(count == 1 for count in recorder.calls.values())
    torch.testing.assert_close(recorded, plain, rtol=0, atol=1e-6)      # the same operations as AttnProcessor
    torch.testing.assert_close(recorded, fused, rtol=1e-5, atol=1e-5)    # and as the default (SDPA) processor


@torch.no_grad()
def test_processors_are_restored_even_after_an_error(unet):
    unet.set_attn_processor(AttnProcessor2_0())
    before = dict(unet.attn_processors)
    recorder = AttentionRecorder(unet)
    with pytest.raises(RuntimeError, match="boom"):
        with recorder:
            during = unet.attn_processors
            assert all(isinstance(during[name + ".processor"], RecordingAttnProcessor)
                       for name in _cross_attention_names(unet))
            assert not any(isinstance(p, RecordingAttnProcessor) for name, p in during.items()
                           if not name.endswith("attn2.processor"))             # self-attention is left alone
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] for name in before)
    assert not recorder.model._forward_pre_hooks


@torch.no_grad()
def test_maps_are_the_softmax_over_tokens_averaged_over_heads(unet):
    sample, context = _inputs(batch=1)
    unet.set_attn_processor(AttnProcessor2_0())
    name = _cross_attention_names(unet)[0]
    attn = unet.get_submodule(name)
    seen = {}

    def keep_input(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["context"] = kwargs["encoder_hidden_states"]

    handle = attn.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with AttentionRecorder(unet) as recorder:
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
    with AttentionRecorder(unet) as recorder:
        for t in (900, 500, 100):                                        # three denoising steps
            unet(sample, t, encoder_hidden_states=context)
    assert all(count == 3 for count in recorder.calls.values())
    assert recorder.weights == {}                                        # per-head weights only when asked
    layers = recorder.layer_maps()
    assert len(layers) == len(_cross_attention_names(unet))
    by_resolution = recorder.resolution_maps()
    sizes = {tuple(m.shape[-2:]) for m in layers.values()}
    assert set(by_resolution) == sizes == {(8, 8), (4, 4)}
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
    with AttentionRecorder(unet) as recorder:
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
    recorder = AttentionRecorder(unet)
    with pytest.raises(RuntimeError, match="nothing recorded"):
        recorder.layer_maps()
    with recorder:
        with pytest.raises(RuntimeError, match="already installed"):
            recorder.install()
        unet(sample, 500, encoder_hidden_states=context)
        assert {tuple(m.shape[-2:]) for m in recorder.layer_maps().values()} == {(8, 16), (4, 8)}
        with pytest.raises(ValueError, match="reset"):
            unet(torch.randn(2, 4, 8, 16, generator=g), 500, encoder_hidden_states=context.repeat(2, 1, 1))


# --------------------------------------------------------------------------- our models

@torch.no_grad()
def test_recording_our_unet_changes_nothing_and_leaves_no_hooks():
    model = _ours()
    sample, context = _inputs(batch=3)
    plain = model(sample, torch.tensor([10, 500, 900]), context)
    with AttentionRecorder(model, keep_weights=True) as recorder:
        recorded = model(sample, torch.tensor([10, 500, 900]), encoder_hidden_states=context)
    torch.testing.assert_close(recorded, plain, atol=0, rtol=0)        # the forward pass is untouched
    # down: 1 + 1, mid: 1, up: 2 + 2 spatial transformers, one cross-attention each
    assert len(recorder.calls) == 7 and all(count == 1 for count in recorder.calls.values())
    assert all(name.endswith("attn2") for name in recorder.calls)
    first = recorder.weights["down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    assert len(first) == 1 and first[0].shape == (3, 2, 8 * 8, 77)    # (B, heads, H*W, tokens), per call
    torch.testing.assert_close(first[0].sum(-1), torch.ones(3, 2, 64))
    assert recorder.token_maps().shape == (3, 77, 8, 8)
    assert not any(layer._forward_hooks for layer in model.modules())
    assert not model._forward_pre_hooks
    with AttentionRecorder(model, kind="self") as self_maps:
        model(sample, torch.tensor([10, 500, 900]), context)
    assert len(self_maps.calls) == 7 and all(name.endswith("attn1") for name in self_maps.calls)
    assert self_maps.layer_maps()["down_blocks.0.attentions.0.transformer_blocks.0.attn1"].shape == (3, 64, 8, 8)


@torch.no_grad()
def test_our_maps_are_the_softmax_written_out():
    model = _ours()
    sample, context = _inputs(batch=1)
    layer = model.get_submodule("up_blocks.0.attentions.1.transformer_blocks.0.attn2")
    seen = {}

    def keep_input(module, args, kwargs):
        seen["hidden"] = args[0]

    handle = layer.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with AttentionRecorder(model, keep_weights=True) as recorder:
            model(sample, 300, context)
    finally:
        handle.remove()
    q = split_heads(layer.to_q(seen["hidden"]), layer.heads)            # (1, 2, 16, 8)
    k = split_heads(layer.to_k(context), layer.heads)                   # (1, 2, 77, 8)
    expected = (q @ k.transpose(-1, -2) / layer.dim_head ** 0.5).softmax(-1)
    got = recorder.weights["up_blocks.0.attentions.1.transformer_blocks.0.attn2"][0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention_weights(layer, seen["hidden"], context), expected, rtol=1e-5, atol=1e-6)


def test_cross_attention_follows_the_context():
    """A query aligned with one token's key puts its weight on that token."""
    layer = Attention(4, cross_attention_dim=4, heads=1, dim_head=4)
    with torch.no_grad():
        for linear in (layer.to_q, layer.to_k, layer.to_v):
            linear.weight.copy_(torch.eye(4) * 4)
    context = torch.eye(4)[None]                                       # 4 tokens, orthogonal keys
    x = torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])                         # looks for token 2
    with AttentionRecorder(layer, keep_weights=True) as recorder:
        layer(x, context)
    assert recorder.weights[""][0][0, 0, 0].argmax().item() == 2      # "": the recorded module itself


def test_recorder_errors():
    with pytest.raises(ValueError, match="has no cross-attention layers"):
        with AttentionRecorder(UNet(PIXEL_UNET)):
            pass
    with pytest.raises(ValueError, match="has no cross-attention layers"):
        with AttentionRecorder(to_diffusers(UNet(PIXEL_UNET))):
            pass
    with pytest.raises(ValueError, match="kind must be"):
        AttentionRecorder(_ours(), kind="both")
    model = _ours()
    sample, context = _inputs(batch=1)
    with torch.no_grad(), AttentionRecorder(model, kind="all") as recorder:
        model(sample, 500, context)
    with pytest.raises(ValueError, match="different numbers of keys"):
        recorder.token_maps()


# --------------------------------------------------------------------------- one recorder, both U-Nets

@pytest.mark.parametrize("config, kind", [(TEXT_UNET, "cross"), (TEXT_UNET, "self"), (PIXEL_UNET, "self")],
                         ids=["text-cross", "text-self", "pixel-self"])
@torch.no_grad()
def test_our_unet_and_its_diffusers_twin_give_the_same_maps(config, kind):
    """Same weights, same inputs: the same layer names, and maps that agree within 1e-5 (absolute; they lie in
    [0, 1], and the two U-Nets' outputs differ by float32 rounding in a different order of operations)."""
    ours = _ours(config, seed=1)
    theirs = to_diffusers(ours).eval()
    g = torch.Generator().manual_seed(2)
    size = 8 if config.conditional else 16
    sample = torch.randn(2, config.in_channels, size, size, generator=g)
    timestep = torch.tensor([50, 700])
    kwargs = {}
    if config.conditional:
        kwargs["encoder_hidden_states"] = torch.randn(2, 6, config.cross_attention_dim, generator=g)
    our_plain, their_plain = ours(sample, timestep, **kwargs), theirs(sample, timestep, **kwargs).sample
    with AttentionRecorder(ours, kind=kind, keep_weights=True) as our_maps:
        our_recorded = ours(sample, timestep, **kwargs)
    with AttentionRecorder(theirs, kind=kind, keep_weights=True) as their_maps:
        their_recorded = theirs(sample, timestep, **kwargs).sample
    torch.testing.assert_close(our_recorded, our_plain, atol=0, rtol=0)          # recording changes nothing
    torch.testing.assert_close(their_recorded, their_plain, atol=1e-5, rtol=0)   # (diffusers: bmm, not SDPA)
    assert list(our_maps.calls) == list(their_maps.calls)             # the same layers, in the same order
    ours_by_layer, theirs_by_layer = our_maps.layer_maps(), their_maps.layer_maps()
    for name in ours_by_layer:
        assert ours_by_layer[name].shape == theirs_by_layer[name].shape
        torch.testing.assert_close(ours_by_layer[name], theirs_by_layer[name], atol=1e-5, rtol=0)
        torch.testing.assert_close(our_maps.weights[name][0], their_maps.weights[name][0], atol=1e-5, rtol=0)
    if kind == "cross":                                                # the same keys everywhere: the tokens
        torch.testing.assert_close(our_maps.token_maps(size=16), their_maps.token_maps(size=16), atol=1e-5, rtol=0)
