"""One registry of shipped models (sdlearn.weights): files and pipeline folders, their records and schedules."""

import json

import pytest
import torch

from sdlearn import weights
from sdlearn.recipes import RECIPES
from sdlearn.schedules import alphas_cumprod_from_betas, cosine_betas


def test_available_lists_files_folders_and_loras_and_every_recipe_ships_under_its_name():
    files, folders, loras = weights.available("file"), weights.available("pipeline"), weights.available("lora")
    assert "ddpm_fashion" in files and folders == ["fashion_inpainting", "fashion_text2image"]
    assert loras == ["fashion_sks_bag_lora"]
    assert weights.available() == sorted(files + folders + loras)
    shipped = {name for _, _, name, _ in RECIPES.values()}
    assert set(weights.available()) <= shipped, "every shipped model was made by a recipe"
    assert shipped - set(weights.available()) == {"ddpm_fashion_plain"}     # the baseline is not shipped


def test_one_error_lists_every_shipped_model():
    with pytest.raises(FileNotFoundError) as error:
        weights.load("ddpm_fashoin")
    message = str(error.value)
    assert "'ddpm_fashoin'" in message
    assert all(name in message for name in weights.available()), message


def test_load_and_read_info_take_a_file_or_a_folder(tmp_path):
    from diffusers import StableDiffusionPipeline

    from diffusers import StableDiffusionInpaintPipeline

    pipe = weights.load("fashion_text2image")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(weights.load("fashion_inpainting"), StableDiffusionInpaintPipeline)   # the class its folder names
    assert weights.read_info("fashion_text2image")["recipe"] == "python -m sdlearn.train text2image"
    assert weights.read_info("ddpm_fashion")["recipe"] == "python -m sdlearn.train ddpm"
    assert weights.resolve(weights.resolve("vae_fashion")) == weights.resolve("vae_fashion")
    with pytest.raises(ValueError, match="does not record a noise schedule"):
        weights.noise_schedule("fashion_classifier")


def test_noise_schedules_are_read_back_from_what_each_model_stored():
    folder = weights.resolve("fashion_text2image")
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    for name in ("ddpm_fashion", "ldm_fashion", "fashion_text2image", "fashion_inpainting"):
        schedule = weights.noise_schedule(name)
        assert (schedule.beta_schedule, schedule.prediction_type) == (config["beta_schedule"], config["prediction_type"])
        # the cosine schedule, computed independently of make_betas' dispatch
        torch.testing.assert_close(schedule.alphas_cumprod, alphas_cumprod_from_betas(cosine_betas(1000)))
    assert weights.noise_schedule("ddpm_fashion") == RECIPES["ddpm"][0]().noise_schedule()


def test_the_recipes_store_the_schedule_they_train_with():
    recipe = RECIPES["ddpm_plain"][0]()
    record = recipe.noise_schedule().record()
    assert record == {"beta_schedule": "linear", "prediction_type": "epsilon", "num_train_timesteps": 1000}
    ac = recipe.noise_schedule().alphas_cumprod
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)       # DDPM's linear schedule, by hand
    torch.testing.assert_close(ac, torch.cumprod(1 - betas, 0))
