"""python -m sdlearn.exercises {student,instructor} LESSON.ipynb ... --out DIR
python -m sdlearn.exercises grade SUBMISSION.ipynb --lesson LESSON.ipynb"""

from __future__ import annotations

import argparse
import sys

import nbformat

from sdlearn.exercises.notebook import ExerciseFormatError, grade, write_versions


def grade_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdlearn.exercises grade",
                                     description="Grade a submitted notebook with the reference lesson's checks.")
    parser.add_argument("submission", help="the student's notebook")
    parser.add_argument("--lesson", required=True, help="the reference lesson notebook (with solutions)")
    args = parser.parse_args(argv)
    results = grade(nbformat.read(args.submission, as_version=4), nbformat.read(args.lesson, as_version=4))
    for result in results:
        print(repr(result))
    passed = sum(r.passed for r in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0


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
