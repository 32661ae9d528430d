"""The JSON Schemas keep their promise that fields are only added: every object in them allows
properties it does not list, so a document of a later version validates against an older schema;
the tests' strict form (schema_helpers.strict) still rejects an undocumented field."""

from __future__ import annotations

import pytest
from schema_helpers import NAMES, shipped, strict

jsonschema = pytest.importorskip("jsonschema")


def _objects(node, where="$"):
    """(where, schema) of every schema in the tree that lists properties."""
    if isinstance(node, dict):
        if "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}[{i}]")


@pytest.mark.parametrize("name", NAMES)
def test_every_object_allows_fields_added_later(name):
    schema = shipped(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    closed = [where for where, obj in _objects(schema)
              if obj.get("additionalProperties", True) is not True]
    assert not closed, f"{name}: objects that refuse new fields: {closed}"
    assert "only ever added" in schema["$comment"]


def test_a_document_with_a_new_field_passes_the_shipped_schema_not_the_strict_one():
    doc = {"index": "/abs/indexes/default", "model": "efficientnet-lite0",
           "queries": [{"query": "/abs/q.jpg", "kind": "image", "error": None,
                        "matches": [{"rank": 1, "path": "/abs/a.jpg", "score": 0.9,
                                     "timestamp": None, "match": True, "verified": None}]}]}
    jsonschema.validate(doc, strict("search"))
    later = {**doc, "added_later": 1,
             "queries": [{**doc["queries"][0],
                          "matches": [{**doc["queries"][0]["matches"][0], "tier": "copy"}]}]}
    jsonschema.validate(later, shipped("search"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(later, strict("search"))
