"""sdlearn.precision (bf16 only where native and faster) and sdlearn.numerics (the pinned kernels)."""

import os
import platform

import pytest
import torch

from sdlearn import numerics, precision
from sdlearn.training import TrainConfig, train

X86_AVX2 = {"sse2", "avx", "avx2", "fma"}
X86_AVX512_BF16 = X86_AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}
X86_AMX = X86_AVX512_BF16 | {"amx_tile", "amx_bf16"}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be an x86 CPU with the given flags and oneDNN limit; forget cached choices."""
    def pretend(flags, limit=None, speedup=None):
        monkeypatch.setattr(platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if limit is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        if speedup is not None:
            monkeypatch.setattr(precision, "measure_bf16_speedup", lambda device, repeats=3: speedup)
        precision._choose.cache_clear()
    yield pretend
    precision._choose.cache_clear()


@pytest.mark.parametrize("flags, limit, native", [
    (X86_AVX2, None, False),                    # AVX2 only: bf16 is emulated
    (X86_AVX2 | {"avx512f"}, None, False),      # AVX-512 without its bf16 extension
    (X86_AVX512_BF16, None, True),
    (X86_AMX, None, True),
    (X86_AVX512_BF16, "AVX2", False),           # the pinned numerics switch the bf16 instructions off
    (X86_AVX512_BF16, "avx512_core", False),
    (X86_AVX512_BF16, "AVX512_CORE_BF16", True),
    (X86_AMX, "AVX512_CORE_AMX", True),
])
def test_native_bf16_follows_the_cpu_flags_and_the_onednn_limit(cpu, flags, limit, native):
    cpu(flags, limit)
    assert precision.native_bf16("cpu") is native


def test_without_native_bf16_the_choice_is_float32_and_nothing_is_measured(cpu, monkeypatch):
    cpu(X86_AVX2)
    monkeypatch.setattr(precision, "measure_bf16_speedup", lambda *a, **k: pytest.fail("measured"))
    choice = precision.choose_mixed_precision("cpu")
    assert choice.mixed_precision == "no" and not choice.native_bf16 and choice.speedup is None
    assert "no native bf16" in choice.reason and str(choice).startswith("float32 on cpu")


def test_a_limit_that_hides_present_bf16_instructions_is_named(cpu):
    cpu(X86_AVX512_BF16, "AVX2")
    choice = precision.choose_mixed_precision("cpu")
    assert choice.mixed_precision == "no" and "ONEDNN_MAX_CPU_ISA=AVX2" in choice.reason


@pytest.mark.parametrize("speedup, expected", [(1.7, "bf16"), (1.05, "no"), (0.4, "no")])
def test_native_bf16_is_chosen_only_when_measured_faster(cpu, speedup, expected):
    cpu(X86_AVX512_BF16, speedup=speedup)
    choice = precision.choose_mixed_precision("cpu")
    assert choice.mixed_precision == expected and choice.native_bf16 and choice.speedup == speedup
    assert f"{speedup:.2f}x" in choice.reason


def test_the_choice_is_measured_once_per_process(cpu, monkeypatch):
    calls = []
    cpu(X86_AMX)
    monkeypatch.setattr(precision, "measure_bf16_speedup", lambda device, repeats=3: calls.append(1) or 2.0)
    first = precision.choose_mixed_precision("cpu")
    assert precision.choose_mixed_precision(torch.device("cpu")) is first and len(calls) == 1


def test_the_measurement_times_both_precisions(monkeypatch):
    seen = []
    real = precision._timed_steps
    monkeypatch.setattr(precision, "_timed_steps",
                        lambda model, x, bf16, device, repeats: seen.append(bf16) or real(model, x, bf16, device, 1))
    speedup = precision.measure_bf16_speedup("cpu", repeats=1)
    assert seen == [False, True]
    assert 0.01 < speedup < 100


def test_explicit_bf16_on_an_emulating_cpu_warns(cpu):
    cpu(X86_AVX2)
    with pytest.warns(UserWarning, match="emulated"):
        assert precision.resolve_mixed_precision("bf16", "cpu") == "bf16"
    assert precision.resolve_mixed_precision("auto", "cpu") == "no"
    assert precision.resolve_mixed_precision("no", "cpu") == "no"


def test_training_with_auto_records_what_ran_and_why(cpu):
    cpu(X86_AVX2)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    data = torch.randn(64, 4)
    result = train(model, lambda m, x, g: m(x).square().mean(), data,
                   TrainConfig(steps=2, batch_size=32, mixed_precision="auto"), progress=False)
    assert result.mixed_precision == "no"
    assert "no native bf16" in result.precision_reason
    explicit = train(torch.nn.Linear(4, 1), lambda m, x, g: m(x).square().mean(), data,
                     TrainConfig(steps=1, batch_size=32, mixed_precision="no"), progress=False)
    assert explicit.precision_reason == "set in the config"


def test_the_recipes_let_the_hardware_choose():
    from sdlearn import recipes

    for recipe in (recipes.DDPMRecipe(), recipes.LatentDDPMRecipe(), recipes.AutoencoderRecipe(),
                   recipes.CLIPRecipe(), recipes.Text2ImageRecipe()):
        assert recipe.train.mixed_precision == "auto", type(recipe).__name__


# --------------------------------------------------------------------------- numerics

def test_numerics_file_pins_kernels_and_threads():
    pinned = numerics.pinned_environment()
    assert pinned["ATEN_CPU_CAPABILITY"] == "avx2" and pinned["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert pinned["MKL_CBWR"] == "AVX2" and int(pinned["OMP_NUM_THREADS"]) >= 1


def test_apply_keeps_what_the_caller_set():
    environ = {"ATEN_CPU_CAPABILITY": "default"}
    in_force = numerics.apply(environ)
    assert environ["ATEN_CPU_CAPABILITY"] == "default" and in_force["ATEN_CPU_CAPABILITY"] == "default"
    assert environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_a_malformed_numerics_file_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "numerics.env"
    bad.write_text("# fine\nATEN_CPU_CAPABILITY avx2\n")
    monkeypatch.setattr(numerics, "ENV_FILE", bad)
    with pytest.raises(ValueError, match=r"numerics.env:2: expected NAME=value"):
        numerics.pinned_environment()


def test_this_test_run_is_under_the_settings_in_force():
    """conftest.py applies the settings before torch starts: the kernels and threads follow them."""
    capability = os.environ["ATEN_CPU_CAPABILITY"].upper()
    if capability != "DEFAULT":
        assert torch.backends.cpu.get_cpu_capability() in (capability, "AVX2", "DEFAULT")
        if "avx2" in precision.cpu_flags() or "avx512f" in precision.cpu_flags():
            assert torch.backends.cpu.get_cpu_capability() == capability
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
    assert "threads" in numerics.describe()
