"""The grading worker: the process in which one submission's code runs, exercise after exercise.

`sdlearn.exercises.grading` starts one worker per submission and talks to it in JSON lines:

1. the worker imports torch, the lesson's checks and the instructor's hidden checks, limits its
   own memory (Linux), and answers `{"ready": true, "titles": ..., "hidden": ..., "memory_limit_mb": ...}`
   (or `{"error": "..."}` when the checks cannot be loaded: the instructor's problem, not a student's);
2. for every job `{"exercise": "02.1", "source": <the student's cell>, "check": <the reference's check cell>}`
   it runs the cell in a fresh namespace, then the public check and every hidden check of that
   exercise on the answers the check cell passes, and answers one result
   `{"exercise", "title", "passed", "message", "checks": [...]}`.

The student's code sees /dev/null as standard input and output (the jobs and results travel on
private copies of those descriptors), so `print` and `input` cannot disturb the exchange. What
kills this process (`os._exit`, a segfault, the memory limit enforced by the kernel) or makes it
hang (an endless loop: the grader kills it when the exercise's time is up) costs the student that
exercise only: the grader starts a fresh worker for the remaining exercises.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

PREAMBLE = "import math\nimport torch\n"  # what an exercise cell may use without importing it


def _private_channels():
    """Jobs in and results out on private copies of stdin and stdout; the originals become /dev/null."""
    jobs = os.fdopen(os.dup(0), "r", encoding="utf-8")
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    return jobs, results


def _send(channel, message: dict) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _die_with_the_grader() -> None:
    """On Linux, ask the kernel to kill this process when the grader dies (even in an endless loop)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the grader died before the request was made
        os._exit(1)


def _limit_memory(memory_mb: int) -> int | None:
    """Cap this process's address space at what it uses now plus `memory_mb` MiB (Linux only).

    An allocation beyond the cap fails with MemoryError (or torch's "can't allocate memory") in the
    student's code, where the check reports it. Core dumps are switched off too, so that a crash
    leaves no file behind. Returns the limit in MiB, or None where it is not enforced.
    """
    if memory_mb <= 0 or not sys.platform.startswith("linux"):
        return None
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = in_use + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return memory_mb


def _prepare(exercise_ids: list[str], hidden_files: list[str]) -> tuple[dict, dict]:
    """Import the public checks of `exercise_ids` and the hidden checks; return titles and hidden checks by id."""
    from sdlearn.exercises import _load
    from sdlearn.exercises.hidden import load_hidden_checks

    exec(PREAMBLE, {})  # import torch now, not inside the first exercise's time
    titles = {exercise_id: _load(exercise_id).title for exercise_id in exercise_ids}
    lessons = {exercise_id.split(".")[0] for exercise_id in exercise_ids}
    hidden: dict[str, list] = {}
    for path in hidden_files:
        for extra in load_hidden_checks(path):
            if extra.exercise_id in titles:
                hidden.setdefault(extra.exercise_id, []).append(extra)
            elif extra.exercise_id.split(".")[0] in lessons:
                raise ValueError(f"{path}: the hidden check {extra.title!r} is for exercise {extra.exercise_id}, which "
                                 f"this lesson does not have (it has {', '.join(exercise_ids)})")
    return titles, hidden


def _failure_message(exc: BaseException, in_check: bool) -> str:
    """What to tell the student when their code raised `exc` (or called sys.exit)."""
    when = "when the check called it" if in_check else "when the cell ran"
    if isinstance(exc, SystemExit):
        return (f"your code called sys.exit({exc.code!r}) (or exit()) {when}, which would stop the notebook; "
                "return the answer instead.")
    return f"{'your code' if in_check else 'the cell'} raised {type(exc).__name__}: {exc}"


def _out_of_memory(message: str, memory_limit_mb: int | None) -> str:
    """Say "out of memory" plainly when an allocation failed, with the limit this grader sets."""
    if "MemoryError" not in message and "can't allocate memory" not in message:
        return message
    limit = f"the {memory_limit_mb} MiB a submission may use" if memory_limit_mb else "the memory this machine has"
    return f"your code ran out of memory: it asked for more than {limit}."


def _run_check(check, arguments: tuple, memory_limit_mb: int | None) -> dict:
    """Run one check (public or hidden); a sys.exit or interrupt from the student's code is a failed check."""
    try:
        verdict = check(*arguments)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: check() only catches Exception
        return {"passed": False, "message": _failure_message(exc, in_check=True)}
    return {"passed": verdict.passed, "message": _out_of_memory(verdict.message, memory_limit_mb)}


def _run_cells(source: str, check_source: str, memory_limit_mb: int | None) -> tuple[list, str | None]:
    """Run the student's cell, then the reference's check cell with `check` recording its arguments.

    Returns the recorded calls [(exercise_id, answers)], or an empty list and what went wrong.
    """
    namespace = {"__name__": "__exercise__"}
    exec(PREAMBLE, namespace)
    try:
        code = compile(source, "<your exercise cell>", "exec")
    except SyntaxError as exc:
        return [], (f"your cell has a syntax error on line {exc.lineno}: {exc.msg}. "
                    "Run it in your notebook to see where.")
    calls = []

    def record(exercise_id, *answers):
        calls.append((exercise_id, answers))

    try:
        exec(code, namespace)
        namespace["check"] = record
        exec(check_source, namespace)
    except BaseException as exc:  # sys.exit() included: it would end this process
        return [], _out_of_memory(_failure_message(exc, in_check=False), memory_limit_mb)
    if not calls:
        return [], "the check cell did not call check(); grade with the reference lesson."
    return calls, None


def run_exercise(exercise_id: str, source: str, check_source: str, title: str, hidden: list,
                 memory_limit_mb: int | None = None) -> dict:
    """Run the student's cell `source`, then the public check and the `hidden` checks on the answers that the
    reference's `check_source` names; return the result message (passed only if every check passed)."""
    from sdlearn.exercises import check
    from sdlearn.exercises.hidden import run_hidden_check

    result = {"exercise": exercise_id, "title": title, "passed": False, "checks": []}
    calls, error = _run_cells(source, check_source, memory_limit_mb)
    if error is not None:
        return {**result, "message": error}
    for called_id, answers in calls:
        public = _run_check(check, (called_id, *answers), memory_limit_mb)
        result["checks"].append({"check": "public", **public})
        for extra in hidden:
            outcome = _run_check(run_hidden_check, (extra, answers), memory_limit_mb)
            result["checks"].append({"check": f"instructor's check '{extra.title}'", **outcome})
    failed = [c for c in result["checks"] if not c["passed"]]
    if failed:
        first = failed[0]
        prefix = "" if first["check"] == "public" else f"the public check passes, but the {first['check']} fails: "
        return {**result, "message": prefix + first["message"]}
    return {**result, "passed": True, "message": result["checks"][0]["message"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdlearn.exercises.worker",
                                     description="Run one submission's exercises for sdlearn.exercises.grading.")
    parser.add_argument("exercises", help="the exercise ids to grade, comma-separated (02.1,02.2)")
    parser.add_argument("--hidden", action="append", default=[], help="a file of instructor-only checks")
    parser.add_argument("--memory-mb", type=int, default=0, help="memory a submission may use (0: no limit)")
    args = parser.parse_args(argv)
    _die_with_the_grader()
    jobs, results = _private_channels()
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]  # files the student's code writes are not modules
    exercise_ids = args.exercises.split(",")
    try:
        titles, hidden = _prepare(exercise_ids, args.hidden)
    except Exception as exc:
        traceback.print_exc()
        _send(results, {"error": f"{type(exc).__name__}: {exc}"})
        return 2
    limit = _limit_memory(args.memory_mb)
    _send(results, {"ready": True, "titles": titles, "memory_limit_mb": limit,
                    "hidden": {exercise_id: [h.title for h in checks] for exercise_id, checks in hidden.items()}})
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # a student's flood of warnings fills no disk
    for line in jobs:
        job = json.loads(line)
        exercise_id = job["exercise"]
        _send(results, run_exercise(exercise_id, job["source"], job["check"], titles[exercise_id],
                                    hidden.get(exercise_id, []), limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
