"""Decode stage: every mode to correct RGB, EXIF orientation, pixel limit, failure reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from imagefactory import make_bad_files, make_exif_rotated_pair, make_good_set
from PIL import Image

from deepvision.pipeline.decode import DecodeError, load_rgb
from deepvision.types import Reason


def test_every_tricky_good_file_decodes_to_rgb(tmp_path):
    for path in make_good_set(tmp_path, 0):
        im = load_rgb(str(path))
        assert im.mode == "RGB" and im.width > 0, path


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(str(tmp_path / "g16.png")))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 100 < rgb[16, 32, 0] < 160  # mid-grey stays mid-grey (clipping would give 255)


def test_transparency_is_composited_on_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "la.png")
    for name in ("clear.png", "la.png"):
        assert np.asarray(load_rgb(str(tmp_path / name))).min() == 255


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK").save(tmp_path / "c.jpg")
    r, g, b = np.asarray(load_rgb(str(tmp_path / "c.jpg"))).reshape(-1, 3).mean(0)
    assert r > 150 and g < 80 and b < 80


def test_exif_orientation_is_applied(tmp_path):
    upright, rotated = make_exif_rotated_pair(tmp_path)
    a = np.asarray(load_rgb(str(upright)), np.float32)
    b = np.asarray(load_rgb(str(rotated)), np.float32)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 8


def test_draft_mode_keeps_at_least_the_requested_size(tmp_path):
    Image.new("RGB", (2000, 1200), (10, 120, 200)).save(tmp_path / "big.jpg")
    im = load_rgb(str(tmp_path / "big.jpg"), draft_size=256)
    assert min(im.size) >= 256 and im.width < 2000


def test_bad_files_raise_decode_error_with_their_reason(tmp_path):
    expected = make_bad_files(tmp_path)
    for name, reason in expected.items():
        if reason in (Reason.UNSUPPORTED_FORMAT, Reason.BROKEN_SYMLINK):
            continue  # decided from the extension / link at discovery (test_bad_input)
        with pytest.raises(DecodeError) as info:
            load_rgb(str(tmp_path / name))
        assert info.value.reason == reason, (name, info.value.message)


def test_pixel_limit_is_configurable(tmp_path):
    Image.new("RGB", (1000, 1000)).save(tmp_path / "one_mp.png")
    with pytest.raises(DecodeError) as info:
        load_rgb(str(tmp_path / "one_mp.png"), max_megapixels=0.5)
    assert info.value.reason == Reason.TOO_LARGE and "--max-megapixels" in info.value.message
    assert load_rgb(str(tmp_path / "one_mp.png"), max_megapixels=2).size == (1000, 1000)


def test_permission_and_vanished_reasons(tmp_path, monkeypatch):
    with pytest.raises(DecodeError) as info:
        load_rgb(str(tmp_path / "never-existed.jpg"))
    assert info.value.reason == Reason.VANISHED
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root reads any file whatever its mode, so simulate the kernel's answer instead.
    monkeypatch.setattr(Image, "open", deny)
    with pytest.raises(DecodeError) as info:
        load_rgb(str(path))
    assert info.value.reason == Reason.PERMISSION_DENIED


def test_unreadable_file_mode_when_not_root(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can read files with mode 000")
    path = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    with pytest.raises(DecodeError) as info:
        load_rgb(str(Path(path)))
    assert info.value.reason == Reason.PERMISSION_DENIED
