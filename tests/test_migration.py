"""An index written by an older deepvision is opened, searched and upgraded in place.

tests/fixtures/index_v1 was written by schema version 1 (commit a7de753, see
tests/fixtures/README.md): six shipped photos and one failed file, efficientnet-lite0.
tests/fixtures/index_v3 has catalog version 3 (before file metadata, #28): three photos, one
with EXIF.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from deepvision.errors import CorruptIndexError, IncompatibleIndexError
from deepvision.pipeline.transforms import PREPROCESS_VERSION
from deepvision.store.catalog import CATALOG_VERSION
from deepvision.store.manifest import SCHEMA_VERSION, parse_manifest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def old_index(tmp_path: Path) -> Path:
    """A copy of the schema-1 index (as `--index-dir`; the index is named v1)."""
    root = tmp_path / "indexes"
    shutil.copytree(FIXTURES / "index_v1", root / "v1")
    return root


def _manifest(root: Path) -> dict:
    return json.loads((root / "v1" / "manifest.json").read_text())


def test_schema_1_index_is_read_and_searched_without_rebuild(cli, old_index):
    info = cli("info", "--index-dir", old_index, "--name", "v1", "--json", "--failed")
    assert info.exit_code == 0, info.stderr
    data = info.json()
    assert data["schema_version"] == SCHEMA_VERSION and data["preprocess_version"] is None
    assert (data["files"], data["vectors"], data["failed"]) == (6, 6, 1)
    assert data["index_type"] == "flat" and data["failures"][0]["reason"] == "not-an-image"

    run = cli("search", REPO / "bulk_images" / "coffee_cup.jpg", "--index-dir", old_index,
              "--name", "v1", "--format", "json", "-k", "3", "--workers", "0")
    assert run.exit_code == 0, run.stderr
    expected = json.loads((FIXTURES / "index_v1_search.json").read_text())
    got, want = run.json()["queries"][0]["matches"], expected["queries"][0]["matches"]
    assert [m["path"] for m in got] == [m["path"] for m in want]
    assert [m["score"] for m in got] == pytest.approx([m["score"] for m in want], abs=1e-4)
    assert "unrecorded preprocessing version" in run.stderr  # named, not silent
    assert _manifest(old_index)["schema_version"] == 1  # readers never write


def _vectors(catalog: Path) -> list[tuple]:
    with sqlite3.connect(catalog) as db:
        return db.execute("SELECT id, hash, vec FROM vectors ORDER BY id").fetchall()


def test_the_next_index_run_migrates_in_place(cli, old_index, tmp_path):
    before = _vectors(old_index / "v1" / _manifest(old_index)["catalog"])
    photos = tmp_path / "new"
    photos.mkdir()
    shutil.copy(REPO / "bulk_images" / "dahlia_flower.jpg", photos / "dahlia.jpg")
    run = cli("index", photos, "--index-dir", old_index, "--name", "v1", "--workers", "0",
              "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["added"] == 1 and run.json()["total_files"] == 7

    manifest = _manifest(old_index)
    assert manifest["schema_version"] == SCHEMA_VERSION and "index_plan" not in manifest
    assert manifest["preprocess_version"] is None  # still unknown for the old vectors
    catalog = old_index / "v1" / manifest["catalog"]
    with sqlite3.connect(catalog) as db:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'faiss'").fetchone()
        (old_keys,) = db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'faiss_%'").fetchone()
    record = json.loads(value)
    assert record["checksum"] and record["plan"]["kind"] == "flat" and old_keys == 0
    # Catalog version 3 (video frames): every old vector kept, same id, frame 0, no time.
    after = _vectors(catalog)
    assert after[:len(before)] == before and len(after) == len(before) + 1
    with sqlite3.connect(catalog) as db:
        frames = db.execute("SELECT DISTINCT frame, time FROM vectors").fetchall()
        (version,) = db.execute("SELECT value FROM meta WHERE key = 'catalog_version'").fetchone()
        decisions = db.execute("SELECT COUNT(*) FROM decisions").fetchone()  # version 5
    assert frames == [(0, None)] and version == str(CATALOG_VERSION) and decisions == (0,)

    queries = cli("search", REPO / "bulk_images" / "coffee_cup.jpg", photos / "dahlia.jpg",
                  "--index-dir", old_index, "--name", "v1", "--format", "json", "-k", "1",
                  "--workers", "0").json()["queries"]
    top = {Path(q["query"]).name: q["matches"][0]["path"] for q in queries}
    assert top == {"coffee_cup.jpg": "/tmp/fx/photos/coffee_cup.jpg",
                   "dahlia.jpg": str(photos / "dahlia.jpg")}
    again = cli("index", photos, "--index-dir", old_index, "--name", "v1", "--workers", "0",
                "--json")
    assert again.exit_code == 0 and again.json()["unchanged"] == 1


def test_manifest_migrations_and_refusals(tmp_path):
    path = tmp_path / "manifest.json"
    v1 = json.loads((FIXTURES / "index_v1" / "manifest.json").read_text())
    m = parse_manifest(json.dumps(v1), path, "rebuild it")
    assert (m.schema_version, m.preprocess_version, m.dim) == (SCHEMA_VERSION, None, 1280)
    assert m.descriptor.label == "avg" and m.catalog == v1["catalog"]
    assert json.loads(m.to_json())["preprocess_version"] is None

    current = json.loads(m.to_json())
    current["preprocess_version"] = PREPROCESS_VERSION
    assert parse_manifest(json.dumps(current), path, "x").preprocessing_note() is None

    with pytest.raises(IncompatibleIndexError, match="newer deepvision"):
        parse_manifest(json.dumps({**current, "schema_version": SCHEMA_VERSION + 1}), path, "x")
    for broken in ("[]", "null", "{", json.dumps({**current, "dim": "1280"}),
                   json.dumps({k: v for k, v in current.items() if k != "model"})):
        with pytest.raises(CorruptIndexError, match="rebuild it"):
            parse_manifest(broken, path, "rebuild it")


@pytest.fixture
def v3_index(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the catalog-version-3 index (--index-dir, the index is named v3) and a folder
    with its three photos, the catalog's paths and mtimes pointed at them."""
    root, photos = tmp_path / "indexes", tmp_path / "photos"
    shutil.copytree(FIXTURES / "index_v3" / "v3", root / "v3")
    photos.mkdir()
    for name in ("campus_skyline.jpg", "coffee_cup.jpg"):
        shutil.copy(REPO / "bulk_images" / name, photos / name)
    shutil.copy(FIXTURES / "index_v3" / "photos" / "cat_exif.jpg", photos / "cat_exif.jpg")
    catalog = root / "v3" / json.loads((root / "v3" / "manifest.json").read_text())["catalog"]
    with sqlite3.connect(catalog) as db:
        for p in photos.iterdir():
            db.execute("UPDATE files SET path = ?, mtime_ns = ? WHERE path = ?",
                       (str(p), p.stat().st_mtime_ns, f"/tmp/fx3/photos/{p.name}"))
        db.execute("UPDATE meta SET value = ? WHERE key = 'roots'", (json.dumps([str(photos)]),))
    return root, photos


def test_a_version_3_catalog_is_read_then_gets_metadata_without_re_embedding(cli, v3_index):
    from conftest import no_model

    from deepvision.progress import Silent
    from deepvision.services.sync import IndexRequest, IndexRun
    from deepvision.store.indexstore import IndexStore

    root, photos = v3_index
    info = cli("info", "--index-dir", root, "--name", "v3", "--json")
    assert info.exit_code == 0, info.stderr
    assert info.json()["files"] == 3 and info.json()["metadata"] == {"read": 0}
    refused = cli("search", photos / "cat_exif.jpg", "--index-dir", root, "--name", "v3",
                  "--camera", "canon", "--workers", "0")
    assert refused.exit_code == 2 and "run `deepvision index` on its folders once" in refused.stderr

    store = IndexStore(root, "v3")
    summary = IndexRun(IndexRequest(roots=(photos,), store=store), Silent(),
                       embedders=no_model).run()  # the model must not be needed
    assert (summary.metadata_read, summary.unchanged, summary.embedded) == (3, 3, 0)
    with sqlite3.connect(root / "v3" / store.read_manifest().catalog) as db:
        (version,) = db.execute("SELECT value FROM meta WHERE key = 'catalog_version'").fetchone()
    assert version == str(CATALOG_VERSION)
    counts = cli("info", "--index-dir", root, "--name", "v3", "--json").json()["metadata"]
    assert counts["read"] == 3 and counts["pixel_size"] == 3
    assert (counts["taken_exif"], counts["camera"], counts["gps"], counts["lens"]) == (1, 1, 1, 1)

    run = cli("search", photos / "coffee_cup.jpg", "--index-dir", root, "--name", "v3",
              "--camera", "canon", "--format", "json", "--workers", "0")
    assert run.exit_code == 0, run.stderr
    (only,) = run.json()["queries"][0]["matches"]  # the filter still returns what passes
    assert only["path"] == str(photos / "cat_exif.jpg")
    assert (only["taken"], only["camera"], only["width"], only["height"]) == (
        "2019-07-14T18:30:05+02:00", "Canon EOS 5D Mark IV", 160, 106)
    assert only["gps"] == pytest.approx({"lat": 48.8581667, "lon": 2.2945})
    later = cli("search", photos / "cat_exif.jpg", "--index-dir", root, "--name", "v3",
                "--after", "2020", "--format", "json", "--workers", "0")
    paths = {m["path"] for m in later.json()["queries"][0]["matches"]}
    assert paths == {str(photos / "coffee_cup.jpg"), str(photos / "campus_skyline.jpg")}
    again = IndexRun(IndexRequest(roots=(photos,), store=store), Silent(),
                     embedders=no_model).run()
    assert again.metadata_read == 0  # read once; a changed file is read again
