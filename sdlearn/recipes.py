"""Training recipes: the data, model, loss and settings behind each shipped model.

A recipe is a dataclass of settings plus a `run` function; `python -m sdlearn.train NAME`
runs it (see `sdlearn.train`). The shipped weights in `sdlearn/weights/` were made by these.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from sdlearn import weights
from sdlearn.data import load_fashion_mnist
from sdlearn.losses import classification_loss, diffusion_loss
from sdlearn.models.autoencoder import latent_autoencoder_config
from sdlearn.models.classifier import ClassifierConfig, SmallClassifier, accuracy
from sdlearn.models.clip import CLIPConfig
from sdlearn.models.unet import UNet, UNetConfig
from sdlearn.schedules import alphas_cumprod_from_betas, make_betas
from sdlearn.training import TrainConfig, train


def fashion_for_diffusion(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST padded to 32x32 and scaled to [-1, 1] (background -1), with labels."""
    images, labels = load_fashion_mnist(split)
    images = F.pad(images, (2, 2, 2, 2))                # (N, 1, 32, 32): 32 divides by 2 three times
    return images * 2 - 1, labels


def to_classifier_range(images: torch.Tensor) -> torch.Tensor:
    """Undo `fashion_for_diffusion`: crop the 28x28 centre and map [-1, 1] back to [0, 1]."""
    return ((images[..., 2:30, 2:30] + 1) / 2).clamp(0, 1)


def _precision_record(result) -> str:
    """What the run's record says about its precision: what ran, and why `auto` chose it."""
    name = {"no": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[result.mixed_precision]
    return f"{name}: {result.precision_reason}"


# --------------------------------------------------------------------------- classifier

@dataclass
class ClassifierRecipe:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(channels=32, hidden=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=4000, batch_size=128, lr=2e-3, weight_decay=0.05, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="no", seed=0))
    flip: bool = True                 # random horizontal flips: a flipped shoe is still a shoe


def run_classifier(recipe: ClassifierRecipe, out: Path, checkpoint_dir: Path | None = None,
                   progress: bool = True) -> dict:
    torch.manual_seed(recipe.train.seed)
    images, labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    model = SmallClassifier(recipe.model)

    def loss_fn(m, batch, generator):
        return classification_loss(m, batch[0], batch[1], generator, flip=recipe.flip)

    result = train(model, loss_fn, (images, labels), recipe.train, checkpoint_dir=checkpoint_dir,
                   extra={"recipe": "classifier", "flip": recipe.flip, "model": asdict(recipe.model)},
                   progress=progress)
    final = result.ema if result.ema is not None else result.model
    info = {"recipe": "python -m sdlearn.train classifier", "train_seconds": round(result.seconds),
            "precision": _precision_record(result),
            "num_processes": result.num_processes, "process_index": result.process_index,
            "checksum": result.checksum, "settings": _jsonable(recipe)}
    if result.is_main_process:          # under `accelerate launch`, one process evaluates and writes
        info["test_accuracy"] = accuracy(final, test_images, test_labels)
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"})
    return info


# --------------------------------------------------------------------------- DDPM

@dataclass
class DDPMRecipe:
    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        block_out_channels=(16, 32, 64, 128), layers_per_block=1,
        attention_levels=(False, False, False, True), mid_attention=True, attention_head_dim=32,
        norm_num_groups=8))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3600, batch_size=128, lr=2e-3, weight_decay=0.0, warmup_steps=200, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, sample_every=900, checkpoint_every=600))
    beta_schedule: str = "squaredcos_cap_v2"   # improved DDPM's cosine schedule
    prediction_type: str = "v_prediction"      # predict v; stable at both ends of the schedule
    snr_gamma: float | None = 5.0              # Min-SNR loss weighting
    flip: bool = True                          # random horizontal flips of the training images


def plain_ddpm_recipe() -> DDPMRecipe:
    """The baseline the shipped recipe is compared with: DDPM's own choices."""
    return DDPMRecipe(
        model=UNetConfig(block_out_channels=(16, 32, 64, 128), layers_per_block=1,
                         attention_levels=(False, False, False, True), mid_attention=True,
                         attention_head_dim=32, norm_num_groups=8),
        train=TrainConfig(steps=3600, batch_size=128, lr=2e-3, lr_schedule="constant", ema_decay=0.995,
                          ema_warmup=False, grad_clip=1.0, mixed_precision="auto", seed=0, sample_every=900,
                          checkpoint_every=600),
        beta_schedule="linear", prediction_type="epsilon", snr_gamma=None, flip=False)


def ddpm_alphas_cumprod(recipe: DDPMRecipe) -> torch.Tensor:
    return alphas_cumprod_from_betas(make_betas(recipe.beta_schedule, 1000))


def run_ddpm(recipe: DDPMRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict:
    torch.manual_seed(recipe.train.seed)
    images, _ = fashion_for_diffusion("train")
    return _train_denoiser(recipe, images, out, checkpoint_dir, progress, stop_after, name="ddpm",
                           flip=recipe.flip, sample_shape=(1, 32, 32), clip_sample=True, decode=None)


def _train_denoiser(recipe: DDPMRecipe, data: torch.Tensor, out: Path, checkpoint_dir, progress, stop_after, *,
                    name: str, flip: bool, sample_shape: tuple, clip_sample: bool, decode, extra_info=None,
                    dtype: torch.dtype | None = None) -> dict:
    """The DDPM training shared by the pixel and the latent recipes: `data` is what the U-Net denoises."""
    alphas_cumprod = ddpm_alphas_cumprod(recipe)
    model = UNet(recipe.model)
    snapshots = {}

    def loss_fn(m, x0, generator):
        if flip:
            mask = torch.rand(x0.shape[0], generator=generator) < 0.5
            x0 = torch.where(mask[:, None, None, None].to(x0.device), x0.flip(-1), x0)
        return diffusion_loss(m, x0, alphas_cumprod, generator, prediction_type=recipe.prediction_type,
                              snr_gamma=recipe.snr_gamma)

    started = time.perf_counter()

    def snapshot(ema_model, step, directory):
        snapshots[step] = round(time.perf_counter() - started)
        if directory is not None:
            _save_sample_grid(ema_model, alphas_cumprod, recipe.prediction_type,
                              Path(directory) / f"samples-{step:07d}.png", title=f"step {step}",
                              shape=sample_shape, clip_sample=clip_sample, decode=decode)
            weights.save(ema_model, Path(directory) / f"snapshot-{step:07d}.safetensors",
                         {"step": step, "train_seconds": snapshots[step], "beta_schedule": recipe.beta_schedule,
                          "prediction_type": recipe.prediction_type})

    extra = {"recipe": name, "beta_schedule": recipe.beta_schedule, "prediction_type": recipe.prediction_type,
             "snr_gamma": recipe.snr_gamma, "flip": recipe.flip, "model": asdict(recipe.model)}
    result = train(model, loss_fn, data, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   sample_fn=snapshot, progress=progress, stop_after=stop_after)
    final = result.ema if result.ema is not None else result.model
    info = {"recipe": f"python -m sdlearn.train {name}", "train_seconds": round(result.seconds),
            "precision": _precision_record(result),
            "images_per_second": round(result.images_per_second), "snapshot_seconds": snapshots,
            "beta_schedule": recipe.beta_schedule, "prediction_type": recipe.prediction_type,
            "num_processes": result.num_processes, "process_index": result.process_index,
            "checksum": result.checksum, "settings": _jsonable(recipe),
            "final_loss": sum(result.losses[-100:]) / len(result.losses[-100:]), **(extra_info or {})}
    if result.is_main_process:          # under `accelerate launch`, one process writes the weights
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"}, dtype=dtype)
    return info


# --------------------------------------------------------------------------- latent DDPM

@dataclass
class LatentDDPMRecipe(DDPMRecipe):
    """The DDPM recipe on the shipped autoencoder's latents (4x8x8) instead of pixels (1x32x32)."""

    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
        attention_levels=(False, True), mid_attention=True, attention_head_dim=32, norm_num_groups=8))
    autoencoder: str = "vae_fashion"           # shipped weights that encode the training images


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Scaled latents (the posterior means) of a whole image tensor, in batches."""
    from sdlearn.models.autoencoder import encode_latents

    return torch.cat([encode_latents(vae, images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def run_latent_ddpm(recipe: LatentDDPMRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
                    stop_after: int | None = None) -> dict:
    from sdlearn.models.autoencoder import decode_latents

    torch.manual_seed(recipe.train.seed)
    vae = weights.load(recipe.autoencoder)
    images, _ = fashion_for_diffusion("train")
    started = time.perf_counter()
    latents = encode_dataset(vae, images)
    if recipe.flip:                 # a flipped latent is not the latent of the flipped image: encode those too
        latents = torch.cat([latents, encode_dataset(vae, images.flip(-1))])
    encode_seconds = time.perf_counter() - started
    return _train_denoiser(recipe, latents, out, checkpoint_dir, progress, stop_after, name="latent_ddpm",
                           flip=False, sample_shape=tuple(latents.shape[1:]), clip_sample=False,
                           decode=partial(decode_latents, vae),
                           extra_info={"encode_seconds": round(encode_seconds, 1), "latents": len(latents),
                                       "autoencoder": recipe.autoencoder},
                           dtype=torch.float16)         # stored in half precision: half the file


# --------------------------------------------------------------------------- latent autoencoder

@dataclass
class AutoencoderRecipe:
    vae: dict = field(default_factory=lambda: latent_autoencoder_config())
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=100, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    kl_weight: float = 1e-5          # per image number; small: latents stay informative, yet bounded and smooth


def run_autoencoder(recipe: AutoencoderRecipe, out: Path, checkpoint_dir: Path | None = None,
                    progress: bool = True, stop_after: int | None = None) -> dict:
    from diffusers import AutoencoderKL

    from sdlearn.models.autoencoder import compute_scaling_factor, psnr, ssim

    torch.manual_seed(recipe.train.seed)
    images, _ = fashion_for_diffusion("train")
    test_images, _ = fashion_for_diffusion("test")
    vae = AutoencoderKL(**recipe.vae)

    def loss_fn(m, x, generator):
        posterior = m.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(x.device, posterior.mean.dtype)
        z = posterior.mean + posterior.std * noise                    # the reparameterisation trick
        reconstruction = m.decode(z).sample
        return F.mse_loss(reconstruction.float(), x) + recipe.kl_weight * posterior.kl().float().mean() / x[0].numel()

    extra = {"recipe": "autoencoder", "vae": json.loads(json.dumps(recipe.vae, default=list)),
             "kl_weight": recipe.kl_weight}
    result = train(vae, loss_fn, images, recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    final = result.ema if result.ema is not None else result.model
    final.eval()
    info = {"recipe": "python -m sdlearn.train autoencoder", "train_seconds": round(result.seconds),
            "precision": _precision_record(result),
            "images_per_second": round(result.images_per_second), "num_processes": result.num_processes,
            "process_index": result.process_index, "checksum": result.checksum, "settings": _jsonable(recipe)}
    if result.is_main_process:
        factor = compute_scaling_factor(final, images[:10000])
        final.register_to_config(scaling_factor=factor)
        with torch.no_grad():
            rec = torch.cat([final(test_images[i:i + 500]).sample for i in range(0, len(test_images), 500)])
        crop = (slice(None), slice(None), slice(2, 30), slice(2, 30))     # judge the 28x28 image, not the padding
        info.update(scaling_factor=factor, test_psnr=float(psnr(rec[crop], test_images[crop]).mean()),
                    test_ssim=float(ssim(rec[crop], test_images[crop]).mean()))
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"})
    return info


# --------------------------------------------------------------------------- small CLIP

@dataclass
class CLIPRecipe:
    model: CLIPConfig = field(default_factory=CLIPConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, batch_size=256, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), warmup_steps=100,
        lr_schedule="cosine", ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    superclass_p: float = 0.3        # captions that name the superclass ("a shoe") instead of the class
    mirror_p: float = 0.5            # horizontal flips; a mirrored shoe faces right
    say_direction_p: float = 0.5     # a shoe's caption says which way it faces
    upside_down_p: float = 0.1       # vertical flips, always said: "..., upside down"


def clip_caption_table() -> tuple[list[str], torch.Tensor]:
    """Every training caption, and a lookup (label, superclass, mirrored, upside_down, say_direction) -> index."""
    from sdlearn.data import fashion_caption_with_attributes

    captions, lookup = [], torch.zeros(10, 2, 2, 2, 2, dtype=torch.long)
    for label in range(10):
        for sup in (0, 1):
            for mirrored in (0, 1):
                for upside_down in (0, 1):
                    for say in (0, 1):
                        text = fashion_caption_with_attributes(label, superclass=bool(sup), mirrored=bool(mirrored),
                                                               upside_down=bool(upside_down), say_direction=bool(say))
                        if text not in captions:
                            captions.append(text)
                        lookup[label, sup, mirrored, upside_down, say] = captions.index(text)
    return captions, lookup


def draw_captions(labels, recipe, lookup: torch.Tensor, generator: torch.Generator):
    """Random caption settings for a batch: (mirrored, upside_down, caption indices), flags as bool tensors.

    `recipe` supplies the probabilities `superclass_p`, `mirror_p`, `upside_down_p` and
    `say_direction_p`; the caller flips each image as the flags say.
    """
    probabilities = torch.tensor([recipe.superclass_p, recipe.mirror_p, recipe.upside_down_p, recipe.say_direction_p])
    sup, mirrored, upside_down, say = (torch.rand(4, len(labels), generator=generator) < probabilities[:, None]).long()
    return mirrored.bool(), upside_down.bool(), lookup[labels.cpu(), sup, mirrored, upside_down, say]


def clip_batch(images, labels, recipe: CLIPRecipe, lookup: torch.Tensor, generator: torch.Generator):
    """Randomly flip a batch of images and caption each one to match: (images, caption indices)."""
    mirrored, upside_down, index = draw_captions(labels, recipe, lookup, generator)
    images = torch.where(mirrored[:, None, None, None].to(images.device), images.flip(-1), images)
    images = torch.where(upside_down[:, None, None, None].to(images.device), images.flip(-2), images)
    return images, index


@torch.no_grad()
def evaluate_clip(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Zero-shot accuracies on held-out images: classes, superclasses, and which way a shoe faces."""
    from sdlearn.data import FASHION_SUPERCLASSES, SHOE_CLASSES, fashion_caption, superclass_of
    from sdlearn.models.clip import zero_shot_classify

    model.eval()
    classes = [fashion_caption(c) for c in range(10)]
    result = {"zero_shot_accuracy": (zero_shot_classify(model, images, classes) == labels).float().mean().item()}
    names = list(FASHION_SUPERCLASSES)
    prompts = [fashion_caption(members[0], superclass=True) for members in FASHION_SUPERCLASSES.values()]
    truth = torch.tensor([names.index(superclass_of(int(y))) for y in labels])
    result["superclass_accuracy"] = (zero_shot_classify(model, images, prompts) == truth).float().mean().item()
    shoes = torch.isin(labels, torch.tensor(SHOE_CLASSES))
    shoe_images, shoe_labels = images[shoes], labels[shoes]
    mirrored = torch.arange(len(shoe_labels)) % 2 == 1
    shoe_images = torch.where(mirrored[:, None, None, None], shoe_images.flip(-1), shoe_images)
    correct = 0
    for label in SHOE_CLASSES:                  # for each shoe class: "facing left" or "facing right"?
        mask = shoe_labels == label
        prompts = [f"{fashion_caption(label)} facing left", f"{fashion_caption(label)} facing right"]
        correct += (zero_shot_classify(model, shoe_images[mask], prompts) == mirrored[mask].long()).sum().item()
    result["direction_accuracy"] = correct / len(shoe_labels)
    return result


def run_clip(recipe: CLIPRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             stop_after: int | None = None) -> dict:
    from sdlearn.models.clip import SmallCLIP, contrastive_loss
    from sdlearn.tokenizer import tokenize

    torch.manual_seed(recipe.train.seed)
    images, labels = fashion_for_diffusion("train")
    test_images, test_labels = fashion_for_diffusion("test")
    captions, lookup = clip_caption_table()
    caption_ids = tokenize(captions)
    model = SmallCLIP(recipe.model)

    def loss_fn(m, batch, generator):
        x, caption_index = clip_batch(batch[0], batch[1], recipe, lookup, generator)
        unique, inverse = torch.unique(caption_index, return_inverse=True)   # encode each caption once
        text = m.encode_text(caption_ids[unique].to(x.device))[inverse.to(x.device)]
        logits = m.logits(m.encode_image(x), text)
        return contrastive_loss(logits.float(), caption_index.to(x.device))

    extra = {"recipe": "clip", "model": asdict(recipe.model),
             "captions": [recipe.superclass_p, recipe.mirror_p, recipe.say_direction_p, recipe.upside_down_p]}
    result = train(model, loss_fn, (images, labels), recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    final = result.ema if result.ema is not None else result.model
    info = {"recipe": "python -m sdlearn.train clip", "train_seconds": round(result.seconds),
            "precision": _precision_record(result),
            "images_per_second": round(result.images_per_second), "num_processes": result.num_processes,
            "process_index": result.process_index, "checksum": result.checksum, "settings": _jsonable(recipe),
            "captions": len(captions), "final_loss": sum(result.losses[-100:]) / len(result.losses[-100:])}
    if result.is_main_process:
        info.update(evaluate_clip(final, test_images, test_labels))
        info["temperature"] = 1 / final.logit_scale.exp().item()
        weights.save(final, out, {k: v for k, v in info.items() if k != "process_index"}, dtype=torch.float16)
    return info


# --------------------------------------------------------------------------- text to image

@dataclass
class Text2ImageRecipe:
    """A latent U-Net with cross-attention, conditioned on the frozen text encoder of `clip_fashion`."""

    model: UNetConfig = field(default_factory=lambda: UNetConfig(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(64, 128), layers_per_block=1,
        attention_levels=(True, True), mid_attention=True, attention_head_dim=32, norm_num_groups=8,
        cross_attention_dim=64))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3600, batch_size=128, lr=2e-3, weight_decay=0.0, warmup_steps=200, lr_schedule="cosine",
        ema_decay=0.999, grad_clip=1.0, mixed_precision="auto", seed=0, checkpoint_every=500))
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    snr_gamma: float | None = 5.0
    superclass_p: float = 0.3        # the captions of the CLIP recipe
    mirror_p: float = 0.5
    say_direction_p: float = 0.5
    upside_down_p: float = 0.1
    drop_caption_p: float = 0.1      # the empty caption instead: the unconditional model of guidance
    autoencoder: str = "vae_fashion"
    text_encoder: str = "clip_fashion"


def run_text2image(recipe: Text2ImageRecipe, out: Path, checkpoint_dir: Path | None = None, progress: bool = True,
                   stop_after: int | None = None) -> dict:
    """Train the text-to-image U-Net and write a complete diffusers folder (see `sdlearn.pipelines`)."""
    from sdlearn.models.unet import to_diffusers
    from sdlearn.pipelines import write_pipeline
    from sdlearn.tokenizer import tokenize

    torch.manual_seed(recipe.train.seed)
    vae = weights.load(recipe.autoencoder)
    clip = weights.load(recipe.text_encoder)
    images, labels = fashion_for_diffusion("train")
    started = time.perf_counter()
    variants = [encode_dataset(vae, images), encode_dataset(vae, images.flip(-1)),         # as is, mirrored,
                encode_dataset(vae, images.flip(-2)), encode_dataset(vae, images.flip(-1).flip(-2))]  # upside down
    captions, lookup = clip_caption_table()
    with torch.no_grad():                          # the text encoder is frozen: encode each caption once
        context = clip.text_features(tokenize(captions + [""]))
    empty = len(captions)
    encode_seconds = time.perf_counter() - started
    alphas_cumprod = ddpm_alphas_cumprod(recipe)
    model = UNet(recipe.model)

    def loss_fn(m, batch, generator):
        *z, y = batch
        mirrored, upside_down, index = draw_captions(y, recipe, lookup, generator)
        drop = torch.rand(len(y), generator=generator) < recipe.drop_caption_p
        index = torch.where(drop, torch.full_like(index, empty), index)
        choice = (mirrored.long() + 2 * upside_down.long()).to(y.device)[:, None, None, None]
        x0 = torch.where(choice == 0, z[0], torch.where(choice == 1, z[1], torch.where(choice == 2, z[2], z[3])))
        ctx = context[index].to(x0.device)

        def conditioned(x, t):                     # the U-Net, reading this batch's captions
            return m(x, t, context=ctx)

        return diffusion_loss(conditioned, x0, alphas_cumprod, generator,
                              prediction_type=recipe.prediction_type, snr_gamma=recipe.snr_gamma)

    extra = {"recipe": "text2image", "model": asdict(recipe.model), "prediction_type": recipe.prediction_type,
             "beta_schedule": recipe.beta_schedule, "snr_gamma": recipe.snr_gamma,
             "captions": [recipe.superclass_p, recipe.mirror_p, recipe.say_direction_p, recipe.upside_down_p,
                          recipe.drop_caption_p], "autoencoder": recipe.autoencoder,
             "text_encoder": recipe.text_encoder}
    result = train(model, loss_fn, (*variants, labels), recipe.train, checkpoint_dir=checkpoint_dir, extra=extra,
                   progress=progress, stop_after=stop_after)
    final = result.ema if result.ema is not None else result.model
    info = {"recipe": "python -m sdlearn.train text2image", "train_seconds": round(result.seconds),
            "precision": _precision_record(result),
            "encode_seconds": round(encode_seconds, 1), "images_per_second": round(result.images_per_second),
            "num_processes": result.num_processes, "process_index": result.process_index,
            "checksum": result.checksum, "settings": _jsonable(recipe),
            "final_loss": sum(result.losses[-100:]) / len(result.losses[-100:])}
    if result.is_main_process:
        folder = out.with_suffix("") if out.suffix == ".safetensors" else out
        write_pipeline(folder, unet=to_diffusers(final.float().eval()), vae=vae, text_encoder=clip.text_model,
                       beta_schedule=recipe.beta_schedule, prediction_type=recipe.prediction_type,
                       info={k: v for k, v in info.items() if k != "process_index"})
        info["folder"] = str(folder)
    return info


def _save_sample_grid(model, alphas_cumprod, prediction_type, path: Path, title: str = "", shape=(1, 32, 32),
                      clip_sample: bool = True, decode=None) -> None:
    """Sixteen samples (25 DDIM steps, fixed seed) saved as a PNG: training progress at a glance."""
    import matplotlib.pyplot as plt

    from sdlearn.plotting import show_images
    from sdlearn.samplers import generate
    from sdlearn.utils import atomic_path

    was_training = model.training
    model.eval()
    images = generate(model, 16, alphas_cumprod=alphas_cumprod, num_inference_steps=25,
                      prediction_type=prediction_type, clip_sample=clip_sample, seed=0, shape=shape,
                      device=next(model.parameters()).device)
    model.train(was_training)
    if decode is not None:
        images = decode(images)
    fig = show_images(images, ncols=8, vmin=-1, vmax=1, imsize=1.0, suptitle=title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _jsonable(recipe) -> dict:
    return json.loads(json.dumps(asdict(recipe), default=str))


RECIPES = {
    "classifier": (ClassifierRecipe, run_classifier, "the Fashion-MNIST classifier used by sdlearn.metrics"),
    "ddpm": (DDPMRecipe, run_ddpm, "the pixel-space DDPM on Fashion-MNIST (32x32)"),
    "ddpm_plain": (plain_ddpm_recipe, run_ddpm, "the baseline DDPM recipe the shipped one is compared with"),
    "autoencoder": (AutoencoderRecipe, run_autoencoder, "the latent autoencoder (AutoencoderKL, 1x32x32 to 4x8x8)"),
    "latent_ddpm": (LatentDDPMRecipe, run_latent_ddpm, "the same DDPM on the latent autoencoder's 4x8x8 latents"),
    "clip": (CLIPRecipe, run_clip, "the small CLIP: image and text encoders for captioned Fashion-MNIST"),
    "text2image": (Text2ImageRecipe, run_text2image, "the text-to-image model: a diffusers folder for "
                                                     "StableDiffusionPipeline"),
}
