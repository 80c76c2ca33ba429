import json

import pytest
import torch
from safetensors.torch import load_file

from sdlearn.models.classifier import ClassifierConfig, SmallClassifier
from sdlearn.training import ConfigMismatchError, TrainConfig, ema_update, latest_checkpoint, lr_at, train


G = torch.Generator().manual_seed(0)
X = torch.rand(96, 1, 8, 8, generator=G)
Y = (X.mean(dim=(1, 2, 3)) > 0.5).long()


def tiny():
    torch.manual_seed(0)
    return SmallClassifier(ClassifierConfig(image_size=8, n_classes=2, channels=4, hidden=8))


def loss_fn(model, batch, generator):
    images, labels = batch
    noise = 0.01 * torch.randn(images.shape, generator=generator)  # uses the step's generator
    return torch.nn.functional.cross_entropy(model(images + noise), labels)


CONFIG = TrainConfig(steps=6, batch_size=32, lr=1e-2, ema_decay=0.9, checkpoint_every=2, seed=3)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_for_a_seed():
    a = train(tiny(), loss_fn, (X, Y), CONFIG, progress=False)
    b = train(tiny(), loss_fn, (X, Y), CONFIG, progress=False)
    assert a.losses == b.losses
    for k, v in _weights(a.model).items():
        assert torch.equal(v, b.model.state_dict()[k])
    c = train(tiny(), loss_fn, (X, Y), TrainConfig(**{**CONFIG.__dict__, "seed": 4}), progress=False)
    assert c.losses != a.losses


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path):
    straight = train(tiny(), loss_fn, (X, Y), CONFIG, progress=False)
    first = train(tiny(), loss_fn, (X, Y), CONFIG, checkpoint_dir=tmp_path, progress=False, stop_after=3)
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 3
    resumed = train(tiny(), loss_fn, (X, Y), CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert len(first.losses) == 3 and resumed.losses == straight.losses
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    for k, v in straight.ema.state_dict().items():
        torch.testing.assert_close(resumed.ema.state_dict()[k], v, rtol=0, atol=0)
    saved = load_file(latest_checkpoint(tmp_path) / "model.safetensors")
    assert torch.equal(saved["fc2.weight"], resumed.model.state_dict()["fc2.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-0000006"]


def test_resuming_with_another_configuration_is_refused(tmp_path):
    train(tiny(), loss_fn, (X, Y), CONFIG, checkpoint_dir=tmp_path, progress=False, stop_after=2)
    other = TrainConfig(**{**CONFIG.__dict__, "lr": 5e-3})
    with pytest.raises(ConfigMismatchError, match=r"lr: checkpoint 0.01, now 0.005"):
        train(tiny(), loss_fn, (X, Y), other, checkpoint_dir=tmp_path, progress=False)


def test_a_nan_loss_stops_and_names_the_step_and_the_last_good_checkpoint(tmp_path):
    def exploding(model, batch, generator):
        loss = loss_fn(model, batch, generator)
        return loss * float("nan") if len(losses) == 3 else loss
    losses = []

    def recording(model, batch, generator):
        value = exploding(model, batch, generator)
        losses.append(value)
        return value

    with pytest.raises(FloatingPointError, match=r"at step 3; the last good checkpoint is .*step-0000002"):
        train(tiny(), recording, (X, Y), CONFIG, checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2


def test_learning_rate_schedule():
    config = TrainConfig(steps=110, warmup_steps=10, lr_schedule="cosine")
    assert lr_at(0, config) == pytest.approx(0.1) and lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(10, config) == pytest.approx(1.0) and lr_at(60, config) == pytest.approx(0.5)
    assert lr_at(110, config) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(50, TrainConfig(steps=110)) == 1.0


def test_ema_update_formula():
    ema, model = tiny(), tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = _weights(ema)
    ema_update(ema, model, 0.9)
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * model.state_dict()[name])


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size is 500"):
        train(tiny(), loss_fn, (X, Y), TrainConfig(steps=1, batch_size=500), progress=False)


def test_runs_with_different_precisions_in_one_process():
    first = train(tiny(), loss_fn, (X, Y), TrainConfig(steps=2, batch_size=32, mixed_precision="no"), progress=False)
    second = train(tiny(), loss_fn, (X, Y), TrainConfig(steps=2, batch_size=32, mixed_precision="bf16"),
                   progress=False)
    assert len(first.losses) == len(second.losses) == 2
    assert all(torch.isfinite(torch.tensor(second.losses)))


def test_a_recipe_under_accelerate_launch_trains_one_model_on_two_processes(tmp_path):
    """`accelerate launch` with two CPU processes (torchrun's launcher, gloo backend): both finish
    with the same weights, and the one file written holds them."""
    import re
    import socket
    import subprocess
    import sys

    from sdlearn import weights
    from sdlearn.training import weights_checksum

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "classifier.safetensors"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "sdlearn.train", "classifier", "--steps", "3",
               "--out", str(out), "--checkpoint-dir", str(tmp_path / "checkpoints"), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    finished = dict(re.findall(r"process (\d) of 2 finished: weights ([0-9a-f]{16})", done.stdout))
    assert sorted(finished) == ["0", "1"], done.stdout
    assert finished["0"] == finished["1"]
    info = weights.read_info(out)
    assert info["num_processes"] == 2
    assert weights_checksum(weights.load(out))[:16] == finished["0"]
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 3
