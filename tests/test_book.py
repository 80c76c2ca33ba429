"""The book: lesson structure, badges from _config.yml, and a full Sphinx build with -W."""

import importlib.util
import re
import shutil
import subprocess
import sys

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


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    """Build the HTML with execution off (the committed outputs) and warnings as errors."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config_path = tmp_path / "_config.yml"
    config_path.write_text(yaml.safe_dump(config))
    jupyter_book = shutil.which("jupyter-book", path=str(ROOT / ".venv" / "bin")) or shutil.which("jupyter-book")
    assert jupyter_book, "jupyter-book is not installed (make test installs it)"
    result = subprocess.run(
        [jupyter_book, "build", str(ROOT), "--config", str(config_path), "--path-output", str(tmp_path / "out"),
         "-W", "-n", "--keep-going"],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "out" / "_build" / "html"
    for path in LESSONS:
        page = (html / "lessons" / f"{path.stem}.html").read_text()
        assert "colab.research.google.com" in page
    assert (html / "book" / "glossary.html").exists()


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
