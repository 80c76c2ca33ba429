"""python -m sdlearn.exercises {student,instructor} LESSON.ipynb ... --out DIR"""

from __future__ import annotations

import argparse
import sys

from sdlearn.exercises.notebook import ExerciseFormatError, write_versions


def main(argv=None) -> int:
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
