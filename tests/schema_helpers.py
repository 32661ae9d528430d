"""The shipped JSON Schemas, and the strict form the tests validate against.

The shipped schemas let every object carry properties they do not list (fields are only ever
added, so a client validating with an older schema keeps working). The tests want the opposite
check, that every field deepvision writes is documented: `strict` is the same schema with each
`"additionalProperties": true` turned into `false`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

NAMES = ("index", "search", "dupes", "info", "eval")


def shipped(name: str) -> dict:
    """schemas/<name>.schema.json as the package ships it."""
    text = resources.files("deepvision.output").joinpath(f"schemas/{name}.schema.json")
    return json.loads(text.read_text(encoding="utf-8"))


def _closed(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (False if k == "additionalProperties" and v is True else _closed(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def strict(name: str) -> dict:
    """The shipped schema with no undocumented field allowed anywhere."""
    return _closed(shipped(name))
