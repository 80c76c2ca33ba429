"""Lesson 07's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one,
so that a clearer message later is a deliberate change.
"""

import pytest
import torch.nn.functional as F

from sdlearn.exercises import check


# --------------------------------------------------------------------------- 07.1 resnet_forward(block, x, temb)

def _branch(block, x, temb, *, silu_on_temb=True, temb_after_norm2=False):
    h = block.conv1(F.silu(block.norm1(x)))
    shift = block.time_emb_proj(F.silu(temb) if silu_on_temb else temb)[:, :, None, None]
    if temb_after_norm2:
        return block.conv2(F.silu(block.norm2(h)) + shift)
    return block.conv2(F.silu(block.norm2(h + shift)))


def _skip(block, x):
    return x if block.conv_shortcut is None else block.conv_shortcut(x)


def resnet_forward(block, x, temb):
    return _skip(block, x) + _branch(block, x, temb)


def resnet_without_residual(block, x, temb):
    return _branch(block, x, temb)


def resnet_shortcut_only(block, x, temb):
    return _skip(block, x)


def resnet_temb_without_silu(block, x, temb):
    return _skip(block, x) + _branch(block, x, temb, silu_on_temb=False)


def resnet_temb_added_late(block, x, temb):
    return _skip(block, x) + _branch(block, x, temb, temb_after_norm2=True)


def resnet_without_conv_shortcut(block, x, temb):
    return x + _branch(block, x, temb)                 # 8 channels + 16 channels: fails when they differ


def resnet_without_time(block, x, temb):
    h = block.conv2(F.silu(block.norm2(block.conv1(F.silu(block.norm1(x))))))
    return _skip(block, x) + h


# --------------------------------------------------------------------------- 07.2 up_input_channels(channels, layers)

def up_input_channels(block_out_channels, layers_per_block):
    """Replay the down path's stack of kept maps, then pop one per up ResNet block."""
    kept = [block_out_channels[0]]                                  # conv_in's output
    for level, out_ch in enumerate(block_out_channels):
        kept += [out_ch] * layers_per_block                         # one per down ResNet block
        if level < len(block_out_channels) - 1:
            kept.append(out_ch)                                     # the downsampler's output
    current, result = block_out_channels[-1], []                    # the middle block keeps the width
    for out_ch in reversed(block_out_channels):
        level = []
        for _ in range(layers_per_block + 1):
            level.append(current + kept.pop())
            current = out_ch
        result.append(level)
    return result


def up_channels_without_skips(block_out_channels, layers_per_block):
    channels, result, previous = list(reversed(block_out_channels)), [], block_out_channels[-1]
    for out_ch in channels:
        result.append([previous if i == 0 else out_ch for i in range(layers_per_block + 1)])
        previous = out_ch
    return result


def up_channels_last_skip_same_level(block_out_channels, layers_per_block):
    channels, result, previous = list(reversed(block_out_channels)), [], block_out_channels[-1]
    for out_ch in channels:
        result.append([(previous if i == 0 else out_ch) + out_ch for i in range(layers_per_block + 1)])
        previous = out_ch
    return result


def up_channels_one_block_too_few(block_out_channels, layers_per_block):
    return [level[:-1] for level in up_input_channels(block_out_channels, layers_per_block)]


def up_channels_in_down_order(block_out_channels, layers_per_block):
    return list(reversed(up_input_channels(block_out_channels, layers_per_block)))


# --------------------------------------------------------------------------- 07.3 cross_attention_parameters(C, D)

def cross_attention_parameters(C, D):
    q, k, v = C * C, D * C, D * C                    # no biases on the projections
    out = C * C + C                                  # the output projection has one
    return q + k + v + out


def parameters_with_qkv_bias(C, D):
    return cross_attention_parameters(C, D) + 3 * C


def parameters_without_out_bias(C, D):
    return cross_attention_parameters(C, D) - C


def parameters_keys_from_the_image(C, D):
    return 4 * C * C + C


def parameters_per_head(C, D):                       # heads do not add parameters: 8 heads of C/8 is one C x C
    return 8 * cross_attention_parameters(C, D)


@pytest.mark.parametrize("exercise_id, answer", [
    ("07.1", resnet_forward),
    ("07.2", up_input_channels),
    ("07.3", cross_attention_parameters),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("07.1", resnet_without_residual, "add the block's input back at the end"),
    ("07.1", resnet_shortcut_only, "the output is only the shortcut"),
    ("07.1", resnet_temb_without_silu, "apply SiLU to the time embedding"),
    ("07.1", resnet_temb_added_late, "The order is: norm1, SiLU, conv1"),
    ("07.1", resnet_without_conv_shortcut, "pass it through block.conv_shortcut first"),
    ("07.1", resnet_without_time, "The order is: norm1, SiLU, conv1"),
    ("07.2", up_channels_without_skips, "add the kept map's channels"),
    ("07.2", up_channels_last_skip_same_level, "the last block of each up level takes the map kept"),
    ("07.2", up_channels_one_block_too_few, "each with layers_per_block + 1"),
    ("07.2", up_channels_in_down_order, "the answer is wrong at some level"),
    ("07.3", parameters_with_qkv_bias, "have no bias in Stable Diffusion's transformer blocks"),
    ("07.3", parameters_without_out_bias, "the output projection has a bias of C numbers"),
    ("07.3", parameters_keys_from_the_image, "keys and values are computed from the text tokens"),
    ("07.3", parameters_per_head, "for C=320, D=768 the layer has 696,640 parameters"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
