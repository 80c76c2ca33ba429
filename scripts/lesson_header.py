"""Write the repository address from _config.yml into the lessons' badges and install cells, and README's badges.

    python scripts/lesson_header.py          # rewrite lessons/*.ipynb in place
    python scripts/lesson_header.py --check  # exit 1 if any lesson disagrees with _config.yml

The address is set in one place, `repository.url` and `repository.branch` in _config.yml.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sdlearn.utils import atomic_write  # noqa: E402

BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+")
INSTALL = re.compile(r'"sdlearn @ git\+[^"]+"')


def repository() -> tuple[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", url)
    if match is None:
        raise SystemExit(f"repository.url in _config.yml must be https://github.com/OWNER/NAME, got {url}")
    return match.group(1), config["repository"].get("branch", "main")


def expected_sources(path: Path) -> tuple[str, str]:
    slug, branch = repository()
    badge = f"https://colab.research.google.com/github/{slug}/blob/{branch}/lessons/{path.name}"
    install = f'"sdlearn @ git+https://github.com/{slug}@{branch}"'
    return badge, install


def sync(path: Path, write: bool) -> bool:
    """Return True if the lesson already agrees with _config.yml."""
    nb = nbformat.read(path, as_version=4)
    badge, install = expected_sources(path)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    install_cell = next(c for c in nb.cells if "colab-install" in c.metadata.get("tags", []))
    new_md = BADGE.sub(badge, first_md.source)
    new_install = INSTALL.sub(install, install_cell.source)
    ok = (new_md == first_md.source and new_install == install_cell.source
          and badge in first_md.source and install in install_cell.source)
    if write and not ok:
        first_md.source, install_cell.source = new_md, new_install
        with atomic_write(path, "w") as handle:
            nbformat.write(nb, handle)
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
    args = parser.parse_args()
    bad = [p for p in sorted((ROOT / "lessons").glob("*.ipynb")) if not sync(p, write=not args.check)]
    if not sync_readme(write=not args.check):
        bad.append(ROOT / "README.md")
    for path in bad:
        print(f"{'disagrees' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
