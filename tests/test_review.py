"""Duplicate review (#27): stable group ids, decisions that survive reindexing, keeper rules,
export/import, and the service functions the review page calls. Indexes use the stub model;
apply/undo with real processes are in test_review_apply.py."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from review_helpers import THRESHOLD, catalog_path, index, make_groups
from schema_helpers import strict

from deepvision.errors import ExitCode

jsonschema = pytest.importorskip("jsonschema")


def schema() -> dict:
    return strict("dupes")  # every field deepvision writes is documented


@pytest.fixture
def groups(cli, tiny_model, tmp_path) -> tuple[Path, Path]:
    folder, idx = tmp_path / "photos", tmp_path / "idx"
    make_groups(folder, 4)
    index(cli, folder, idx)
    return folder, idx


def listing(cli, idx: Path, *flags: str) -> dict:
    done = cli("dupes", "--index-dir", idx, "--format", "json", "--threshold", THRESHOLD, *flags)
    assert done.exit_code == 0, done.stderr
    doc = done.json()
    jsonschema.validate(doc, schema())
    return doc


def decide(cli, idx: Path, group: str, *flags: object) -> None:
    done = cli("dupes", "decide", group, *flags, "--index-dir", idx, "--threshold", THRESHOLD)
    assert done.exit_code == 0, done.stderr


def names(group: dict) -> list[str]:
    return [Path(f["path"]).name for f in group["files"]]


def test_every_output_has_a_stable_id_and_the_proposed_keeper(cli, groups, tmp_path):
    _, idx = groups
    doc = listing(cli, idx)
    assert [g["state"] for g in doc["groups"]] == ["new"] * 4
    assert all(Path(g["keeper"]).name == names(g)[0] for g in doc["groups"])  # largest: the PNG
    ids = [g["id"] for g in doc["groups"]]
    assert len(set(ids)) == 4 and listing(cli, idx)["groups"][0]["id"] == ids[0]
    rows = list(csv.DictReader(io.StringIO(cli(
        "dupes", "--index-dir", idx, "--format", "csv", "--threshold", THRESHOLD).stdout)))
    assert {r["id"] for r in rows} == set(ids)
    assert sum(r["keeper"] == "yes" for r in rows) == 4
    table = cli("dupes", "--index-dir", idx, "--threshold", THRESHOLD).stdout
    assert all(i in table for i in ids) and "keep" in table
    html = tmp_path / "d.html"
    assert cli("dupes", "--index-dir", idx, "--threshold", THRESHOLD, "--html", html,
               "--quiet").exit_code == 0
    assert ids[0] in html.read_text(encoding="utf-8")


def test_decisions_hide_resolved_groups_and_survive_a_reindex(cli, groups):
    folder, idx = groups
    first = listing(cli, idx)["groups"]
    decide(cli, idx, first[0]["id"], "--keep", first[0]["files"][1]["path"])
    decide(cli, idx, first[1]["id"], "--not-duplicates")
    decide(cli, idx, first[2]["id"], "--later")
    decide(cli, idx, first[3]["id"], "--not-duplicates", "--member",
           first[3]["files"][2]["path"])
    index(cli, folder, idx)  # nothing changed: the same groups, the same decisions
    doc = listing(cli, idx)
    assert doc["hidden"] == 2
    by_id = {g["id"]: g for g in doc["groups"]}
    assert set(by_id) == {first[2]["id"], first[3]["id"]}
    assert by_id[first[2]["id"]]["state"] == "later"
    assert by_id[first[3]["id"]]["state"] == "open"
    assert names(by_id[first[3]["id"]]) == names(first[3])[:2]  # the member taken out is gone
    resolved = {g["id"]: g for g in listing(cli, idx, "--all")["groups"]}
    assert resolved[first[0]["id"]]["state"] == "resolved"
    assert resolved[first[0]["id"]]["keeper"] == first[0]["files"][1]["path"]
    # undo the last decision: group 4 is new again, whole
    assert cli("dupes", "undo", "--decision", "--index-dir", idx).exit_code == 0
    again = {g["id"]: g for g in listing(cli, idx)["groups"]}
    assert again[first[3]["id"]]["state"] == "new" and len(again[first[3]["id"]]["files"]) == 3


def test_a_renamed_member_keeps_the_decision(cli, groups):
    folder, idx = groups
    first = listing(cli, idx)["groups"][0]
    decide(cli, idx, first["id"], "--not-duplicates")
    small = Path(first["files"][2]["path"])
    small.rename(small.with_name("renamed.jpg"))
    index(cli, folder, idx)
    doc = listing(cli, idx)
    assert doc["hidden"] == 1 and first["id"] not in {g["id"] for g in doc["groups"]}


def test_a_new_copy_brings_a_resolved_group_back_marked_grown(cli, groups):
    folder, idx = groups
    first = listing(cli, idx)["groups"][0]
    decide(cli, idx, first["id"], "--keep", first["files"][0]["path"])
    original = Path(first["files"][0]["path"])
    newcomer = folder / "zz_new_copy.png"
    from PIL import Image

    with Image.open(original) as im:  # another encoding: a content hash the decision lacks
        im.resize((88, 66)).save(newcomer)
    index(cli, folder, idx)
    doc = listing(cli, idx)
    grown = [g for g in doc["groups"] if g["id"] == first["id"]]
    assert grown and grown[0]["state"] == "grown"
    assert grown[0]["new_members"] == [str(newcomer)]
    assert grown[0]["keeper"] == first["files"][0]["path"]  # the decision's keeper still holds
    table = cli("dupes", "--index-dir", idx, "--threshold", THRESHOLD).stdout
    assert "grown" in table and "1 new since the decision" in table


@pytest.mark.parametrize(("rules", "expected"), [
    (["largest"], "a000.png"),
    (["shortest-path"], "a000.png"),
    (["newest"], "a000_small.jpg"),
    (["oldest"], "a000_copy.png"),
    (["in:{other}", "largest"], "a000_copy.png"),
    (["highest-resolution", "oldest"], "a000_copy.png"),
    (["highest-resolution", "newest"], "a000.png"),
])
def test_keeper_rules(cli, tiny_model, tmp_path, rules, expected):
    folder, other, idx = tmp_path / "photos", tmp_path / "photos" / "other", tmp_path / "idx"
    make_groups(folder, 1, solos=0)
    other.mkdir()
    shutil.move(folder / "a000_copy.png", other / "a000_copy.png")
    for age, name in enumerate(["a000_small.jpg", "a000.png", "other/a000_copy.png"]):
        os.utime(folder / name, (1_600_000_000 - age * 1000,) * 2)
    index(cli, folder, idx)
    keep = [r.format(other=other) for r in rules]
    doc = listing(cli, idx, *[a for r in keep for a in ("--keep", r)])
    assert Path(doc["groups"][0]["keeper"]).name == expected
    assert doc["keep_rules"][0].startswith(keep[0].split(":")[0])


def test_bad_rule_and_unknown_group_are_usage_errors(cli, groups):
    _, idx = groups
    assert cli("dupes", "--index-dir", idx, "--keep", "prettiest").exit_code == ExitCode.USAGE
    bad = cli("dupes", "decide", "ffffffffffff", "--later", "--index-dir", idx)
    assert bad.exit_code == ExitCode.USAGE and "no group" in bad.stderr
    both = cli("dupes", "decide", "x", "--later", "--not-duplicates", "--index-dir", idx)
    assert both.exit_code == ExitCode.USAGE


def test_decisions_export_and_import_onto_another_copy_of_the_photos(cli, groups, tmp_path):
    folder, idx = groups
    first = listing(cli, idx)["groups"]
    decide(cli, idx, first[0]["id"], "--not-duplicates")
    decide(cli, idx, first[1]["id"], "--keep", first[1]["files"][0]["path"])
    exported = tmp_path / "decisions.json"
    assert cli("dupes", "export", exported, "--index-dir", idx).exit_code == 0
    elsewhere, idx2 = tmp_path / "elsewhere", tmp_path / "idx2"
    shutil.copytree(folder, elsewhere)
    index(cli, elsewhere, idx2)
    done = cli("dupes", "import", exported, "--index-dir", idx2)
    assert done.exit_code == 0 and "imported 2" in done.stdout
    doc = listing(cli, idx2)
    assert doc["hidden"] == 2 and len(doc["groups"]) == 2
    resolved = {g["id"]: g for g in listing(cli, idx2, "--all")["groups"]}
    # the keeper is found by content on the other machine (its paths differ)
    assert Path(resolved[first[1]["id"]]["keeper"]).name == names(first[1])[0]


def test_a_version_3_catalog_gets_the_decisions_tables(cli, groups):
    _, idx = groups
    db = sqlite3.connect(catalog_path(idx))
    db.executescript("DROP TABLE decisions; DROP TABLE decision_hashes; "
                     "UPDATE meta SET value = '3' WHERE key = 'catalog_version';")
    db.close()
    assert listing(cli, idx)["hidden"] == 0  # a reader copes with no decisions table
    group = listing(cli, idx)["groups"][0]["id"]
    decide(cli, idx, group, "--later")  # the writer migrates
    db = sqlite3.connect(catalog_path(idx))
    version = db.execute("SELECT value FROM meta WHERE key = 'catalog_version'").fetchone()[0]
    assert int(version) >= 5 and db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1
    db.close()


def test_review_session_pages_decides_and_undoes(groups):
    """What serve's /api/dupes routes call."""
    from deepvision.services.review import DecideRequest
    from deepvision.services.review_session import ReviewSession
    from deepvision.store.decisions import Verdict
    from deepvision.store.indexstore import IndexStore

    _, idx = groups
    session = ReviewSession(IndexStore(idx), float(THRESHOLD))
    page = session.page(0, 3)
    assert page.total == 4 and len(page.groups) == 3 and page.hidden == 0
    assert session.page(3, 3).groups[0].id not in {g.id for g in page.groups}
    target = page.groups[0]
    session.decide(DecideRequest(target.id, Verdict.KEEP, (target.members[0].path,)))
    after = session.page(0, 10)
    assert after.total == 3 and after.hidden == 1
    gone = session.undo_last()
    assert gone is not None and gone.group_id == target.id
    assert session.page(0, 10).total == 4


def test_decisions_come_over_to_a_rebuilt_index(cli, groups):
    folder, idx = groups
    first = listing(cli, idx)["groups"][0]
    decide(cli, idx, first["id"], "--not-duplicates")
    done = cli("rebuild", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0",
               "--quiet")
    assert done.exit_code == 0, done.stderr
    doc = listing(cli, idx)
    assert doc["hidden"] == 1 and first["id"] not in {g["id"] for g in doc["groups"]}


def test_a_file_one_decision_keeps_is_never_removed_by_another(cli, groups, tmp_path):
    """Two decisions over overlapping contents (groups that grew into each other)."""
    import xxhash

    from deepvision.services.apply import ApplyRequest, apply_decisions
    from deepvision.store.indexstore import IndexStore

    folder, idx = groups

    def digest(name: str) -> str:
        return xxhash.xxh3_128((folder / name).read_bytes()).hexdigest()

    def decision(gid: str, keep: str, other: str) -> dict:
        files = [{"path": str(folder / n), "hash": digest(n), "size": 0, "mtime_ns": 0,
                  "keep": n == keep} for n in (keep, other)]
        return {"id": gid, "verdict": "keep", "hashes": [digest(keep), digest(other)],
                "files": files}

    doc = {"deepvision_decisions": 1, "decisions": [
        decision("aaaaaaaaaaaa", "a000.png", "a001.png"),
        decision("bbbbbbbbbbbb", "a001.png", "a000.png")]}
    exported = tmp_path / "crossed.json"
    exported.write_text(json.dumps(doc), encoding="utf-8")
    assert cli("dupes", "import", exported, "--index-dir", idx).exit_code == 0
    report = apply_decisions(IndexStore(idx), ApplyRequest("delete", dry_run=True))
    touched = {Path(s.path).name for s in report.steps}
    assert "a000.png" not in touched and "a001.png" not in touched
    assert sum("kept by another decision" in why for why in report.skipped) == 2


def test_a_page_document_carries_what_the_page_shows(groups):
    from deepvision.output.review import page_document
    from deepvision.services.review_session import ReviewSession
    from deepvision.store.indexstore import IndexStore

    _, idx = groups
    doc = page_document(ReviewSession(IndexStore(idx), float(THRESHOLD)).page(1, 2))
    assert (doc["offset"], doc["total"], doc["hidden"], len(doc["groups"])) == (1, 4, 0, 2)
    files = doc["groups"][0]["files"]
    assert [(f["width"], f["height"]) for f in files] == [(96, 72), (96, 72), (80, 60)]
    assert all(isinstance(f["file_id"], int) and f["size"] > 0 for f in files)
    json.dumps(doc)


def test_the_page_services_dry_run_apply_and_undo(groups, tmp_path):
    """What the page's apply button calls: the dry-run list first, then the same plan."""
    from review_helpers import catalog_problems, tree

    from deepvision.output.review import apply_json
    from deepvision.services.apply import ApplyRequest, apply_decisions, undo_apply
    from deepvision.store.indexstore import IndexStore

    folder, idx = groups
    store, moved = IndexStore(idx), tmp_path / "moved"
    before = tree(folder)
    req = ApplyRequest("move-to", moved, rules=("largest",), dry_run=True, threshold=0.97)
    dry = apply_decisions(store, req)
    assert len(dry.steps) == 8 and dry.journal is None and tree(folder) == before
    done = apply_decisions(store, ApplyRequest("move-to", moved, rules=("largest",),
                                               threshold=0.97))
    assert [s.path for s in done.steps] == [s.path for s in dry.steps] and done.done == 8
    assert json.loads(apply_json(done))["journal"] == done.journal
    assert len(tree(folder)) == len(before) - 8 and catalog_problems(idx) == []
    undone = undo_apply(store)
    assert undone.restored == 8 and not undone.problems
    assert tree(folder) == before and catalog_problems(idx) == []


def test_apply_leaves_the_member_that_joined_after_the_decision(cli, groups):
    from PIL import Image

    from deepvision.services.apply import ApplyRequest, apply_decisions
    from deepvision.store.indexstore import IndexStore

    folder, idx = groups
    first = listing(cli, idx)["groups"][0]
    decide(cli, idx, first["id"], "--keep", first["files"][0]["path"])
    with Image.open(first["files"][0]["path"]) as im:
        im.resize((88, 66)).save(folder / "zz_late.png")
    index(cli, folder, idx)
    report = apply_decisions(IndexStore(idx), ApplyRequest("delete", dry_run=True))
    assert sorted(Path(s.path).name for s in report.steps) == sorted(names(first)[1:])


def test_taking_out_all_but_one_member_resolves_the_group(cli, groups):
    _, idx = groups
    first = listing(cli, idx)["groups"][0]
    for member in first["files"][1:]:
        decide(cli, idx, first["id"], "--not-duplicates", "--member", member["path"])
    doc = listing(cli, idx)
    assert doc["hidden"] == 1 and first["id"] not in {g["id"] for g in doc["groups"]}
    shown = {g["id"]: g for g in listing(cli, idx, "--all")["groups"]}  # schema-valid, whole
    assert shown[first["id"]]["state"] == "resolved" and len(shown[first["id"]]["files"]) == 3
