"""The page of `deepvision serve`: `web.page` rendered on its own, then the real server driven
by Debian's chromium through Selenium, with JavaScript (upload, drop, paste, a phone-width
screen) and without it (the multipart form and the server-rendered grid).

The browser tests build a real index of the shipped photos (plus one file with a hostile name)
and skip cleanly where chromium, chromedriver, selenium or the serve extra are missing; nothing
is downloaded.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli

from deepvision.output import web
from deepvision.output.console import safe_text

STATIC = REPO / "deepvision" / "output" / "static"
QUERY = REPO / "that_one_image" / "coffee_cup__third_q30.jpg"
WAIT = 60.0  # seconds: one search on a busy 2-core machine, thumbnails included
HOSTILE = "<img src=x onerror=alert(1)> \"q\" 'a' \x1b[31m<script>.png"

STATS: dict[str, Any] = {
    "index": "/srv/indexes/photos", "files": 1234, "vectors": 1200, "failed": 0,
    "model": "efficientnet-lite0", "dim": 1280, "index_type": "flat",
    "updated": "2026-01-02T03:04:05+00:00", "created": "2026-01-01T00:00:00+00:00",
}


def search_doc(*paths: str, query: str = "holiday.jpg", copies: int | None = None
               ) -> dict[str, Any]:
    """A search document; the first `copies` results (default: all) are matches."""
    copies = len(paths) if copies is None else copies
    matches = [{"rank": i, "path": p, "score": 1.0 - i / 10, "id": 40 + i, "match": i <= copies}
               for i, p in enumerate(paths, start=1)]
    return {"index": STATS["index"], "model": STATS["model"],
            "queries": [{"query": query, "error": None, "matches": matches}]}


# --------------------------------------------------------------------------- a small DOM


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        return [n for n in self.walk() if n.tag == tag and (cls is None or cls in n.classes)]

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.walk() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id={ident!r}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(document: str) -> Node:
    builder = _Builder()
    builder.feed(document)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


# --------------------------------------------------------------------------- web.page, no server


def test_header_names_the_index_model_files_and_update() -> None:
    dom = parse(web.page(STATS))
    assert dom.find_all("h1")[0].text == "photos"
    header = dom.find_all("header")[0].text
    assert "efficientnet-lite0" in header and "1234" in header
    assert "2026-01-02 03:04 UTC" in header
    assert dom.find_all("time")[0].attrs["datetime"] == STATS["updated"]
    assert "1234" in dom.by_id("status").text


def test_form_works_without_javascript() -> None:
    dom = parse(web.page(STATS))
    form = dom.by_id("search")
    assert form.tag == "form"
    assert (form.attrs["method"], form.attrs["action"], form.attrs["enctype"]) == (
        "post", "/", "multipart/form-data")
    image = dom.by_id("image")
    assert image in list(form.walk())
    assert (image.tag, image.attrs["type"], image.attrs["name"], image.attrs["accept"]) == (
        "input", "file", "image", "image/*")
    submit = dom.by_id("submit")
    assert submit in list(form.walk()) and submit.attrs["type"] == "submit"
    assert dom.by_id("results").children == []
    assert dom.by_id("status").attrs["role"] == "status"


def test_no_inline_script_or_style_anywhere() -> None:
    """The CSP allows only 'self': an inline script, style or handler would be refused."""
    document = web.page(STATS, result=search_doc("/a/b.jpg"), error=None)
    dom = parse(document)
    scripts = dom.find_all("script")
    assert [(s.attrs.get("src"), "defer" in s.attrs, s.text) for s in scripts] == [
        ("/static/app.js", True, "")]
    assert [link.attrs["href"] for link in dom.find_all("link")
            if link.attrs.get("rel") == "stylesheet"] == ["/static/app.css"]
    assert not dom.find_all("style")
    for node in dom.walk():
        assert "style" not in node.attrs, node
        assert not [a for a in node.attrs if a.startswith("on")], node
    ids = [n.attrs["id"] for n in dom.walk() if "id" in n.attrs]
    assert len(ids) == len(set(ids))


def test_results_are_rendered_with_the_hooks() -> None:
    paths = ["/photos/cups/coffee_cup.jpg", "/photos/b.png", "/photos/c d.webp"]
    dom = parse(web.page(STATS, result=search_doc(*paths)))
    figures = dom.by_id("results").find_all("figure", "match")
    assert [f.attrs["data-rank"] for f in figures] == ["1", "2", "3"]
    for rank, (figure, path) in enumerate(zip(figures, paths, strict=True), start=1):
        caption = figure.find_all("figcaption")[0].text
        assert path in caption
        assert f"{1.0 - rank / 10:.4f}" in caption
        ident = 40 + rank
        assert figure.find_all("a")[0].attrs["href"] == f"/api/images/{ident}"
        assert figure.find_all("img")[0].attrs["src"] == f"/api/images/{ident}/thumbnail"
        assert figure.find_all("span", "rank")[0].text == str(rank)
    assert dom.by_id("status").text == "3 matches for holiday.jpg"
    assert dom.by_id("status").attrs["data-state"] == "done"


def test_a_hostile_file_name_is_text_everywhere() -> None:
    stats = {**STATS, "index": f"/srv/{HOSTILE}", "model": HOSTILE, "updated": HOSTILE}
    document = web.page(stats, result=search_doc(f"/d/{HOSTILE}", query=HOSTILE))
    assert document.count("<script") == 1  # ours, with a src
    assert "<img src=x" not in document and "\x1b" not in document
    assert "&lt;img src=x onerror=alert(1)&gt;" in document
    assert "&quot;q&quot;" in document and "&#x27;a&#x27;" in document
    dom = parse(document)
    shown = safe_text(HOSTILE)
    assert "\\x1b[31m" in shown
    caption = dom.find_all("figcaption")[0]
    assert f"/d/{shown}" in caption.text
    assert caption.find_all("span", "path")[0].attrs["title"] == f"/d/{shown}"
    assert dom.find_all("h1")[0].text == shown
    assert shown in dom.by_id("status").text
    assert [n for n in dom.walk() if n.tag == "img" and n.attrs.get("src") == "x"] == []


def test_an_id_that_is_not_an_integer_names_no_url() -> None:
    doc = search_doc("/a/one.jpg", "/a/two.jpg")
    doc["queries"][0]["matches"][0]["id"] = '1" onerror="alert(1)'
    doc["queries"][0]["matches"][1]["id"] = True
    dom = parse(web.page(STATS, result=doc))
    assert not dom.by_id("results").find_all("img")
    assert not dom.by_id("results").find_all("a")
    assert len(dom.by_id("results").find_all("div", "missing")) == 2


def test_an_error_is_shown_in_the_status_line() -> None:
    error = {"error": "not-an-image", "message": "holiday.txt is not an image <b>(PNG?)</b>"}
    dom = parse(web.page(STATS, error=error))
    status = dom.by_id("status")
    assert status.text == error["message"]
    assert status.attrs["data-state"] == "error"
    assert dom.by_id("results").children == []
    assert dom.by_id("search").tag == "form"  # the next try is one click away
    no_message = parse(web.page(STATS, error={"error": "too-large", "message": ""}))
    assert "too-large" in no_message.by_id("status").text


def test_a_failed_query_and_no_matches() -> None:
    failed = search_doc()
    failed["queries"][0]["error"] = "truncated \x1b file"
    dom = parse(web.page(STATS, result=failed))
    assert dom.by_id("status").attrs["data-state"] == "error"
    assert "truncated \\x1b file" in dom.by_id("status").text
    empty = parse(web.page(STATS, result=search_doc()))
    assert empty.by_id("status").text == "No matches for holiday.jpg"
    assert empty.by_id("results").children == []
    blank = parse(web.page({**STATS, "files": 0}))
    assert "empty" in blank.by_id("status").text


def test_static_files_are_there_and_use_no_network() -> None:
    script = (STATIC / "app.js").read_text()
    css = (STATIC / "app.css").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink
    assert "/api/search?k=" in script and "FormData" in script
    for text in (script, css):
        assert "http://" not in text and "https://" not in text and "@import" not in text
    assert "repeat(auto-fill, minmax(160px, 1fr))" in css
    assert "color-scheme: light dark" in css and ":focus-visible" in css


def verified_doc() -> dict[str, Any]:
    """Two verified matches with boxes and points, then three other similar images."""
    doc = search_doc(*(f"/p/{n}.jpg" for n in "abcde"), copies=2)
    for m in doc["queries"][0]["matches"][:2]:
        m.update(verified=True, inliers=42, verified_score=0.9, query_box=[0.1, 0.2, 0.6, 0.7],
                 match_box=[0.25, 0.25, 0.75, 0.75],
                 points=[[0.2, 0.3, 0.3, 0.35], [0.5, 0.6, 0.6, 0.65]])
    doc["queries"][0]["matches"][2]["verified"] = False
    return doc


def test_matches_come_first_and_the_similar_images_are_folded() -> None:
    dom = parse(web.page(STATS, result=verified_doc()))
    assert dom.by_id("status").text == "2 matches for holiday.jpg"
    results = dom.by_id("results")
    top = [n for n in results.children if isinstance(n, Node) and n.tag == "figure"]
    assert [f.attrs["data-rank"] for f in top] == ["1", "2"]
    assert all(f.attrs["data-match"] == "true" for f in top)
    similar = dom.by_id("similar")
    assert similar.tag == "details" and "open" not in similar.attrs
    assert similar.find_all("summary")[0].text == "3 other similar images"
    folded = similar.find_all("figure", "match")
    assert [f.attrs["data-rank"] for f in folded] == ["3", "4", "5"]
    assert [f.attrs["data-verified"] for f in folded] == ["false", "unknown", "unknown"]
    assert dom.by_id("show-points").attrs["type"] == "checkbox"


def test_a_verified_match_is_marked_and_its_box_drawn() -> None:
    dom = parse(web.page(STATS, result=verified_doc()))
    first = dom.by_id("results").find_all("figure", "match")[0]
    assert first.attrs["data-verified"] == "true"
    assert "verified" in first.find_all("span", "verified")[0].text
    assert "42 matched points" in first.find_all("span", "verified")[0].attrs["title"]
    (rect,) = first.find_all("rect", "box")
    assert [rect.attrs[k] for k in ("x", "y", "width", "height")] == \
        ["0.2500", "0.2500", "0.5000", "0.5000"]
    circles = first.find_all("circle")
    assert [(c.attrs["cx"], c.attrs["cy"]) for c in circles] == [("0.3000", "0.3500"),
                                                                ("0.6000", "0.6500")]
    assert not dom.by_id("similar").find_all("svg")  # nothing checked, nothing drawn


def test_no_match_leaves_the_similar_images_open() -> None:
    dom = parse(web.page(STATS, result=search_doc("/a/1.jpg", "/a/2.jpg", copies=0)))
    assert dom.by_id("status").text == "No matches for holiday.jpg"
    assert "open" in dom.by_id("similar").attrs
    assert dom.by_id("similar").find_all("summary")[0].text == "2 other similar images"
    assert not [n for n in dom.walk() if n.attrs.get("id") == "show-points"]


@pytest.mark.parametrize("box", [[0.5, 0.5, 0.2, 0.2], [0, 0, 2, 1], ["0", 0, 1, 1],
                                 [True, 0, 1, 1], [0, 0, 1], "0,0,1,1", None])
def test_a_box_that_is_not_four_fractions_draws_nothing(box: object) -> None:
    doc = search_doc("/a/1.jpg")
    doc["queries"][0]["matches"][0].update(verified=True, match_box=box,
                                           points=[[0, 0, 5, 0.5], ["x", 0, 0, 0]])
    dom = parse(web.page(STATS, result=doc))
    assert not dom.by_id("results").find_all("svg")
    assert dom.find_all("a", "thumb")  # the picture itself is still there


# --------------------------------------------------------------------------- the real browser


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the shipped photos and one generated file with a hostile name."""
    for module in ("fastapi", "uvicorn", "multipart"):
        pytest.importorskip(module, reason="the serve extra is not installed")
    from PIL import Image, ImageDraw

    base = tmp_path_factory.mktemp("page")
    photos = base / "photos"
    shutil.copytree(REPO / "bulk_images", photos)
    stripes = Image.new("RGB", (96, 64), "white")
    draw = ImageDraw.Draw(stripes)
    for x in range(0, 96, 12):
        draw.rectangle((x, 0, x + 5, 63), fill=(20, 160, 60))
    stripes.save(photos / HOSTILE)
    idx = base / "idx"
    res = run_cli("index", photos, "--index-dir", idx, "--model", "efficientnet-lite0",
                  "--workers", "0", timeout=300)
    assert res.exit_code == 0, res.stderr
    return idx


@pytest.fixture(scope="module")
def server(photo_index: Path) -> Iterator[str]:
    """The real `deepvision serve` on a free port: its base URL (SIGTERM at the end)."""
    from serve_helpers import serving

    with serving("--index-dir", photo_index, "--port", "0", "--workers", "0") as running:
        yield running.url


Browser = Callable[..., Any]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """browser(javascript=True, width=None): a headless chromium; every one quit at the end."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromedriver are not installed")
    drivers: list[Any] = []

    def start(javascript: bool = True, width: int | None = None) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900"):
            options.add_argument(arg)
        if not javascript:
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        drivers.append(driver)
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        if width is not None:  # headless windows are at least 500 px wide: emulate a phone
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        return driver

    try:
        yield start
    finally:
        for driver in drivers:
            driver.quit()


def page_wait(driver: Any, timeout: float = WAIT) -> Any:
    """A WebDriverWait that polls on through a page being replaced: a form submitted without
    JavaScript navigates, and an element found just before the new page arrives is stale when
    it is read (seen in CI); the next poll finds it on the new page."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException))


def wait_for_matches(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    def ready(d: Any) -> list[Any] | bool:
        if d.find_element(By.ID, "status").get_attribute("data-state") == "error":
            pytest.fail(f"the page shows an error: {d.find_element(By.ID, 'status').text}")
        return d.find_elements(By.CSS_SELECTOR, "#results figure.match") or False

    return page_wait(driver).until(ready)


def caption(figure: Any) -> str:
    from selenium.webdriver.common.by import By

    return figure.find_element(By.TAG_NAME, "figcaption").get_attribute("textContent")


def console_problems(driver: Any) -> list[str]:
    """Errors in the browser console: a CSP refusal, a script error, a failed load."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]


SHOWN_IMAGES_LOADED = """
return [...document.images]
  .filter(i => !i.hidden && i.checkVisibility()  // not in a closed <details>
          && i.getBoundingClientRect().top < window.innerHeight)
  .every(i => i.complete && i.naturalWidth > 0);
"""


def images_in_view_loaded(driver: Any) -> None:
    """Every image on screen decoded (the thumbnails below the fold load lazily)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT, poll_frequency=0.2).until(
        lambda d: d.execute_script(SHOWN_IMAGES_LOADED))


def keep(driver: Any, tmp_path: Path, name: str) -> Path:
    """A screenshot under tmp_path, copied to $DEEPVISION_ARTIFACTS when that is set."""
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot)), "no screenshot"
    if os.environ.get("DEEPVISION_ARTIFACTS"):
        target = Path(os.environ["DEEPVISION_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / name)
    return shot


def assert_hostile_name_is_text(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    shown = safe_text(HOSTILE)
    names = [f.find_element(By.CSS_SELECTOR, ".name").get_attribute("textContent")
             for f in driver.find_elements(By.CSS_SELECTOR, "figure.match")]
    assert shown in names, names
    assert driver.execute_script(
        "return document.querySelectorAll('[onerror], img[src=\"x\"], #results script').length"
    ) == 0


@pytest.mark.slow
def test_upload_with_javascript_shows_the_cup_first(server: str, browser: Browser,
                                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser()
    driver.get(server + "/")
    assert driver.find_element(By.ID, "status").text
    driver.find_element(By.ID, "image").send_keys(str(QUERY))
    figures = wait_for_matches(driver)
    assert "coffee_cup.jpg" in caption(figures[0])
    assert figures[0].get_attribute("data-rank") == "1"
    status = driver.find_element(By.ID, "status").text
    assert re.fullmatch(r"\d+ match(es)? in \d+ ms|No matches \(\d+ ms\)", status), status
    assert driver.current_url.rstrip("/") == server  # no reload: the fetch did it
    preview = driver.find_element(By.ID, "preview")
    assert preview.is_displayed() and preview.get_attribute("src").startswith("blob:")
    assert len(figures) == 22  # k=24 over 21 photos and the hostile one
    assert_hostile_name_is_text(driver)
    images_in_view_loaded(driver)
    keep(driver, tmp_path, "serve_page.png")
    assert console_problems(driver) == []


@pytest.mark.slow
def test_without_javascript_the_form_posts_and_the_server_renders(server: str, browser: Browser,
                                                                  tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(javascript=False)
    driver.get(server + "/")
    driver.find_element(By.ID, "image").send_keys(str(QUERY))
    driver.find_element(By.ID, "submit").click()
    figures = wait_for_matches(driver)
    assert "coffee_cup.jpg" in caption(figures[0])
    assert driver.find_element(By.ID, "status").text.endswith(f"for {QUERY.name}")
    assert not driver.find_element(By.ID, "preview").is_displayed()  # app.js never ran
    assert_hostile_name_is_text(driver)
    images_in_view_loaded(driver)
    keep(driver, tmp_path, "serve_page_nojs.png")
    assert console_problems(driver) == []


DROP = """
const [data, name, how, done] = arguments;
const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
if (how === "drop") {
  for (const type of ["dragenter", "dragover", "drop"]) {
    document.body.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                     cancelable: true}));
  }
} else {
  document.body.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer,
                                                           bubbles: true, cancelable: true}));
}
done(document.body.classList.contains("dragging"));
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["drop", "paste"])
def test_a_dropped_or_pasted_image_is_searched(server: str, browser: Browser, how: str) -> None:
    driver = browser()
    driver.get(server + "/")
    query = REPO / "that_one_image" / "chelsea_cat__crop70.jpg"
    data = base64.b64encode(query.read_bytes()).decode()
    still_dragging = driver.execute_async_script(DROP, data, query.name, how)
    assert not still_dragging
    figures = wait_for_matches(driver)
    assert "chelsea_cat.jpg" in caption(figures[0])
    assert console_problems(driver) == []


@pytest.mark.slow
def test_a_phone_sees_the_whole_page(server: str, browser: Browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser(width=360)
    driver.get(server + "/")
    driver.find_element(By.ID, "image").send_keys(str(QUERY))
    figures = wait_for_matches(driver)
    driver.execute_script("const d = document.getElementById('similar'); if (d) d.open = true")
    width, inner = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner == 360
    row = driver.find_elements(By.CSS_SELECTOR, "#similar .grid > figure.match")
    first, second = (f.rect for f in (row if len(row) >= 2 else figures)[:2])
    assert first["y"] == second["y"] and first["width"] >= 140  # two columns side by side
    images_in_view_loaded(driver)
    keep(driver, tmp_path, "serve_page_phone.png")
    assert console_problems(driver) == []


@pytest.mark.slow
def test_a_file_that_is_not_an_image_shows_the_servers_message(
        server: str, browser: Browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = tmp_path / "notes.jpg"
    text.write_text("not a picture at all\n")
    driver = browser()
    driver.get(server + "/")
    driver.find_element(By.ID, "image").send_keys(str(text))
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, WAIT, poll_frequency=0.2).until(
        lambda _: status.get_attribute("data-state") == "error")
    assert status.text and "HTTP" not in status.text  # the JSON message, not a bare status
    assert driver.find_elements(By.CSS_SELECTOR, "figure.match") == []
    # The failed request itself is logged (422); nothing else may be.
    assert [m for m in console_problems(driver) if "/api/search" not in m] == []


# --------------------------------------------------------------------------- planted verification


@pytest.fixture(scope="module")
def planted(photo_index: Path) -> Iterator[str]:
    """A real server whose results carry verification (tests/serve_launcher.py: ranks 1-2
    verified with boxes and points, rank 3 failed, the rest unchecked)."""
    from serve_helpers import serving

    launcher = (str(REPO / "tests" / "serve_launcher.py"),)
    with serving("--index-dir", photo_index, "--port", "0", program=launcher) as running:
        yield running.url


BOXES = """
const place = (svg) => {
  const img = svg.parentElement.querySelector("img").getBoundingClientRect();
  const r = svg.querySelector("rect.box").getBoundingClientRect();
  return [(r.left - img.left) / img.width, (r.top - img.top) / img.height,
          (r.right - img.left) / img.width, (r.bottom - img.top) / img.height];
};
const shown = (c) => c.getBoundingClientRect().width > 0;
return {
  matches: [...document.querySelectorAll("#results > figure.match svg.overlay")].map(place),
  query: document.querySelector("#query-overlay rect.box") ? place(
    document.getElementById("query-overlay")) : null,
  points: [...document.querySelectorAll("svg.overlay circle")].filter(shown).length,
};
"""


def close(found: list[float], want: tuple[float, ...], slack: float = 0.03) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(found, want, strict=True))


def test_verified_matches_show_their_boxes_and_points(planted: str, browser: Browser,
                                                      tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from serve_launcher import MATCH_BOX, QUERY_BOX

    driver = browser()
    driver.get(planted + "/")
    driver.find_element(By.ID, "image").send_keys(str(QUERY))
    wait_for_matches(driver)
    images_in_view_loaded(driver)
    status = driver.find_element(By.ID, "status").text
    assert re.fullmatch(r"2 matches in \d+ ms", status), status
    top = driver.find_elements(By.CSS_SELECTOR, "#results > figure.match")
    assert [f.get_attribute("data-verified") for f in top] == ["true", "true"]
    assert all(f.find_element(By.CSS_SELECTOR, ".verified").is_displayed() for f in top)
    similar = driver.find_element(By.ID, "similar")
    assert similar.get_attribute("open") is None
    assert similar.find_element(By.TAG_NAME, "summary").text == "20 other similar images"
    drawn = driver.execute_script(BOXES)
    assert len(drawn["matches"]) == 2
    assert all(close(box, MATCH_BOX) for box in drawn["matches"]), drawn
    assert drawn["query"] is not None and close(drawn["query"], QUERY_BOX), drawn
    assert drawn["points"] == 0  # hidden until asked for
    driver.find_element(By.ID, "show-points").click()
    assert driver.execute_script(BOXES)["points"] == 3 * 3  # two matches and the query
    keep(driver, tmp_path, "serve_page_verified.png")
    similar.find_element(By.TAG_NAME, "summary").click()
    assert driver.find_elements(By.CSS_SELECTOR, "#similar figure.match")[0].is_displayed()
    assert console_problems(driver) == []


def test_verified_boxes_without_javascript(planted: str, browser: Browser) -> None:
    from selenium.webdriver.common.by import By
    from serve_launcher import MATCH_BOX

    driver = browser(javascript=False)
    driver.get(planted + "/")
    driver.find_element(By.ID, "image").send_keys(str(QUERY))
    driver.find_element(By.ID, "submit").click()
    wait_for_matches(driver)
    images_in_view_loaded(driver)
    assert driver.find_element(By.ID, "status").text == f"2 matches for {QUERY.name}"
    drawn = driver.execute_script(BOXES)
    assert len(drawn["matches"]) == 2 and all(close(b, MATCH_BOX) for b in drawn["matches"])
    driver.find_element(By.ID, "show-points").click()  # CSS alone shows them
    assert driver.execute_script(BOXES)["points"] == 2 * 3
    assert console_problems(driver) == []
