"""The built wheel holds every file of the package: the modules and what they load at run time
(the shipped weights and pipeline folders, the tokenizer's files, numerics.env).

Colab installs sdlearn from the repository by building this wheel; a file that pyproject.toml's
package-data does not name works in a checkout and is missing there.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "sdlearn"


def package_files() -> set[str]:
    """Every file under sdlearn/ except Python's caches, as paths inside a wheel ("sdlearn/...")."""
    files = set()
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.add(path.relative_to(ROOT).as_posix())
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel . --no-deps`, built from a copy of what the build reads: a build in the checkout would
    reuse its build/ folder, where a file that package-data no longer names can linger."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "sdlearn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", str(out)],
                            cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("sdlearn-*.whl")
    return path


def test_the_package_has_run_time_files_to_check():
    files = package_files()
    assert "sdlearn/numerics.env" in files
    assert any(f.startswith("sdlearn/weights/") and f.endswith(".safetensors") for f in files)
    assert any(f.startswith("sdlearn/tokenizer/") and not f.endswith(".py") for f in files)


@pytest.mark.slow
def test_the_wheel_holds_every_file_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name for name in archive.namelist() if name.startswith("sdlearn/")}
    missing = sorted(package_files() - in_wheel)
    assert not missing, (f"the wheel lacks {len(missing)} file(s) of sdlearn/, e.g. {missing[:5]}: "
                         f"add their pattern to [tool.setuptools.package-data] in pyproject.toml")
    pipelines = {Path(name).parts[2] for name in in_wheel if name.endswith("/model_index.json")}
    assert {"fashion_text2image", "fashion_inpainting"} <= pipelines
