"""The package's layout: one concept per module, each short enough to read in one sitting."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sdlearn"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "exercises" not in p.parts)
MAX_LINES = 400


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_a_sitting(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it by concept"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_holds(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring.split()) >= 5, f"{path.relative_to(PACKAGE)} needs a docstring"


def test_the_package_docstring_lists_every_top_level_module():
    import sdlearn

    listed = {name.split(".")[1] for name in __import__("re").findall(r"`(sdlearn\.[a-z_]+)", sdlearn.__doc__)}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "train")}
    present |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert present - listed == set(), f"modules missing from sdlearn's docstring: {present - listed}"
    assert listed - present == set(), f"sdlearn's docstring lists modules that are not there: {listed - present}"
