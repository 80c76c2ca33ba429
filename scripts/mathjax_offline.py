"""A Sphinx extension that serves MathJax from the book's own static files, so that the maths renders offline.

_config.yml loads it (`sphinx.local_extensions`) and sets `mathjax_path: mathjax/tex-chtml.js`. After
an HTML build, the extension copies into `_static/mathjax/` the MathJax component that mathjax_path
names, its web fonts and the TeX extensions MathJax loads on demand (`\\boldsymbol`, `\\cancel`, ...):
about 2.4 MB, from MathJax 3.2.2 as the PyPI package sphinx-mathjax-offline ships it (pinned in
constraints.txt, installed by `make setup`). Nothing is fetched from a network when the book is read.
A mathjax_path that is a web address (https://...) is left alone and nothing is copied.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

DISTRIBUTION = "sphinx-mathjax-offline"
PACKAGED = "sphinx-mathjax-offline/static/mathjax"    # MathJax's es5 folder inside that distribution
FOLDER = "mathjax"                                   # under the book's _static
# What the combined component loads at run time, relative to its own folder.
ON_DEMAND = ("output/chtml/fonts/woff-v2", "input/tex/extensions")


def mathjax_source() -> Path:
    """MathJax's es5 folder, as the pinned PyPI package installed it."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ExtensionError(f"MathJax is not installed: the book serves it from the PyPI package {DISTRIBUTION}. "
                             f"Run `make setup`, or `pip install -c constraints.txt -e '.[dev]'`.") from None
    source = Path(distribution.locate_file(PACKAGED))
    if not (source / "tex-chtml.js").is_file():
        raise ExtensionError(f"{DISTRIBUTION} {distribution.version} has no {PACKAGED}/tex-chtml.js; "
                             f"install the version pinned in constraints.txt.")
    return source


def component(mathjax_path: str) -> str | None:
    """The component file that mathjax_path names under _static/mathjax/, or None for a web address."""
    if "://" in mathjax_path or mathjax_path.startswith("/"):
        return None
    folder, _, name = mathjax_path.partition("/")
    if folder != FOLDER or "/" in name or not name.endswith(".js"):
        raise ExtensionError(f"mathjax_path is {mathjax_path!r}; with the mathjax_offline extension it must be "
                             f"{FOLDER}/COMPONENT.js (e.g. {FOLDER}/tex-chtml.js) or a web address.")
    return name


def check_config(app: Sphinx) -> None:
    """Fail before the build, not after it, when MathJax or its component is missing."""
    name = component(app.config.mathjax_path)
    if name is not None and not (mathjax_source() / name).is_file():
        raise ExtensionError(f"mathjax_path names {name}, which {DISTRIBUTION} does not ship")


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Copy the component, its fonts and the TeX extensions into the built book's _static/mathjax."""
    name = component(app.config.mathjax_path)
    if exception is not None or app.builder.format != "html" or name is None:
        return
    source = mathjax_source()
    target = Path(app.outdir) / "_static" / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / name, target / name)
    for part in ON_DEMAND:
        shutil.copytree(source / part, target / part, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", check_config)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
