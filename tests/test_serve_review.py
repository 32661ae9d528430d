"""The review routes of `serve` (#27): `/api/dupes…` over the stub model's groups, in process
(the routes and their errors), then the page in headless Chromium against a real server
(decide three groups with the keyboard, reload, the decisions are still there; apply after the
dry-run list, undo)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from review_helpers import THRESHOLD, catalog_problems, index, make_groups, tree
from test_serve_page import browser, console_problems, keep, page_wait  # noqa: F401 - a fixture

fastapi = pytest.importorskip("fastapi")


@pytest.fixture
def client(cli, tiny_model, tmp_path) -> Iterator[tuple[Any, Path, Path]]:
    from fastapi.testclient import TestClient

    from deepvision.server.app import ApiError, error_handlers
    from deepvision.server.review import review_routes
    from deepvision.services.review_session import ReviewSession
    from deepvision.store.indexstore import IndexStore

    folder, idx = tmp_path / "photos", tmp_path / "idx"
    make_groups(folder, 4)
    index(cli, folder, idx)
    app = fastapi.FastAPI()
    error_handlers(app)
    session = ReviewSession(IndexStore(idx), float(THRESHOLD))
    app.include_router(review_routes(lambda: session, ApiError))
    with TestClient(app) as c:
        yield c, folder, idx


def _models() -> Any:
    from deepvision.server import review_models

    return review_models


def test_a_page_of_groups_with_what_the_page_shows(client):
    c, _, _ = client
    doc = c.get("/api/dupes", params={"limit": 3}).json()
    _models().DupesPageDoc.model_validate(doc)
    assert (doc["offset"], doc["total"], doc["hidden"], len(doc["groups"])) == (0, 4, 0, 3)
    group = doc["groups"][0]
    assert group["state"] == "new" and group["tier"] in ("exact", "copy")
    assert [f["kind"] for f in group["files"]] == ["exact", "exact", "copy"]
    # The re-encoded copy's region: verified on the stored evidence, the whole picture.
    assert group["files"][2]["region"] is not None
    assert [group["files"][i]["region"] for i in (0, 1)] == [None, None]
    assert all(isinstance(f["file_id"], int) and f["width"] > 0 for f in group["files"])
    rest = c.get("/api/dupes", params={"offset": 3, "limit": 3}).json()["groups"]
    assert len(rest) == 1 and rest[0]["id"] not in {g["id"] for g in doc["groups"]}
    assert c.get("/api/dupes", params={"limit": 0}).status_code == 422


def test_a_changed_index_pages_the_earlier_groups_while_finding_the_new(client, cli):
    import time

    c, folder, idx = client
    first = c.get("/api/dupes").json()
    assert first["updating"] is False and first["total"] == 4
    (folder / "a000_copy.png").unlink()  # a group loses a member...
    shutil.copy(folder / "a001.png", folder / "a001_again.png")  # ...another gains one
    index(cli, folder, idx)
    stale = c.get("/api/dupes").json()
    assert stale["updating"] is True and stale["total"] == 4
    assert all(not f["path"].endswith("a000_copy.png")  # a file gone is gone at once
               for g in stale["groups"] for f in g["files"])
    deadline = time.monotonic() + 60
    while (doc := c.get("/api/dupes").json())["updating"]:
        assert time.monotonic() < deadline, "the groups were never updated"
        time.sleep(0.2)
    sizes = {Path(g["files"][0]["path"]).name[:4]: g["size"] for g in doc["groups"]}
    assert sizes["a000"] == 2 and sizes["a001"] == 4


def test_decisions_through_the_api_are_the_clis(client, cli):
    c, _, idx = client
    groups = c.get("/api/dupes").json()["groups"]
    keep = groups[0]["files"][1]["path"]
    made = c.post(f"/api/dupes/{groups[0]['id']}/decision",
                  json={"verdict": "keep", "keep": [keep]})
    assert made.status_code == 200, made.text
    assert made.json()["kept"] == [keep] and made.json()["verdict"] == "keep"
    assert c.post(f"/api/dupes/{groups[1]['id']}/decision",
                  json={"verdict": "later"}).status_code == 200
    page = c.get("/api/dupes").json()
    assert page["hidden"] == 1 and page["total"] == 3
    assert {g["id"]: g["state"] for g in page["groups"]}[groups[1]["id"]] == "later"
    listed = cli("dupes", "--index-dir", idx, "--format", "json", "--threshold", THRESHOLD,
                 "--all").json()
    states = {g["id"]: (g["state"], g["keeper"]) for g in listed["groups"]}
    assert states[groups[0]["id"]] == ("resolved", keep)
    undone = c.post("/api/dupes/undo").json()["undone"]
    assert undone["id"] == groups[1]["id"] and undone["verdict"] == "later"
    assert c.get("/api/dupes").json()["total"] == 3  # the keep decision stays


def test_bad_decisions_say_why(client):
    c, _, _ = client
    group = c.get("/api/dupes").json()["groups"][0]
    gone = c.post("/api/dupes/abcdef123456/decision", json={"verdict": "later"})
    assert gone.status_code == 404 and "no group" in gone.json()["message"]
    stranger = c.post(f"/api/dupes/{group['id']}/decision",
                      json={"verdict": "keep", "keep": ["/etc/passwd"]})
    assert stranger.status_code == 422 and "not a member" in stranger.json()["message"]
    assert c.post(f"/api/dupes/{group['id']}/decision",
                  json={"verdict": "maybe"}).status_code == 422
    assert c.post("/api/dupes/NOT-AN-ID/decision", json={"verdict": "later"}).status_code == 422


def test_apply_only_the_plan_of_the_dry_run_then_undo(client, tmp_path):
    c, folder, idx = client
    before = tree(folder)
    groups = c.get("/api/dupes").json()["groups"]

    def keep_first(group: dict) -> None:
        assert c.post(f"/api/dupes/{group['id']}/decision", json={
            "verdict": "keep", "keep": [group["files"][0]["path"]]}).status_code == 200

    keep_first(groups[0])
    moved = tmp_path / "moved"
    body = {"action": "move-to", "target": str(moved)}
    shown = c.post("/api/dupes/apply", json=body).json()
    keep_first(groups[1])  # a decision after the dry run: its plan is not what would run
    stale = c.post("/api/dupes/apply", json={**body, "dry_run": False, "plan": shown["plan"]})
    assert stale.status_code == 409 and stale.json()["error"] == "plan-changed"
    assert c.post("/api/dupes/apply", json={**body, "dry_run": False}).status_code == 409
    assert tree(folder) == before and not moved.exists()  # nothing changed
    dry = c.post("/api/dupes/apply", json=body).json()
    _models().ApplyDoc.model_validate(dry)
    assert dry["dry_run"] and len(dry["steps"]) == 4 and tree(folder) == before
    done = c.post("/api/dupes/apply", json={**body, "dry_run": False, "plan": dry["plan"]})
    assert done.status_code == 200, done.text
    assert done.json()["done"] == 4 and done.json()["journal"].endswith(".jsonl")
    assert len(tree(folder)) == len(before) - 4 and catalog_problems(idx) == []
    assert c.post("/api/dupes/apply/undo", json={"journal": "../../etc"}).status_code == 422
    undone = c.post("/api/dupes/apply/undo", json={"journal": done.json()["journal"]}).json()
    assert undone["restored"] == 4 and undone["problems"] == []
    assert tree(folder) == before and catalog_problems(idx) == []
    relative = c.post("/api/dupes/apply", json={"action": "move-to", "target": "moved"})
    assert relative.status_code == 422
    assert c.post("/api/dupes/apply", json={"action": "move-to"}).status_code == 422
    assert c.post("/api/dupes/apply", json={"action": "trash", "target": "/x"}).status_code == 422
    assert c.post("/api/dupes/apply", json={"action": "trash",
                                            "rules": ["biggest"]}).status_code == 422
    nothing = c.post("/api/dupes/apply/undo", json={})  # every journal undone already
    assert nothing.status_code == 404 and nothing.json()["error"] == "not-found"


def test_decisions_export_and_import(client):
    c, _, _ = client
    group = c.get("/api/dupes").json()["groups"][0]
    c.post(f"/api/dupes/{group['id']}/decision", json={"verdict": "not-duplicates"})
    exported = c.get("/api/dupes/decisions").json()
    assert [d["id"] for d in exported["decisions"]] == [group["id"]]
    c.post("/api/dupes/undo")
    assert c.get("/api/dupes/decisions").json()["decisions"] == []
    imported = c.post("/api/dupes/decisions", json=exported)
    assert imported.json() == {"imported": 1}
    assert c.get("/api/dupes").json()["hidden"] == 1
    bad = c.post("/api/dupes/decisions", json={"deepvision_decisions": 7, "decisions": []})
    assert bad.status_code == 422 and "deepvision_decisions" in bad.json()["message"]
    partial = c.post("/api/dupes/decisions", json={"deepvision_decisions": 1, "decisions": [{}]})
    assert partial.status_code == 422  # the schema says what a decision holds
    assert c.get("/api/dupes").json()["hidden"] == 1  # nothing half-imported


# --------------------------------------------------------------------------- the page, real server

GROUPED = ("chelsea_cat.jpg", "coffee_cup.jpg", "rocket_launch.jpg", "greek_coins.jpg")


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """A real `deepvision serve` over real photos: four groups (the photo, a byte-identical
    copy, a half-size re-encoded copy) and two photos without a copy."""
    from conftest import REPO, run_cli
    from PIL import Image
    from serve_helpers import serving

    base = tmp_path_factory.mktemp("review")
    photos = base / "photos"
    photos.mkdir()
    for name in (*GROUPED, "brick_wall.jpg", "grass.jpg"):
        shutil.copy(REPO / "bulk_images" / name, photos / name)
    for name in GROUPED:
        stem = Path(name).stem
        shutil.copy(photos / name, photos / f"{stem}_copy.jpg")
        with Image.open(photos / name) as im:
            im.resize((im.width // 2, im.height // 2)).save(photos / f"{stem}_half.jpg",
                                                            quality=80)
    idx = base / "idx"
    done = run_cli("index", photos, "--index-dir", idx, "--model", "efficientnet-lite0",
                   "--workers", "0", "-q", timeout=300)
    assert done.exit_code == 0, done.stderr
    with serving("--index-dir", idx, "--port", "0", "--workers", "0") as running:
        yield running.url, photos, idx


def _states(url: str) -> dict[str, str]:
    import httpx

    doc = httpx.get(f"{url}/api/dupes", params={"all": "true"}, timeout=60).json()
    return {g["id"]: g["state"] for g in doc["groups"]}


@pytest.mark.slow
def test_review_with_the_keyboard_survives_a_reload(review_server, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    url, photos, idx = review_server
    driver = browser()
    driver.get(url + "/review")

    def cards(d: Any) -> list[Any]:
        return d.find_elements(By.CSS_SELECTOR, "#groups section.group")

    shown = page_wait(driver).until(lambda d: cards(d) if len(cards(d)) == 4 else False)
    ids = [c.get_attribute("data-id") for c in shown]
    first = shown[0].find_elements(By.CSS_SELECTOR, "figure.member")
    assert len(first) == 3
    page_wait(driver).until(lambda _: first[0].find_element(By.TAG_NAME, "img")
                            .get_attribute("naturalWidth") not in (None, "0"))
    assert "current" in shown[0].get_attribute("class")
    keep(driver, tmp_path, "review.png")  # $DEEPVISION_ARTIFACTS keeps it
    kept = first[1].get_attribute("data-path")
    body = driver.find_element(By.TAG_NAME, "body")

    def decided(i: int, state: str) -> None:
        page_wait(driver).until(
            lambda d: cards(d)[i].get_attribute("data-state") == state
            and "current" in cards(d)[i + 1].get_attribute("class"))

    body.send_keys("2")  # keep the second file of the first group
    decided(0, "resolved")
    body.send_keys("n")  # the second group: not duplicates
    decided(1, "resolved")
    body.send_keys("l")  # the third: later
    decided(2, "later")
    assert _states(url) == {ids[0]: "resolved", ids[1]: "resolved", ids[2]: "later",
                            ids[3]: "new"}

    driver.refresh()
    after = page_wait(driver).until(lambda d: cards(d) if len(cards(d)) == 2 else False)
    assert [c.get_attribute("data-id") for c in after] == [ids[2], ids[3]]
    assert after[0].get_attribute("data-state") == "later"
    assert "2 resolved hidden" in driver.find_element(By.ID, "review-status").text

    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("u")  # undo the last decision: the third group is new again
    page_wait(driver).until(lambda d: cards(d)[0].get_attribute("data-state") == "new")
    assert _states(url)[ids[2]] == "new"

    # Apply: the dry-run list first, nothing moved until Apply; then undo puts it back.
    from selenium.webdriver.support.ui import Select

    before = tree(photos)
    Select(driver.find_element(By.ID, "apply-action")).select_by_value("move-to")
    driver.find_element(By.ID, "apply-target").send_keys(str(photos.parent / "moved"))
    driver.find_element(By.ID, "preview-apply").click()
    run = page_wait(driver).until(lambda d: d.find_element(By.ID, "run-apply")
                                  if d.find_element(By.ID, "run-apply").is_displayed() else False)
    listed = driver.find_elements(By.CSS_SELECTOR, "#apply-steps li:not(.skipped)")
    assert len(listed) == 2 and all(li.text.startswith("move ") for li in listed)
    assert tree(photos) == before
    run.click()
    page_wait(driver).until(
        lambda d: d.find_element(By.ID, "apply-status").text.startswith("Done: 2 files"))
    assert len(tree(photos)) == len(before) - 2 and len(tree(photos.parent / "moved")) == 2
    assert Path(kept).exists() and catalog_problems(idx) == []
    driver.find_element(By.ID, "undo-apply").click()
    page_wait(driver).until(
        lambda d: d.find_element(By.ID, "apply-status").text.startswith("Restored 2"))
    assert tree(photos) == before and catalog_problems(idx) == []
    assert console_problems(driver) == []


def test_the_file_revision_moves_with_file_rows_only(cli, tiny_model, tmp_path):
    """What the review's cached groups are keyed on: a rerun with nothing changed and a
    decision leave it; a file added or removed moves it."""
    from deepvision.store.indexstore import IndexStore

    folder, idx = tmp_path / "photos", tmp_path / "idx"
    make_groups(folder, 2)
    index(cli, folder, idx)
    store = IndexStore(idx)

    def revision() -> int:
        with store.open_read() as snap:
            return snap.catalog.file_revision

    first = revision()
    index(cli, folder, idx)
    group = cli("dupes", "--index-dir", idx, "--format", "json", "--threshold",
                THRESHOLD).json()["groups"][0]["id"]
    assert cli("dupes", "decide", group, "--later", "--index-dir", idx, "--threshold",
               THRESHOLD).exit_code == 0
    assert revision() == first
    shutil.copy(folder / "a000.png", folder / "a000_again.png")
    index(cli, folder, idx)
    assert revision() == first + 1
    (folder / "a000_again.png").unlink()
    index(cli, folder, idx)
    assert revision() == first + 2


def test_the_review_page_and_its_api_need_the_token():
    """Bound beyond loopback with a token: the page takes ?token= once (a cookie from then on),
    the API answers 401 without it."""
    from fastapi.testclient import TestClient

    from deepvision.server.app import ServeConfig, Service, create_app

    service = Service(searcher=None, batcher=None, jobs=None,  # type: ignore[arg-type]
                      index_job=lambda _: {}, config=ServeConfig(token="s3cret", loopback=False))
    c = TestClient(create_app(service), follow_redirects=False)  # no lifespan: no model
    assert c.get("/review").status_code == 401
    assert c.get("/api/dupes").status_code == 401
    assert c.post("/api/dupes/apply", json={"action": "delete"}).status_code == 401
    moved = c.get("/review", params={"token": "s3cret"})
    assert moved.status_code == 303 and "token" not in moved.headers["location"]
    assert "s3cret" in moved.headers["set-cookie"]


@pytest.mark.slow
def test_deciding_a_whole_page_then_next_skips_no_group(review_server, browser):  # noqa: F811
    import time

    import httpx
    from selenium.webdriver.common.by import By

    url, _, _ = review_server
    while httpx.post(f"{url}/api/dupes/undo", timeout=60).json()["undone"]:
        pass  # every decision of an earlier test taken back: four new groups
    # An earlier test's apply and undo changed the files: wait until the groups are found anew
    # (until then the page shows the earlier ones and reloads itself when the new are ready).
    deadline = time.monotonic() + 120
    while (doc := httpx.get(f"{url}/api/dupes", timeout=60).json())["updating"]:
        assert time.monotonic() < deadline, "the groups were never updated"
        time.sleep(0.2)
    order = [g["id"] for g in doc["groups"]]
    assert len(order) == 4
    driver = browser()
    driver.get(url + "/review?per_page=2")

    def shown(d: Any) -> list[str]:
        return [c.get_attribute("data-id")
                for c in d.find_elements(By.CSS_SELECTOR, "#groups section.group")]

    page_wait(driver).until(lambda d: shown(d) == order[:2])
    assert driver.find_element(By.ID, "page-info").text == "1–2 of 4"
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("n")
    body.send_keys("n")  # both groups on the page: not duplicates
    page_wait(driver).until(lambda d: all(
        c.get_attribute("data-state") == "resolved"
        for c in d.find_elements(By.CSS_SELECTOR, "#groups section.group")))
    driver.find_element(By.ID, "next").click()
    page_wait(driver).until(lambda d: shown(d) == order[2:])

    # One member out ("Not a copy"): the group stays, without it, waiting for a verdict.
    card = driver.find_element(By.CSS_SELECTOR, "#groups section.group")
    third = card.find_elements(By.CSS_SELECTOR, "figure.member")[2]
    out = third.get_attribute("data-path")
    third.find_element(By.CSS_SELECTOR, "button.take-out").click()

    def members(d: Any) -> list[str]:
        first = d.find_element(By.CSS_SELECTOR, "#groups section.group")
        return [f.get_attribute("data-path") for f in first.find_elements(By.TAG_NAME, "figure")]

    page_wait(driver).until(lambda d: len(members(d)) == 2 and out not in members(d))
    group = driver.find_element(By.CSS_SELECTOR, "#groups section.group")
    assert group.get_attribute("data-state") == "open"
    assert console_problems(driver) == []
