import subprocess
import sys

import nbformat
import pytest

from sdlearn.exercises import check, registered
from sdlearn.exercises.notebook import (BEGIN, ExerciseFormatError, exercises, instructor_version,
                                        strip_solutions, student_version)

from conftest import LESSONS, ROOT

PAIRS = [(path, pair) for path in LESSONS for pair in exercises(nbformat.read(path, as_version=4))]


def _run(cell_source, check_source):
    """Run an exercise cell, then its check cell, in a fresh namespace; return the verdict."""
    namespace = {}
    exec("import math\nimport torch\n" + cell_source, namespace)
    verdicts = []
    namespace["check"] = lambda *args: verdicts.append(check(*args)) or verdicts[-1]
    exec(check_source, namespace)
    assert len(verdicts) == 1, "a check cell calls check() exactly once"
    return verdicts[0]


@pytest.mark.parametrize("path, pair", PAIRS, ids=[p.exercise_id for _, p in PAIRS])
def test_reference_solution_passes(path, pair):
    verdict = _run(pair.solution, pair.check)
    assert verdict.passed, repr(verdict)


@pytest.mark.parametrize("path, pair", PAIRS, ids=[p.exercise_id for _, p in PAIRS])
def test_unfilled_exercise_fails(path, pair):
    verdict = _run(pair.stub, pair.check)
    assert not verdict.passed
    assert "not done yet" in verdict.message


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_has_three_exercises_and_checks_them_all(path):
    nb = nbformat.read(path, as_version=4)
    ids = [pair.exercise_id for pair in exercises(nb)]
    assert len(ids) >= 3
    assert sorted(ids) == registered(path.name[:2])


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_student_copy_has_no_solutions_and_keeps_the_checks(path):
    nb = nbformat.read(path, as_version=4)
    student = student_version(nb)
    text = "\n".join(c.source for c in student.cells)
    assert BEGIN not in text
    for pair in exercises(nb):
        solution_lines = [line for line in pair.solution.splitlines()
                          if line.strip() and not line.lstrip().startswith("def ")]
        assert not any(line in text.splitlines() for line in solution_lines)
    checks = [c for c in student.cells if "check" in c.metadata.get("tags", [])]
    assert len(checks) == len(exercises(nb)) and all(c.outputs == [] for c in checks)
    assert len(student.cells) == len(nb.cells)


def test_instructor_copy_keeps_solutions_and_outputs():
    nb = nbformat.read(LESSONS[0], as_version=4)
    copy = instructor_version(nb)
    assert [c.source for c in copy.cells] == [c.source for c in nb.cells]
    assert [c.get("outputs") for c in copy.cells] == [c.get("outputs") for c in nb.cells]
    assert copy.metadata["sdlearn"]["version"] == "instructor"


def test_stub_keeps_the_indentation():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    assert strip_solutions(source) == 'def f(x):\n    raise NotImplementedError("Exercise: write your code here")\n'


@pytest.mark.parametrize("source, match", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without a"),
    ("def f():\n    return 1\n", "no ### BEGIN SOLUTION"),
])
def test_malformed_markers_are_clear_errors(source, match):
    with pytest.raises(ExerciseFormatError, match=match):
        strip_solutions(source)


def test_command_line_writes_both_copies(tmp_path):
    for version in ("student", "instructor"):
        result = subprocess.run([sys.executable, "-m", "sdlearn.exercises", version, *map(str, LESSONS),
                                 "--out", str(tmp_path / version)], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (tmp_path / version).iterdir()) == sorted(p.name for p in LESSONS)
    student = nbformat.read(tmp_path / "student" / LESSONS[0].name, as_version=4)
    assert student.metadata["sdlearn"]["version"] == "student"


def test_unknown_exercise_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown exercise"):
        check("01.99", None)
    with pytest.raises(ValueError, match="look like '01.2'"):
        check("one", None)


def _wrong_answers():
    import math
    import torch

    def naive_probability(logits):
        e = logits.exp()
        return 1 - e[:, 10] / e.sum(-1)

    def one_minus_noise(logits):
        return 1 - logits.softmax(-1)[:, 10]

    def forward_difference(f, x, h):
        x = torch.tensor(x, dtype=torch.float64)
        return ((f(x + h) - f(x)) / h).item()

    def divide_by_b(a, b):
        return ((a - b).abs() / b.abs().clamp_min(1e-8)).max().item()

    def tensor_result(a, b):
        return ((a - b).abs() / torch.maximum(a.abs(), b.abs()).clamp_min(1e-8)).max()

    return [
        ("01.1", (naive_probability,), "NaN or inf"),
        ("01.1", (one_minus_noise,), "rounds to 0"),
        ("02.1", (forward_difference,), "a finite difference, forward or central"),
        ("02.4", (divide_by_b,), "not by one of them"),
        ("02.4", (tensor_result,), ".item()"),
    ]


WRONG = _wrong_answers()


@pytest.mark.parametrize("exercise_id, answers, message", WRONG, ids=[f"{w[0]}-{w[2][:12]}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answers, message):
    verdict = check(exercise_id, *answers)
    assert not verdict.passed
    assert message in verdict.message, verdict.message


def test_grading_uses_the_reference_checks_not_the_students(tmp_path):
    lesson = next(p for p in LESSONS if p.name.startswith("02_"))    # derivatives: exercises 02.1 to 02.4
    reference = nbformat.read(lesson, as_version=4)
    submission = student_version(reference)
    cells = [c for c in submission.cells if "exercise" in c.metadata.get("tags", [])]
    cells[0].source = ("def complex_step(f, x, h):\n"
                       "    return (f(torch.tensor(complex(x, h), dtype=torch.complex128)).imag / h).item()\n")
    checks = [c for c in submission.cells if "check" in c.metadata.get("tags", [])]
    checks[1].source = "print('PASS')"  # a tampered check changes nothing
    path = tmp_path / "submission.ipynb"
    nbformat.write(submission, path)
    result = subprocess.run([sys.executable, "-m", "sdlearn.exercises", "grade", str(path), "--lesson", str(lesson),
                             "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr  # failed exercises: exit 1 (--exit-zero for 0)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[PASS] Exercise 02.1")
    assert lines[1].startswith("[FAIL] Exercise 02.2") and "not done yet" in lines[1]
    assert lines[-1] == f"1 passed, {len(cells) - 1} failed"
