"""pipeline/video.py: the sampling rule, rotation, sniffing and every bad video a reason."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from videofactory import (
    make_audio_only,
    make_video,
    rotate_mp4,
    scene,
    truncate,
    unknown_codec,
)

from deepvision.pipeline.decode import DecodeError
from deepvision.pipeline.discover import looks_like_video, sniff_video
from deepvision.pipeline.transforms import Preprocess, resize_crop
from deepvision.pipeline.video import FrameSampler, VideoOptions, sample_video, spread

PRE = Preprocess(40, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")


def _sample(path: Path, **opts: object):
    return sample_video(str(path), PRE, VideoOptions(**opts), 120.0)


def test_the_sampler_keeps_each_scene_and_its_time(tmp_path):
    clip = make_video(tmp_path / "clip.mp4")  # three 2-second scenes
    got = _sample(clip)
    assert got.decoded == 60 and got.duration == pytest.approx(6.0)
    assert len(got.times) == 3
    assert [int(t // 2) for t in got.times] == [0, 1, 2]  # one frame inside each scene
    assert got.sides == [min(scene(101).shape[:2])] * 3  # each frame's short side, as stored
    # Each kept crop is its scene's picture (the tiny bar of motion aside).
    import torch

    for t, crop in zip(got.times, got.crops, strict=True):
        want = resize_crop(torch.from_numpy(scene(101 + int(t // 2))).permute(2, 0, 1), PRE)
        assert (crop.float() - want.float()).abs().mean() < 12


def test_interval_and_cap_rules(tmp_path):
    one_scene = make_video(tmp_path / "still.mp4", seeds=(7,), seconds=6.0)
    assert _sample(one_scene, interval=2.0).times == pytest.approx([0.0, 2.0, 4.0], abs=0.11)
    capped = _sample(make_video(tmp_path / "many.mp4", seeds=tuple(range(200, 208)),
                                seconds=1.0), max_frames=4)
    assert len(capped.times) == 4  # eight scenes, at most four frames, first to last
    assert capped.times[0] == 0.0 and capped.times[-1] > 6.0


def test_a_long_video_decodes_only_its_keyframes(tmp_path):
    clip = make_video(tmp_path / "clip.mp4")  # libx264 puts a keyframe at each scene cut
    full = _sample(clip)
    assert not full.keyframes_only and full.decoded == 60
    # The cap binds (6 s > 2 frames x 0.5 s): keyframes only, the scenes still seen.
    got = _sample(clip, interval=0.5, max_frames=2)
    assert got.keyframes_only and got.decoded == 3
    assert [int(t // 2) for t in got.times] == [0, 2]


def test_sampler_rule_on_synthetic_thumbnails():
    same, other = np.zeros((16, 16), np.float32), np.ones((16, 16), np.float32)
    s = FrameSampler(interval=5.0, max_frames=200)
    assert s.offer(0.0, same) and not s.offer(1.0, same)
    assert not s.offer(1.2, same) and s.offer(5.0, same)  # the interval
    assert s.offer(5.6, other) and not s.offer(5.8, same)  # a cut; a flash back is too soon
    pan = FrameSampler(interval=5.0, max_frames=200)  # drifts 0.03 per look: no cut
    kept = [t for t in np.arange(0, 6, 0.25) if pan.offer(t, np.full((16, 16), 0.03 * t * 4))]
    assert kept == [0.0, 5.0]
    long = FrameSampler(interval=5.0, max_frames=10, duration=1000.0)
    assert long.every == 100.0  # a long video's frames spread over all of it
    assert spread(10, 4) == [0, 3, 6, 9] and spread(3, 5) == [0, 1, 2] and spread(9, 1) == [0]


def test_rotation_metadata_is_applied(tmp_path):
    clip = make_video(tmp_path / "clip.mp4")
    turned = _sample(rotate_mp4(clip, tmp_path / "portrait.mp4"))
    plain = _sample(clip)
    import torch

    for a, b in zip(plain.crops, turned.crops, strict=True):
        # The display matrix turns it 90 degrees clockwise; centre crops of a 4:3 frame and
        # of its turned copy differ, so compare the turned full frames' centres.
        assert a.shape == b.shape
    frame = torch.from_numpy(scene(101)).permute(2, 0, 1)
    clockwise = resize_crop(torch.rot90(frame, -1, (1, 2)), PRE)
    assert (turned.crops[0].float() - clockwise.float()).abs().mean() < 12
    assert (turned.crops[0].float() - plain.crops[0].float()).abs().mean() > 12


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("make", "reason"), [
    (lambda d, v: _write(d / "empty.mp4", b""), "empty"),
    (lambda d, v: truncate(v, d / "cut.mp4"), "truncated"),  # before its moov box
    (lambda d, v: truncate(make_video(d / "v.mkv"), d / "cut.mkv"), "truncated"),  # short
    (lambda d, v: make_audio_only(d / "voice.mp4"), "no-video-stream"),
    (lambda d, v: unknown_codec(v, d / "odd.mp4"), "unsupported-format"),
    (lambda d, v: _write(d / "junk.mkv", b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8),
     "corrupt"),
])
def test_bad_videos_are_reasons(tmp_path, make, reason):
    good = make_video(tmp_path / "good.mp4")
    with pytest.raises(DecodeError) as err:
        _sample(make(tmp_path, good))
    assert err.value.reason == reason, err.value.message


def test_pixel_limit_applies_per_frame(tmp_path):
    clip = make_video(tmp_path / "clip.mp4")
    with pytest.raises(DecodeError, match="--max-megapixels") as err:
        sample_video(str(clip), PRE, VideoOptions(), 0.01)
    assert err.value.reason == "too-large"


def test_timeout_is_its_own_reason(tmp_path):
    clip = make_video(tmp_path / "clip.mp4")
    ticks = itertools.count(step=0.5)  # every look at the clock: half a second later
    with pytest.raises(DecodeError, match="--video-timeout") as err:
        sample_video(str(clip), PRE, VideoOptions(timeout=10), 120.0, clock=lambda: next(ticks))
    assert err.value.reason == "timeout"


def test_sniffing(tmp_path):
    clip = make_video(tmp_path / "clip.mp4")
    hidden = tmp_path / "clip.bin"
    hidden.write_bytes(clip.read_bytes())
    assert looks_like_video(str(hidden)) and looks_like_video(str(tmp_path / "x.MOV"))
    assert sniff_video(b"\x1a\x45\xdf\xa3" + bytes(12))  # Matroska / WebM
    assert sniff_video(b"RIFF\0\0\0\0AVI LIST")
    assert not sniff_video(b"\0\0\0\x18ftypheic\0\0\0\0")  # a HEIC photo
    assert not sniff_video(b"\xff\xd8\xff\xe0" + bytes(12))  # a JPEG
    text = tmp_path / "notes"
    text.write_text("hello there, not a video")
    assert not looks_like_video(str(text))
