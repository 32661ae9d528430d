"""Filters on the service: `/api/search`'s query parameters and the page's controls, through a
real `deepvision serve` process (and headless Chromium for the page).

Oracle: photos of two years in two folders, their dates written as EXIF; every match a
filtered search returns passes the filter, and the unfiltered search returns both years.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from test_serve_page import WAIT, Browser, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # a real model indexes, a server starts, a browser drives it


def _photo(path: Path, seed: int, taken: str) -> Path:
    import piexif
    from imagefactory import photo_like_image

    exif = {"0th": {}, "Exif": {piexif.ExifIFD.DateTimeOriginal: taken.encode()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    photo_like_image(seed, (160, 120)).convert("RGB").save(path, exif=piexif.dump(exif),
                                                           quality=92)
    return path


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    for module in ("fastapi", "uvicorn", "multipart", "piexif"):
        pytest.importorskip(module, reason=f"{module} is not installed")
    root = tmp_path_factory.mktemp("album")
    for i in range(4):
        _photo(root / "old" / f"o{i}.jpg", seed=i, taken=f"2018:0{i + 1}:10 12:00:00")
        _photo(root / "new" / f"n{i}.jpg", seed=10 + i, taken=f"2023:0{i + 1}:10 12:00:00")
    idx = root / "idx"
    res = run_cli("index", root / "old", root / "new", "--index-dir", idx, "--model",
                  "efficientnet-lite0", "--workers", "0", "--quiet", timeout=300)
    assert res.exit_code == 0, res.stderr
    return root, idx


@pytest.fixture(scope="module")
def server(album: tuple[Path, Path]) -> Iterator[str]:
    from serve_helpers import serving

    root, idx = album
    with serving("--index-dir", idx, "--port", "0", "--workers", "0",
                 "--allow-path", root) as running:
        yield running.url


def _paths(doc: dict) -> list[str]:
    return [m["path"] for m in doc["queries"][0]["matches"]]


def test_api_filters_by_date_and_folder(album: tuple[Path, Path], server: str) -> None:
    import httpx

    root, _ = album
    query = str(root / "old" / "o0.jpg")
    everything = httpx.get(f"{server}/api/search", params={"path": query, "k": 8}).json()
    assert {Path(p).parent.name for p in _paths(everything)} == {"old", "new"}
    after = httpx.get(f"{server}/api/search",
                      params={"path": query, "k": 8, "after": "2020-01-01"}).json()
    assert _paths(after) and all("/new/" in p for p in _paths(after))
    assert all(m["taken"].startswith("2023") for m in after["queries"][0]["matches"])
    folder = httpx.get(f"{server}/api/search", params={
        "path": query, "k": 8, "folder": str(root / "old")}).json()
    assert len(_paths(folder)) == 4 and all("/old/" in p for p in _paths(folder))
    oldest = httpx.get(f"{server}/api/search",
                       params={"path": query, "k": 8, "sort": "date"}).json()
    taken = [m["taken"] for m in oldest["queries"][0]["matches"]]
    assert taken == sorted(taken)
    bad = httpx.get(f"{server}/api/search", params={"path": query, "after": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"] == "bad-filter"


def test_the_page_filters_by_date_and_folder(album: tuple[Path, Path], server: str,
                                             browser: Browser,  # noqa: F811
                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, _ = album
    driver = browser()
    driver.get(server)
    # a file input fires no change for the file it already holds: each search uploads
    # another copy of the query
    copies = iter([tmp_path / f"query_{i}.jpg" for i in range(3)])

    def shown(d) -> list[str]:  # type: ignore[no-untyped-def]
        if d.find_element(By.ID, "status").get_attribute("data-state") != "done":
            return []
        return [p.get_attribute("title")
                for p in d.find_elements(By.CSS_SELECTOR, "#results figcaption .path[title]")]

    def search(before: list[str]) -> list[str]:
        """Upload the query and wait for results other than `before` (the filters change
        them; a timeout here means they did not)."""
        query = next(copies)
        query.write_bytes((root / "old" / "o1.jpg").read_bytes())
        driver.find_element(By.ID, "image").send_keys(str(query))

        def fresh(d) -> list[str] | bool:  # type: ignore[no-untyped-def]
            now = shown(d)
            return now if now and now != before else False

        found: list[str] = WebDriverWait(driver, WAIT, poll_frequency=0.2).until(fresh)
        return found

    everything = search([])
    assert {Path(p).parent.name for p in everything} == {"old", "new"}
    driver.find_element(By.CSS_SELECTOR, "#filters summary").click()
    driver.find_element(By.NAME, "after").send_keys("01012020")  # the date input's own order
    recent = search(everything)
    assert recent and all("/new/" in p for p in recent)
    driver.execute_script("document.querySelector('#filters [name=after]').value = ''")
    driver.find_element(By.NAME, "folder").send_keys(str(root / "old"))
    old = search(recent)
    assert old and all("/old/" in p for p in old)
