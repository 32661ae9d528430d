"""An evaluation set: groups of images that show the same picture, plus distractors.

A folder with one sub-folder per group, or a CSV file with the columns path,group. A file's
name may carry the edit that made it (`<anything>__<edit>.jpg`), for the per-edit breakdown and
the `originals` protocol (services.evaluate.PROTOCOLS).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from deepvision.errors import UsageError
from deepvision.pipeline.discover import discover, extension_kind
from deepvision.types import Failure, Reason

DISTRACTOR_GROUP = "distractors"  # a sub-folder (or CSV group) of this name holds no group
EDIT_SEPARATOR = "__"  # <anything>__<edit>.jpg: the edit name for the per-edit breakdown
ORIGINAL_EDIT = "original"  # <x>__original.*: the picture the other members were made from
NATURAL_EDIT = "natural"  # <x>__natural.*: two photos of one scene, no original between them


@dataclass(frozen=True)
class EvalItem:
    path: str  # absolute, not symlink-resolved
    group: str | None  # None: a distractor, relevant to nothing

    @property
    def edit(self) -> str | None:
        return edit_name(self.path)


@dataclass(frozen=True)
class EvalSet:
    items: tuple[EvalItem, ...]
    failures: tuple[Failure, ...]  # listed or found, but not usable (missing, unsupported)


def edit_name(path: str) -> str | None:
    """'.../cat__crop70.jpg' -> 'crop70'; None when the file name carries no edit."""
    stem = os.path.splitext(os.path.basename(path))[0]
    head, sep, tail = stem.rpartition(EDIT_SEPARATOR)
    return tail if sep and head and tail else None


def load_evalset(source: Path) -> EvalSet:
    """A folder with one sub-folder per group, or a CSV file with the columns path,group.

    Folder: every image below DIR/<name>/ (at any depth) belongs to group <name>; images directly
    inside DIR and below DIR/distractors/ are distractors. CSV: paths are relative to the CSV's
    folder (or absolute); an empty group or "distractors" makes a distractor.
    """
    if not source.exists():
        raise UsageError(f"{source} does not exist (check the path)")
    if source.is_dir():
        return _from_folder(source)
    if source.suffix.lower() == ".csv":
        return _from_csv(source)
    raise UsageError(f"{source}: pass a folder with one sub-folder per group, "
                     "or a .csv file with the columns path,group")


def _from_folder(root: Path) -> EvalSet:
    top = os.path.abspath(root)
    found = discover([Path(top)])
    items = []
    for rec in found.files:
        parts = Path(os.path.relpath(rec.path, top)).parts
        group = parts[0] if len(parts) > 1 and parts[0] != DISTRACTOR_GROUP else None
        items.append(EvalItem(rec.path, group))
    return EvalSet(tuple(items), tuple(found.failures))


def _from_csv(path: Path) -> EvalSet:
    base = os.path.dirname(os.path.abspath(path))
    items: list[EvalItem] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
            reader = csv.DictReader(f)
            if not {"path", "group"} <= set(reader.fieldnames or ()):
                raise UsageError(f"{path}: the first row must name the columns path,group")
            for row in reader:
                line = reader.line_num
                name = (row.get("path") or "").strip()
                if not name:
                    raise UsageError(f"{path}, line {line}: empty path")
                full = os.path.abspath(os.path.join(base, os.path.expanduser(name)))
                if full in seen:  # one file in two groups would be its own relevant item
                    raise UsageError(f"{path}, line {line}: {name} is listed twice")
                seen.add(full)
                group = (row.get("group") or "").strip()
                failure = _unusable(full)
                if failure is not None:
                    failures.append(failure)
                    continue
                items.append(EvalItem(full, group if group and group != DISTRACTOR_GROUP
                                      else None))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return EvalSet(tuple(items), tuple(failures))


def _unusable(path: str) -> Failure | None:
    if not os.path.isfile(path):
        return Failure(path, Reason.MISSING,
                       "listed in the CSV but not found (relative paths start at the CSV's folder)")
    if extension_kind(path) == "unsupported":
        ext = os.path.splitext(path)[1].lower()
        return Failure(path, Reason.UNSUPPORTED_FORMAT,
                       f"{ext} files are not supported; convert to JPEG/PNG/WebP")
    return None  # a wrong extension on a good image is the decoder's call, not ours
