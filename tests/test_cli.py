"""End-to-end through the real Typer app: index, search (table and JSON), rebuild, exit codes."""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
from imagefactory import make_photo_like

from deepvision.errors import ExitCode


def _index(cli, folder: Path, idx: Path, *extra: object):
    return cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0", *extra)


def _search(cli, query: Path, idx: Path, *extra: object):
    return cli("search", query, "--index-dir", idx, "--workers", "0", *extra)


def test_index_then_search_json_finds_each_image_first(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    run = _index(cli, photos, idx)
    assert run.exit_code == 0, run.stderr
    assert run.stdout == ""  # diagnostics go to stderr only
    assert "tiny" in run.stderr and "cpu" in run.stderr  # which model and device, up front

    run = _search(cli, photos, idx, "--format", "json", "--top-k", "3")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    assert doc["model"] == "tiny" and doc["index"] == str((idx / "default").resolve())
    assert len(doc["queries"]) == 12  # every query image gets its own result
    for q in doc["queries"]:
        assert q["error"] is None
        assert [m["rank"] for m in q["matches"]] == [1, 2, 3]
        assert q["matches"][0]["path"] == q["query"]
        assert q["matches"][0]["score"] == pytest.approx(1.0, abs=1e-3)  # float16 storage
        scores = [m["score"] for m in q["matches"]]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)


def test_table_output_lists_rank_score_path(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    run = _search(cli, photos / "img_03.bmp", idx, "-k", "2")
    assert run.exit_code == 0, run.stderr
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    assert "rank" in lines[1] and "score" in lines[1] and "path" in lines[1]
    assert "1.0000" in lines[3] and "img_03.bmp" in lines[3]
    assert len([ln for ln in lines if "img_" in ln and "│" in ln]) == 2


def test_fewer_images_than_k_prints_what_there_is(cli, tiny_model, tmp_path):
    folder = tmp_path / "three"
    for i in range(3):
        make_photo_like(folder / f"p{i}.png", seed=i)
    idx = tmp_path / "idx"
    assert _index(cli, folder, idx).exit_code == 0
    doc = _search(cli, folder / "p0.png", idx, "--format", "json", "-k", "10").json()
    matches = doc["queries"][0]["matches"]
    assert len(matches) == 3  # never a bogus row for FAISS's -1 padding
    assert {m["path"] for m in matches} == {str(p) for p in sorted(folder.iterdir())}


def test_min_score_filters(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    doc = _search(cli, photos / "img_00.jpg", idx, "--format", "json", "--min-score",
                  "0.9999").json()
    assert [m["path"] for m in doc["queries"][0]["matches"]] == [str(photos / "img_00.jpg")]


def test_rebuild_swaps_in_a_fresh_index(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    old = json.loads((idx / "default" / "manifest.json").read_text())
    make_photo_like(photos / "new.png", seed=99)
    run = cli("rebuild", photos, "--index-dir", idx, "--model", "tiny-b", "--workers", "0",
              "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["embedded"] == 13
    new = json.loads((idx / "default" / "manifest.json").read_text())
    assert new["model"] == "tiny-b" and new["catalog"] != old["catalog"]
    assert not (idx / "default" / old["catalog"]).exists()  # old catalog cleaned up after swap
    doc = _search(cli, photos / "new.png", idx, "--format", "json", "-k", "1").json()
    assert doc["model"] == "tiny-b"
    assert doc["queries"][0]["matches"][0]["path"] == str(photos / "new.png")


def test_rebuild_without_folder_uses_recorded_ones(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    run = cli("rebuild", "--index-dir", idx, "--model", "tiny", "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["total_files"] == 12


def test_rebuild_keeps_the_index_model_and_its_weights_file(cli, tiny_model, photos, tmp_path):
    """Without --model, rebuild re-creates the index with its own model (re-picking `auto`
    would turn it into another model's index), and finds a --weights file it was built with
    from the manifest; --model switches."""
    import torch
    from conftest import TINY_DIM

    idx, weights = tmp_path / "idx", tmp_path / "mine.pt"
    torch.manual_seed(7)
    torch.save({"proj.weight": torch.randn(TINY_DIM, TINY_DIM)}, weights)
    run = cli("index", photos, "--index-dir", idx, "--model", "tiny-b", "--weights", weights,
              "--workers", "0", "--quiet")
    assert run.exit_code == 0, run.stderr
    built = json.loads((idx / "default" / "manifest.json").read_text())
    assert cli("rebuild", "--index-dir", idx, "--workers", "0", "--quiet").exit_code == 0
    kept = json.loads((idx / "default" / "manifest.json").read_text())
    assert (kept["model"], kept["weights"]) == ("tiny-b", built["weights"])
    assert kept["catalog"] != built["catalog"]
    run = cli("rebuild", "--index-dir", idx, "--model", "tiny", "--workers", "0", "--quiet")
    assert run.exit_code == 0, run.stderr
    assert json.loads((idx / "default" / "manifest.json").read_text())["model"] == "tiny"


def test_model_mismatch_is_refused_with_a_pointer_to_rebuild(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    run = cli("index", photos, "--index-dir", idx, "--model", "tiny-b")
    assert run.exit_code == ExitCode.INCOMPATIBLE
    assert "rebuild" in run.stderr and "Traceback" not in run.stderr


def test_changed_weights_are_refused_at_search(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    other = tmp_path / "other.pt"
    from deepvision.models import registry as models

    models.REGISTRY["tiny-b"].find_weights(other, False)  # writes tiny-b's weights there
    run = _search(cli, photos / "img_00.jpg", idx, "--weights", other)
    assert run.exit_code == ExitCode.INCOMPATIBLE
    assert "rebuild" in run.stderr


@pytest.mark.parametrize(("schema", "code"), [(99, ExitCode.INCOMPATIBLE),
                                              (None, ExitCode.CORRUPT)])
def test_unknown_schema_is_refused(cli, tiny_model, photos, tmp_path, schema, code):
    """A newer deepvision's index is incompatible; one without a schema version is damaged."""
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    manifest = idx / "default" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["schema_version"] = schema
    manifest.write_text(json.dumps(data))
    run = _search(cli, photos / "img_00.jpg", idx)
    assert run.exit_code == code and "rebuild" in run.stderr


def test_exit_codes_for_bad_invocations(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    missing = _index(cli, tmp_path / "nope", idx)
    assert missing.exit_code == ExitCode.USAGE and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _index(cli, tmp_path / "empty", idx)
    assert empty.exit_code == ExitCode.NO_IMAGES and "no image files" in empty.stderr
    no_index = _search(cli, photos / "img_00.jpg", idx)
    assert no_index.exit_code == ExitCode.NO_INDEX and "deepvision index" in no_index.stderr
    assert cli("search", photos, "--top-k", "0").exit_code == ExitCode.USAGE
    assert cli("index", photos, "--model", "nosuchnet").exit_code == ExitCode.USAGE
    assert cli("frobnicate").exit_code == ExitCode.USAGE
    for run in (missing, empty, no_index):
        errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr


def test_unreadable_query_is_reported_and_others_still_answered(cli, tiny_model, photos,
                                                                tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    queries = tmp_path / "q"
    queries.mkdir()
    shutil.copy(photos / "img_01.png", queries / "good.png")
    (queries / "broken.jpg").write_text("not really a jpeg")
    run = _search(cli, queries, idx, "--format", "json")
    assert run.exit_code == ExitCode.PARTIAL
    by_name = {Path(q["query"]).name: q for q in run.json()["queries"]}
    assert by_name["broken.jpg"]["error"].startswith("not-an-image")
    assert by_name["broken.jpg"]["matches"] == []
    assert by_name["good.png"]["matches"][0]["path"] == str(photos / "img_01.png")

    single = _search(cli, queries / "broken.jpg", idx)
    assert single.exit_code == ExitCode.PARTIAL and "broken.jpg" in single.stderr


def test_quiet_prints_nothing_on_success(cli, tiny_model, photos, tmp_path):
    run = _index(cli, photos, tmp_path / "idx", "--quiet")
    assert run.exit_code == 0 and run.stdout == "" and run.stderr == ""


def test_info_describes_the_index(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    (photos / "bad.jpg").write_bytes(b"")
    assert _index(cli, photos, idx).exit_code == ExitCode.PARTIAL
    run = cli("info", "--index-dir", idx, "--json", "--failed")
    assert run.exit_code == 0, run.stderr
    data = run.json()
    assert data["files"] == 12 and data["failed"] == 1 and data["model"] == "tiny"
    assert data["dim"] == 48 and data["size_bytes"] > 0
    assert data["failures"][0]["reason"] == "empty"


def test_python_dash_m_and_version(tmp_path):
    from conftest import run_cli

    run = run_cli("--version")
    assert run.exit_code == 0 and run.stdout.startswith("deepvision ")


def test_query_expansion_keeps_exact_matches_first(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert _index(cli, photos, idx).exit_code == 0
    doc = _search(cli, photos, idx, "--format", "json", "-k", "3", "--qe", "2").json()
    for q in doc["queries"]:
        assert q["matches"][0]["path"] == q["query"]
        scores = [m["score"] for m in q["matches"]]
        assert scores == sorted(scores, reverse=True)


@dataclass(frozen=True)
class _Shared:
    a: int = 1
    b: list[str] = field(default_factory=list)


def test_shared_options_are_declared_once_in_the_signature_typer_reads():
    """cli_common.shared_options: the record's fields join the command's own parameters
    (placed by `before`), arrive as one record, and a misspelt name fails at once."""
    from deepvision.cli_common import shared_options

    got = []

    def command(first: int = 0, mid: int = 0, *, opts: _Shared) -> None:
        got.append((first, mid, opts))

    wrapped = shared_options(_Shared, mid="b")(command)
    params = inspect.signature(wrapped).parameters
    assert list(params) == ["first", "a", "mid", "b"]
    assert params["b"].default == [] and params["a"].default == 1
    wrapped(first=1, a=2, mid=3, b=["x"])
    assert got == [(1, 3, _Shared(2, ["x"]))]
    with pytest.raises(TypeError, match="c"):
        shared_options(_Shared, mid="c")(command)
    trailing = shared_options(_Shared, last=("first",))(command)  # after every field
    assert list(inspect.signature(trailing).parameters) == ["mid", "a", "b", "first"]
    with pytest.raises(TypeError, match="late"):
        shared_options(_Shared, last=("late",))(command)


def test_index_and_rebuild_share_one_declaration_of_each_common_option():
    import typer

    from deepvision.cli import SyncOptions, app

    commands = typer.main.get_command(app).commands
    for f in fields(SyncOptions):
        index, rebuild = (next(p for p in commands[c].params if p.name == f.name)
                          for c in ("index", "rebuild"))
        assert (index.opts, index.help, index.default) == (
            rebuild.opts, rebuild.help, rebuild.default), f.name


def test_search_and_dupes_share_one_declaration_of_each_filter_option():
    import typer

    from deepvision.cli import app
    from deepvision.cli_common import FilterOptions

    commands = typer.main.get_command(app).commands
    for f in fields(FilterOptions):
        search, dupes = (next(p for p in commands[c].params if p.name == f.name)
                         for c in ("search", "dupes"))
        assert (search.opts, search.help, search.default) == (
            dupes.opts, dupes.help, dupes.default), f.name
