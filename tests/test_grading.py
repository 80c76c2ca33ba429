"""Grading a class: each submission in a process of its own, the gradebook, hidden checks, and the
committed student copies that the lessons' second Colab link opens.

The failure cases are graded once, as one folder of submissions of a tiny lesson (lesson 02's four
exercises and nothing else, whose checks take milliseconds), by the command line.
"""

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from sdlearn.exercises.grading import Grader, GraderError, Limits
from sdlearn.exercises.notebook import exercises, student_version, write_versions

from conftest import LESSONS, ROOT

DERIVATIVES = next(p for p in LESSONS if p.name.startswith("02_"))
SOLUTIONS = [pair.solution for pair in exercises(nbformat.read(DERIVATIVES, as_version=4))]
IDS = ["02.1", "02.2", "02.3", "02.4"]
TIMEOUT_S = 5           # the reference solutions take milliseconds; an endless loop is cut here
MEMORY_MB = 1024

HIDDEN_CHECKS = '''
import math

import torch

from sdlearn.exercises import Failed
from sdlearn.exercises.hidden import hidden_check


@hidden_check("02.1", "the complex step at a point the public check does not use")
def complex_step_elsewhere(complex_step):
    got = complex_step(torch.exp, 0.25, 1e-30)
    if not math.isclose(got, math.exp(0.25), rel_tol=1e-12):
        raise Failed(f"for exp at x = 0.25 expected {math.exp(0.25)!r}, got {got!r}.")


@hidden_check("05.1", "a check of another lesson, skipped when grading lesson 02")
def another_lesson(x0_from_v):
    raise Failed("this check must not run on lesson 02")
'''

# The public check of 02.1 tries three functions at three points: this answer looks them up.
HARD_CODED = '''def complex_step(f, x, h):
    return {2.0: 12.0, 0.7: math.cos(0.7),
            -1.3: math.exp(-1.3) / (1 + 1.69) - 2 * -1.3 * math.exp(-1.3) / (1 + 1.69) ** 2}[x]
'''
ENDLESS = "def complex_step(f, x, h):\n    while True:\n        pass\n"
OS_EXIT = "def central_eps(dtype):\n    import os\n    os._exit(3)\n"
SYS_EXIT = "def log_prob_gradient(W, b, x, k):\n    import sys\n    sys.exit(0)\n"
SYNTAX_ERROR = "def max_relative_error(a, b)\n    return 0.0\n"
SEGFAULT = "def log_prob_gradient(W, b, x, k):\n    import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
MEMORY_HOG = "def complex_step(f, x, h):\n    hoard = bytearray(64 * 1024**3)\n    return 0.0\n"
LINUX = sys.platform.startswith("linux")


def _tiny_lesson(folder: Path) -> Path:
    """Lesson 02 cut down to its exercise and check cells."""
    reference = nbformat.read(DERIVATIVES, as_version=4)
    tiny = nbformat.v4.new_notebook()
    tiny.cells = [c for c in reference.cells if {"exercise", "check"} & set(c.metadata.get("tags", []))]
    path = folder / "02_tiny.ipynb"
    nbformat.write(tiny, path)
    return path


def _submission(lesson: Path, path: Path, answers: list) -> None:
    """The student copy of `lesson` (or `lesson` itself, if it is one) with its exercise cells replaced
    by `answers` (None: left unfilled)."""
    nb = nbformat.read(lesson, as_version=4)
    if nb.metadata.get("sdlearn", {}).get("version") != "student":
        nb = student_version(nb)
    cells = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    for cell, answer in zip(cells, answers):
        if answer is not None:
            cell.source = answer
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run of a folder of mixed submissions; returns (process, CSV rows by file, JSON)."""
    root = tmp_path_factory.mktemp("class")
    lesson = _tiny_lesson(root)
    hidden = root / "instructor" / "hidden_checks.py"
    hidden.parent.mkdir()
    hidden.write_text(HIDDEN_CHECKS)
    folder = root / "submissions"
    _submission(lesson, folder / "good.ipynb", SOLUTIONS)
    _submission(lesson, folder / "chaos.ipynb", [ENDLESS, OS_EXIT, SYS_EXIT, SYNTAX_ERROR])
    _submission(lesson, folder / "hard_coded.ipynb", [HARD_CODED, SOLUTIONS[1], SEGFAULT, SOLUTIONS[3]])
    _submission(lesson, folder / "late" / "unfilled.ipynb", [None] * 4)
    if LINUX:
        _submission(lesson, folder / "memory.ipynb", [MEMORY_HOG, SOLUTIONS[1], None, None])
    (folder / "broken.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "def complex_st')
    out = root / "grades"
    process = subprocess.run(
        [sys.executable, "-m", "sdlearn.exercises", "grade", str(folder), "--lesson", str(lesson),
         "--hidden", str(hidden), "--out", str(out), "--timeout", str(TIMEOUT_S), "--memory-mb", str(MEMORY_MB),
         "--jobs", "2"], capture_output=True, text=True, cwd=root)
    assert process.returncode in (0, 1), process.stderr
    with open(out / "gradebook_02_tiny.csv", newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    book = json.loads((out / "gradebook_02_tiny.json").read_text())
    return process, rows, book


def _verdict(book, file, exercise_id):
    submission = next(s for s in book["submissions"] if s["file"] == file)
    return submission["exercises"][exercise_id]


def test_the_csv_has_one_row_per_submission_a_column_per_exercise_and_the_total(graded):
    process, rows, _ = graded
    assert process.returncode == 1, "a failed exercise makes the command exit with 1"
    expected = {"good.ipynb": "1111", "chaos.ipynb": "0000", "hard_coded.ipynb": "0101",
                "late/unfilled.ipynb": "0000", "broken.ipynb": "0000"}
    if LINUX:
        expected["memory.ipynb"] = "0100"
    assert set(rows) == set(expected)
    for file, marks in expected.items():
        assert [rows[file][f"exercise {i}"] for i in IDS] == list(marks), file
        assert rows[file]["total"] == str(marks.count("1")), file
    assert list(rows["good.ipynb"]) == ["file", *(f"exercise {i}" for i in IDS), "total"]
    assert process.stdout.splitlines()[-1] == f"{sum(m.count('1') for m in expected.values())} passed, " \
                                              f"{sum(m.count('0') for m in expected.values())} failed"


def test_the_json_has_every_verdict_and_message(graded):
    _, _, book = graded
    assert book["lesson"] == "02_tiny.ipynb"
    assert list(book["exercises"]) == IDS
    assert book["limits"] == {"timeout_s": TIMEOUT_S, "memory_mb": MEMORY_MB if LINUX else None}
    for exercise_id in IDS:
        verdict = _verdict(book, "good.ipynb", exercise_id)
        assert verdict["verdict"] == "PASS" and verdict["passed"] and verdict["message"]
        assert verdict["title"] == book["exercises"][exercise_id]
    unfilled = _verdict(book, "late/unfilled.ipynb", "02.2")
    assert unfilled["verdict"] == "FAIL" and "not done yet" in unfilled["message"]


def test_an_endless_loop_times_out_and_the_next_exercise_is_still_graded(graded):
    _, _, book = graded
    assert _verdict(book, "chaos.ipynb", "02.1")["message"].startswith(f"timed out after {TIMEOUT_S} s")
    assert "exit code 3" in _verdict(book, "chaos.ipynb", "02.2")["message"]  # graded in a fresh process


def test_os_exit_costs_that_exercise_only(graded):
    _, _, book = graded
    message = _verdict(book, "chaos.ipynb", "02.2")["message"]
    assert "ended the Python process (exit code 3)" in message


def test_sys_exit_is_a_failed_exercise(graded):
    _, _, book = graded
    message = _verdict(book, "chaos.ipynb", "02.3")["message"]
    assert "sys.exit(0)" in message and "return the answer instead" in message


def test_a_syntax_error_names_the_line(graded):
    _, _, book = graded
    assert _verdict(book, "chaos.ipynb", "02.4")["message"].startswith("your cell has a syntax error on line 1")


def test_a_segfault_costs_that_exercise_and_the_rest_is_graded_in_a_fresh_process(graded):
    _, _, book = graded
    assert "killed by SIGSEGV" in _verdict(book, "hard_coded.ipynb", "02.3")["message"]
    assert _verdict(book, "hard_coded.ipynb", "02.4")["passed"]


def test_a_notebook_that_is_not_json_fails_every_exercise_with_a_message(graded):
    _, _, book = graded
    for exercise_id in IDS:
        verdict = _verdict(book, "broken.ipynb", exercise_id)
        assert not verdict["passed"] and "not a notebook that can be read" in verdict["message"]


@pytest.mark.skipif(not LINUX, reason="the memory limit is enforced with setrlimit on Linux only")
def test_a_memory_hog_runs_out_of_memory_at_the_limit(graded):
    _, _, book = graded
    message = _verdict(book, "memory.ipynb", "02.1")["message"]
    assert message.startswith("your code ran out of memory") and f"{MEMORY_MB} MiB" in message
    assert _verdict(book, "memory.ipynb", "02.2")["passed"]


def test_a_hard_coded_answer_passes_the_public_check_and_fails_the_hidden_one(graded):
    _, _, book = graded
    verdict = _verdict(book, "hard_coded.ipynb", "02.1")
    assert [c["passed"] for c in verdict["checks"]] == [True, False]
    assert "the public check passes, but the instructor's check" in verdict["message"]
    assert "KeyError" in verdict["message"]
    good = _verdict(book, "good.ipynb", "02.1")
    assert [c["passed"] for c in good["checks"]] == [True, True]
    assert book["hidden_checks"] == {"02.1": ["the complex step at a point the public check does not use"]}


def test_one_notebook_with_exit_zero_prints_the_report_and_exits_0(tmp_path):
    lesson = _tiny_lesson(tmp_path)
    _submission(lesson, tmp_path / "alice.ipynb", [SOLUTIONS[0], None, None, None])
    process = subprocess.run([sys.executable, "-m", "sdlearn.exercises", "grade", str(tmp_path / "alice.ipynb"),
                              "--lesson", str(lesson), "--out", str(tmp_path / "grades"), "--exit-zero"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert lines[0].startswith("[PASS] Exercise 02.1") and lines[1].startswith("[FAIL] Exercise 02.2")
    assert lines[-1] == "1 passed, 3 failed"
    rows = list(csv.reader((tmp_path / "grades" / "gradebook_02_tiny.csv").read_text().splitlines()))
    assert rows == [["file", "exercise 02.1", "exercise 02.2", "exercise 02.3", "exercise 02.4", "total"],
                    ["alice.ipynb", "1", "0", "0", "0", "1"]]


def test_a_hidden_check_for_an_exercise_the_lesson_lacks_stops_the_run(tmp_path):
    lesson = _tiny_lesson(tmp_path)
    hidden = tmp_path / "typo.py"
    hidden.write_text("from sdlearn.exercises.hidden import hidden_check\n\n"
                      "@hidden_check('02.9', 'a typo in the id')\ndef typo(answer):\n    pass\n")
    with pytest.raises(GraderError, match="02.9, which this lesson does not have"):
        Grader(lesson, hidden=[hidden], limits=Limits(timeout_s=TIMEOUT_S))


def test_a_real_lessons_student_copy_passes_with_the_solutions_filled_in(tmp_path):
    copy = ROOT / "student" / DERIVATIVES.name
    _submission(copy, tmp_path / "solved.ipynb", SOLUTIONS)
    with Grader(DERIVATIVES, limits=Limits(timeout_s=60)) as grader:
        solved, unfilled = grader.grade_all([tmp_path / "solved.ipynb", copy], ["solved", "unfilled"])
    assert [v.passed for v in solved.verdicts] == [True] * len(SOLUTIONS), solved.verdicts
    assert not any(v.passed for v in unfilled.verdicts)
    assert all("not done yet" in v.message for v in unfilled.verdicts)


# --------------------------------------------------------------------------- the committed student copies

REGENERATE = "run `make student` (or: python -m sdlearn.exercises student lessons/[0-9][0-9]_*.ipynb --out student) " \
             "and commit student/"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_the_student_copy_is_in_step_with_the_lesson(path, tmp_path):
    committed = ROOT / "student" / path.name
    assert committed.exists(), f"student/{path.name} is missing: {REGENERATE}"
    fresh = write_versions([path], tmp_path, "student")[0]
    assert committed.read_bytes() == fresh.read_bytes(), \
        f"student/{path.name} is out of date with lessons/{path.name}: {REGENERATE}"


def test_the_student_folder_holds_only_copies_of_lessons():
    lessons = {p.name for p in LESSONS}
    extra = sorted(p.name for p in (ROOT / "student").iterdir() if p.name not in lessons)
    assert not extra, f"student/ holds files that are not copies of a lesson: {extra}; delete them"


def test_the_student_copies_stay_out_of_the_book_and_the_notebook_tests():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "student/*" in config["exclude_patterns"]
    assert "student/" not in (ROOT / "_toc.yml").read_text()
    testpaths = re.search(r"^testpaths = \[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert "student" not in testpaths and "lessons" in testpaths


def _lesson_header():
    spec = importlib.util.spec_from_file_location("lesson_header", ROOT / "scripts" / "lesson_header.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("first_cell", [
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    "(https://colab.research.google.com/github/old/place/blob/dev/lessons/20_optimizer_view.ipynb)\n\n# 20 · A title",
    "# 20 · A title",
], ids=["old badge", "no badge"])
def test_the_header_script_writes_both_launch_links_into_any_lesson(tmp_path, first_cell):
    header = _lesson_header()
    nb = nbformat.v4.new_notebook()
    install = nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules:\n'
                                        '    %pip install "sdlearn @ git+https://github.com/old/place@dev"')
    install.metadata["tags"] = ["colab-install"]
    nb.cells = [nbformat.v4.new_markdown_cell(first_cell), install, nbformat.v4.new_markdown_cell("Text.")]
    path = tmp_path / "20_optimizer_view.ipynb"
    nbformat.write(nb, path)
    assert not header.sync(path, write=False)
    header.sync(path, write=True)
    assert header.sync(path, write=False)
    lines = nbformat.read(path, as_version=4).cells[0].source.splitlines()
    assert lines[0] == header.launch_line(path.name) and lines[-1] == "# 20 · A title"
    slug, branch = header.repository()
    assert f"github/{slug}/blob/{branch}/student/20_optimizer_view.ipynb" in lines[0]
    assert "Open the exercises (student copy) in Colab" in lines[0]
    assert lines[0].count("colab-badge.svg") == 1
