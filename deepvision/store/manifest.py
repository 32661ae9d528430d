"""The manifest: what an index is (model, weights identity, dimension, descriptor, preprocessing
version, requested FAISS type) and which catalog is live. Typed, versioned, migrated.

A manifest written by an older deepvision is upgraded step by step (MIGRATIONS): in memory for
a reader, on disk by the next writer. Only a manifest from a newer deepvision is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepvision.atomic import atomic_write_text
from deepvision.errors import CorruptIndexError, IncompatibleIndexError
from deepvision.models.descriptor import Descriptor
from deepvision.preprocess import PREPROCESS_VERSION

SCHEMA_VERSION = 3
MANIFEST = "manifest.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Manifest:
    name: str
    model: str
    weights: str  # identity, e.g. "sha256:0123456789abcdef"
    weights_origin: str
    weights_path: str
    dim: int
    catalog: str  # file name of the live catalog in the index folder
    descriptor: Descriptor = Descriptor()
    # The preprocessing the vectors were made with (transforms.PREPROCESS_VERSION); None:
    # not recorded (schema 1, which predates some changes, e.g. JPEG draft mode at 2x).
    preprocess_version: int | None = PREPROCESS_VERSION
    index_type: str = "auto"  # what the user asked for; `auto` re-plans as the collection grows
    max_memory: int = 0  # bytes for the FAISS structure; 0: half the machine's RAM
    metric: str = "inner_product"
    # The model can embed text (CLIP family): `search --text` works on this index. Optional, no
    # schema bump: absent in manifests from before text search, whose models had none.
    text_encoder: bool = False
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)

    def to_json(self) -> str:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["descriptor"] = self.descriptor.to_dict()
        return json.dumps(data, indent=2) + "\n"

    def touched(self) -> Manifest:
        return replace(self, updated=now_iso())

    def preprocessing_note(self) -> str | None:
        """Why this index's vectors may differ slightly from ones made now, or None."""
        if self.preprocess_version == PREPROCESS_VERSION:
            return None
        made = ("an unrecorded preprocessing version (written before versions were recorded)"
                if self.preprocess_version is None
                else f"preprocessing version {self.preprocess_version}")
        return (f"index {self.name!r} was built with {made}; this deepvision uses version "
                f"{PREPROCESS_VERSION}: older and newer images may score up to a few percent "
                f"apart; run `deepvision rebuild --name {self.name}` to make them uniform")


    def descriptor_note(self) -> str | None:
        """How this index's descriptor differs from what a new index gets now, or None. The
        index keeps working with its own (queries are described the same way)."""
        from deepvision.errors import UsageError
        from deepvision.models.registry import default_descriptor, get_spec

        try:
            default = default_descriptor(get_spec(self.model))
        except UsageError:  # a model this deepvision does not know: nothing to compare with
            return None
        if self.descriptor == default:
            return None
        if self.descriptor.stored == default.stored:  # only how queries are searched differs
            flags = " ".join(flag for flag, on in (
                ("--turns" if default.query_turns else "--no-turns",
                 default.query_turns != self.descriptor.query_turns),
                ("--zoom" if default.query_zoom else "--no-zoom",
                 bool(default.query_zoom) != bool(self.descriptor.query_zoom))) if on)
            return (f"index {self.name!r} searches with descriptor {self.descriptor.label}; new "
                    f"indexes now get {default.label} (bench/QUALITY.md): `search {flags}` "
                    "searches this index that way, no rebuild needed")
        return (f"index {self.name!r} uses descriptor {self.descriptor.label}; new indexes now "
                f"get {default.label} (bench/QUALITY.md): `deepvision rebuild --name "
                f"{self.name}` re-embeds with it (searches keep working either way)")


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 kept the FAISS plan here as well as in the catalog: the catalog's record (with
    its file) is now the only one. Preprocessing was not recorded."""
    out = {k: v for k, v in data.items() if k != "index_plan"}
    out.setdefault("preprocess_version", None)
    return out


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 3: a file may own many vectors (a video's frames). The manifest itself is
    unchanged; the catalog is upgraded by its next writer (store.catalog, version 3), and an
    older deepvision, which would not know a frame from an image, refuses the index."""
    return dict(data)


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}

_REQUIRED = {"name": str, "model": str, "weights": str, "weights_origin": str,
             "weights_path": str, "dim": int, "catalog": str}


def parse_manifest(text: str, path: Path, advice: str) -> Manifest:
    """A Manifest from its JSON text, migrated to SCHEMA_VERSION. CorruptIndexError for anything
    that is not a manifest; IncompatibleIndexError for one from a newer deepvision."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON ({exc}); {advice}") from None
    if not isinstance(data, dict):
        raise CorruptIndexError(f"{path} holds {type(data).__name__}, not a manifest; {advice}")
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise CorruptIndexError(f"{path} has no valid schema_version; {advice}")
    if version > SCHEMA_VERSION:
        raise IncompatibleIndexError(
            f"{path} has schema version {version}, written by a newer deepvision (this one reads "
            f"up to {SCHEMA_VERSION}); upgrade deepvision, or {advice}")
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
    data["schema_version"] = version
    return _typed(data, path, advice)


def _typed(data: dict[str, Any], path: Path, advice: str) -> Manifest:
    for key, kind in _REQUIRED.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CorruptIndexError(f"{path}: field {key!r} is missing or not a "
                                    f"{kind.__name__}; {advice}")
    if not isinstance(data.get("text_encoder", False), bool):
        raise CorruptIndexError(f"{path}: field 'text_encoder' is not a boolean; {advice}")
    if data["dim"] <= 0 or not Path(data["catalog"]).name == data["catalog"]:
        raise CorruptIndexError(f"{path}: dim or catalog name is invalid; {advice}")
    known = {k: v for k, v in data.items() if k in Manifest.__dataclass_fields__}
    try:
        known["descriptor"] = Descriptor.from_dict(data.get("descriptor") or {})
        return Manifest(**known)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CorruptIndexError(f"{path}: {exc}; {advice}") from None


def write_manifest(path: Path, manifest: Manifest) -> None:
    atomic_write_text(path, manifest.to_json())
