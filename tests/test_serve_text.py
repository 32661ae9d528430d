"""Search by text in `deepvision serve`: GET /api/search?text= and the page's text box.

A real server process over an index of the shipped photos made with the tiny open_clip model
(tests/clip_helpers.py, run as a program so that its test-only row is registered), a real HTTP
client, and Debian's chromium through Selenium with and without JavaScript. A second server
over an efficientnet-lite0 index shows the refusal. Text quality is not the point (random
weights): the contract is.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("open_clip")
httpx = pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")

from clip_helpers import HERE, MODEL, save_random_weights  # noqa: E402
from conftest import REPO, run_cli  # noqa: E402
from schema_helpers import strict  # noqa: E402
from serve_helpers import HTTP_TIMEOUT, serving  # noqa: E402
from test_serve_page import (  # noqa: E402, F401 (browser is a fixture)
    browser,
    caption,
    console_problems,
    wait_for_matches,
)

LAUNCHER = (str(HERE / "clip_helpers.py"),)
TEXT = "a red bicycle on a beach"


def schema(name: str) -> dict:
    return strict(name)  # every field deepvision writes is documented


def cli_keys_only(doc: dict) -> dict:
    """The document less the keys the CLI's schema does not have (yet): #25's verification."""
    keys = set(schema("search")["properties"]["queries"]["items"]["properties"]["matches"]
               ["items"]["properties"])
    return {**doc, "queries": [{**q, "matches": [{k: v for k, v in m.items() if k in keys}
                                                 for m in q["matches"]]}
                               for q in doc["queries"]]}


def launch(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *LAUNCHER, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def clip_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("servetext")
    photos = base / "photos"
    shutil.copytree(REPO / "bulk_images", photos)
    weights = save_random_weights(base / "tiny-clip.pt")
    idx = base / "idx"
    done = launch("index", photos, "--index-dir", idx, "--model", MODEL, "--weights", weights,
                  "--workers", "0", "-q")
    assert done.returncode == 0, done.stderr
    return idx


@pytest.fixture(scope="module")
def server(clip_index: Path) -> Iterator[str]:
    with serving("--index-dir", clip_index, "--port", "0", "--workers", "0",
                 program=LAUNCHER) as running:
        yield running.url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=HTTP_TIMEOUT) as c:
        yield c


def test_text_search_is_the_cli_document_with_ids(client, clip_index):
    answer = client.get("/api/search", params={"text": TEXT, "k": 5})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    jsonschema.validate(cli_keys_only(doc), schema("search"))
    (query,) = doc["queries"]
    assert (query["query"], query["kind"], query["error"]) == (TEXT, "text", None)
    assert len(query["matches"]) == 5 and all(isinstance(m["id"], int) for m in query["matches"])
    cli = launch("search", "--text", TEXT, "--index-dir", clip_index, "-k", "5",
                 "--format", "json")
    assert cli.returncode == 0, cli.stderr
    want = json.loads(cli.stdout)["queries"][0]["matches"]
    assert [(m["path"], m["score"]) for m in query["matches"]] == \
        [(m["path"], m["score"]) for m in want]
    first = client.get(f"/api/images/{query['matches'][0]['id']}")
    assert first.status_code == 200
    assert first.content == Path(query["matches"][0]["path"]).read_bytes()


@pytest.mark.parametrize(("params", "status"), [
    ({"text": "x", "path": "/etc/passwd"}, 422),
    ({}, 422),
    ({"text": "   "}, 422),
    ({"text": "w" * 2001}, 422),
])
def test_bad_text_requests(client, params, status):
    answer = client.get("/api/search", params=params)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "message"}


def test_the_page_has_a_text_box_and_renders_text_results_without_javascript(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="text-search"' in page.text
    assert "by example or by text" in page.text
    hostile = '<script>alert(1)</script> "a"'
    answer = client.get("/", params={"text": hostile})
    assert answer.status_code == 200
    assert answer.text.count('class="match"') == 21
    assert "<script>alert" not in answer.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt; &quot;a&quot;"' in answer.text


@pytest.mark.slow
def test_a_model_without_a_text_encoder_refuses_text_and_shows_no_box(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee_cup.jpg", "chelsea_cat.jpg"):
        shutil.copy(REPO / "bulk_images" / name, photos / name)
    idx = tmp_path / "idx"
    assert run_cli("index", photos, "--index-dir", idx, "--model", "efficientnet-lite0",
                   "--workers", "0").exit_code == 0
    with serving("--index-dir", idx, "--port", "0", "--workers", "0") as running, \
            httpx.Client(base_url=running.url, timeout=HTTP_TIMEOUT) as c:
        answer = c.get("/api/search", params={"text": TEXT})
        assert answer.status_code == 422
        body = answer.json()
        assert body["error"] == "no-text-encoder"
        assert "clip-vit-b-32" in body["message"] and "rebuild" in body["message"]
        assert 'id="text-search"' not in c.get("/").text
        page = c.get("/", params={"text": TEXT})
        assert page.status_code == 422 and "no text encoder" in page.text


@pytest.mark.slow
def test_typing_a_text_searches_with_javascript(server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver = browser()
    driver.get(server + "/")
    box = driver.find_element(By.ID, "text")
    box.send_keys(TEXT)
    driver.find_element(By.ID, "text-submit").click()
    figures = wait_for_matches(driver)
    assert len(figures) == 21
    status = driver.find_element(By.ID, "status").text
    assert f"for “{TEXT}”" in status and re.search(r" ms\)?$", status), status
    assert driver.current_url.rstrip("/") == server  # the fetch did it, no reload
    assert caption(figures[0])
    assert console_problems(driver) == []


@pytest.mark.slow
def test_typing_a_text_without_javascript_submits_the_form(server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver = browser(javascript=False)
    driver.get(server + "/")
    driver.find_element(By.ID, "text").send_keys(TEXT)
    driver.find_element(By.ID, "text-submit").click()
    figures = wait_for_matches(driver)
    assert len(figures) == 21
    assert driver.current_url.endswith("/?text=" + quote(TEXT, safe="").replace("%20", "+"))
    assert driver.find_element(By.ID, "text").get_attribute("value") == TEXT
