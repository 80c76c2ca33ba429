"""The recipes package: the shared end of every run, and a real recipe run end to end for a few steps."""

from dataclasses import dataclass

import pytest
import torch

from sdlearn import weights
from sdlearn.models.classifier import ClassifierConfig, SmallClassifier
from sdlearn.recipes.common import finish_run, run_record
from sdlearn.training import TrainResult


@dataclass
class Tiny:                         # a recipe needs only to be a dataclass
    lr: float = 0.1
    sizes: tuple = ()


def _result(process_index=0, ema=True):
    model = SmallClassifier(ClassifierConfig(image_size=8, n_classes=3, channels=4, hidden=8))
    average = SmallClassifier(ClassifierConfig(image_size=8, n_classes=3, channels=4, hidden=8)) if ema else None
    return TrainResult(model=model, ema=average, losses=[4.0] * 50 + [2.0] * 100, seconds=12.4,
                       images_per_second=99.6, process_index=process_index, num_processes=2, checksum="abc",
                       mixed_precision="no", precision_reason="this CPU has no native bf16")


def test_the_record_says_how_the_weights_were_made():
    info = run_record(_result(), "classifier", Tiny(sizes=(1, 2)), test_accuracy=0.5)
    assert info["recipe"] == "python -m sdlearn.train classifier"
    assert info["train_seconds"] == 12 and info["images_per_second"] == 100
    assert info["precision"] == "float32: this CPU has no native bf16"
    assert info["final_loss"] == 2.0                        # the mean of the last 100 losses, not of all
    assert info["settings"] == {"lr": 0.1, "sizes": [1, 2]} and info["test_accuracy"] == 0.5


def test_the_main_process_evaluates_and_saves_the_ema(tmp_path):
    result = _result()
    seen = []
    info = finish_run(result, tmp_path / "m.safetensors", "classifier", Tiny(),
                      evaluate=lambda model: seen.append(model) or {"score": 1.5}, extra={"beta_schedule": "linear"})
    assert seen == [result.ema]                             # the EMA is what ships, not the raw model
    stored = weights.read_info(tmp_path / "m.safetensors")
    assert stored["score"] == 1.5 and stored["beta_schedule"] == "linear" and "process_index" not in stored
    assert info["process_index"] == 0
    loaded = weights.load(tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), result.ema.state_dict().values()))


def test_other_processes_neither_evaluate_nor_write(tmp_path):
    calls = []
    info = finish_run(_result(process_index=1), tmp_path / "m.safetensors", "classifier", Tiny(),
                      evaluate=lambda model: calls.append(model) or {}, save=lambda model, info: calls.append(info))
    assert calls == [] and not (tmp_path / "m.safetensors").exists() and info["process_index"] == 1


def test_without_an_ema_the_model_ships(tmp_path):
    result = _result(ema=False)
    saved = []
    finish_run(result, tmp_path / "m.safetensors", "classifier", Tiny(), save=lambda model, info: saved.append(model))
    assert saved == [result.model]


@pytest.mark.slow
def test_the_ddpm_recipe_runs_and_stores_its_noise_schedule(tmp_path, debian_fashion):
    from sdlearn.recipes import DDPMRecipe, run_ddpm

    recipe = DDPMRecipe()
    recipe.train.steps, recipe.train.batch_size, recipe.train.mixed_precision = 2, 8, "no"
    out = tmp_path / "ddpm.safetensors"
    info = run_ddpm(recipe, out, checkpoint_dir=tmp_path / "checkpoints", progress=False)
    assert weights.noise_schedule(out) == recipe.noise_schedule()
    assert weights.read_info(out)["checksum"] == info["checksum"]
    unet = weights.load(out)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert unet(x, torch.tensor([10, 900])).shape == x.shape


@pytest.mark.slow
def test_the_flow_recipe_runs_and_stores_its_scheduler_config(tmp_path, monkeypatch):
    from sdlearn.recipes import FlowRecipe, run_flow
    from sdlearn.recipes import flow as flow_module
    from sdlearn.flow import flow_schedule_from_config

    # encoding the 120,000 training latents takes minutes: a few random latents stand in for them
    latents = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(flow_module, "training_latents", lambda vae, flip: (latents, 0.0))
    recipe = FlowRecipe()
    recipe.train.steps, recipe.train.batch_size, recipe.train.mixed_precision = 2, 8, "no"
    recipe.train.sample_every = 2
    out = tmp_path / "flow.safetensors"
    info = run_flow(recipe, out, checkpoint_dir=tmp_path / "checkpoints", progress=False)
    record = weights.read_info(out)
    assert record["checksum"] == info["checksum"]
    assert flow_schedule_from_config(record["scheduler"], 4).shift == recipe.shift
    assert (tmp_path / "checkpoints" / "samples-0000002.png").exists()
    with pytest.raises(ValueError, match="does not record a noise schedule"):
        weights.noise_schedule(out)
    unet = weights.load(out)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert unet(x, torch.tensor([10.5, 900.0])).shape == x.shape


@pytest.mark.slow
def test_the_reflow_recipe_trains_a_low_rank_change_of_its_teacher(tmp_path):
    from sdlearn.recipes import ReflowRecipe, run_reflow
    from sdlearn.recipes.reflow import teacher_pairs
    from sdlearn.flow import make_flow_schedule, sample_flow_euler
    from sdlearn.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    teacher = UNet(UNetConfig(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                              layers_per_block=1, attention_levels=(False, True), mid_attention=True,
                              attention_head_dim=8, norm_num_groups=8)).eval()
    weights.save(teacher, tmp_path / "teacher.safetensors", {})
    recipe = ReflowRecipe(teacher=str(tmp_path / "teacher.safetensors"), pairs=24, pair_steps=3, pair_batch=10,
                          rank=2)
    recipe.train.steps, recipe.train.batch_size, recipe.train.warmup_steps = 3, 8, 1
    # the pairs: each noise taken to the teacher's 3-step Euler sample, in batches that do not divide 24
    z, x0 = teacher_pairs(teacher, 24, 3, 10, recipe.pair_seed)
    assert torch.allclose(sample_flow_euler(teacher, z[:5], make_flow_schedule(3)), x0[:5], atol=1e-5)
    out = tmp_path / "reflow.safetensors"
    info = run_reflow(recipe, out, checkpoint_dir=tmp_path / "checkpoints", progress=False)
    record = weights.read_info(out)
    assert record["checksum"] == info["checksum"] and record["rank"] == 2
    assert record["scheduler"]["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert 0 < record["trainable_parameters"] < 0.5 * sum(p.numel() for p in teacher.parameters())
    student = weights.load(out)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([300.0, 800.0])
    with torch.no_grad():
        assert not torch.allclose(student(x, t), teacher(x, t))       # trained: no longer the teacher
    assert out.stat().st_size < (tmp_path / "teacher.safetensors").stat().st_size
