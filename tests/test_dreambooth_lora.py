"""DreamBooth and LoRA (sdlearn.finetune.dreambooth, sdlearn.finetune.lora) against diffusers' loader and fusing."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from sdlearn import pipelines, weights
from sdlearn.finetune import (LORA_FILE, add_lora, check_instance_images, check_lora_file, check_prior_loss_weight,
                              count_parameters, dreambooth_loss, load_lora, lora_layers, merged_weight, save_lora,
                              subject_copies)
from sdlearn.text_to_image import encode_prompts, text_to_image

SETTINGS = dict(num_inference_steps=4, guidance_scale=3.0)


@pytest.fixture
def pipe():
    return pipelines.load("fashion_text2image")          # fresh for every test: the tests add adapters


def _latents(pipe, n, seed):
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _context(pipe, prompt):
    with torch.no_grad():
        return encode_prompts(pipe.tokenizer, pipe.text_encoder, [prompt])


def _unet_output(unet, context, seed=0):
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return unet(x, torch.tensor([10, 400, 900]), encoder_hidden_states=context.expand(3, -1, -1)).sample


def _trained_lora(pipe, rank=4, seed=1):
    """add_lora, then B matrices set to random values, as if trained (B starts at zero)."""
    add_lora(pipe.unet, rank=rank)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(pipe.unet).values():
            b = layer.lora_B["default"].weight
            b.copy_(0.05 * torch.randn(b.shape, generator=generator))
    pipe.unet.eval()


# --------------------------------------------------------------------------- DreamBooth

def test_prior_preservation_loss_is_the_two_halves_of_one_batch_as_diffusers_script_computes_it(pipe):
    instance, prior = _latents(pipe, 3, 0), _latents(pipe, 3, 1)
    inst_ctx, class_ctx = _context(pipe, "a photo of a sks bag"), _context(pipe, "a photo of a bag")
    with torch.no_grad():
        loss, inst_loss, prior_loss = dreambooth_loss(pipe, instance, inst_ctx, torch.Generator().manual_seed(5),
                                                      class_latents=prior, class_context=class_ctx,
                                                      prior_loss_weight=0.7, return_parts=True)
        # by hand, as train_dreambooth.py: one batch, one timestep and noise per example, chunk in two
        generator = torch.Generator().manual_seed(5)
        latents = torch.cat([instance, prior])
        t = torch.randint(0, 1000, (6,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        target = pipe.scheduler.get_velocity(latents, noise, t)          # the shipped model predicts v
        context = torch.cat([inst_ctx.expand(3, -1, -1), class_ctx.expand(3, -1, -1)])
        prediction = pipe.unet(noisy, t, encoder_hidden_states=context).sample
        pred, pred_prior = prediction.chunk(2)
        target, target_prior = target.chunk(2)
        expected_inst, expected_prior = F.mse_loss(pred, target), F.mse_loss(pred_prior, target_prior)
    assert abs(inst_loss.item() - expected_inst.item()) < 1e-5
    assert abs(prior_loss.item() - expected_prior.item()) < 1e-5
    assert abs(loss.item() - (expected_inst + 0.7 * expected_prior).item()) < 1e-5
    alone = dreambooth_loss(pipe, instance, inst_ctx, torch.Generator().manual_seed(5))     # no prior: 3 examples
    assert alone.item() != pytest.approx(loss.item())


def test_bad_dreambooth_inputs_are_refused_with_what_to_do(pipe):
    with pytest.raises(ValueError, match=">= 0"):
        check_prior_loss_weight(-0.5)
    with pytest.raises(ValueError, match=">= 0"):
        check_prior_loss_weight(float("nan"))
    assert check_prior_loss_weight(0) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        dreambooth_loss(pipe, _latents(pipe, 2, 0), _context(pipe, "a bag"), torch.Generator(),
                        class_latents=_latents(pipe, 2, 1), class_context=_context(pipe, "a bag"),
                        prior_loss_weight=-1.0)
    good = torch.rand(4, 1, 32, 32)
    assert check_instance_images(good) is not None
    with pytest.raises(ValueError, match="pad it by 2"):
        check_instance_images(torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        check_instance_images(good * 2 - 1)
    with pytest.raises(ValueError, match="divide by 255"):
        check_instance_images(good * 255)
    with pytest.raises(ValueError, match="NaN"):
        check_instance_images(torch.full((2, 1, 32, 32), float("nan")))


def test_subject_copies_are_shifts_and_mirrors_of_the_one_picture():
    image = torch.zeros(1, 32, 32)
    image[0, 10:20, 8:14] = 1.0                                             # off centre, so a mirror differs
    copies = subject_copies(image, shifts=((0, 0), (1, -2)))
    assert copies.shape == (4, 1, 32, 32)
    assert torch.equal(copies[0, 0], image[0]) and torch.equal(copies[1, 0], image[0].flip(-1))
    assert torch.equal(copies[2, 0, 11:21, 6:12], torch.ones(10, 6)) and copies[2].sum() == image.sum()


# --------------------------------------------------------------------------- LoRA

def test_lora_starts_as_the_unchanged_model_and_trains_only_its_matrices(pipe):
    context = _context(pipe, "a photo of a bag")
    before = _unet_output(pipe.unet, context)
    frozen = count_parameters(pipe.unet)
    params = add_lora(pipe.unet, rank=4)
    layers = lora_layers(pipe.unet)
    assert len(layers) == 4 * 2 * 7                  # to_q, to_k, to_v, to_out.0 in both attentions of 7 blocks
    expected = sum(4 * (layer.in_features + layer.out_features) for layer in layers.values())
    assert sum(p.numel() for p in params) == expected == count_parameters(pipe.unet, trainable=True)
    assert count_parameters(pipe.unet, trainable=False) == frozen
    assert torch.equal(_unet_output(pipe.unet, context), before)         # B = 0: exactly the old model
    with pytest.raises(ValueError, match="rank"):
        add_lora(pipelines.load("fashion_text2image").unet, rank=0)
    with pytest.raises(ValueError, match="not in this U-Net"):
        add_lora(pipelines.load("fashion_text2image").unet, target_modules=("q_proj",))


def test_saved_lora_loads_through_load_lora_weights_with_the_same_pixels(pipe, tmp_path):
    _trained_lora(pipe)
    path = save_lora(pipe.unet, tmp_path / "lora")
    assert path.name == LORA_FILE and [p.name for p in path.parent.iterdir()] == [LORA_FILE]   # no scratch left
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    assert len(keys) == 2 * 56 and all(k.startswith("unet.") and ".lora." in k for k in keys)
    assert check_lora_file(path, pipe.unet) == 4
    ours = text_to_image(pipe, ["a photo of a bag"] * 2, generator=torch.Generator().manual_seed(0), **SETTINGS)
    fresh = pipelines.load("fashion_text2image")
    base = text_to_image(fresh, ["a photo of a bag"] * 2, generator=torch.Generator().manual_seed(0), **SETTINGS)
    load_lora(fresh, tmp_path / "lora", adapter_name="bag")
    theirs = fresh(["a photo of a bag"] * 2, generator=torch.Generator().manual_seed(0), output_type="pt",
                   **SETTINGS).images
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (ours - base).abs().max().item() > 1e-2                    # the adapter does change the pictures
    fresh.set_adapters(["bag"], adapter_weights=[0.0])                  # scale 0: the model without it
    off = text_to_image(fresh, ["a photo of a bag"] * 2, generator=torch.Generator().manual_seed(0), **SETTINGS)
    assert (off - base).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="already has an adapter"):
        load_lora(fresh, tmp_path / "lora", adapter_name="bag")


def test_fuse_lora_writes_w_plus_scaled_b_times_a_into_the_weights(pipe):
    _trained_lora(pipe, rank=2)
    name, layer = next(iter(lora_layers(pipe.unet).items()))
    expected = merged_weight(layer).detach().clone()
    by_hand = layer.base_layer.weight + (layer.lora_alpha["default"] / 2) * (
        layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
    torch.testing.assert_close(expected, by_hand, rtol=0, atol=0)
    unfused = text_to_image(pipe, "a photo of a bag", generator=torch.Generator().manual_seed(0), **SETTINGS)
    original = layer.base_layer.weight.detach().clone()
    pipe.fuse_lora()
    torch.testing.assert_close(layer.base_layer.weight, expected, rtol=0, atol=1e-6)
    fused = text_to_image(pipe, "a photo of a bag", generator=torch.Generator().manual_seed(0), **SETTINGS)
    assert (fused - unfused).abs().max().item() <= 1e-4
    pipe.unfuse_lora()
    torch.testing.assert_close(layer.base_layer.weight, original, rtol=0, atol=1e-6)
    pipe.set_adapters(["default"], adapter_weights=[0.5])             # the layer's scaling is now 0.5 * alpha / r
    half = original + 0.5 * (layer.lora_alpha["default"] / 2) * (
        layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
    torch.testing.assert_close(merged_weight(layer, scale=0.5), half, rtol=0, atol=1e-7)


def test_lora_files_that_do_not_fit_are_refused_by_name(pipe, tmp_path):
    unet = pipe.unet
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    cases = {
        "another architecture": {f"{key}.lora.down.weight": torch.zeros(4, 320),       # SD 1.5's first block
                                 f"{key}.lora.up.weight": torch.zeros(320, 4)},
        "does not have": {"unet.down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight":
                          torch.zeros(4, 64),
                          "unet.down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight":
                          torch.zeros(64, 4)},
        "rank mismatch": {f"{key}.lora.down.weight": torch.zeros(4, 64), f"{key}.lora.up.weight": torch.zeros(64, 2)},
        "not a LoRA matrix": {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64)},
        "needs both": {f"{key}.lora.down.weight": torch.zeros(4, 64)},
    }
    for message, tensors in cases.items():
        path = tmp_path / message.replace(" ", "_") / LORA_FILE
        path.parent.mkdir()
        save_file(tensors, str(path))
        with pytest.raises(ValueError, match=message):
            check_lora_file(path, unet)
        with pytest.raises(ValueError, match=message):
            load_lora(pipe, path.parent)
    assert "peft_config" not in vars(unet) or not unet.peft_config        # nothing was loaded on the way
    with pytest.raises(FileNotFoundError, match="no LoRA file"):
        check_lora_file(tmp_path / "missing", unet)


# --------------------------------------------------------------------------- the recipe and the shipped LoRA

def test_an_interrupted_lora_run_resumes_to_the_same_weights(tmp_path):
    from sdlearn.recipes import DreamBoothLoRARecipe, run_dreambooth_lora

    def small():
        recipe = DreamBoothLoRARecipe(num_class_images=4, class_inference_steps=2, rank=2)
        recipe.train.steps, recipe.train.batch_size, recipe.train.checkpoint_every = 4, 2, 0
        return recipe

    straight = run_dreambooth_lora(small(), tmp_path / "a.safetensors", checkpoint_dir=tmp_path / "ck_a",
                                   progress=False)
    first = run_dreambooth_lora(small(), tmp_path / "b.safetensors", checkpoint_dir=tmp_path / "ck_b",
                                progress=False, stop_after=2)
    resumed = run_dreambooth_lora(small(), tmp_path / "b.safetensors", checkpoint_dir=tmp_path / "ck_b",
                                  progress=False)
    assert first["checksum"] != straight["checksum"]
    assert resumed["checksum"] == straight["checksum"]
    for name in ("a", "b"):
        assert check_lora_file(tmp_path / name, pipelines.load("fashion_text2image").unet) == 2
        record = json.loads((tmp_path / name / weights.PIPELINE_INFO).read_text())
        assert record["base"] == "fashion_text2image" and record["recipe"] == "python -m sdlearn.train dreambooth_lora"
    loaded = weights.load(tmp_path / "b")                                 # a LoRA folder loads as its base + adapter
    assert loaded.unet.peft_config["b"].r == 2
    bad = small()
    bad.prior_loss_weight = -1.0
    with pytest.raises(ValueError, match=">= 0"):
        run_dreambooth_lora(bad, tmp_path / "c.safetensors", progress=False)


def test_the_shipped_lora_is_listed_loaded_and_draws_its_bag():
    from sdlearn.data import fashion_for_diffusion
    from sdlearn.metrics import classify, shipped_classifier

    assert weights.available("lora") == ["fashion_sks_bag_lora"]
    info = weights.read_info("fashion_sks_bag_lora")
    assert info["base"] == "fashion_text2image" and info["rank"] == 4
    assert weights.noise_schedule("fashion_sks_bag_lora") == weights.noise_schedule("fashion_text2image")
    pipe = weights.load("fashion_sks_bag_lora")
    assert list(pipe.unet.peft_config) == ["fashion_sks_bag_lora"]
    images, _ = fashion_for_diffusion("test")
    subject = (images[info["subject_index"]][None] + 1) / 2
    classifier = shipped_classifier()

    def distance(pictures):                    # to the subject, in the classifier's feature space
        features = classify(classifier, torch.cat([subject, pictures])[..., 2:30, 2:30])[1]
        return (features[1:] - features[0]).norm(dim=1).mean().item()

    settings = dict(num_inference_steps=10, guidance_scale=2.0)
    with_lora = text_to_image(pipe, ["a photo of a sks bag"] * 8, generator=torch.Generator().manual_seed(0),
                              **settings)
    pipe.set_adapters(["fashion_sks_bag_lora"], adapter_weights=[0.0])
    without = text_to_image(pipe, ["a photo of a sks bag"] * 8, generator=torch.Generator().manual_seed(0),
                            **settings)
    assert distance(with_lora) < 0.6 * distance(without)


def test_the_fidelity_and_memorisation_measures():
    from sdlearn.data import fashion_for_diffusion
    from sdlearn.metrics import nearest_copy_distance, subject_distance

    images, labels = fashion_for_diffusion("test")
    images = (images + 1) / 2
    subject = images[1375]
    copies = subject_copies(subject)
    distance = nearest_copy_distance(torch.cat([copies[3:4], subject.roll(2, dims=-1)[None]]), copies)
    assert distance[0].item() == 0.0                                          # a training copy
    by_hand = ((subject.roll(2, dims=-1)[None] - copies) ** 2).mean(dim=(1, 2, 3)).sqrt().min()
    assert abs(distance[1].item() - by_hand.item()) < 1e-6
    other_bags = images[labels == 8][:50]
    near, far = subject_distance(copies, subject), subject_distance(other_bags, subject)
    assert near.shape == (10,) and far.shape == (50,)
    assert near.max() < far.median() / 2                                      # its own shifts are near, other bags far
    with pytest.raises(ValueError, match="same picture size"):
        nearest_copy_distance(copies, copies[..., :28, :28])
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        subject_distance(copies[..., 2:30, 2:30], subject)
