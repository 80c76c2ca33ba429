"""A Sphinx extension that writes each inline <script> once per page.

Sphinx 7.4 writes an inline script (`app.add_js_file(None, body=...)`) twice when an extension adds
it after the builder has started: once as the extension added it and once more from the registry,
where its missing file name has become "" and so no longer equals None. sphinx-thebe adds
`const THEBE_JS_URL = ...` that way, and the second copy raises "Identifier 'THEBE_JS_URL' has
already been declared" on every page of the book (tests/test_browser.py catches it). Removing the
repeats before each page is written fixes that; scripts loaded from files are left as they are.
"""

from __future__ import annotations

from sphinx.application import Sphinx


def _key(script) -> tuple:
    """What makes two scripts the same, reading a missing file name as ""."""
    attributes = getattr(script, "attributes", {})
    return getattr(script, "filename", script) or "", getattr(script, "priority", 0), tuple(sorted(attributes.items()))


def drop_repeated_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    kept = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept          # the page's own copy of the list: the builder's stays as it is


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
