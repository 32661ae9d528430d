"""The service's published contract (issue #26): /openapi.json is what the server does.

- schemathesis against a real `deepvision serve` on a loopback port (a token, --allow-path):
  every operation, every check, a fixed seed and example count, zero failures; its settings
  are tests/schemathesis.toml;
- the search document's pydantic model and output/schemas/search.schema.json agree; /api/stats
  and a job's summary are the info and index schema files as they are;
- /docs renders the OpenAPI 3.1 document in headless Chromium with every operation listed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import run_cli  # noqa: E402
from serve_helpers import Server, serving  # noqa: E402
from test_serve_page import browser, console_problems  # noqa: E402, F401 (a fixture)

from deepvision.server.models import VERIFY_KEYS, SearchDoc, file_schema  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKEN = "contract-token"
SEED = 26
EXAMPLES = 25  # per operation and phase: ~30 s on 2 idle cores
OPERATIONS = {("GET", "/api/health"), ("GET", "/api/stats"), ("POST", "/api/search"),
              ("GET", "/api/search"), ("POST", "/api/index"), ("GET", "/api/jobs/{job_id}"),
              ("GET", "/api/images/{file_id}"), ("GET", "/api/images/{file_id}/thumbnail"),
              ("GET", "/api/dupes"), ("POST", "/api/dupes/{group_id}/decision"),
              ("POST", "/api/dupes/undo"), ("POST", "/api/dupes/apply"),
              ("POST", "/api/dupes/apply/undo"), ("GET", "/api/dupes/decisions"),
              ("POST", "/api/dupes/decisions")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("contract").resolve()
    photos, allowed = base / "photos", base / "allowed"
    photos.mkdir()
    allowed.mkdir()
    for name in ("coffee_cup.jpg", "chelsea_cat.jpg", "brick_wall.jpg"):
        shutil.copy(REPO / "bulk_images" / name, photos / name)
    shutil.copy(photos / "coffee_cup.jpg", photos / "coffee_cup_copy.jpg")  # a /api/dupes group
    shutil.copy(REPO / "that_one_image" / "coffee_cup__third_q30.jpg", allowed / "q.jpg")
    done = run_cli("index", photos, "--index-dir", base / "idx", "--workers", 0, "-q",
                   timeout=300)
    assert done.exit_code == 0, done.stderr[-3000:]
    with serving("--index-dir", base / "idx", "--port", 0, "--workers", 0, "--token", TOKEN,
                 "--allow-path", allowed) as srv:
        yield srv


@pytest.mark.slow
def test_schemathesis_finds_no_failure(server: Server, tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file",
            str(REPO / "tests" / "schemathesis.toml"), "run", f"{server.url}/openapi.json",
            "--checks", "all", "--seed", str(SEED), "--max-examples", str(EXAMPLES),
            "--workers", "1", "--header", f"Authorization: Bearer {TOKEN}",
            "--request-timeout", "60", "--report", "junit", "--report-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = done.stdout + done.stderr
    # The failures themselves (each with its curl line), not the warnings after them.
    assert done.returncode == 0, out.split("WARNINGS")[0][-8000:]
    assert f"{len(OPERATIONS)} selected / {len(OPERATIONS)} total" in out, out[-3000:]
    assert "failures" not in out.split("SUMMARY")[-1].lower().replace("0 failures", ""), out


@pytest.mark.slow
def test_the_openapi_document_declares_every_route(server: Server) -> None:
    doc = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    found = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert found == OPERATIONS
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            errors = [s for s in op["responses"] if s.startswith(("4", "5"))]
            assert errors, (method, path)
            for status in errors:
                ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorDoc"), (method, path, status)
    responses = doc["paths"]["/api/stats"]["get"]["responses"]
    stats = responses["200"]["content"]["application/json"]["schema"]
    assert _untitled(stats) == _untitled(file_schema("info"))
    job = doc["components"]["schemas"]["JobDoc"]["properties"]["summary"]
    assert _untitled(file_schema("index")) in [_untitled(s) for s in job["anyOf"]], job


def _untitled(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "title"}  # FastAPI names its responses


# --------------------------------------------------------------------------- one source


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """A pydantic JSON Schema with its $refs replaced by what they name."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _types(node: dict[str, Any]) -> set[str]:
    if "anyOf" in node:
        return set().union(*(_types(n) for n in node["anyOf"]))
    kind = node.get("type", "string" if "enum" in node else None)
    kinds = set(kind) if isinstance(kind, list) else {kind}
    return {"number" if k == "integer" and "number" in kinds else k for k in kinds}


def _branch(node: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an anyOf (pydantic writes `X | None` so)."""
    for option in node.get("anyOf", ()):
        if option.get("type") != "null":
            return option
    return node


def _agree(cli: dict[str, Any], model: dict[str, Any], where: str) -> None:
    assert _types(cli) == _types(model), (where, cli, model)
    cli, model = _branch(cli), _branch(model)
    for key in ("minimum", "maximum", "minItems", "maxItems"):
        if key in cli and key in model:
            assert float(cli[key]) == float(model[key]), (where, key)
    if "enum" in cli:
        assert set(cli["enum"]) == set(model.get("enum", [model.get("const")])), where
    if "properties" in cli:
        _agree_objects(cli, model, where)
    if "items" in cli:
        _agree(cli["items"], model["items"], f"{where}[]")


def _agree_objects(cli: dict[str, Any], model: dict[str, Any], where: str) -> None:
    serve_only = {"id", *VERIFY_KEYS}  # `id` is the service's; #25's keys until the CLI's
    assert set(cli["properties"]) <= set(model["properties"]), where
    assert set(model["properties"]) - set(cli["properties"]) <= serve_only, where
    assert set(model.get("required", ())) <= set(cli["required"]), where
    assert set(cli["required"]) - set(model.get("required", ())) <= set(VERIFY_KEYS), where
    # Both promise that fields are only added: a client meets new ones without breaking.
    assert cli.get("additionalProperties") is model.get("additionalProperties") is True, where
    for name, node in cli["properties"].items():
        _agree(node, model["properties"][name], f"{where}.{name}")


def test_the_search_model_and_the_search_schema_agree() -> None:
    generated = SearchDoc.model_json_schema(mode="serialization")
    _agree(file_schema("search"), _inline(generated, generated.get("$defs", {})), "search")


# --------------------------------------------------------------------------- /docs


@pytest.mark.slow
def test_docs_render_every_operation_in_a_browser(server: Server, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    driver.get(f"{server.url}/docs")
    listed = WebDriverWait(driver, 60, poll_frequency=0.3).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary") or False)
    shown = {(b.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text.upper(),
              b.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
                  "data-path")) for b in listed}
    assert shown == OPERATIONS, shown
    page = driver.find_element(By.TAG_NAME, "body").text
    assert "Unable to render" not in page and "OAS 3.1" in page, page[:2000]
    assert driver.find_elements(By.CSS_SELECTOR, ".btn.authorize"), "no Authorize button"
    assert console_problems(driver) == [], json.dumps(console_problems(driver))[:2000]
