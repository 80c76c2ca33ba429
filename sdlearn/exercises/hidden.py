"""Instructor-only checks: extra checks of an exercise that run at grade time only.

The public checks (`sdlearn.exercises.lessonLL`) are in the package every student installs, so
a student can read what they test and hard-code the answer. An instructor keeps more checks in a
file of their own, outside the package and outside anything handed out, and names it on the
command line when grading:

    # hidden_checks.py, kept by the instructor
    import torch
    from sdlearn.exercises import Failed
    from sdlearn.exercises.hidden import hidden_check

    @hidden_check("02.1", "the complex step at a point the public check does not use")
    def other_point(complex_step):
        got = complex_step(torch.exp, 0.25, 1e-30)
        if abs(got - 1.2840254166877414) > 1e-12:
            raise Failed(f"exp'(0.25) is exp(0.25) = 1.2840254166877414, got {got!r}.")

    python -m sdlearn.exercises grade submissions/ --lesson lessons/02_derivatives.ipynb \\
        --hidden hidden_checks.py

A hidden check receives the same answers as the public check of its exercise, raises `Failed`
when they are wrong, and the exercise passes only when the public check and every hidden check
of it pass. The file is loaded by path in the grading processes; it is never installed, so no
student can import it.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["HiddenCheck", "hidden_check", "load_hidden_checks", "run_hidden_check"]


@dataclass(frozen=True)
class HiddenCheck:
    """One instructor-only check of exercise `exercise_id`, from the file `origin`."""
    exercise_id: str
    title: str
    check: Callable[..., str | None]
    origin: str


_HIDDEN: list[HiddenCheck] = []
_FILES_LOADED: list[Path] = []


def hidden_check(exercise_id: str, title: str):
    """Register the decorated function as an instructor-only check of exercise `exercise_id` ("LL.N").

    Like a public check, it receives the student's answers, raises `Failed` with a message when they
    are wrong, and may return a short message when they are right. `title` names it in the gradebook.
    """
    if not isinstance(exercise_id, str) or "." not in exercise_id:
        raise ValueError(f"exercise ids look like '01.2' (lesson 01, exercise 2), got {exercise_id!r}")

    def register(fn):
        origin = getattr(sys.modules.get(fn.__module__), "__file__", None) or fn.__module__
        _HIDDEN.append(HiddenCheck(exercise_id, title, fn, str(origin)))
        return fn
    return register


def load_hidden_checks(path: str | Path) -> list[HiddenCheck]:
    """Run the instructor's file `path` and return the hidden checks it registers (at least one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hidden checks file {path} does not exist")
    name = f"_sdlearn_hidden_checks_{len(_FILES_LOADED)}"
    _FILES_LOADED.append(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file: hidden checks are a .py file that uses @hidden_check")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    before = len(_HIDDEN)
    spec.loader.exec_module(module)
    added = _HIDDEN[before:]
    if not added:
        raise ValueError(f"{path} registers no hidden check: decorate each check with "
                         "@hidden_check('LL.N', 'what it tests') from sdlearn.exercises.hidden")
    return list(added)


def run_hidden_check(hidden: HiddenCheck, answers: tuple):
    """Run one hidden check on the student's answers; return a `CheckResult`, as `check()` does."""
    from sdlearn.exercises import CheckResult, Failed

    title = f"instructor's check: {hidden.title}"
    try:
        message = hidden.check(*answers)
    except NotImplementedError:
        return CheckResult(hidden.exercise_id, title, False,
                           "not done yet: the exercise still raises NotImplementedError.")
    except Failed as failure:
        return CheckResult(hidden.exercise_id, title, False, str(failure))
    except Exception as exc:  # the student's code raised inside the hidden check
        return CheckResult(hidden.exercise_id, title, False, f"your code raised {type(exc).__name__}: {exc}")
    return CheckResult(hidden.exercise_id, title, True, message or "passed.")
