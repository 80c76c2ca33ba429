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
