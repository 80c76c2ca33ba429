"""Grading a class: every submission in a process of its own, with limits, into a gradebook.

    python -m sdlearn.exercises grade submissions/ --lesson lessons/02_derivatives.ipynb \\
        [--hidden hidden_checks.py] [--timeout 60] [--memory-mb 4096] [--out DIR]

For each submission (one notebook, or every .ipynb under a folder), a worker process
(`sdlearn.exercises.worker`) runs the student's exercise cells one at a time with the reference
lesson's checks and the instructor's hidden checks (`sdlearn.exercises.hidden`). Each exercise
has a time limit, and the worker a memory limit where the platform enforces one (Linux). An
endless loop, a crash, a `sys.exit`, a syntax error or a notebook that is not valid JSON costs the
student the exercise concerned, with a message saying what happened: when an exercise kills or
hangs the worker, the remaining exercises run in a fresh one. The results go into a gradebook, a
CSV (one row per submission: file, one column per exercise, total) for a spreadsheet or an LMS, and
a JSON with every exercise's verdict and message.

The sandbox contains mistakes, not attacks: a student's code runs with the grader's permissions
and in the same process as the checks. Grade work you do not trust in a container or a throwaway
virtual machine.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from sdlearn.exercises.notebook import ExerciseFormatError, answer_cell, asked_for, exercises
from sdlearn.utils import atomic_write

STARTUP_TIMEOUT_S = 300.0  # importing torch and the checks, on a busy machine: not the student's time


class GraderError(RuntimeError):
    """The grader cannot run (a lesson without exercises, a broken hidden checks file): no student's fault."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use: seconds per exercise, and memory (MiB; 0 for no limit)."""
    timeout_s: float = 60.0
    memory_mb: int = 4096


@dataclass
class Verdict:
    """The grade of one exercise of one submission; `checks` lists the public and hidden checks run, and
    `seconds` how long the exercise ran (to choose a time limit: the reference solutions' times)."""
    exercise_id: str
    title: str
    passed: bool
    message: str
    checks: list[dict] = field(default_factory=list)
    seconds: float | None = None

    def __repr__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] Exercise {self.exercise_id} ({self.title}): {self.message}"


@dataclass
class SubmissionGrade:
    """All verdicts of one submission; `file` is its path as the gradebook shows it."""
    file: str
    verdicts: list[Verdict]

    @property
    def total(self) -> int:
        return sum(v.passed for v in self.verdicts)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _death_message(returncode: int) -> str:
    """Why the worker died while it ran an exercise, in the student's terms."""
    if returncode < 0:
        name = _signal_name(-returncode)
        hint = " (the system does this when a process takes too much memory)" if name == "SIGKILL" else ""
        return f"your code crashed the Python process: it was killed by {name}{hint}."
    return (f"your code ended the Python process (exit code {returncode}): os._exit, or a crash in compiled "
            "code. Return the answer instead.")


def _worker_environment() -> dict[str, str]:
    """The grader's environment, under the pinned numerics, with this copy of sdlearn importable."""
    from sdlearn import numerics

    environ = dict(os.environ)
    numerics.apply(environ)
    root = str(Path(__file__).resolve().parents[2])
    if root not in site.getsitepackages() + [site.getusersitepackages()]:  # a source checkout: put it on the path
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, environ.get("PYTHONPATH")) if p)
    return environ


class _Worker:
    """One worker process and the thread that reads its answers; see sdlearn.exercises.worker."""

    def __init__(self, exercise_ids: list[str], hidden: list[Path], limits: Limits):
        self._log = tempfile.TemporaryFile()
        self._workdir = tempfile.TemporaryDirectory(prefix="sdlearn-grading-", ignore_cleanup_errors=True)
        command = [sys.executable, "-m", "sdlearn.exercises.worker", ",".join(exercise_ids),
                   "--memory-mb", str(limits.memory_mb)]
        for path in hidden:
            command += ["--hidden", str(path)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                         cwd=self._workdir.name, env=_worker_environment(), text=True,
                                         encoding="utf-8", start_new_session=os.name == "posix")
        self._answers: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.alive, self._closed = True, False
        try:
            self.ready = self._receive(STARTUP_TIMEOUT_S)
        except TimeoutError:
            self.ready = None
        if self.ready is None or "error" in self.ready:
            detail = self.ready["error"] if self.ready else f"it did not start within {STARTUP_TIMEOUT_S:g} s"
            self.close()
            raise GraderError(f"the grading process could not load the checks: {detail}\n{self._log_tail()}")
        self._log.close()  # the worker is ready and has silenced its standard error

    def _read(self) -> None:
        for line in self._process.stdout:
            try:
                self._answers.put(json.loads(line))
            except ValueError:  # not the worker's: something the student's code wrote on its channel
                continue
        self._answers.put(None)

    def _receive(self, timeout: float) -> dict | None:
        """The worker's next answer; None when it died first."""
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None

    def _log_tail(self) -> str:
        """The end of what the worker wrote on its standard error before it was ready."""
        self._log.seek(0)
        tail = self._log.read().decode("utf-8", "replace")[-2000:]
        self._log.close()
        return tail

    def run(self, job: dict, timeout_s: float) -> dict:
        """Run one exercise; a timeout or a death is the exercise's result, and leaves `alive` False."""
        try:
            self._process.stdin.write(json.dumps(job) + "\n")
            self._process.stdin.flush()
            answer = self._receive(timeout_s)
        except TimeoutError:
            self.close()
            return {"passed": False, "message": f"timed out after {timeout_s:g} s: an endless loop, or far more "
                                                "work than the exercise needs."}
        except (BrokenPipeError, OSError):
            answer = None
        if answer is None:
            returncode = self._process.wait()
            self.close()
            return {"passed": False, "message": _death_message(returncode)}
        return answer

    def close(self) -> None:
        """Stop the worker and anything it started (its process group), and remove its working folder."""
        self.alive = False
        if self._closed:
            return
        self._closed = True
        try:
            if os.name == "posix":
                os.killpg(self._process.pid, signal.SIGKILL)  # also what the student's code started
            else:
                self._process.kill()
        except OSError:  # already gone
            pass
        self._process.wait()
        try:
            self._process.stdin.close()
        except OSError:  # the pipe broke when the worker died
            pass
        self._reader.join(timeout=5)  # it stops at the end of the worker's output
        if not self._reader.is_alive():
            self._process.stdout.close()
        self._workdir.cleanup()


class Grader:
    """Grades submissions of one lesson with its checks (and hidden ones), each in worker processes of its own.

    Creating a Grader starts a first worker, so that a lesson without checks or a broken hidden
    checks file stops the run (GraderError) before any student is graded.
    """

    def __init__(self, lesson: str | Path, *, hidden: list[str | Path] = (), limits: Limits = Limits()):
        self.lesson = Path(lesson)
        try:
            self.pairs = exercises(nbformat.read(self.lesson, as_version=4))
        except (OSError, ValueError, ExerciseFormatError) as exc:
            raise GraderError(f"cannot read the reference lesson {self.lesson}: {exc}") from exc
        if not self.pairs:
            raise GraderError(f"{self.lesson} has no exercises (code cells tagged 'exercise')")
        self.hidden = [Path(p) for p in hidden]
        self.limits = limits
        self._lock = threading.Lock()
        first = self._start()
        self.titles: dict[str, str] = first.ready["titles"]
        self.hidden_titles: dict[str, list[str]] = first.ready["hidden"]
        self.memory_limit_mb: int | None = first.ready["memory_limit_mb"]
        self._spare: _Worker | None = first

    @property
    def exercise_ids(self) -> list[str]:
        return [pair.exercise_id for pair in self.pairs]

    def _start(self) -> _Worker:
        return _Worker(self.exercise_ids, self.hidden, self.limits)

    def _take(self) -> _Worker:
        with self._lock:
            worker, self._spare = self._spare, None
        return worker or self._start()

    def _failed_all(self, file: str, message: str) -> SubmissionGrade:
        return SubmissionGrade(file, [Verdict(i, self.titles[i], False, message) for i in self.exercise_ids])

    def _grade_exercise(self, pair, source: str | None, worker: _Worker | None) -> tuple[Verdict, _Worker | None]:
        """Grade one exercise on `worker` (a fresh one if it is None or dead); return the verdict and the worker."""
        title = self.titles[pair.exercise_id]
        if source is None:
            return Verdict(pair.exercise_id, title, False, f"no cell defines {', '.join(asked_for(pair))}: keep the "
                                                           "function names of the exercise cell."), worker
        if worker is None or not worker.alive:
            try:
                worker = self._take()
            except GraderError as exc:  # the machine, not the student: say so, and go on with the others
                return Verdict(pair.exercise_id, title, False, f"not graded, grade it again: {exc}"), None
        start = time.perf_counter()
        job = {"exercise": pair.exercise_id, "source": source, "check": pair.check}
        answer = worker.run(job, self.limits.timeout_s)
        seconds = round(time.perf_counter() - start, 2)
        return Verdict(pair.exercise_id, title, answer["passed"], answer["message"], answer.get("checks", []),
                       seconds), worker

    def grade(self, path: str | Path, file: str | None = None) -> SubmissionGrade:
        """Grade one submitted notebook; `file` is the name the gradebook gives it (default: the path)."""
        file = str(path) if file is None else file
        try:
            submission = nbformat.read(path, as_version=4)
            sources = [answer_cell(submission, pair) for pair in self.pairs]
        except Exception as exc:  # not JSON, not a notebook, unreadable: this student's problem only
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return self._failed_all(file, f"the submission is not a notebook that can be read ({type(exc).__name__}"
                                          f"{': ' + reason if reason else ''}); hand in the .ipynb file that Jupyter "
                                          "or Colab saves.")
        verdicts, worker = [], None
        try:
            for pair, source in zip(self.pairs, sources):
                verdict, worker = self._grade_exercise(pair, source, worker)
                verdicts.append(verdict)
        finally:
            if worker is not None:
                worker.close()
        return SubmissionGrade(file, verdicts)

    def grade_all(self, paths: list[Path], names: list[str], jobs: int = 1, on_graded=None) -> list[SubmissionGrade]:
        """Grade several submissions, `jobs` at a time; `on_graded(grade)` is called in order as they finish."""
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            grades = []
            for grade in pool.map(self.grade, paths, names):
                if on_graded is not None:
                    on_graded(grade)
                grades.append(grade)
        return grades

    def close(self) -> None:
        with self._lock:
            worker, self._spare = self._spare, None
        if worker is not None:
            worker.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_submissions(path: str | Path) -> tuple[list[Path], list[str]]:
    """The notebooks to grade (`path`, or every .ipynb under the folder `path`) and their names in the gradebook."""
    path = Path(path)
    if path.is_file():
        return [path], [path.name]
    if not path.is_dir():
        raise GraderError(f"{path} does not exist: give a submitted notebook or a folder of them")
    found = sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not found:
        raise GraderError(f"{path} holds no .ipynb file")
    return found, [p.relative_to(path).as_posix() for p in found]


def gradebook_csv(grades: list[SubmissionGrade], exercise_ids: list[str]) -> str:
    """One row per submission: file, 1 or 0 for each exercise, total.

    The exercise columns are headed "exercise 02.1": a spreadsheet would read a bare "02.1" as the number 2.1.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", *(f"exercise {i}" for i in exercise_ids), "total"])
    for grade in grades:
        passed = {v.exercise_id: int(v.passed) for v in grade.verdicts}
        writer.writerow([grade.file, *(passed[i] for i in exercise_ids), grade.total])
    return out.getvalue()


def gradebook_json(grades: list[SubmissionGrade], grader: Grader) -> str:
    """Every exercise's verdict and message, with the lesson, the limits and the hidden checks used."""
    return json.dumps({
        "lesson": grader.lesson.name,
        "exercises": {i: grader.titles[i] for i in grader.exercise_ids},
        "hidden_checks": grader.hidden_titles,
        "limits": {"timeout_s": grader.limits.timeout_s, "memory_mb": grader.memory_limit_mb},
        "submissions": [{"file": g.file, "total": g.total, "out_of": len(g.verdicts),
                         "exercises": {v.exercise_id: {"verdict": "PASS" if v.passed else "FAIL",
                                                       **{k: x for k, x in asdict(v).items() if k != "exercise_id"}}
                                       for v in g.verdicts}}
                        for g in grades],
    }, indent=1, ensure_ascii=False) + "\n"


def write_gradebook(grades: list[SubmissionGrade], grader: Grader, out_dir: str | Path) -> tuple[Path, Path]:
    """Write gradebook_<lesson>.csv and .json into `out_dir`; return their paths."""
    csv_path = Path(out_dir) / f"gradebook_{grader.lesson.stem}.csv"
    json_path = csv_path.with_name(f"gradebook_{grader.lesson.stem}.json")
    with atomic_write(csv_path, "wb") as handle:
        handle.write(gradebook_csv(grades, grader.exercise_ids).encode("utf-8"))
    with atomic_write(json_path, "wb") as handle:
        handle.write(gradebook_json(grades, grader).encode("utf-8"))
    return csv_path, json_path
