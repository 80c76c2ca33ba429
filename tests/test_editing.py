"""Image to image and inpainting (sdlearn.editing) against diffusers' pipelines, on the shipped models."""

import pytest
import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionInpaintPipeline)

from sdlearn import pipelines
from sdlearn.editing import (check_inpainting_unet, image_to_image, inpaint, steps_for_strength,
                             strength_timesteps)
from sdlearn.masks import box_mask, half_mask
from sdlearn.models.conversion import from_diffusers, to_diffusers
from sdlearn.recipes.inpainting import widen_conv_in

SCHEDULERS = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}
TOLERANCE = 1e-5          # pixels in [0, 1]


@pytest.fixture(scope="module")
def pipe():
    return pipelines.load("fashion_text2image")


@pytest.fixture(scope="module")
def inpainting_pipe():
    return pipelines.load("fashion_inpainting")


def _drawings() -> torch.Tensor:
    """Two flat shapes in [0, 1]: a boot-like L and a bag-like box, the kind of input SDEdit turns into garments."""
    image = torch.zeros(2, 1, 32, 32)
    image[0, :, 6:26, 10:16] = 0.8                # the shaft
    image[0, :, 20:26, 10:26] = 0.8               # the foot
    image[1, :, 10:26, 6:26] = 0.6                # the body of a bag
    image[1, :, 5:10, 12:20] = 0.6                # its handle
    return image


def _with_scheduler(pipe, cls, kind):
    """The same components in another diffusers pipeline class, with a fresh scheduler of `kind`."""
    return cls.from_pipe(pipe, scheduler=SCHEDULERS[kind].from_config(pipe.scheduler.config))


@pytest.mark.parametrize("kind", ["ddim", "euler"])
@pytest.mark.parametrize("strength", [0.3, 0.6, 1.0])
def test_image_to_image_returns_the_img2img_pipelines_pixels(pipe, kind, strength):
    reference = _with_scheduler(pipe, StableDiffusionImg2ImgPipeline, kind)
    prompts = ["a photo of an ankle boot", "a photo of a bag"]
    settings = dict(strength=strength, num_inference_steps=10, guidance_scale=4.0)
    expected = reference(prompts, image=_drawings(), **settings, output_type="pt",
                         generator=torch.Generator().manual_seed(5)).images
    ours = image_to_image(pipe, prompts, _drawings(), **settings, generator=torch.Generator().manual_seed(5),
                          scheduler=SCHEDULERS[kind].from_config(pipe.scheduler.config))
    assert ours.shape == expected.shape == (2, 1, 32, 32)
    assert (ours - expected).abs().max().item() <= TOLERANCE


def test_strength_chooses_the_tail_of_the_schedule(pipe):
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    full = scheduler.set_timesteps(20) or scheduler.timesteps.clone()
    for strength, steps in [(1.0, 20), (0.5, 10), (0.26, 5), (0.049, None)]:
        if steps is None:
            with pytest.raises(ValueError, match="0 steps"):
                strength_timesteps(scheduler, 20, strength)
            continue
        timesteps = strength_timesteps(scheduler, 20, strength)
        assert steps_for_strength(20, strength) == steps == len(timesteps)
        assert torch.equal(timesteps, full[20 - steps:])


def test_image_to_image_at_small_strength_stays_near_the_input(pipe):
    """Strength 0.1 noises little: the result is much closer to the input than at strength 0.9."""
    image = _drawings()
    near = image_to_image(pipe, ["a photo of a coat"] * 2, image, strength=0.1, num_inference_steps=20,
                          guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    far = image_to_image(pipe, ["a photo of a coat"] * 2, image, strength=0.9, num_inference_steps=20,
                         guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    assert (near - image).abs().mean() < 0.5 * (far - image).abs().mean()


@pytest.mark.parametrize("kind,strength", [("ddim", 1.0), ("ddim", 0.7), ("euler", 1.0)])
def test_inpainting_by_blending_returns_the_inpaint_pipelines_pixels(pipe, kind, strength):
    """A 4-channel U-Net: the known region put back after every step, as StableDiffusionInpaintPipeline does."""
    reference = _with_scheduler(pipe, StableDiffusionInpaintPipeline, kind)
    masks = torch.cat([half_mask(32, "upper"), box_mask(32, 8, 4, 12, 20)])
    prompts = ["a photo of a sneaker", "a photo of a dress"]
    settings = dict(strength=strength, num_inference_steps=8, guidance_scale=5.0)
    expected = reference(prompts, image=_drawings(), mask_image=masks, **settings, output_type="pt",
                         generator=torch.Generator().manual_seed(1)).images
    ours = inpaint(pipe, prompts, _drawings(), masks, **settings, generator=torch.Generator().manual_seed(1),
                   scheduler=SCHEDULERS[kind].from_config(pipe.scheduler.config))
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("kind,strength", [("ddim", 1.0), ("ddim", 0.6), ("euler", 1.0)])
def test_nine_channel_inpainting_returns_the_inpaint_pipelines_pixels(inpainting_pipe, kind, strength):
    reference = _with_scheduler(inpainting_pipe, StableDiffusionInpaintPipeline, kind)
    masks = torch.cat([half_mask(32, "lower"), box_mask(32, 2, 2, 28, 14)])
    prompts = ["a photo of a dress", "a photo of a shirt"]
    settings = dict(strength=strength, num_inference_steps=8, guidance_scale=5.0)
    expected = reference(prompts, image=_drawings(), mask_image=masks, **settings, output_type="pt",
                         generator=torch.Generator().manual_seed(4)).images
    ours = inpaint(inpainting_pipe, prompts, _drawings(), masks, **settings,
                   generator=torch.Generator().manual_seed(4),
                   scheduler=SCHEDULERS[kind].from_config(inpainting_pipe.scheduler.config))
    assert (ours - expected).abs().max().item() <= TOLERANCE


def test_widened_unet_equals_the_four_channel_one_before_training(pipe):
    """Zero weights on the 5 new input channels: whatever they hold, the output is the text-to-image U-Net's."""
    narrow = from_diffusers(pipe.unet).eval()
    wide = widen_conv_in(narrow).eval()
    assert wide.config.in_channels == 9 and wide.conv_in.weight[:, 4:].abs().sum() == 0
    g = torch.Generator().manual_seed(0)
    x, extra = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 5, 8, 8, generator=g)
    context = torch.randn(3, 77, 64, generator=g)
    t = torch.tensor([10, 500, 990])
    with torch.no_grad():
        expected = narrow(x, t, encoder_hidden_states=context)
        got = wide(torch.cat([x, extra], 1), t, encoder_hidden_states=context)
    assert (got - expected).abs().max().item() <= 1e-5
    assert to_diffusers(wide).config.in_channels == 9


def test_shipped_inpainting_folder_shares_the_text_to_image_parts():
    """The inpainting folder stores only its U-Net: the VAE, text encoder and tokenizer are links to fashion_text2image."""
    from sdlearn.weights import resolve

    folder, base = resolve("fashion_inpainting"), resolve("fashion_text2image")
    for name in ("vae", "text_encoder", "tokenizer"):
        assert (folder / name).is_symlink()
        assert (folder / name).resolve() == (base / name).resolve()
    assert not (folder / "unet").is_symlink()
    loaded = StableDiffusionInpaintPipeline.from_pretrained(str(folder))
    assert loaded.unet.config.in_channels == 9


# ------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("strength,match", [(1.5, r"strength must be a number in \[0, 1\]"),
                                            (-0.1, r"strength must be a number in \[0, 1\]"),
                                            (0.05, "0 steps: raise strength to at least 0.1"),
                                            (0.0, "returns the image unchanged")])
def test_bad_strength_says_what_to_do(pipe, strength, match):
    with pytest.raises(ValueError, match=match):
        image_to_image(pipe, "a photo of a bag", _drawings()[:1], strength=strength, num_inference_steps=10)


@pytest.mark.parametrize("image,match", [
    (torch.rand(1, 1, 30, 30), "not a multiple of the autoencoder's factor 4"),
    (torch.rand(1, 1, 64, 64), "this pipeline makes 32x32 pictures"),
    (torch.rand(1, 3, 32, 32), r"3 channels .* takes 1: average the colour channels"),
    (torch.rand(1, 1, 32, 32) * 2 - 1, r"floats in \[0, 1\]"),
    ("picture.png", "must be a tensor"),
])
def test_bad_image_says_what_to_do(pipe, image, match):
    with pytest.raises(ValueError, match=match):
        image_to_image(pipe, "a photo of a bag", image, strength=0.5, num_inference_steps=4)
    with pytest.raises(ValueError, match=match):
        inpaint(pipe, "a photo of a bag", image, half_mask(32, "upper"), num_inference_steps=4)


@pytest.mark.parametrize("mask,match", [
    (half_mask(32, "upper") * 255, r"values in \[0, 1\].*divide by 255"),
    (half_mask(32, "upper") - 0.5, r"values in \[0, 1\]"),
    (torch.ones(1, 1, 16, 16), "draw the mask at the image's size"),
    (torch.ones(1, 3, 32, 32), "a mask has one"),
    (torch.ones(3, 1, 32, 32), "3 masks for 2 images"),
])
def test_bad_mask_says_what_to_do(pipe, mask, match):
    with pytest.raises(ValueError, match=match):
        inpaint(pipe, ["a photo of a bag"] * 2, _drawings(), mask, num_inference_steps=4)


def test_asking_for_mask_channels_from_a_four_channel_unet_says_what_to_load(pipe):
    with pytest.raises(ValueError, match=r"inpainting U-Net with 9 input channels.*fashion_inpainting"):
        inpaint(pipe, "a photo of a bag", _drawings()[:1], half_mask(32, "upper"), blend=False,
                num_inference_steps=4)
    with pytest.raises(ValueError, match="has 4"):
        check_inpainting_unet(pipe.unet)


def test_masks_in_other_layouts_are_accepted_and_binarised(pipe):
    """A (H, W) mask of 0.3 and 0.7 is the same mask as the (1, 1, H, W) one of 0 and 1."""
    hard = half_mask(32, "upper")
    soft = hard[0, 0] * 0.4 + 0.3
    settings = dict(num_inference_steps=4, guidance_scale=3.0)
    a = inpaint(pipe, "a photo of a bag", _drawings()[:1], hard, **settings, generator=torch.Generator().manual_seed(0))
    b = inpaint(pipe, "a photo of a bag", _drawings()[:1], soft, **settings, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_change_outside_and_seam_measure_what_they_say():
    from sdlearn.metrics import change_outside, seam

    image = torch.zeros(1, 1, 8, 8)
    mask = box_mask(8, 2, 2, 4, 4)
    edited = image.clone()
    edited[..., 2:6, 2:6] = 1.0                                   # a bright patch exactly in the hole: a hard seam
    assert change_outside(edited, image, mask).item() == 0
    assert change_outside(edited + (1 - mask) * 0.25, image, mask).item() == pytest.approx(0.25)
    assert seam(edited, mask).item() == pytest.approx(1.0)       # every border pair jumps by 1, no other pair does
    assert seam(image, mask).item() == 0                         # a flat picture has no seam
    smooth = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)
    assert abs(seam(smooth, mask).item()) < 1e-6                  # the border jumps like every other pair
    assert seam(edited, torch.ones(1, 1, 8, 8)).item() == 0      # no border, no seam
