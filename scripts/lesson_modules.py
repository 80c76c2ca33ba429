"""Write the "lessons and the modules they use" table of book/intro.md from the lessons' own imports.

    python scripts/lesson_modules.py          # rewrite the table in book/intro.md
    python scripts/lesson_modules.py --check  # exit 1 if the table disagrees with the lessons

A lesson's modules are the `sdlearn` modules its code cells import, in the order they first
appear; `from sdlearn import weights` counts as `sdlearn.weights`.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTRO = ROOT / "book" / "intro.md"
BEGIN, END = "<!-- lesson modules: begin -->", "<!-- lesson modules: end -->"


def lesson_modules(path: Path) -> list[str]:
    """The sdlearn modules a lesson's code imports, in order of first appearance."""
    cells = json.loads(path.read_text())["cells"]
    modules: list[str] = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            found = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sdlearn":
                if node.module == "sdlearn":
                    found = [f"sdlearn.{alias.name}" for alias in node.names]
                else:
                    found = [node.module]
            elif isinstance(node, ast.Import):
                found = [alias.name for alias in node.names if alias.name.startswith("sdlearn.")]
            modules += [m for m in found if m not in modules]
    return modules


def table() -> str:
    rows = ["| lesson | modules |", "| --- | --- |"]
    for path in sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        title = next(line for line in "".join(cells[0]["source"]).splitlines() if line.startswith("# "))
        name = title[2:].split("·", 1)[-1].strip()
        rows.append(f"| {path.name[:2]} {name} | " + ", ".join(f"`{m}`" for m in lesson_modules(path)) + " |")
    return "\n".join(rows)


def rewritten(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{INTRO} has no {BEGIN} ... {END} markers around the table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if book/intro.md is out of date")
    args = parser.parse_args(argv)
    text = INTRO.read_text()
    new = rewritten(text)
    if args.check:
        if new != text:
            print("book/intro.md's lesson-module table is out of date: run python scripts/lesson_modules.py")
            return 1
        return 0
    if new != text:
        sys.path.insert(0, str(ROOT))
        from sdlearn.utils import atomic_write

        with atomic_write(INTRO, "w") as handle:
            handle.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
