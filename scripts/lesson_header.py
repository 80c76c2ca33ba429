"""Write the repository address from _config.yml into the lessons' launch links and install cells, and README's badges.

    python scripts/lesson_header.py          # rewrite lessons/*.ipynb in place
    python scripts/lesson_header.py --check  # exit 1 if any lesson disagrees with _config.yml
    python scripts/lesson_header.py lessons/20_*.ipynb   # only the lessons named

The address is set in one place, `repository.url` and `repository.branch` in _config.yml. The
first line of a lesson's first markdown cell is written here, whole: the Colab badge of the lesson
and a link that opens its student copy (`student/`, written by `make student`) in Colab. A lesson
without that line (a new one) gets it on top of its first markdown cell.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sdlearn.utils import atomic_write  # noqa: E402

COLAB = "https://colab.research.google.com"
BADGE_IMAGE = f"{COLAB}/assets/colab-badge.svg"
STUDENT_FOLDER = "student"  # the committed student copies; `make student` writes them
INSTALL = re.compile(r'"sdlearn @ git\+[^"]+"')


def repository() -> tuple[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", url)
    if match is None:
        raise SystemExit(f"repository.url in _config.yml must be https://github.com/OWNER/NAME, got {url}")
    return match.group(1), config["repository"].get("branch", "main")


def launch_line(name: str) -> str:
    """The first line of lesson `name`'s first markdown cell: its Colab badge and its student copy's link."""
    slug, branch = repository()
    lesson = f"{COLAB}/github/{slug}/blob/{branch}/lessons/{name}"
    student = f"{COLAB}/github/{slug}/blob/{branch}/{STUDENT_FOLDER}/{name}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({lesson}) · [Open the exercises (student copy) in Colab]({student})"


def expected_install() -> str:
    slug, branch = repository()
    return f'"sdlearn @ git+https://github.com/{slug}@{branch}"'


def with_launch_line(source: str, name: str) -> str:
    """`source` (a first markdown cell) with its launch line replaced, or put on top when it has none."""
    lines = source.split("\n")
    found = next((i for i, line in enumerate(lines) if BADGE_IMAGE in line or f"{COLAB}/github/" in line), None)
    if found is None:
        return "\n".join([launch_line(name), "", *lines])
    return "\n".join([*lines[:found], launch_line(name), *lines[found + 1:]])


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _set_source(cell: dict, source: str) -> None:
    """Set a cell's source in the form the notebook stores it (one string, or a list of lines)."""
    cell["source"] = source.splitlines(keepends=True) if isinstance(cell["source"], list) else source


def sync(path: Path, write: bool) -> bool:
    """Return True if the lesson already agrees with _config.yml.

    Only the first markdown cell and the install cell change; the notebook is rewritten as nbformat
    writes it (sorted keys, indent 1) but with every other cell kept as stored, so the diff is theirs.
    """
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    first_md = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    install_cell = next((c for c in nb["cells"] if "colab-install" in c.get("metadata", {}).get("tags", [])), None)
    if first_md is None or install_cell is None:
        raise SystemExit(f"{path.name}: a lesson opens with a markdown cell (title and goals) and a code cell "
                         "tagged 'colab-install'; add them, then run this script again")
    install = expected_install()
    new_md = with_launch_line(_source(first_md), path.name)
    new_install = INSTALL.sub(install, _source(install_cell))
    ok = new_md == _source(first_md) and new_install == _source(install_cell) and install in new_install
    if write and not ok:
        _set_source(first_md, new_md)
        _set_source(install_cell, new_install)
        with atomic_write(path, "wb") as handle:
            handle.write((json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return ok


def sync_readme(write: bool) -> bool:
    """README.md's badges point at the same repository and branch."""
    slug, branch = repository()
    readme = ROOT / "README.md"
    text = readme.read_text()
    fixed = re.sub(r"https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/",
                   f"https://colab.research.google.com/github/{slug}/blob/{branch}/", text)
    if write and fixed != text:
        with atomic_write(readme, "w") as handle:
            handle.write(fixed)
    return fixed == text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report lessons that disagree")
    parser.add_argument("lessons", nargs="*", type=Path, help="the lessons to sync (default: every lessons/*.ipynb)")
    args = parser.parse_args()
    lessons = args.lessons or sorted((ROOT / "lessons").glob("*.ipynb"))
    bad = [p.resolve() for p in lessons if not sync(p, write=not args.check)]
    if not sync_readme(write=not args.check):
        bad.append(ROOT / "README.md")
    for path in bad:
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{'disagrees' if args.check else 'updated'}: {shown}")
    if args.check and bad:
        print("run `python scripts/lesson_header.py` to rewrite them from _config.yml")
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
