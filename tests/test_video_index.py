"""Videos in the index: frames as vectors, change / rename / delete, bad videos as reasons."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from imagefactory import make_photo_like
from videofactory import make_audio_only, make_video, truncate

from deepvision.services.info import describe
from deepvision.store.indexstore import IndexStore


def _frames(idx: Path) -> dict[str, list[float]]:
    """path -> frame times, straight from the catalog."""
    with IndexStore(idx).open_read() as snap:
        db = snap.catalog._db
        rows = db.execute("SELECT f.path, v.time FROM files f JOIN vectors v ON v.hash = f.hash "
                          "WHERE f.status = 'ok' ORDER BY f.path, v.frame").fetchall()
    out: dict[str, list[float]] = {}
    for path, t in rows:
        out.setdefault(Path(path).name, []).append(t)
    return out


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    folder = tmp_path / "archive"
    for i in range(3):
        make_photo_like(folder / f"img_{i}.jpg", seed=i)
    make_video(folder / "clip.mp4")
    return folder


def test_a_video_is_indexed_as_its_frames(sync, archive, tmp_path):
    idx = tmp_path / "idx"
    summary = sync(archive, idx)
    assert (summary["added"], summary["embedded"], summary["frames_embedded"]) == (4, 4, 3)
    frames = _frames(idx)
    assert [int(t // 2) for t in frames["clip.mp4"]] == [0, 1, 2]
    assert frames["img_0.jpg"] == [None]
    again = sync(archive, idx, embedders=_no_model)
    assert again["unchanged"] == 4 and again["frames_embedded"] == 0
    info = describe(IndexStore(idx))
    assert (info["files"], info["vectors"], info["video_frames"]) == (4, 6, 3)
    rebuilt = sync(archive, idx, rebuild=True)  # a fresh catalog: the same frames again
    assert rebuilt["frames_embedded"] == 3 and [int(t // 2) for t in _frames(idx)["clip.mp4"]] \
        == [0, 1, 2]


def _no_model(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded although nothing needed embedding")


def test_rename_change_and_delete_of_a_video(sync, archive, tmp_path):
    idx = tmp_path / "idx"
    sync(archive, idx)
    (archive / "clip.mp4").rename(archive / "moved.mp4")
    moved = sync(archive, idx, embedders=_no_model)  # a rename re-embeds nothing
    assert (moved["renamed"], moved["removed"], moved["embedded"]) == (1, 0, 0)
    assert len(_frames(idx)["moved.mp4"]) == 3 and "clip.mp4" not in _frames(idx)

    make_video(archive / "moved.mp4", seeds=(301, 302), seconds=1.5)  # changed content
    changed = sync(archive, idx)
    assert (changed["updated"], changed["frames_embedded"]) == (1, 2)
    with IndexStore(idx).open_read() as snap:
        assert snap.catalog.counts()["vectors"] == 3 + 2  # the old frames are gone
        assert len(snap.vectors()) == 5

    (archive / "moved.mp4").unlink()
    gone = sync(archive, idx, embedders=_no_model)
    assert gone["removed"] == 1
    with IndexStore(idx).open_read() as snap:
        assert snap.catalog.counts() == {"files": 3, "failed": 0, "vectors": 3, "frames": 0}


def test_a_copy_of_a_video_shares_its_frames(sync, archive, tmp_path):
    idx = tmp_path / "idx"
    shutil.copy(archive / "clip.mp4", archive / "copy.mp4")
    summary = sync(archive, idx)
    assert summary["added"] == 5 and summary["frames_embedded"] == 3
    frames = _frames(idx)
    assert frames["copy.mp4"] == frames["clip.mp4"]


def test_bad_videos_are_reported_while_the_rest_is_indexed(sync, archive, tmp_path):
    truncate(archive / "clip.mp4", archive / "cut.mp4")
    make_audio_only(archive / "voice.m4v")
    (archive / "empty.mov").write_bytes(b"")
    idx = tmp_path / "idx"
    summary = sync(archive, idx)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["failures"]}
    assert reasons == {"cut.mp4": "truncated", "voice.m4v": "no-video-stream",
                       "empty.mov": "empty"}
    assert summary["added"] == 4 and summary["failed_by_reason"]["truncated"] == 1
    again = sync(archive, idx, embedders=_no_model)  # recorded once, not every night
    assert again["still_failing"] == 3 and again["failures"] == []
    with IndexStore(idx).open_read() as snap:
        assert snap.catalog.counts()["failed"] == 3


def test_a_video_without_its_extension_is_found_by_content(sync, archive, tmp_path):
    shutil.move(archive / "clip.mp4", archive / "clip_no_extension")
    idx = tmp_path / "idx"
    summary = sync(archive, idx)
    assert summary["frames_embedded"] == 3 and summary["ignored"] == 0
