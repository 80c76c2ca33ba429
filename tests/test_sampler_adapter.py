"""One sampling stack: sdlearn's samplers drive the shipped text-to-image U-Net through GuidedNoiseModel.

With the same prompts, guidance scale, seed and initial latents, `sample_euler`, `sample_ddim` and
`sample_lms` give the final latents of `text_to_image` with the matching diffusers scheduler.
Tolerance: max abs difference <= 1e-5, float32, 10 steps.
"""

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, LMSDiscreteScheduler, UNet2DConditionModel

from sdlearn import pipelines
from sdlearn.guidance import GuidedNoiseModel, classifier_free_guidance
from sdlearn.samplers import sample_ddim, sample_euler, sample_lms
from sdlearn.schedules import make_schedule
from sdlearn.text_to_image import prepare_latents, prepare_prompt_embeds, text_to_image

TOL = 1e-5
PROMPTS = ["a photo of a sneaker facing right", "a photo of a dress"]
GUIDANCE_SCALE = 5.0
STEPS = 10
PAIRS = {   # our sampler: the diffusers scheduler it matches, and what the sampler needs of its config
    "euler": (sample_euler, EulerDiscreteScheduler, lambda config: {}),
    "ddim": (sample_ddim, DDIMScheduler, lambda config: {"set_alpha_to_one": config.set_alpha_to_one}),
    "lms": (sample_lms, LMSDiscreteScheduler, lambda config: {}),
}


@pytest.fixture(scope="module")
def pipe():
    pipe = pipelines.load("fashion_text2image")          # the shipped StableDiffusionPipeline, offline, float32
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def embeds(pipe):
    return prepare_prompt_embeds(pipe, PROMPTS, "a photo of a bag", GUIDANCE_SCALE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAIRS))
def test_our_sampler_with_guidance_gives_text_to_images_latents(pipe, embeds, name):
    sampler, scheduler_cls, sampler_kwargs = PAIRS[name]
    scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    reference_steps = []
    reference = text_to_image(pipe, PROMPTS, negative_prompt="a photo of a bag", guidance_scale=GUIDANCE_SCALE,
                              num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                              scheduler=scheduler, callback=reference_steps.append, output_type="latent")

    config = pipe.scheduler.config
    schedule = make_schedule(pipe.scheduler.alphas_cumprod, STEPS, timestep_spacing=config.timestep_spacing,
                             steps_offset=config.steps_offset)
    init_noise_sigma = 1.0 if name == "ddim" else schedule.init_noise_sigma   # DDIM works with unit variance
    assert init_noise_sigma == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-6)
    latents = prepare_latents((2, 4, 8, 8), init_noise_sigma, generator=torch.Generator().manual_seed(0))
    model = GuidedNoiseModel(pipe.unet, *embeds, guidance_scale=GUIDANCE_SCALE)
    steps = []
    ours = sampler(model, latents, schedule, prediction_type=config.prediction_type, callback=steps.append,
                   **sampler_kwargs(config))

    assert len(steps) == len(reference_steps) == STEPS
    assert [s.timestep for s in steps] == [r.timestep for r in reference_steps]
    errors = [(s.sample - r.sample).abs().max().item() for s, r in zip(steps, reference_steps)]
    assert max(errors) <= TOL, f"step {errors.index(max(errors))}: max abs difference {max(errors):.2e}"
    assert (ours - reference).abs().max().item() <= TOL
    assert (reference - latents).abs().mean() > 0.1                        # the latents did move


def _batch_sizes(unet):
    sizes = []

    def note(module, args, kwargs):
        sizes.append((args[0] if args else kwargs["sample"]).shape[0])

    return sizes, unet.register_forward_pre_hook(note, with_kwargs=True)


def test_guidance_doubles_the_batch_and_a_scale_of_one_runs_once(pipe, embeds):
    prompt_embeds, negative_prompt_embeds = embeds
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    with torch.no_grad():
        uncond = pipe.unet(x, t, encoder_hidden_states=negative_prompt_embeds).sample
        cond = pipe.unet(x, t, encoder_hidden_states=prompt_embeds).sample
    sizes, hook = _batch_sizes(pipe.unet)
    try:
        guided = GuidedNoiseModel(pipe.unet, prompt_embeds, negative_prompt_embeds, guidance_scale=GUIDANCE_SCALE)(x, t)
        off = GuidedNoiseModel(pipe.unet, prompt_embeds, negative_prompt_embeds, guidance_scale=1.0)(x, t)
        without_reference = GuidedNoiseModel(pipe.unet, prompt_embeds, guidance_scale=0.5)(x, t.expand(2))
    finally:
        hook.remove()
    assert sizes == [4, 2, 2]                  # one U-Net call each: the doubled batch, then the prompts alone
    torch.testing.assert_close(guided, classifier_free_guidance(uncond, cond, GUIDANCE_SCALE), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(off, cond, rtol=0, atol=1e-6)
    torch.testing.assert_close(without_reference, cond, rtol=0, atol=1e-6)


def test_extra_channels_reach_a_nine_channel_unet():
    """An inpainting U-Net reads 4 latent channels + a mask + 4 masked-image channels, in diffusers' order."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, layers_per_block=1,
                                    block_out_channels=(16, 32),
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                    attention_head_dim=4, norm_num_groups=8).eval()
    g = torch.Generator().manual_seed(2)
    x, extra = torch.randn((2, 4, 8, 8), generator=g), torch.randn((2, 5, 8, 8), generator=g)
    prompt_embeds, negative_prompt_embeds = torch.randn((2, 7, 16), generator=g), torch.randn((2, 7, 16), generator=g)
    t = torch.tensor(300)
    model = GuidedNoiseModel(unet, prompt_embeds, negative_prompt_embeds, guidance_scale=4.0, extra_channels=extra)
    with torch.no_grad():
        doubled = torch.cat([torch.cat([x, x]), torch.cat([extra, extra])], dim=1)     # (4, 9, 8, 8)
        uncond, cond = unet(doubled, t, encoder_hidden_states=torch.cat([negative_prompt_embeds, prompt_embeds])
                            ).sample.chunk(2)
    torch.testing.assert_close(model(x, t), classifier_free_guidance(uncond, cond, 4.0), rtol=0, atol=1e-6)


def test_bad_input_is_a_clear_error():
    prompt_embeds, negative_prompt_embeds = torch.zeros(2, 77, 64), torch.zeros(2, 77, 64)
    unet = torch.nn.Identity()                 # never called: every error comes first
    with pytest.raises(ValueError, match="pass negative_prompt_embeds"):
        GuidedNoiseModel(unet, prompt_embeds, guidance_scale=7.5)
    with pytest.raises(ValueError, match="same shape"):
        GuidedNoiseModel(unet, prompt_embeds, negative_prompt_embeds[:1], guidance_scale=7.5)
    with pytest.raises(ValueError, match="one per prompt"):
        GuidedNoiseModel(unet, prompt_embeds, negative_prompt_embeds, extra_channels=torch.zeros(1, 5, 8, 8))
    model = GuidedNoiseModel(unet, prompt_embeds, negative_prompt_embeds)
    with pytest.raises(ValueError, match="one starting sample per prompt"):
        model(torch.zeros(3, 4, 8, 8), torch.tensor(10))
