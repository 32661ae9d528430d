"""The HTTP API reference (docs/reference/http-api.md, openapi.json) is what
scripts/gen_api_docs.py makes from the service's OpenAPI document now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
REPO = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_api_docs", REPO / "scripts/gen_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_http_api_reference_is_generated_from_the_current_app():
    gen = _generator()
    doc = gen.document()
    stale = gen.stale(gen.render(doc))
    assert not stale, ("HTTP API reference out of date; run `python scripts/gen_api_docs.py`: "
                       f"{[str(p.relative_to(REPO)) for p in stale]}")
    page = (REPO / "docs/reference/http-api.md").read_text(encoding="utf-8")
    for path, item in doc["paths"].items():
        for method in item:
            assert f"`{method.upper()} {path}`" in page
