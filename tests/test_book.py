"""The book: lesson structure, badges from _config.yml, and a full Sphinx build with -W."""

import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from conftest import LESSONS, ROOT


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_opens_with_badge_install_goals_and_run_time(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert "colab.research.google.com/assets/colab-badge.svg" in first.source
    assert "**You will learn**" in first.source and "**Run time:**" in first.source
    install = nb.cells[1]
    assert "colab-install" in install.metadata.get("tags", [])
    assert 'if "google.colab" in sys.modules:' in install.source


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_is_committed_executed_in_order(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "run the lesson top to bottom in a fresh kernel"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_only_timing_cells_are_ignored_by_nbval(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "nbval-ignore-output" in cell.metadata.get("tags", []):
            timing = ("perf_counter", "images_per_second", "seconds")
            assert any(word in cell.source for word in timing), \
                f"nbval-ignore-output on a cell that does not time anything:\n{cell.source}"


def test_badges_and_install_cells_follow_config():
    result = subprocess.run([sys.executable, "scripts/lesson_header.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lesson_module_table_is_read_from_the_lessons():
    result = subprocess.run([sys.executable, "scripts/lesson_modules.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lesson_modules_are_found_in_a_lessons_imports(tmp_path):
    import json

    spec = importlib.util.spec_from_file_location("lesson_modules", ROOT / "scripts" / "lesson_modules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells = [{"cell_type": "markdown", "source": ["from sdlearn import nothing\n"]},
             {"cell_type": "code", "source": ["%matplotlib inline\n", "from sdlearn import weights, data\n",
                                              "import sdlearn.samplers\n", "from sdlearn.data import x\n"]}]
    path = tmp_path / "99_x.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    assert module.lesson_modules(path) == ["sdlearn.weights", "sdlearn.data", "sdlearn.samplers"]


def test_every_lesson_is_in_the_toc_and_the_time_table():
    toc = (ROOT / "_toc.yml").read_text()
    table = (ROOT / "book" / "_generated" / "lesson_times.md").read_text()
    for path in LESSONS:
        assert f"lessons/{path.stem}" in toc
        assert f"| {path.stem} |" in table


# The book as the tests build it: execution off (the committed outputs), into a fixed folder so that
# tests/test_browser.py opens the same build instead of building again, and people can look at it.
BOOK_BUILD = ROOT / "_build" / "test-book"


@functools.cache
def build_book() -> tuple[subprocess.CompletedProcess, Path]:
    """Build the HTML once per test session with warnings as errors; the result and the html folder."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in extensions.items():           # relative to _config.yml, which is not copied along
        extensions[name] = str((ROOT / folder).resolve())
    shutil.rmtree(BOOK_BUILD, ignore_errors=True)     # a fresh build: an incremental one skips warnings
    BOOK_BUILD.mkdir(parents=True)
    config_path = BOOK_BUILD / "_config.yml"
    config_path.write_text(yaml.safe_dump(config))
    jupyter_book = shutil.which("jupyter-book", path=str(ROOT / ".venv" / "bin")) or shutil.which("jupyter-book")
    assert jupyter_book, "jupyter-book is not installed (make test installs it)"
    result = subprocess.run(
        [jupyter_book, "build", str(ROOT), "--config", str(config_path), "--path-output", str(BOOK_BUILD),
         "-W", "-n", "--keep-going"],
        cwd=ROOT, capture_output=True, text=True)
    return result, BOOK_BUILD / "_build" / "html"


@pytest.mark.slow
def test_book_builds_without_warnings():
    """Build the HTML with execution off (the committed outputs) and warnings as errors."""
    result, html = build_book()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for path in LESSONS:
        page = (html / "lessons" / f"{path.stem}.html").read_text()
        assert "colab.research.google.com" in page
    assert (html / "book" / "glossary.html").exists()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax is not served from the book's files"


def test_every_measured_machine_keeps_the_budgets():
    """The committed time tables (benchmarks/lesson_times.py): every lesson within its 120 s budget,
    every cell far inside the 600 s a cell that nbval and the book build allow, on every machine."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from lesson_times import BUDGET_S, read_sections, rows_of

    sections = read_sections((ROOT / "book" / "_generated" / "lesson_times.md").read_text())
    assert sections, "no time table: run benchmarks/lesson_times.py"
    for machine, section in sections.items():
        rows = rows_of(section)
        assert {name for name, *_ in rows} == {path.stem for path in LESSONS}, machine
        for name, seconds, _, slowest in rows:
            assert seconds <= BUDGET_S, f"{name} took {seconds:.0f} s on {machine}"
            assert slowest <= 300, f"a cell of {name} took {slowest:.0f} s on {machine}"


GENERATED = re.compile(r"<!-- generated: (?P<file>\S+) -->\n(?P<table>.*?)\n<!-- end generated -->", re.S)


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_tables_copied_into_lessons_match_what_the_benchmarks_wrote(path):
    """A lesson shows a benchmark's table inline (an {include} would show as raw text in Colab and
    Jupyter), between markers naming the file it copies; the copy must be that file, word for word."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        assert "{include}" not in cell.source, f"{path.name}: an {{include}} shows as raw text outside the book"
        for match in GENERATED.finditer(cell.source):
            written = (ROOT / match["file"]).read_text().strip("\n")
            assert match["table"] == written, \
                f"{path.name} shows an old copy of {match['file']}: paste the file's current text between the markers"


# --------------------------------------------------------------------------- numbers in the prose

NUMBER = re.compile(r"(?<![\w.$^{\\/=-])(\d+\.\d+)(%?)(?![\w.])")
PRINTED = re.compile(r"\d+\.\d+(?:e[+-]?\d+)?")
# Numbers a lesson quotes from elsewhere (a paper, a model card, another lesson): lesson -> {number: source}
QUOTED = {
    "00_tour": {"0.98": "sdlearn.metrics.SATURATION_LEVEL, the burnt-out threshold"},
    "12_clip": {"0.67": "-log(0.51), the loss of the probability computed in the text"},
    "14_guidance": {"0.98": "sdlearn.metrics.SATURATION_LEVEL, the burnt-out threshold",
                    "2.1": "the mean realism of real test images, 2.14 (printed in lesson 05)"},
    "18_textual_inversion": {"0.03": "1 - (1 - lr x weight decay)^10, AdamW's shrinkage over ten steps"},
    "02_derivatives": {"1.5": "2 x 786,432 forward passes, in millions"},
    "07_unet": {"3.4": "859.5M float32 parameters x 4 bytes, in GB"},
    "09_autoencoders": {"1.7": "0.460 / 0.274, the ratio of two printed distances",
                        "5.5": "1 / 0.18215, Stable Diffusion's scaling factor"},
    "10_latent_diffusion": {"3.6": "-2.20 + 5.8, the printed interval's upper end"},
    "19_dreambooth_lora": {"3.4": "860M float32 parameters x 4 bytes, in GB"},
    "21_flow_matching": {"4.6": "lesson 10's bootstrap standard error of a 300-sample Fréchet distance, 4.61"},
}


def _prose(source: str) -> str:
    """A markdown cell without maths, code, links and the benchmark tables copied in."""
    source = GENERATED.sub("", source)
    source = re.sub(r"(Stable\s+Diffusion|SD|SDXL)\s+\d+(\.\d+)?", " ", source)          # model versions
    source = re.sub(r"\$\$.*?\$\$", " ", source, flags=re.S)
    source = re.sub(r"\$[^$\n]*\$", " ", source)
    source = re.sub(r"`[^`]*`", " ", source)
    source = re.sub(r"\]\([^)]*\)", "]", source)
    return source


def _printed(nb) -> str:
    """What the lesson prints and computes: every code cell's source and text outputs, and the tables it copies."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            parts.append(cell.source)
            for output in cell.get("outputs", []):
                if "text" in output:
                    parts.append(output["text"])
                elif "text/plain" in output.get("data", {}):
                    parts.append(output["data"]["text/plain"])
        else:
            parts += [m["table"] for m in GENERATED.finditer(cell.source)]
    return "\n".join(parts)


def _appears(number: str, printed_numbers: list[float], percent: bool = False) -> bool:
    """`number` as the text writes it is one of the printed numbers rounded to its decimals (a
    percentage may be printed as a fraction: 15.5% as 0.155)."""
    decimals = len(number.split(".")[1])
    value = float(number)
    if any(abs(round(p, decimals) - value) < 10 ** -(decimals + 3) for p in printed_numbers):
        return True
    return percent and any(abs(round(100 * p, decimals) - value) < 10 ** -(decimals + 3) for p in printed_numbers)


def _stale_numbers(nb, quoted) -> list[str]:
    printed = [float(p) for p in PRINTED.findall(_printed(nb))]
    stale = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for match in NUMBER.finditer(_prose(cell.source)):
            number = match[1]
            if number not in quoted and not _appears(number, printed, percent=match[2] == "%"):
                stale.append(number)
    return stale


def test_the_prose_check_finds_a_stale_number_and_accepts_rounding_and_percentages():
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(score)")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="distance 0.439, share 0.155, max 4.2e-01\n")]
    nb.cells = [code, nbformat.v4.new_markdown_cell(
        "30 steps reach 0.44 (15.5% kept, up to 0.42), against 0.384 for 3 steps; $x = 0.5$ and `lr=0.1` are not prose.")]
    assert _stale_numbers(nb, {}) == ["0.384"]
    assert _stale_numbers(nb, {"0.384": "quoted from elsewhere"}) == []


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_numbers_in_the_prose_are_printed_by_the_lesson(path):
    """Every decimal number a lesson's text states is printed (or computed) by the lesson itself,
    to the precision quoted, or it is listed in QUOTED with where it comes from. A sentence whose
    number the outputs do not show has gone stale, or was never measured."""
    stale = _stale_numbers(nbformat.read(path, as_version=4), QUOTED.get(path.stem, {}))
    assert not stale, (f"{path.name} states numbers that none of its outputs shows: {sorted(set(stale))}; "
                       f"print them, correct them, or list them in QUOTED with their source")
