"""The built book in a browser: every page opened in headless Chromium with no network.

The book is the one tests/test_book.py builds (execution off, into _build/test-book), served from
127.0.0.1 as GitHub Pages serves it. Every request to another host is aborted, as on a machine
without a network, so the maths must render from the book's own copy of MathJax. Each page must
raise no JavaScript error, find all of its own files and images, and typeset every formula; a
lesson page has its Colab and Binder launch buttons; lesson 14's static guidance slider changes the
picture; the search page finds "guidance". Screenshots go to _build/browser/ for people to look at.

Chromium is Debian's (`make test` installs it as root), driven by Playwright from PyPI; without it
these tests are skipped and say how to install it (the book's build test still runs).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import LESSONS, ROOT
from test_book import build_book

CHROMIUM = Path("/usr/bin/chromium")
HOW_TO_INSTALL = ("Chromium is not installed: as root, `apt-get install chromium` (`make test` does it), "
                  "and Playwright with `pip install -c constraints.txt -e '.[dev]'`")
SCREENSHOTS = ROOT / "_build" / "browser"
SCREENSHOT_PAGES = ("book/intro.html", "lessons/04_forward_process.html", "lessons/14_guidance.html")
SLIDER = "#guidance-slider-14"          # written by lesson 14's html_slider

pytestmark = pytest.mark.slow

# Runs in a page once it has loaded: what a reader would see go wrong.
INSPECT = r"""async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    const own = (src) => src.startsWith(location.origin) || src.startsWith("data:");
    const broken = [...document.images]
        .filter((img) => own(img.currentSrc || img.src) && !(img.complete && img.naturalWidth > 0))
        .map((img) => (img.currentSrc || img.src).slice(0, 120));
    const formulas = [...document.querySelectorAll(".math")];
    const untypeset = formulas.filter((f) => !f.querySelector("mjx-container"))
        .map((f) => f.textContent.trim().slice(0, 80));
    const errors = [...document.querySelectorAll("mjx-merror")].map((e) => e.textContent.slice(0, 80));
    // TeX delimiters left in the text outside code, where a reader sees them
    const raw = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
        acceptNode: (node) => node.parentElement.closest("pre, code, script, style, textarea, mjx-container")
            ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    while (walker.nextNode()) {
        const text = walker.currentNode.textContent;
        if (/\\\(|\\\[|\\begin\{/.test(text)) { raw.push(text.trim().slice(0, 80)); }
    }
    return {broken, formulas: formulas.length, untypeset, errors, raw,
            typeset: document.querySelectorAll("mjx-container").length};
}"""


@dataclass
class Visit:
    """What one page showed in the browser."""
    path: str
    errors: list[str] = field(default_factory=list)           # uncaught exceptions, console errors, 404s
    blocked: list[tuple[str, str]] = field(default_factory=list)   # (resource type, address) aborted
    report: dict = field(default_factory=dict)                # INSPECT's answer
    launch_links: list[str] = field(default_factory=list)     # hrefs in the launch menu, once opened


@dataclass
class Offline:
    """A browser context with no network, and the requests to other hosts it has aborted so far."""
    context: object
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (resource type, address)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(HOW_TO_INSTALL)
    sync_api = pytest.importorskip("playwright.sync_api", reason=HOW_TO_INSTALL)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def html() -> Path:
    """The HTML of the book, even where its build reported a warning (test_book.py fails on that)."""
    result, html = build_book()
    if not (html / "index.html").exists():
        pytest.fail(f"the book did not build: {result.stderr[-2000:]}")
    return html


@pytest.fixture(scope="module")
def site(html) -> str:
    """The built book served on 127.0.0.1 (a free port) for as long as the tests run: its address."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def offline(browser, site) -> Offline:
    """A browser context with no network: every request to a host other than the book's is aborted."""
    offline = Offline(browser.new_context(viewport={"width": 1280, "height": 900}))
    book_host = urlsplit(site).netloc

    def only_the_book(route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == book_host or url.startswith("data:"):
            route.continue_()
        else:
            offline.blocked.append((route.request.resource_type, url))
            route.abort()

    offline.context.route("**/*", only_the_book)
    yield offline
    offline.context.close()


def open_page(offline: Offline, url: str, visit: Visit):
    """A new tab showing `url`, with its errors recorded into `visit`."""
    page = offline.context.new_page()
    book_host = urlsplit(url).netloc

    def uncaught(error) -> None:
        visit.errors.append(f"uncaught: {error}")

    def console(message) -> None:
        # "Failed to load resource" for another host reports a request that only_the_book aborted;
        # for the book's own files, on_response has recorded it.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            visit.errors.append(f"console: {message.text}")

    def on_response(response) -> None:
        if response.status >= 400 and urlsplit(response.url).netloc == book_host:
            visit.errors.append(f"{response.status}: {response.url}")

    page.on("pageerror", uncaught)
    page.on("console", console)
    page.on("response", on_response)
    page.goto(url, wait_until="load")
    return page


def visit_page(offline: Offline, site: str, name: str, screenshots: Path) -> Visit:
    """Open one page of the book and record what it shows."""
    visit = Visit(name)
    offline.blocked.clear()
    page = open_page(offline, site + name, visit)
    visit.report = page.evaluate(INSPECT)
    if name in SCREENSHOT_PAGES:
        page.screenshot(path=screenshots / f"{Path(name).stem}.png")
    launch = page.locator(".dropdown-launch-buttons")
    if launch.count():
        launch.locator("button").click()              # the rocket menu opens: its links become visible
        visit.launch_links = [link.get_attribute("href") for link in launch.locator("a.dropdown-item").all()
                              if link.is_visible()]
    visit.blocked = list(offline.blocked)
    page.close()
    return visit


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """_build/browser, emptied: the screenshots of this run."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.fixture(scope="module")
def visits(offline, site, html, screenshots) -> dict[str, Visit]:
    """Every page of the book, opened once: relative path -> what it showed."""
    names = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html"))
    visits = {}
    for name in names:
        if name.startswith("_") or name == "index.html":  # assets; a redirect (test_the_front_page_...)
            continue
        visits[name] = visit_page(offline, site, name, screenshots)
    return visits


def test_the_front_page_opens_the_books_first_page(offline, site):
    page = offline.context.new_page()
    page.goto(site)
    page.wait_for_url("**/book/intro.html")
    assert page.locator("h1").first.inner_text().strip(), "the first page has no title"
    page.close()


def test_every_page_of_the_book_is_visited(visits):
    lessons = {f"lessons/{path.stem}.html" for path in LESSONS}
    assert lessons <= set(visits), f"lessons missing from the built book: {sorted(lessons - set(visits))}"
    assert {"book/intro.html", "search.html", "book/glossary.html"} <= set(visits)


def test_no_page_raises_a_javascript_error_or_misses_a_file(visits):
    errors = {name: visit.errors for name, visit in visits.items() if visit.errors}
    assert not errors, f"errors in the browser: {errors}"


def test_every_image_of_the_book_loads(visits):
    """The book's own images (files and inline data); pictures from other hosts cannot load offline."""
    broken = {name: visit.report["broken"] for name, visit in visits.items() if visit.report["broken"]}
    assert not broken, f"images that do not load: {broken}"


def test_maths_renders_without_a_network(visits):
    """MathJax comes from the book's own _static/mathjax: every formula typeset, no raw TeX left."""
    with_maths = [visit for visit in visits.values() if visit.report["formulas"]]
    assert len(with_maths) >= 10, "hardly any page has maths: is the check looking at the right elements?"
    asked_for_mathjax = sorted({url for visit in visits.values() for _, url in visit.blocked if "mathjax" in url.lower()})
    assert not asked_for_mathjax, f"pages asked another host for MathJax: {asked_for_mathjax[:3]}"
    problems = {}
    for visit in with_maths:
        report = visit.report
        wrong = {key: report[key] for key in ("untypeset", "errors", "raw") if report[key]}
        if wrong or report["typeset"] < report["formulas"]:
            problems[visit.path] = wrong
    assert not problems, f"formulas left as raw TeX or in error: {problems}"


def test_no_page_needs_code_from_another_host(visits):
    """Offline, a script or a request for data from another host fails; a picture from one (the Colab
    badge) only shows its alt text, and a stylesheet from one (matplotlib's animations link Font
    Awesome 4, whose icons the theme's own Font Awesome draws) changes nothing."""
    needed = {}
    for name, visit in visits.items():
        urls = sorted({url for kind, url in visit.blocked if kind in ("script", "fetch", "xhr", "font")})
        if urls:
            needed[name] = urls
    assert not needed, f"pages that load code or data from another host: {needed}"


def _expected_launch_links(lesson: str) -> tuple[str, str]:
    """The Colab and Binder addresses that _config.yml's repository and launch_buttons give a lesson."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    slug = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)/?", config["repository"]["url"]).group(1)
    branch = config["repository"].get("branch", "main")
    buttons = config["launch_buttons"]
    colab = f"{buttons['colab_url'].rstrip('/')}/github/{slug}/blob/{branch}/lessons/{lesson}.ipynb"
    binder = f"{buttons['binderhub_url'].rstrip('/')}/v2/gh/{slug}/{branch}?urlpath=tree/lessons/{lesson}.ipynb"
    return colab, binder


def test_every_lesson_page_has_colab_and_binder_launch_buttons(visits):
    missing = {}
    for path in LESSONS:
        visit = visits.get(f"lessons/{path.stem}.html")
        if visit is None:                             # not in the book: test_every_page_of_the_book_is_visited
            continue
        absent = [link for link in _expected_launch_links(path.stem) if link not in visit.launch_links]
        if absent:
            missing[path.stem] = absent
    assert not missing, f"launch buttons missing from the page header's launch menu: {missing}"


def test_the_static_guidance_slider_changes_the_picture(offline, site, screenshots):
    visit = Visit("lessons/14_guidance.html")
    page = open_page(offline, site + visit.path, visit)
    slider = page.locator(SLIDER)
    assert slider.count() == 1, f"lesson 14 has no {SLIDER}"
    slider.scroll_into_view_if_needed()
    shown = slider.locator("img:visible")
    assert shown.count() == 1, "the slider should show exactly one picture"
    before, label_before = shown.get_attribute("src"), slider.locator("span").inner_text()
    slider.screenshot(path=screenshots / "guidance_slider_before.png")
    slider.locator("input[type=range]").focus()
    page.keyboard.press("Home")                       # as a reader would: down to the lowest guidance scale
    assert shown.count() == 1, "the slider should show exactly one picture"
    after, label_after = shown.get_attribute("src"), slider.locator("span").inner_text()
    slider.screenshot(path=screenshots / "guidance_slider_after.png")
    assert label_after != label_before, "the slider's label did not change"
    assert after != before, "moving the slider did not change the picture"
    assert not visit.errors, visit.errors
    page.close()


def test_search_finds_guidance(offline, site, screenshots):
    visit = Visit("search.html")
    page = open_page(offline, site + "search.html?q=guidance", visit)
    page.locator("#search-results ul.search li").first.wait_for(timeout=20_000)
    page.screenshot(path=screenshots / "search_guidance.png")
    found = [link.get_attribute("href") for link in page.locator("#search-results ul.search li > a").all()]
    assert any("lessons/14_guidance" in href for href in found), f"the search for 'guidance' found {found[:10]}"
    assert not visit.errors, visit.errors
    page.close()
