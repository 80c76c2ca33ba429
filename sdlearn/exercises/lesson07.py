"""Checks for the exercises of lesson 07, the U-Net."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise
from sdlearn.models.attention import Attention
from sdlearn.models.unet import UNet, UNetConfig, count_parameters


SIDE = 48                                         # 07.1: the images are 3 x 48 x 48
BUDGET = 5_000_000                                # 07.1: at most this many parameters
FIXED = {"in_channels": 3, "out_channels": 3, "sample_size": SIDE}


def _build(settings) -> tuple[UNetConfig, UNet]:
    """The student's U-Net, built on the meta device (shapes only, no memory)."""
    if isinstance(settings, UNetConfig):
        settings = {name: getattr(settings, name) for name in settings.__dataclass_fields__}
    if not isinstance(settings, dict):
        raise Failed(f"return a dict of UNetConfig settings, such as dict(block_out_channels=(32, 64), "
                     f"layers_per_block=1, attention_levels=(False, False)); got a {type(settings).__name__}.")
    for name, value in FIXED.items():
        if name in settings and settings[name] != value:
            raise Failed(f"the images are 3 x {SIDE} x {SIDE}: {name} must be {value}, not {settings[name]!r} "
                         f"(or leave it out; the check sets it).")
    try:
        config = UNetConfig(**{**settings, **FIXED})
    except (TypeError, ValueError) as error:
        raise Failed(f"UNetConfig refused these settings: {error}") from None
    with torch.device("meta"):
        model = UNet(config)
    return config, model


@exercise("07.1", "a U-Net for 48 x 48 images, within a budget")
def check_design_unet(design_unet):
    settings = design_unet()
    config, model = _build(settings)
    channels = config.block_out_channels
    levels = len(channels)
    sides = [SIDE // 2 ** i for i in range(levels)]
    if SIDE % 2 ** (levels - 1):
        raise Failed(f"with {levels} levels the image is halved {levels - 1} times, and {SIDE} is not divisible "
                     f"by {2 ** (levels - 1)}: the up path could not meet the kept maps again.")
    path = " -> ".join(f"{side}x{side}" for side in sides)
    if sides[-1] != 6:
        raise Failed(f"your U-Net has {levels} levels ({path}), so its coarsest maps are {sides[-1]}x{sides[-1]}, "
                     f"not 6x6. Every level after the first halves the side, so 48x48 -> 24x24 -> 12x12 -> 6x6 "
                     f"takes four levels: give block_out_channels (and attention_levels) four entries.")
    if channels[0] < 32:
        raise Failed(f"the first level, at full resolution, has {channels[0]} channels; it must have at least 32.")
    if channels[-1] < 128:
        raise Failed(f"the coarsest level, at 6x6, has {channels[-1]} channels; it must have at least 128.")
    with torch.device("meta"):
        out = model(torch.empty(2, 3, SIDE, SIDE), torch.tensor([10, 900]))
    if tuple(out.shape) != (2, 3, SIDE, SIDE):
        raise Failed(f"the U-Net should return a tensor shaped like its input, (2, 3, {SIDE}, {SIDE}); "
                     f"it returned {tuple(out.shape)}.")
    total = count_parameters(model)
    if total > BUDGET:
        lowest = (count_parameters(model.down_blocks[-1]) + count_parameters(model.mid_block)
                  + count_parameters(model.up_blocks[0]))
        raise Failed(f"{channels} with layers_per_block={config.layers_per_block} has {total:,} parameters, over "
                     f"the budget of {BUDGET:,}. {lowest / total:.0%} of them sit at the 6x6 level (its down "
                     f"block, the middle block and the first up block), where a 3x3 convolution from c to c "
                     f"channels costs 9c^2: narrow the coarse levels (the 6x6 one above all), or use fewer ResNet "
                     f"blocks per level.")
    blocks = "1 ResNet block" if config.layers_per_block == 1 else f"{config.layers_per_block} ResNet blocks"
    return (f"{channels}, {blocks} per level: {path}, {total:,} parameters "
            f"({total / BUDGET:.0%} of the budget).")


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
