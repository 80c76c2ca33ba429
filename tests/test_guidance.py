"""Classifier-free guidance and the hand-written text-to-image loop, against StableDiffusionPipeline."""

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

from sdlearn.guidance import (Step, check_negative_prompts, classifier_free_guidance, predicted_x0, text_to_image,
                              uses_guidance)
from sdlearn.pipelines import scheduler_config
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
    assert torch.equal(steps[-1].latents, latents)
    for step, expected in zip(steps, scheduler.recorded):                     # the same x0 as DDIM's own
        assert torch.allclose(step.pred_x0, expected, atol=1e-5)
    assert (steps[-1].pred_x0 - latents).abs().max() < 0.05                   # the last step lands near it


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
