"""Graded exercises: a cell the student fills in, and a check that says pass or fail.

In a lesson, an exercise is two cells:

    # tagged "exercise": the student writes the body; the lesson holds the reference solution
    def complex_step(f, x, h):
        ### BEGIN SOLUTION
        return (f(torch.tensor(complex(x, h), dtype=torch.complex128)).imag / h).item()
        ### END SOLUTION

    # tagged "check": run by the student, prints a verdict with a helpful message
    check("02.1", complex_step)

`python -m sdlearn.exercises student LESSON.ipynb --out DIR` writes the student copy, where
every solution block becomes `raise NotImplementedError(...)` and the checks stay;
`python -m sdlearn.exercises instructor ...` writes the copy with solutions and outputs.

The checks live in this package (one module per lesson, `sdlearn.exercises.lesson01`, ...)
so they run the same way in Colab, locally and in the test suite, with no grader service.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["as_number", "check", "CheckResult", "Failed", "exercise", "name_the_mistake", "registered", "same_tensor"]


class Failed(AssertionError):
    """Raised by a check when the answer is wrong; its message tells the student why."""


@dataclass
class CheckResult:
    exercise_id: str
    title: str
    passed: bool
    message: str

    def __repr__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        text = f"[{mark}] Exercise {self.exercise_id} ({self.title})"
        return f"{text}: {self.message}" if self.message else text

    def __bool__(self) -> bool:
        return self.passed


@dataclass
class _Exercise:
    exercise_id: str
    title: str
    check: Callable[..., str | None]


_REGISTRY: dict[str, _Exercise] = {}


def exercise(exercise_id: str, title: str):
    """Register the decorated function as the check of exercise `exercise_id` ("LL.N").

    The check receives the student's answers, raises `Failed` with a helpful message when
    they are wrong, and may return a short message to show when they are right.
    """
    def register(fn):
        if exercise_id in _REGISTRY:
            raise ValueError(f"exercise {exercise_id} is registered twice")
        _REGISTRY[exercise_id] = _Exercise(exercise_id, title, fn)
        return fn
    return register


def _load(exercise_id: str) -> _Exercise:
    if not isinstance(exercise_id, str) or "." not in exercise_id:
        raise ValueError(f"exercise ids look like '01.2' (lesson 01, exercise 2), got {exercise_id!r}")
    lesson = exercise_id.split(".")[0]
    try:
        importlib.import_module(f"sdlearn.exercises.lesson{lesson}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"there are no exercises for lesson {lesson} (looked for sdlearn.exercises.lesson{lesson})") from exc
    if exercise_id not in _REGISTRY:
        known = ", ".join(sorted(k for k in _REGISTRY if k.startswith(lesson + ".")))
        raise ValueError(f"unknown exercise {exercise_id!r}; lesson {lesson} has {known}")
    return _REGISTRY[exercise_id]


def registered(lesson: str) -> list[str]:
    """The ids of the exercises of one lesson ("01" -> ["01.1", "01.2", ...])."""
    importlib.import_module(f"sdlearn.exercises.lesson{lesson}")
    return sorted(k for k in _REGISTRY if k.startswith(lesson + "."))


def check(exercise_id: str, *answers) -> CheckResult:
    """Run the check of one exercise on the student's answers and return the verdict."""
    ex = _load(exercise_id)
    try:
        message = ex.check(*answers)
    except NotImplementedError:
        return CheckResult(exercise_id, ex.title, False,
                           "not done yet: replace `raise NotImplementedError` with your code, run that cell, then this one.")
    except Failed as failure:
        return CheckResult(exercise_id, ex.title, False, str(failure))
    except Exception as exc:  # the student's code raised: say what, so they can fix it
        return CheckResult(exercise_id, ex.title, False, f"your code raised {type(exc).__name__}: {exc}")
    return CheckResult(exercise_id, ex.title, True, message or "well done.")


# --------------------------------------------------------------------------- helpers for the checks

def as_number(value, what: str) -> float:
    """The student's answer as a Python float: a number, a numpy number or a one-element tensor.

    `what` names the answer in the messages, e.g. "a guidance scale".
    """
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise Failed(f"return one number, {what}, not a tensor of shape {tuple(value.shape)}.")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Failed(f"return one number, {what}, not {type(value).__name__}.") from None


def as_tensor(got, what: str, shape) -> "torch.Tensor":
    """The student's answer detached as float32, once it is a tensor of `shape`; else `Failed` that says what it is.

    `what` names the answer in the messages, e.g. "the predicted x0".
    """
    import torch

    if not isinstance(got, torch.Tensor):
        raise Failed(f"return {what} as a tensor, got {type(got).__name__}.")
    if tuple(got.shape) != tuple(shape):
        raise Failed(f"{what} should have shape {tuple(shape)}, got {tuple(got.shape)}.")
    return got.detach().float()


def same_tensor(got, expected, *, rtol: float = 1e-5, atol: float = 1e-5) -> bool:
    """Whether `got` is a tensor shaped like `expected` and equal to it within the tolerances."""
    import torch

    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and torch.allclose(got.detach().float(), expected, rtol=rtol, atol=atol))


def name_the_mistake(got, wrong: dict, **tolerances) -> None:
    """Raise `Failed` with the message of the first typical wrong answer that `got` equals.

    `wrong` maps a message to the tensor that mistake produces (None: not applicable here).
    """
    for message, answer in wrong.items():
        if answer is not None and same_tensor(got, answer, **tolerances):
            raise Failed(message)
