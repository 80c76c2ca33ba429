"""Classifier-free guidance and the hand-written text-to-image loop, against StableDiffusionPipeline."""

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from sdlearn.guidance import check_negative_prompts, classifier_free_guidance, uses_guidance
from sdlearn.pipelines import scheduler_config
from sdlearn.samplers import Step
from sdlearn.utils import randn_tensor
from sdlearn.text_to_image import (denoise, latents_to_images, predicted_x0, prepare_latents, prepare_prompt_embeds,
                                   text_to_image)
from sdlearn.tokenizer import clip_tokenizer

from test_pipelines import _parts


@pytest.fixture(scope="module")
def pipe():
    unet, vae, text = _parts()
    scheduler = DDIMScheduler.from_config(scheduler_config("squaredcos_cap_v2", "v_prediction"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_guidance_formula():
    uncond, cond = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    assert torch.equal(classifier_free_guidance(uncond, cond, 0.0), uncond)
    assert torch.equal(classifier_free_guidance(uncond, cond, 1.0), cond)
    assert torch.equal(classifier_free_guidance(uncond, cond, 3.0), torch.tensor([7.0, -1.0]))
    assert not uses_guidance(1.0) and not uses_guidance(0.5) and uses_guidance(1.01)
    with pytest.raises(ValueError, match="same shape"):
        classifier_free_guidance(uncond, cond[:1], 2.0)


@pytest.mark.parametrize("settings", [
    dict(prompt="a photo of a bag", guidance_scale=7.5),
    dict(prompt=["a photo of a shoe", "a photo of a dress"], negative_prompt=["a photo of a sneaker", ""],
         guidance_scale=4.0),
    dict(prompt="a photo of a coat", negative_prompt="a photo of a shirt", guidance_scale=1.0),   # no guidance
    dict(prompt="a photo of a coat", guidance_scale=3.0, scheduler="euler"),
])
def test_hand_written_loop_returns_the_pipelines_pixels(pipe, settings):
    settings = dict(settings)
    kind = settings.pop("scheduler", "ddim")
    make = (lambda: EulerDiscreteScheduler.from_config(pipe.scheduler.config)) if kind == "euler" else None
    if make:
        original, pipe.scheduler = pipe.scheduler, make()
    try:
        expected = pipe(**settings, num_inference_steps=6, output_type="pt",
                        generator=torch.Generator().manual_seed(3)).images
        ours = text_to_image(pipe, **settings, num_inference_steps=6, generator=torch.Generator().manual_seed(3),
                             scheduler=make() if make else None)
    finally:
        if make:
            pipe.scheduler = original
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= 1e-5


class RecordingDDIM(DDIMScheduler):
    """DDIM that keeps the clean latents it predicts at each step."""

    def step(self, *args, **kwargs):
        kwargs["return_dict"] = True
        out = super().step(*args, **kwargs)
        self.recorded.append(out.pred_original_sample)
        return (out.prev_sample,)


def test_callback_sees_every_step_and_the_predicted_clean_latents(pipe):
    steps = []
    scheduler = RecordingDDIM.from_config(pipe.scheduler.config)
    scheduler.recorded = []
    latents = text_to_image(pipe, "a photo of a bag", num_inference_steps=5, guidance_scale=3.0, output_type="latent",
                            generator=torch.Generator().manual_seed(0), callback=steps.append, scheduler=scheduler)
    assert [s.index for s in steps] == list(range(5)) and all(isinstance(s, Step) for s in steps)
    assert [s.timestep for s in steps] == [999, 799, 599, 399, 199]          # trailing spacing
    assert torch.equal(steps[-1].sample, latents)
    for step, expected in zip(steps, scheduler.recorded):                     # the same x0 as DDIM's own
        assert torch.allclose(step.pred_x0, expected, atol=1e-5)
    assert (steps[-1].pred_x0 - latents).abs().max() < 0.05                   # the last step lands near it


def test_initial_latents_are_drawn_on_the_generators_device(monkeypatch):
    """A CPU generator with a pipeline on a GPU: draw on the CPU, then move (torch.randn on the GPU would raise)."""
    from test_samplers import _record_randn_devices

    devices = _record_randn_devices(monkeypatch)
    latents = prepare_latents((1, 4, 8, 8), 2.0, generator=torch.Generator().manual_seed(0), device="meta")
    assert devices == [torch.device("cpu")] and latents.device.type == "meta"
    on_cpu = prepare_latents((1, 4, 8, 8), 2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(on_cpu, 2.0 * torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)))


def test_predicted_x0_inverts_the_forward_process():
    x0, noise, a = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor(0.3)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    assert torch.allclose(predicted_x0(noise, x_t, a, "epsilon"), x0, atol=1e-5)
    assert torch.allclose(predicted_x0(v, x_t, a, "v_prediction"), x0, atol=1e-5)


def test_bad_input_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="one negative prompt per prompt"):
        text_to_image(pipe, ["a", "b"], negative_prompt=["c"], num_inference_steps=2)
    with pytest.raises(ValueError, match="multiples of the autoencoder's factor 4"):
        text_to_image(pipe, "a bag", height=30, width=32, num_inference_steps=2)
    with pytest.raises(ValueError, match="at least 1"):
        text_to_image(pipe, "a bag", num_inference_steps=0)
    with pytest.raises(TypeError):
        text_to_image(pipe, 3, num_inference_steps=2)
    assert check_negative_prompts(["a", "b"], "c") == ["c", "c"]
    assert check_negative_prompts(["a"], None) == [""]


def _pieces_image_to_image(pipe, prompt, init_latents, *, strength, num_inference_steps, guidance_scale, generator,
                           scheduler):
    """Image to image (SDEdit) from text_to_image's pieces, as StableDiffusionImg2ImgPipeline runs it."""
    prompt_embeds, negative_prompt_embeds = prepare_prompt_embeds(pipe, prompt, None, guidance_scale)
    scheduler.set_timesteps(num_inference_steps)
    t_start = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):                                 # the schedulers that count steps
        scheduler.set_begin_index(t_start * scheduler.order)
    noise = randn_tensor(init_latents.shape, generator, init_latents.device, init_latents.dtype)
    latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(len(init_latents)))
    latents = denoise(pipe.unet, scheduler, latents, timesteps, prompt_embeds, negative_prompt_embeds,
                      guidance_scale=guidance_scale, generator=generator)
    return latents_to_images(pipe.vae, latents), len(timesteps)


@pytest.mark.parametrize("kind", ["ddim", "euler"])
def test_the_pieces_compose_into_image_to_image(pipe, kind):
    """Starting part-way down the schedule from noised latents gives StableDiffusionImg2ImgPipeline's pixels."""
    make = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[kind]
    components = {**pipe.components, "scheduler": make.from_config(pipe.scheduler.config)}
    img2img = StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    init_latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(8))   # 4 channels: latents
    settings = dict(strength=0.6, num_inference_steps=5, guidance_scale=3.0)
    prompt = ["a photo of a bag", "a photo of a shoe"]
    expected = img2img(prompt, image=init_latents, **settings, generator=torch.Generator().manual_seed(2),
                       output_type="pt").images
    ours, steps = _pieces_image_to_image(pipe, prompt, init_latents, **settings,
                                         generator=torch.Generator().manual_seed(2),
                                         scheduler=make.from_config(pipe.scheduler.config))
    assert steps == 3                                                         # int(5 * 0.6) of the 5 steps
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= 1e-5


def test_latents_hook_runs_after_each_step_and_before_the_callback(pipe):
    """Inpainting's blend: the known region, noised to the next timestep, put back after every step."""
    g = torch.Generator().manual_seed(6)
    known = torch.randn((1, 4, 8, 8), generator=g)                            # the latents of the image to keep
    mask = torch.zeros((1, 1, 8, 8))
    mask[..., 2:6, 2:6] = 1.0                                                 # 1: repaint, 0: keep (diffusers)
    noise = torch.randn((1, 4, 8, 8), generator=g)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(4)
    timesteps = scheduler.timesteps
    prompt_embeds, negative_prompt_embeds = prepare_prompt_embeds(pipe, "a photo of a bag", None, 3.0)
    hooked, seen = [], []

    def put_back(index, timestep, latents):
        hooked.append(int(timestep))
        known_now = known
        if index + 1 < len(timesteps):
            known_now = scheduler.add_noise(known, noise, timesteps[index + 1:index + 2])
        return (1 - mask) * known_now + mask * latents

    start = prepare_latents((1, 4, 8, 8), scheduler.init_noise_sigma, generator=torch.Generator().manual_seed(0))
    latents = denoise(pipe.unet, scheduler, start, timesteps, prompt_embeds, negative_prompt_embeds,
                      guidance_scale=3.0, latents_hook=put_back, callback=seen.append)
    assert hooked == [s.timestep for s in seen] == timesteps.tolist()
    assert torch.equal(seen[-1].sample, latents)                              # the callback sees the blended latents
    assert torch.equal(latents * (1 - mask), known * (1 - mask))              # the kept region is the image's
    assert (latents - known)[..., 2:6, 2:6].abs().max() > 0.1                 # the masked region was repainted
