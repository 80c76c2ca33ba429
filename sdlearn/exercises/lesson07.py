"""Checks for the exercises of lesson 07, the U-Net."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.models.attention import Attention
from sdlearn.models.unet import ResnetBlock2D, UNet, UNetConfig


def _block(c_in, c_out, seed):
    torch.manual_seed(seed)
    block = ResnetBlock2D(c_in, c_out, temb_channels=12, groups=4, eps=1e-5).eval()
    with torch.no_grad():                          # make every parameter matter, norms included
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return block


@exercise("07.1", "the ResNet block's forward pass")
def check_resnet_forward(resnet_forward):
    g = torch.Generator().manual_seed(0)
    for c_in, c_out in ((8, 8), (8, 16)):
        block = _block(c_in, c_out, seed=c_in + c_out)
        x, temb = torch.randn(2, c_in, 6, 6, generator=g), torch.randn(2, 12, generator=g)
        with torch.no_grad():
            try:
                got = resnet_forward(block, x, temb)
            except RuntimeError as error:
                if c_in != c_out and "size of tensor" in str(error):
                    raise Failed(f"from {c_in} to {c_out} channels the input cannot be added to the output as it "
                                 "is: pass it through block.conv_shortcut first (a 1x1 convolution that changes "
                                 "its channels).") from None
                raise
            expected = block(x, temb)
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                raise Failed(f"for {c_in} -> {c_out} channels, return a tensor of shape {tuple(expected.shape)}.")
            if torch.allclose(got, expected, atol=1e-5):
                continue
            skip = x if block.conv_shortcut is None else block.conv_shortcut(x)
            if torch.allclose(got + skip, expected, atol=1e-5):
                raise Failed("add the block's input back at the end (through conv_shortcut when it is not None): "
                             "that residual connection is what makes it a ResNet block.")
            if torch.allclose(got, x, atol=1e-5) or (block.conv_shortcut is not None and
                                                    torch.allclose(got, block.conv_shortcut(x), atol=1e-5)):
                raise Failed("the output is only the shortcut; add the convolutional branch to it.")
            raw = block.conv1(torch.nn.functional.silu(block.norm1(x))) + block.time_emb_proj(temb)[:, :, None, None]
            raw = skip + block.conv2(torch.nn.functional.silu(block.norm2(raw)))
            if torch.allclose(got, raw, atol=1e-5):
                raise Failed("apply SiLU to the time embedding before time_emb_proj, as diffusers does.")
            raise Failed(f"for {c_in} -> {c_out} channels the output differs from ResnetBlock2D's. The order is: "
                         "norm1, SiLU, conv1; add time_emb_proj(SiLU(temb)) reshaped to (B, C, 1, 1); norm2, SiLU, "
                         "conv2; then add the (projected) input.")
    return "equal to ResnetBlock2D with and without a channel change."


def _true_up_inputs(block_out_channels, layers_per_block):
    levels = len(block_out_channels)
    config = UNetConfig(block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                        attention_levels=(False,) * levels, mid_attention=False, norm_num_groups=4)
    with torch.device("meta"):
        model = UNet(config)
    return [[r.norm1.num_channels for r in block.resnets] for block in model.up_blocks]


def _inputs_without_skips(block_out_channels, layers_per_block):
    reversed_channels, result = list(reversed(block_out_channels)), []
    previous = reversed_channels[0]
    for out in reversed_channels:
        result.append([previous if i == 0 else out for i in range(layers_per_block + 1)])
        previous = out
    return result


@exercise("07.2", "input channels of the up path")
def check_up_input_channels(up_input_channels):
    cases = [((16, 32, 64, 128), 1), ((32, 64), 2), ((8, 16, 16), 2), ((320, 640, 1280, 1280), 2)]
    for channels, layers in cases:
        expected = _true_up_inputs(channels, layers)
        got = up_input_channels(channels, layers)
        got = [list(map(int, level)) for level in got] if got is not None else got
        if got == expected:
            continue
        if got == _inputs_without_skips(channels, layers):
            raise Failed("every up ResNet block's input is the concatenation of what comes from below and one "
                         "kept map; add the kept map's channels.")
        if got is None or len(got) != len(expected) or any(len(a) != len(b) for a, b in zip(got, expected)):
            raise Failed(f"return one list per up level ({len(expected)} levels), each with layers_per_block + 1 "
                         f"= {layers + 1} numbers.")
        raise Failed(f"for block_out_channels={channels}, layers_per_block={layers} the answer is wrong at some "
                     f"level (you gave {got}). Remember that the last block of each up level takes the map kept "
                     "where the down path entered that resolution, which has the previous level's channels.")
    return "right for four layouts, Stable Diffusion 1.5's included."


@exercise("07.3", "parameters of a cross-attention layer")
def check_cross_attention_parameters(cross_attention_parameters):
    for C, D, heads in ((320, 768, 8), (640, 768, 8), (64, 32, 4), (48, 48, 2)):
        layer = Attention(C, cross_attention_dim=D, heads=heads, dim_head=C // heads)
        expected = sum(p.numel() for p in layer.parameters())
        got = cross_attention_parameters(C, D)
        if got == expected:
            continue
        if got == expected + 3 * C:
            raise Failed("the query, key and value projections have no bias in Stable Diffusion's transformer "
                         "blocks; only the output projection has one.")
        if got == expected - C:
            raise Failed("the output projection has a bias of C numbers.")
        if got == 4 * C * C + C:
            raise Failed("keys and values are computed from the text tokens, which have D numbers each, not C.")
        raise Failed(f"for C={C}, D={D} the layer has {expected:,} parameters; you gave {got}.")
    return f"SD 1.5's first cross-attention layers have {cross_attention_parameters(320, 768):,} parameters each."
