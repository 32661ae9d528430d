"""Searching an archive with videos through the real CLI: a still finds the video and the
moment, a video query finds the video it was cut from, every output carries the timestamp."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from imagefactory import make_photo_like
from PIL import Image
from schema_helpers import strict
from videofactory import make_video, scene

jsonschema = pytest.importorskip("jsonschema")


def schema(name: str) -> dict:
    return strict(name)  # every field deepvision writes is documented


@pytest.fixture
def indexed(cli, tiny_model, tmp_path) -> tuple[Path, Path]:
    """Photos and one video of three 2-second scenes (seeds 101, 102, 103), indexed."""
    archive = tmp_path / "archive"
    for i in range(4):
        make_photo_like(archive / f"img_{i}.jpg", seed=i)
    make_video(archive / "clip.mp4")
    idx = tmp_path / "idx"
    run = cli("index", archive, "--index-dir", idx, "--model", "tiny", "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    jsonschema.validate(run.json(), schema("index"))
    assert run.json()["frames_embedded"] == 3 and run.json()["embedded"] == 5
    return archive, idx


def _still(tmp_path: Path, seed: int) -> Path:
    path = tmp_path / f"still_{seed}.png"
    Image.fromarray(scene(seed)).save(path)
    return path


def _search(cli, idx: Path, *args: object) -> dict:
    run = cli("search", *args, "--index-dir", idx, "--format", "json", "--workers", "0")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    jsonschema.validate(doc, schema("search"))
    return doc


def test_a_still_finds_the_video_and_the_moment(cli, indexed, tmp_path):
    archive, idx = indexed
    doc = _search(cli, idx, _still(tmp_path, 102), "-k", "3")
    top, *rest = doc["queries"][0]["matches"]
    assert top["path"] == str(archive / "clip.mp4")
    assert 2.0 <= top["timestamp"] < 4.0  # inside scene 2
    assert [m["timestamp"] for m in rest] == [None, None]  # photos: one row per file
    assert "query_timestamp" not in top
    table = cli("search", _still(tmp_path, 103), "--index-dir", idx, "-k", "1", "--workers",
                "0").stdout
    assert re.search(r"clip\.mp4 @ 00:0[45]\.\d", table), table


def test_one_row_per_file_unless_all_frames(cli, indexed, tmp_path):
    _, idx = indexed
    still = _still(tmp_path, 101)
    per_file = _search(cli, idx, still, "-k", "10")["queries"][0]["matches"]
    assert len(per_file) == 5 and len({m["path"] for m in per_file}) == 5
    frames = _search(cli, idx, still, "-k", "10", "--all-frames")["queries"][0]["matches"]
    video_rows = [m for m in frames if m["timestamp"] is not None]
    assert len(frames) == 7 and len(video_rows) == 3
    assert sorted(int(m["timestamp"] // 2) for m in video_rows) == [0, 1, 2]
    assert frames[0]["timestamp"] < 2.0  # scene 1's frame first
    assert [m["rank"] for m in frames] == list(range(1, 8))


def test_a_video_query_finds_the_video_it_was_cut_from(cli, indexed, tmp_path):
    archive, idx = indexed
    cut = make_video(tmp_path / "cut.mp4", seeds=(103,), seconds=1.5)  # re-encoded scene 3
    other = make_video(tmp_path / "other.mkv", seeds=(0,), seconds=1.0)  # a photo, filmed
    doc = _search(cli, idx, cut, other, "-k", "2")
    by_query = {Path(q["query"]).name: q["matches"] for q in doc["queries"]}
    top = by_query["cut.mp4"][0]
    assert top["path"] == str(archive / "clip.mp4") and 4.0 <= top["timestamp"] < 6.0
    assert 0.0 <= top["query_timestamp"] < 1.5
    assert Path(by_query["other.mkv"][0]["path"]).name == "img_0.jpg"
    assert by_query["other.mkv"][0]["timestamp"] is None


def test_csv_and_html_carry_the_timestamp(cli, indexed, tmp_path):
    archive, idx = indexed
    still = _still(tmp_path, 102)
    rows = list(csv.DictReader(io.StringIO(cli(
        "search", still, "--index-dir", idx, "--format", "csv", "-k", "2", "--workers", "0"
    ).stdout)))
    assert rows[0]["path"] == str(archive / "clip.mp4") and 2.0 <= float(rows[0]["timestamp"]) < 4
    assert rows[1]["timestamp"] == "" and rows[0]["query_timestamp"] == ""

    html = tmp_path / "report" / "r.html"
    cut = make_video(tmp_path / "cut.mp4", seeds=(102,), seconds=1.0)
    run = cli("search", still, cut, "--index-dir", idx, "-k", "2", "--workers", "0",
              "--html", html)
    assert run.exit_code == 0, run.stderr
    page = html.read_text()
    assert re.search(r"#1  \d\.\d{4}  @ 00:0[23]\.\d", page)  # the match's frame time
    assert "query @ 00:0" in page  # the video query's frame
    thumbs = sorted((tmp_path / "report" / "r_files").iterdir())
    # still, cut (one frame), clip at its frame, a photo: each a thumbnail of its own
    assert len(thumbs) == 4
    assert "missing or unreadable" not in page
    # The clip's tile shows its frame from scene 2.
    name = re.search(r'title="[^"]*clip\.mp4"><a [^>]*><img [^>]*src="r_files/([0-9a-f]+\.jpg)"',
                     page)[1]
    frame = np.asarray(Image.open(html.parent / "r_files" / name).convert("RGB"), np.float32)
    assert frame.shape == (120, 160, 3)
    assert np.abs(frame - scene(102)).mean() < 20 < np.abs(frame - scene(101)).mean()


def test_dupes_groups_a_photo_with_the_video_it_appears_in(cli, tiny_model, tmp_path):
    archive = tmp_path / "archive"
    make_video(archive / "clip.mp4")
    Image.fromarray(scene(101)).save(archive / "a_poster.png")  # scene 1 as a photo
    Image.fromarray(scene(103)).save(archive / "end.png")  # and scene 3
    make_photo_like(archive / "unrelated.jpg", seed=5)
    idx = tmp_path / "idx"
    assert cli("index", archive, "--index-dir", idx, "--model", "tiny", "--workers", "0"
               ).exit_code == 0
    run = cli("dupes", "--index-dir", idx, "--format", "json", "--threshold", "0.97")
    doc = run.json()
    jsonschema.validate(doc, schema("dupes"))
    # The video links both photos (one by each scene's frame): one group of three files.
    assert len(doc["groups"]) == 1, doc
    files = {Path(f["path"]).name: f for f in doc["groups"][0]["files"]}
    assert list(files) == ["a_poster.png", "clip.mp4", "end.png"]
    assert files["clip.mp4"]["timestamp"] < 2.0  # its best pair with the first member
    assert files["clip.mp4"]["score"] > 0.97 and files["end.png"]["timestamp"] is None
    table = cli("dupes", "--index-dir", idx, "--threshold", "0.97").stdout
    assert re.search(r"clip\.mp4 @ 00:0[01]\.\d", table), table


def test_with_the_real_model_a_still_finds_its_scene(cli, tmp_path):
    """EfficientNet-Lite0 (shipped, offline): the still of scene 2 ranks the video first, at a
    time inside scene 2, above photos of the other scenes' pictures."""
    archive = tmp_path / "archive"
    make_video(archive / "clip.mp4")
    for seed in (101, 103, 7):
        Image.fromarray(scene(seed)).save(archive / f"photo_{seed}.png")
    idx = tmp_path / "idx"
    run = cli("index", archive, "--index-dir", idx, "--model", "efficientnet-lite0",
              "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    top = _search(cli, idx, _still(tmp_path, 102), "-k", "2")["queries"][0]["matches"][0]
    assert Path(top["path"]).name == "clip.mp4" and 2.0 <= top["timestamp"] < 4.0
    assert top["score"] > 0.9
