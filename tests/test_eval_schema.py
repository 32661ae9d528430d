"""`eval --format json` follows its shipped JSON Schema, like the other four documents."""

from __future__ import annotations

from pathlib import Path

import pytest
from schema_helpers import strict
from test_eval import _eval, _tiny_set

jsonschema = pytest.importorskip("jsonschema")


def _schema() -> dict:
    return strict("eval")  # every field deepvision writes is documented


def test_eval_json_follows_its_schema(cli, tiny_model, tmp_path: Path) -> None:
    root = _tiny_set(tmp_path / "set")
    (root / "group0" / "broken__png.png").write_bytes(b"not a png")
    run = _eval(cli, root, "--format", "json", "--ks", "1,3")
    assert run.exit_code == 3, run.stderr
    doc = run.json()
    jsonschema.validate(doc, _schema())
    assert doc["failed"] == 1 and doc["failures"][0]["reason"] == "not-an-image"


def test_the_schema_rejects_what_is_not_an_eval_document(cli, tiny_model, tmp_path) -> None:
    doc = _eval(cli, _tiny_set(tmp_path / "set"), "--format", "json").json()
    jsonschema.validate(doc, _schema())
    for broken in ({**doc, "overall": {**doc["overall"], "mAP": 2.0}},
                   {k: v for k, v in doc.items() if k != "queries"},
                   {**doc, "surprise": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, _schema())
