"""The diffusers folder of a text-to-image model: written by sdlearn, loaded by diffusers unchanged."""

import json
import warnings

import pytest
import torch

from sdlearn import pipelines, weights
from sdlearn.models.conversion import to_diffusers
from sdlearn.models.unet import UNet, UNetConfig

TINY_UNET = UNetConfig(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                       attention_levels=(True, True), mid_attention=True, attention_head_dim=8, norm_num_groups=8,
                       cross_attention_dim=32)


def _parts():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = to_diffusers(UNet(TINY_UNET)).eval()
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, norm_num_groups=8,
                        block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3).eval()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406,
                                        eos_token_id=49407, pad_token_id=49407)).eval()
    return unet, vae, text


def test_written_folder_loads_in_stable_diffusion_pipeline(tmp_path):
    from diffusers import StableDiffusionPipeline

    unet, vae, text = _parts()
    folder = pipelines.write_pipeline(tmp_path / "tiny", unet=unet, vae=vae, text_encoder=text,
                                      beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                      info={"train_seconds": 1})
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["safety_checker"] == [None, None]
    assert weights.read_info(folder) == {"train_seconds": 1}
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))             # diffusers alone, no sdlearn code
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.float32
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    # stored in half precision: the loaded weights are the originals rounded to float16
    original = unet.state_dict()["conv_in.weight"]
    loaded = pipe.unet.state_dict()["conv_in.weight"]
    assert torch.equal(loaded, original.half().float()) and not torch.equal(loaded, original)
    out = pipe("a photo of a bag", num_inference_steps=2, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 1, 32, 32) and torch.isfinite(out).all()


def test_rewriting_a_folder_replaces_it_whole(tmp_path):
    unet, vae, text = _parts()
    kwargs = dict(unet=unet, vae=vae, text_encoder=text, beta_schedule="linear", prediction_type="epsilon")
    folder = pipelines.write_pipeline(tmp_path / "p", info={"run": 1}, **kwargs)
    (folder / "stale.txt").write_text("from the first run")
    pipelines.write_pipeline(tmp_path / "p", info={"run": 2}, **kwargs)
    assert weights.read_info(folder) == {"run": 2} and not (folder / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]                 # no staging left behind
    modes = {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")]}
    assert all(mode == (0o755 if (folder / name).is_dir() else 0o644) for name, mode in modes.items()), modes


def test_unknown_pipeline_lists_every_shipped_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="files: clip_fashion, ddpm_fashion.*folders: fashion_inpainting, fashion_text2image"):
        pipelines.load("no_such_model")


def test_a_weights_file_is_not_a_pipeline():
    with pytest.raises(ValueError, match=r"weights file, not a pipeline folder.*sdlearn.weights.load\('ddpm_fashion'\)"):
        pipelines.load("ddpm_fashion")


def test_a_hub_id_without_network_or_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(pipelines.HubUnavailableError, match="local cache.*use the model shipped with sdlearn"):
        pipelines.load("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_unknown_names_say_what_is_accepted():
    with pytest.raises(FileNotFoundError, match="no shipped model called .*Hugging Face Hub id"):
        pipelines.load("./no_such_folder")


def test_load_gives_the_dtype_asked_for():
    """diffusers 0.40 renamed `torch_dtype=` to `dtype=`: each version ignores or deprecates the other name."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)          # diffusers' deprecation of torch_dtype
        pipe = pipelines.load(pipelines.SHIPPED_TEXT2IMAGE, dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16


def test_a_folder_with_stable_diffusion_15s_layout_loads_and_runs(tmp_path):
    """SD 1.5's layout (block types, 8x autoencoder, RGB, CLIP text encoder), narrowed so it runs here."""
    from dataclasses import replace

    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdlearn.models.conversion import SD15_UNET_CONFIG, sd15_unet_config

    torch.manual_seed(0)
    layout = replace(sd15_unet_config(), block_out_channels=(32, 32, 64, 64), cross_attention_dim=32,
                     norm_num_groups=8, sample_size=8, num_attention_heads=2)
    unet = to_diffusers(UNet(layout)).eval()
    assert [b for b in unet.config.down_block_types] == SD15_UNET_CONFIG["down_block_types"]
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8, layers_per_block=2,
                        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215).eval()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)).eval()
    folder = pipelines.write_pipeline(tmp_path / "sd15_layout", unet=unet, vae=vae, text_encoder=text,
                                      beta_schedule="scaled_linear", prediction_type="epsilon")
    pipe = pipelines.load(folder, attention_slicing=True)
    assert pipe.vae_scale_factor == 8 and pipe.unet.dtype == torch.float32
    images = pipe("an astronaut riding a horse", negative_prompt="blurry", num_inference_steps=2, guidance_scale=7.5,
                  output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


def test_default_model_is_the_shipped_one_without_a_gpu(monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("without a GPU the network must not be touched")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert pipelines.default_model() == "fashion_text2image"


def test_default_model_with_a_gpu_follows_the_cache_and_the_network(monkeypatch):
    import urllib.request

    import huggingface_hub

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/cache/model_index.json")
    assert pipelines.default_model() == pipelines.SD15                 # cached: no network needed
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert pipelines.default_model() == "fashion_text2image"           # GPU, but no Hub and no cache


# --------------------------------------------------------------------------- the shipped pipeline

def test_the_shipped_folder_loads_in_plain_diffusers_offline_and_draws_what_it_is_asked():
    from diffusers import StableDiffusionPipeline

    from sdlearn.metrics import classify, shipped_classifier
    from sdlearn.weights import WEIGHTS_DIR

    pipe = StableDiffusionPipeline.from_pretrained(WEIGHTS_DIR / "fashion_text2image", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.dtype == torch.float32                     # stored in half precision, configs say float32
    prompts = ["a photo of a pair of trousers"] * 8 + ["a photo of a bag"] * 8
    images = pipe(prompts, num_inference_steps=10, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images
    assert images.shape == (16, 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    predicted = classify(shipped_classifier(), images[..., 2:30, 2:30])[0].argmax(-1)
    assert (predicted[:8] == 1).sum() >= 7 and (predicted[8:] == 8).sum() >= 7     # trousers, bags


def test_the_shipped_folder_holds_clip_vocabulary_files_and_its_training_record():
    from transformers import CLIPTokenizer

    from sdlearn.tokenizer import tokenize
    from sdlearn.weights import WEIGHTS_DIR

    folder = WEIGHTS_DIR / "fashion_text2image"
    assert {p.name for p in (folder / "tokenizer").iterdir()} >= {"vocab.json", "merges.txt"}
    assert not (folder / "tokenizer" / "tokenizer.json").exists()     # 3.6 MB that vocab.json and merges.txt make
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    prompt = "a photo of an ankle boot facing right, upside down"
    ids = tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(ids, tokenize([prompt]))
    info = weights.read_info("fashion_text2image")
    assert info["recipe"] == "python -m sdlearn.train text2image"
    assert info["settings"]["train"]["steps"] == 3600 and info["settings"]["drop_caption_p"] == 0.1
