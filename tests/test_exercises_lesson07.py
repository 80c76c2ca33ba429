"""Lesson 07's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one,
so that a clearer message later is a deliberate change.
"""

import pytest

from sdlearn.exercises import check
from sdlearn.models.unet import UNetConfig


# --------------------------------------------------------------------------- 07.1 design_unet()

def design_unet():
    return dict(block_out_channels=(32, 64, 64, 128), layers_per_block=2, attention_levels=(False, False, True, True))


def design_one_block_per_level():                      # another design that meets every requirement
    return dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, attention_levels=(False,) * 4)


def design_as_config():                                # a UNetConfig is accepted as well as a dict
    return UNetConfig(in_channels=3, out_channels=3, sample_size=48, block_out_channels=(32, 32, 64, 128),
                      layers_per_block=2, attention_levels=(False,) * 4)


def design_doubling_every_level():
    return dict(block_out_channels=(32, 64, 128, 256), layers_per_block=2, attention_levels=(False,) * 4)


def design_three_levels():
    return dict(block_out_channels=(32, 64, 128), layers_per_block=1, attention_levels=(False,) * 3)


def design_five_levels():
    return dict(block_out_channels=(32, 64, 128, 128, 128), layers_per_block=1, attention_levels=(False,) * 5)


def design_six_levels():
    return dict(block_out_channels=(32, 64, 128, 128, 128, 128), layers_per_block=1, attention_levels=(False,) * 6)


def design_default_attention_levels():                 # UNetConfig's default attention_levels has three flags
    return dict(block_out_channels=(32, 64, 64, 128), layers_per_block=1)


def design_too_narrow_at_full_resolution():
    return dict(block_out_channels=(16, 32, 64, 128), layers_per_block=2, attention_levels=(False,) * 4)


def design_too_narrow_at_6x6():
    return dict(block_out_channels=(32, 64, 64, 64), layers_per_block=2, attention_levels=(False,) * 4)


def design_grey_images():
    return dict(design_one_block_per_level(), in_channels=1)


def design_channels_only():
    return (32, 64, 64, 128)


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
    ("07.1", design_unet),
    ("07.1", design_one_block_per_level),
    ("07.1", design_as_config),
    ("07.2", up_input_channels),
    ("07.3", cross_attention_parameters),
])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("07.1", design_doubling_every_level, "has 14,158,147 parameters, over the budget of 5,000,000. 77% of them"),
    ("07.1", design_three_levels, "its coarsest maps are 12x12, not 6x6"),
    ("07.1", design_five_levels, "its coarsest maps are 3x3, not 6x6"),
    ("07.1", design_six_levels, "48 is not divisible by 32"),
    ("07.1", design_default_attention_levels, "attention_levels has 3 entries but block_out_channels has 4"),
    ("07.1", design_too_narrow_at_full_resolution, "has 16 channels; it must have at least 32"),
    ("07.1", design_too_narrow_at_6x6, "at 6x6, has 64 channels; it must have at least 128"),
    ("07.1", design_grey_images, "in_channels must be 3, not 1"),
    ("07.1", design_channels_only, "return a dict of UNetConfig settings"),
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
