"""python -m sdlearn.exercises {student,instructor} LESSON.ipynb ... --out DIR
python -m sdlearn.exercises grade SUBMISSION.ipynb|FOLDER --lesson LESSON.ipynb [--hidden CHECKS.py] [--out DIR]"""

from __future__ import annotations

import argparse
import os
import sys

from sdlearn.exercises.notebook import ExerciseFormatError, write_versions


def _grade_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sdlearn.exercises grade",
        description="Grade submitted notebooks with the reference lesson's checks, each submission in a process of "
                    "its own with a time limit per exercise, and write a gradebook (CSV and JSON). Exits with 1 "
                    "when any exercise fails, 2 when the grader cannot run.")
    parser.add_argument("submissions", help="a student's notebook, or a folder of them (searched recursively)")
    parser.add_argument("--lesson", required=True, help="the reference lesson notebook (with solutions)")
    parser.add_argument("--hidden", action="append", default=[], metavar="CHECKS.py",
                        help="a file of instructor-only checks (@hidden_check, sdlearn.exercises.hidden); repeatable")
    parser.add_argument("--out", default=".", metavar="DIR",
                        help="where to write gradebook_LESSON.csv and .json (default: the current folder)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="time limit of one exercise (default: 60)")
    parser.add_argument("--memory-mb", type=int, default=4096, metavar="MB",
                        help="memory one submission may use, enforced on Linux (default: 4096; 0: no limit)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time (default: 1)")
    parser.add_argument("--exit-zero", action="store_true",
                        help="exit with 0 even when exercises fail (for scripts that only want the report)")
    return parser


def grade_main(argv) -> int:
    from sdlearn.exercises.grading import Grader, GraderError, Limits, find_submissions, write_gradebook

    args = _grade_parser().parse_args(argv)
    if args.timeout <= 0 or args.jobs < 1 or args.memory_mb < 0:
        print("error: --timeout must be positive, --jobs at least 1 and --memory-mb 0 or more", file=sys.stderr)
        return 2
    single = not os.path.isdir(args.submissions)

    def report(grade) -> None:
        if not single:
            print(f"{grade.file}: {grade.total} of {len(grade.verdicts)}")
        for verdict in grade.verdicts:
            print(("    " if not single else "") + repr(verdict), flush=True)

    try:
        paths, names = find_submissions(args.submissions)
        with Grader(args.lesson, hidden=args.hidden, limits=Limits(args.timeout, args.memory_mb)) as grader:
            grades = grader.grade_all(paths, names, jobs=args.jobs, on_graded=report)
            csv_path, json_path = write_gradebook(grades, grader, args.out)
    except GraderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    passed = sum(g.total for g in grades)
    failed = sum(len(g.verdicts) for g in grades) - passed
    print(f"gradebook: {csv_path} and {json_path}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 or args.exit_zero else 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grade"]:
        return grade_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m sdlearn.exercises",
        description="Write the student copy (solutions replaced by stubs, checks kept) or the "
                    "instructor copy (solutions and outputs) of lesson notebooks.")
    parser.add_argument("version", choices=["student", "instructor"], help="which copy to write")
    parser.add_argument("notebooks", nargs="+", help="lesson notebooks (.ipynb)")
    parser.add_argument("--out", required=True, help="directory for the copies (created if missing)")
    args = parser.parse_args(argv)
    try:
        written = write_versions(args.notebooks, args.out, args.version)
    except (ExerciseFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
