"""Student and instructor copies of a lesson notebook.

An exercise cell (tag "exercise") holds one or more solution blocks between the lines
`### BEGIN SOLUTION` and `### END SOLUTION`. The student copy replaces each block with a
`raise NotImplementedError` at the same indentation and clears the outputs of exercise
and check cells; the instructor copy keeps everything.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from sdlearn.utils import atomic_write

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write your code here")'
_CHECK_CALL = re.compile(r"""check\(\s*["'](\d\d\.\d+)["']""")


class ExerciseFormatError(ValueError):
    """Raised when an exercise cell's solution markers do not pair up."""


@dataclass
class ExercisePair:
    """One exercise of a lesson: the solution cell, its student stub, and its check cell."""
    exercise_id: str
    solution: str
    stub: str
    check: str


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION block in `source` with an indented stub."""
    out, inside, indent, found = [], False, "", False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ExerciseFormatError(f"{where}, line {number}: {BEGIN} inside another solution block")
            inside, found = True, True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif stripped == END:
            if not inside:
                raise ExerciseFormatError(f"{where}, line {number}: {END} without a {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ExerciseFormatError(f"{where}: {BEGIN} is never closed by {END}")
    if not found:
        raise ExerciseFormatError(f"{where} is tagged 'exercise' but has no {BEGIN} block")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def remove_markers(source: str) -> str:
    """The reference solution as plain code: the marker lines removed."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN, END))


def exercises(nb) -> list[ExercisePair]:
    """The exercises of a notebook, each exercise cell paired with the check cell after it."""
    pairs = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or "exercise" not in _tags(cell):
            continue
        where = f"code cell {i}"
        following = [c for c in cells[i + 1:] if c.cell_type == "code"]
        if not following or "check" not in _tags(following[0]):
            raise ExerciseFormatError(f"{where} is an exercise but the next code cell is not tagged 'check'")
        match = _CHECK_CALL.search(following[0].source)
        if match is None:
            raise ExerciseFormatError(f"the check cell after {where} does not call check('LL.N', ...)")
        pairs.append(ExercisePair(match.group(1), remove_markers(cell.source),
                                  strip_solutions(cell.source, where), following[0].source))
    return pairs


def student_version(nb):
    """A copy of the notebook with the solutions replaced by stubs; check cells kept."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        tags = _tags(cell)
        if cell.cell_type == "code" and "exercise" in tags:
            cell.source = strip_solutions(cell.source, f"code cell {i}")
        if cell.cell_type == "code" and ("exercise" in tags or "check" in tags):
            cell.outputs = []
            cell.execution_count = None
    nb.metadata["sdlearn"] = {"version": "student"}
    return nb


def instructor_version(nb):
    """A copy of the notebook with solutions and outputs, marked as the instructor's."""
    nb = copy.deepcopy(nb)
    exercises(nb)  # validates the markers and pairing
    nb.metadata["sdlearn"] = {"version": "instructor"}
    return nb


_DEF = re.compile(r"^def (\w+)\(", re.MULTILINE)


def asked_for(pair: ExercisePair) -> list[str]:
    """The names of the functions an exercise asks the student to write (those its stub defines)."""
    return _DEF.findall(pair.stub)


def answer_cell(submission, pair: ExercisePair) -> str | None:
    """The source of the student's cell that answers `pair`: the code cell defining every function
    the exercise asks for, a cell tagged "exercise" first, or None when no cell does."""
    names = asked_for(pair)
    if not names:
        return None
    candidates = [c for c in submission.cells if c.cell_type == "code"
                  and all(f"def {name}(" in c.source for name in names)]
    tagged = [c for c in candidates if "exercise" in _tags(c)]
    chosen = (tagged or candidates or [None])[0]
    return None if chosen is None else chosen.source


def grade(submission, reference) -> list:
    """Grade a student's notebook with the checks of the reference lesson, in this process.

    For every exercise of `reference`, the student's cell that defines the same function is
    run in a fresh namespace (with `math` and `torch` imported) and the reference's own check
    cell is applied to it. The student's check cells and outputs are ignored, so editing a
    check in the submission changes nothing. Returns one `CheckResult` per exercise.

    The student's code runs here, with no time or memory limit: for a class's submissions use
    `sdlearn.exercises.grading`, which runs each one in a process of its own.
    """
    from sdlearn.exercises import CheckResult, check

    results = []
    for pair in exercises(reference):
        source = answer_cell(submission, pair)
        if source is None:
            results.append(CheckResult(pair.exercise_id, "", False, f"no cell defines {', '.join(asked_for(pair))}"))
            continue
        namespace = {}
        verdicts = []
        try:
            exec("import math\nimport torch\n" + source, namespace)
        except Exception as exc:
            results.append(CheckResult(pair.exercise_id, "", False, f"the cell raised {type(exc).__name__}: {exc}"))
            continue
        namespace["check"] = lambda *args: verdicts.append(check(*args))
        exec(pair.check, namespace)
        results.extend(verdicts)
    return results


def write_versions(paths, out_dir, which: str) -> list[Path]:
    """Write the student or instructor copy of each lesson into `out_dir`."""
    if which not in ("student", "instructor"):
        raise ValueError(f"which must be 'student' or 'instructor', got {which!r}")
    make = student_version if which == "student" else instructor_version
    written = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        nb = nbformat.read(path, as_version=4)
        target = Path(out_dir) / path.name
        with atomic_write(target, "w") as handle:
            nbformat.write(make(nb), handle)
        written.append(target)
    return written
