"""Prove that tests/imagefactory.py generates what it claims (fast: well under 5 s)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from imagefactory import (
    AVIF_SUPPORTED,
    BAD_REASONS,
    BOMB_SIZE,
    make_bad_files,
    make_exif_rotated_pair,
    make_good_set,
    make_photo_like,
    non_image_files,
    photo_like_image,
    write_bomb_png,
)
from PIL import Image, ImageOps, UnidentifiedImageError

N_PLAIN = 7  # > 6 so every plain format appears and the cycle wraps once


def _load(path: Path) -> Image.Image:
    """Fully decode ``path`` (not just the header) and return the image."""
    with Image.open(path) as im:
        im.load()  # pixels stay in memory after the file is closed
    return im


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    arr_a = np.asarray(a.convert("RGB"), dtype=np.float64)
    arr_b = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(np.abs(arr_a - arr_b).mean())


@pytest.fixture(scope="module")
def good_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    dest = tmp_path_factory.mktemp("good")
    return dest, make_good_set(dest, N_PLAIN)


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    dest = tmp_path_factory.mktemp("bad")
    return dest, make_bad_files(dest)


# --------------------------------------------------------------------------- good images


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jpg", "JPEG"), ("a.PNG", "PNG"), ("a.webp", "WEBP"), ("a.tif", "TIFF"), ("a.gif", "GIF")],
)
def test_photo_like_format_follows_suffix(tmp_path: Path, name: str, fmt: str) -> None:
    path = make_photo_like(tmp_path / name, seed=1, size=(40, 30))
    with Image.open(path) as im:
        assert (im.format, im.size) == (fmt, (40, 30))


def test_photo_like_explicit_format_overrides_suffix(tmp_path: Path) -> None:
    path = make_photo_like(tmp_path / "no_suffix", seed=1, fmt="PNG")
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_photo_like_is_deterministic(tmp_path: Path) -> None:
    a = make_photo_like(tmp_path / "a.png", seed=5)
    b = make_photo_like(tmp_path / "b.png", seed=5)
    assert a.read_bytes() == b.read_bytes()


def test_distinct_seeds_give_clearly_different_images() -> None:
    images = [photo_like_image(seed) for seed in range(12)]
    diffs = [
        _mean_abs_diff(images[i], images[j])
        for i in range(len(images))
        for j in range(i + 1, len(images))
    ]
    assert min(diffs) > 25  # out of 255; JPEG noise between copies is ~2


def test_good_set_all_decode(good_set: tuple[Path, list[Path]]) -> None:
    _, paths = good_set
    assert len(paths) == len(set(paths)) == N_PLAIN + 9 + int(AVIF_SUPPORTED)
    for path in paths:
        assert path.is_file()
        _load(path)


def test_good_set_formats_and_awkward_names(good_set: tuple[Path, list[Path]]) -> None:
    dest, paths = good_set
    formats = set()
    for path in paths:
        with Image.open(path) as im:
            formats.add(im.format)
    expected = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "HEIF"}
    assert expected | ({"AVIF"} if AVIF_SUPPORTED else set()) == formats
    rel = [p.relative_to(dest) for p in paths]
    assert any(len(r.parts) > 1 for r in rel)  # one in a sub-folder
    assert any(p.suffix == ".JPG" for p in paths)  # upper-case extension
    assert any(" " in p.name and not p.name.isascii() for p in paths)


def test_good_set_plain_images_are_mutually_distinct(good_set: tuple[Path, list[Path]]) -> None:
    _, paths = good_set
    images = [_load(p).resize((48, 36)) for p in paths if p.name.startswith("photo_")]
    assert len(images) == N_PLAIN
    for i, a in enumerate(images):
        for b in images[i + 1 :]:
            assert _mean_abs_diff(a, b) > 20


def _by_name(good_set: tuple[Path, list[Path]], name: str) -> Path:
    return next(p for p in good_set[1] if p.name == name)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("cmyk.JPG", "CMYK"),
        ("grey16.png", "I;16"),
        ("palette_transparent.png", "P"),
        ("rgba.png", "RGBA"),
        ("grey_alpha_la.png", "LA"),
        ("grey é photo.jpg", "L"),
        ("photo.heic", "RGB"),
    ],
)
def test_tricky_modes(good_set: tuple[Path, list[Path]], name: str, mode: str) -> None:
    assert _load(_by_name(good_set, name)).mode == mode


def test_grey16_spans_full_range(good_set: tuple[Path, list[Path]]) -> None:
    im = _load(_by_name(good_set, "grey16.png"))
    assert im.mode == "I;16"
    assert im.getextrema() == (0, 65535)


def test_palette_png_has_transparency(good_set: tuple[Path, list[Path]]) -> None:
    with Image.open(_by_name(good_set, "palette_transparent.png")) as im:
        assert "transparency" in im.info


def test_rgba_png_has_real_alpha(good_set: tuple[Path, list[Path]]) -> None:
    alpha = _load(_by_name(good_set, "rgba.png")).getchannel("A")
    assert alpha.getextrema() == (0, 255)


def test_animated_gif_has_three_frames(good_set: tuple[Path, list[Path]]) -> None:
    with Image.open(_by_name(good_set, "animated.gif")) as im:
        assert im.n_frames == 3
        assert im.is_animated


def test_avif_present_iff_supported(good_set: tuple[Path, list[Path]]) -> None:
    avifs = [p for p in good_set[1] if p.suffix == ".avif"]
    assert len(avifs) == int(AVIF_SUPPORTED)
    for path in avifs:
        assert _load(path).format == "AVIF"


def test_exif_rotated_in_good_set_is_stored_sideways(good_set: tuple[Path, list[Path]]) -> None:
    with Image.open(_by_name(good_set, "exif_rotated.jpg")) as im:
        assert im.getexif()[0x0112] == 6
        assert im.size == (72, 96)
        assert ImageOps.exif_transpose(im).size == (96, 72)


def test_exif_rotated_pair_matches_after_transpose(tmp_path: Path) -> None:
    upright_path, rotated_path = make_exif_rotated_pair(tmp_path)
    upright, rotated = _load(upright_path), _load(rotated_path)
    assert rotated.getexif()[0x0112] == 6
    assert rotated.size == upright.size[::-1]
    shown = ImageOps.exif_transpose(rotated)
    assert shown.size == upright.size
    assert _mean_abs_diff(shown, upright) < 5
    # The pixels on disk really are sideways: rotating them clockwise by hand matches too.
    assert _mean_abs_diff(rotated.rotate(-90, expand=True), upright) < 5


# --------------------------------------------------------------------------- bad files


def test_bad_reason_codes_are_known(bad_set: tuple[Path, dict[str, str]]) -> None:
    _, bad = bad_set
    assert set(bad.values()) <= BAD_REASONS
    assert {"vanished", "io-error"} <= BAD_REASONS
    expected = {"empty", "truncated", "not-an-image", "unsupported-format", "too-large"}
    assert expected | {"broken-symlink"} <= set(bad.values())


def test_bad_files_exist_as_listed(bad_set: tuple[Path, dict[str, str]]) -> None:
    dest, bad = bad_set
    listed = {p.relative_to(dest).as_posix() for p in dest.rglob("*")}
    assert set(bad) == listed


def test_empty_file(bad_set: tuple[Path, dict[str, str]]) -> None:
    dest, _ = bad_set
    assert (dest / "empty.jpg").stat().st_size == 0


@pytest.mark.parametrize("name", ["truncated.jpg", "truncated.png"])
def test_truncated_header_ok_but_pixels_fail(
    bad_set: tuple[Path, dict[str, str]], name: str
) -> None:
    dest, _ = bad_set
    with Image.open(dest / name) as im:
        assert im.size == (256, 256)  # header survives the cut...
        with pytest.raises(OSError, match="truncated"):
            im.load()  # ...but the pixel data does not


@pytest.mark.parametrize("name", ["empty.jpg", "notes.jpg", "random.png", "vector.svg"])
def test_unidentifiable(bad_set: tuple[Path, dict[str, str]], name: str) -> None:
    dest, _ = bad_set
    with pytest.raises(UnidentifiedImageError):
        Image.open(dest / name)


def test_raw_stand_in_is_not_decodable(bad_set: tuple[Path, dict[str, str]]) -> None:
    dest, bad = bad_set
    assert bad["raw_photo.cr2"] == "unsupported-format"
    with pytest.raises(UnidentifiedImageError):
        Image.open(dest / "raw_photo.cr2")


def test_bomb_declares_huge_canvas_in_tiny_file(bad_set: tuple[Path, dict[str, str]]) -> None:
    dest, _ = bad_set
    path = dest / "bomb.png"
    assert path.stat().st_size < 100_000
    with warnings.catch_warnings():
        # 144 MP is above Pillow's own warning threshold (~89 MP); opening only reads the
        # header, which is all we need here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            assert im.size == BOMB_SIZE
            assert im.width * im.height > 100_000_000


def test_bomb_is_quick_to_write(tmp_path: Path) -> None:
    start = time.perf_counter()
    write_bomb_png(tmp_path / "b.png")
    assert time.perf_counter() - start < 3


def test_dangling_symlink(bad_set: tuple[Path, dict[str, str]]) -> None:
    dest, _ = bad_set
    link = dest / "dangling.jpg"
    assert link.is_symlink()
    assert not link.exists()
    with pytest.raises(FileNotFoundError):
        Image.open(link)


def test_locked_file_only_when_not_root(bad_set: tuple[Path, dict[str, str]]) -> None:
    dest, bad = bad_set
    if os.geteuid() == 0:
        assert "locked.jpg" not in bad
        return
    assert bad["locked.jpg"] == "permission-denied"
    with pytest.raises(PermissionError):
        Image.open(dest / "locked.jpg")


# --------------------------------------------------------------------------- non-images


def test_non_image_files(tmp_path: Path) -> None:
    paths = non_image_files(tmp_path)
    rel = {p.relative_to(tmp_path).as_posix() for p in paths}
    assert rel == {"README.txt", "data.csv", ".hidden.jpg", ".thumbnails/x.jpg"}
    for name in ("README.txt", "data.csv"):
        with pytest.raises(UnidentifiedImageError):
            Image.open(tmp_path / name)
    # Hidden ones decode fine: they must be skipped for being hidden, not for being broken.
    for name in (".hidden.jpg", ".thumbnails/x.jpg"):
        assert _load(tmp_path / name).format == "JPEG"
