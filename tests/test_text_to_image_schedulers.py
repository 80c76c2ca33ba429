"""The hand-written text-to-image loop with the schedulers lesson 15 swaps in, against StableDiffusionPipeline."""

import pytest
import torch
from diffusers import (DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler,
                       UniPCMultistepScheduler)

from sdlearn.text_to_image import text_to_image

from test_guidance import pipe  # noqa: F401  (the fixture: a narrow random pipeline with a DDIM scheduler)

SCHEDULERS = [EulerAncestralDiscreteScheduler, LMSDiscreteScheduler, DPMSolverMultistepScheduler,
              UniPCMultistepScheduler, HeunDiscreteScheduler]


@pytest.mark.parametrize("cls", SCHEDULERS, ids=[c.__name__ for c in SCHEDULERS])
def test_swapped_scheduler_gives_the_pipelines_pixels(pipe, cls):
    settings = dict(prompt=["a photo of a bag", "a photo of a shoe"], guidance_scale=4.0, num_inference_steps=5)
    original, pipe.scheduler = pipe.scheduler, cls.from_config(pipe.scheduler.config)
    try:
        expected = pipe(**settings, output_type="pt", generator=torch.Generator().manual_seed(5)).images
    finally:
        pipe.scheduler = original
    ours = text_to_image(pipe, **settings, generator=torch.Generator().manual_seed(5),
                         scheduler=cls.from_config(pipe.scheduler.config))
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= 1e-5


def test_ancestral_sampling_draws_from_the_generator_during_the_loop(pipe):
    """Same initial noise, different generator state afterwards: Euler ancestral's images differ."""
    config = pipe.scheduler.config

    def run(seed_after):
        generator = torch.Generator().manual_seed(0)

        def reseed(step):
            if step.index == 0:
                generator.manual_seed(seed_after)

        return text_to_image(pipe, "a photo of a coat", num_inference_steps=4, generator=generator,
                             scheduler=EulerAncestralDiscreteScheduler.from_config(config), callback=reseed)

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2), atol=1e-4)


class RecordingEuler(EulerDiscreteScheduler):
    """An Euler scheduler that keeps the predicted clean latents its step computes."""

    def step(self, *args, **kwargs):
        output = super().step(*args, **kwargs)
        self.recorded = getattr(self, "recorded", []) + [output[1]]
        return output


def test_callback_pred_x0_is_eulers_own(pipe):
    """For a scheduler in the noise-level form, the callback's x0 comes from the scaled input and matches Euler's."""
    scheduler = RecordingEuler.from_config(pipe.scheduler.config)
    seen = []
    text_to_image(pipe, "a photo of a dress", guidance_scale=3.0, num_inference_steps=5,
                  generator=torch.Generator().manual_seed(0), scheduler=scheduler, callback=seen.append)
    assert len(seen) == len(scheduler.recorded) == 5
    for step, expected in zip(seen, scheduler.recorded):
        torch.testing.assert_close(step.pred_x0, expected, rtol=1e-4, atol=1e-4)
