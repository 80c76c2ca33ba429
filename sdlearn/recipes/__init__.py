"""Training recipes: the data, model, loss and settings behind each shipped model, one module per model.

A recipe is a dataclass of settings plus a `run_*` function; `python -m sdlearn.train NAME`
runs it (see `sdlearn.train`). The shipped weights in `sdlearn/weights/` were made by these.

- `classifier`: the Fashion-MNIST classifier that `sdlearn.metrics` judges images with
- `ddpm`: the pixel-space DDPM (32x32), its baseline, and the training the latent recipes share
- `autoencoder`: the latent autoencoder (AutoencoderKL, 1x32x32 to 4x8x8)
- `latent_ddpm`: the same DDPM on the autoencoder's latents
- `flow`: the same U-Net and latents trained by flow matching (straight paths, velocity prediction)
- `reflow`: `flow`'s model taught its own noise-to-image pairs (rectified flow's second round), stored
  as a low-rank change of it: straighter paths, images in one to four steps
- `clip`: the small CLIP, image and text encoders for captioned Fashion-MNIST
- `text2image`: the text-to-image U-Net, written as a diffusers pipeline folder
- `inpainting`: that U-Net widened to 9 input channels and fine-tuned on random masks
- `dreambooth_lora`: a LoRA that teaches that pipeline one bag, "sks bag" (lesson 19)
- `common`: the end every run shares (pick the EMA, record the run, save on the main process)

Each denoiser's record stores the noise schedule it learned (`beta_schedule`,
`prediction_type`, `num_train_timesteps`): `sdlearn.weights.noise_schedule(name)` reads it back.
"""

from sdlearn.recipes.autoencoder import AutoencoderRecipe, run_autoencoder
from sdlearn.recipes.classifier import ClassifierRecipe, run_classifier
from sdlearn.recipes.clip import CLIPRecipe, run_clip
from sdlearn.recipes.dreambooth_lora import DreamBoothLoRARecipe, run_dreambooth_lora
from sdlearn.recipes.ddpm import DDPMRecipe, plain_ddpm_recipe, run_ddpm
from sdlearn.recipes.latent_ddpm import LatentDDPMRecipe, run_latent_ddpm
from sdlearn.recipes.flow import FlowRecipe, run_flow
from sdlearn.recipes.reflow import ReflowRecipe, run_reflow
from sdlearn.recipes.inpainting import InpaintingRecipe, run_inpainting
from sdlearn.recipes.text2image import Text2ImageRecipe, run_text2image

# name -> (recipe factory, run function, shipped name, description)
RECIPES = {
    "classifier": (ClassifierRecipe, run_classifier, "fashion_classifier",
                   "the Fashion-MNIST classifier used by sdlearn.metrics"),
    "ddpm": (DDPMRecipe, run_ddpm, "ddpm_fashion", "the pixel-space DDPM on Fashion-MNIST (32x32)"),
    "ddpm_plain": (plain_ddpm_recipe, run_ddpm, "ddpm_fashion_plain",
                   "the baseline DDPM recipe the shipped one is compared with"),
    "autoencoder": (AutoencoderRecipe, run_autoencoder, "vae_fashion",
                    "the latent autoencoder (AutoencoderKL, 1x32x32 to 4x8x8)"),
    "latent_ddpm": (LatentDDPMRecipe, run_latent_ddpm, "ldm_fashion",
                    "the same DDPM on the latent autoencoder's 4x8x8 latents"),
    "flow": (FlowRecipe, run_flow, "flow_fashion", "ldm_fashion's U-Net and latents trained by flow matching"),
    "reflow": (ReflowRecipe, run_reflow, "reflow_fashion",
               "flow_fashion retrained on its own noise-image pairs (a low-rank change): few-step images"),
    "clip": (CLIPRecipe, run_clip, "clip_fashion", "the small CLIP: image and text encoders for captioned "
                                                   "Fashion-MNIST"),
    "text2image": (Text2ImageRecipe, run_text2image, "fashion_text2image",
                   "the text-to-image model: a diffusers folder for StableDiffusionPipeline"),
    "inpainting": (InpaintingRecipe, run_inpainting, "fashion_inpainting",
                   "the inpainting model: a diffusers folder for StableDiffusionInpaintPipeline"),
    "dreambooth_lora": (DreamBoothLoRARecipe, run_dreambooth_lora, "fashion_sks_bag_lora",
                        "a DreamBooth LoRA of one bag for fashion_text2image, loaded by load_lora_weights"),
}

__all__ = ["RECIPES", "AutoencoderRecipe", "CLIPRecipe", "ClassifierRecipe", "DDPMRecipe", "DreamBoothLoRARecipe",
           "FlowRecipe", "InpaintingRecipe", "LatentDDPMRecipe", "ReflowRecipe", "Text2ImageRecipe", "plain_ddpm_recipe",
           "run_autoencoder", "run_classifier", "run_clip", "run_ddpm", "run_dreambooth_lora", "run_flow",
           "run_inpainting", "run_latent_ddpm", "run_reflow", "run_text2image"]
