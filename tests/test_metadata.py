"""pipeline.metadata on real files: JPEGs with EXIF written by piexif, a HEIC, a video with
QuickTime tags (PyAV), and files whose EXIF is garbage (missing metadata, never a failure)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import av
import piexif
import pytest
from imagefactory import photo_like_image
from videofactory import make_video

from deepvision.pipeline.metadata import read_metadata
from deepvision.types import FileMeta


def _read(path: Path) -> FileMeta:
    st = os.stat(path)
    return read_metadata(str(path), st.st_size, st.st_mtime_ns)


def _mtime_iso(path: Path) -> str:
    return datetime.fromtimestamp(os.stat(path).st_mtime).astimezone().isoformat("T", "seconds")


def _exif(**extra: dict) -> bytes:
    data = {
        "0th": {piexif.ImageIFD.Make: b"FUJIFILM", piexif.ImageIFD.Model: b"X-T4",
                piexif.ImageIFD.Orientation: 6},  # turned: shown 72 wide, 96 high
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2021:12:31 23:59:58",
                 piexif.ExifIFD.LensModel: b"XF23mmF1.4 R\x00\x00"},
        # 33°51'24"S 151°12'36"E (Sydney): south and west are negative
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"S",
                piexif.GPSIFD.GPSLatitude: ((33, 1), (51, 1), (24, 1)),
                piexif.GPSIFD.GPSLongitudeRef: b"E",
                piexif.GPSIFD.GPSLongitude: ((151, 1), (12, 1), (36, 1))},
    }
    for ifd, tags in extra.items():
        data[ifd] = {**data[ifd], **tags}
    return piexif.dump(data)


def test_jpeg_exif_fields_come_out_right(tmp_path):
    path = tmp_path / "fuji.jpg"
    photo_like_image(1, (96, 72)).convert("RGB").save(path, exif=_exif())
    meta = _read(path)
    assert (meta.kind, meta.taken, meta.taken_source) == ("image", "2021-12-31T23:59:58", "exif")
    assert (meta.make, meta.model, meta.camera, meta.lens) == (
        "FUJIFILM", "X-T4", "FUJIFILM X-T4", "XF23mmF1.4 R")
    assert meta.lat == pytest.approx(-(33 + 51 / 60 + 24 / 3600), abs=1e-6)
    assert meta.lon == pytest.approx(151 + 12 / 60 + 36 / 3600, abs=1e-6)
    assert (meta.width, meta.height) == (72, 96)  # as shown: orientation 6 turns it
    assert meta.file_size == path.stat().st_size and meta.duration is None


def test_offset_and_the_make_named_in_the_model(tmp_path):
    path = tmp_path / "canon.jpg"
    exif = _exif(**{"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model:
                            b"Canon EOS R5", piexif.ImageIFD.Orientation: 1},
                    "Exif": {piexif.ExifIFD.OffsetTimeOriginal: b"-05:00"}})
    photo_like_image(2, (96, 72)).convert("RGB").save(path, exif=exif)
    meta = _read(path)
    assert meta.taken == "2021-12-31T23:59:58-05:00" and meta.camera == "Canon EOS R5"
    assert (meta.width, meta.height) == (96, 72)


def test_heic_with_exif(tmp_path):
    path = tmp_path / "phone.heic"
    exif = _exif(**{"0th": {piexif.ImageIFD.Make: b"Apple", piexif.ImageIFD.Model:
                            b"iPhone 15", piexif.ImageIFD.Orientation: 1}})
    photo_like_image(3, (128, 96)).convert("RGB").save(path, exif=exif)
    meta = _read(path)
    assert (meta.kind, meta.camera, meta.taken_source) == ("image", "Apple iPhone 15", "exif")
    assert (meta.width, meta.height) == (128, 96) and meta.lat == pytest.approx(-33.8567, 1e-4)


def test_video_duration_size_and_quicktime_tags(tmp_path):
    plain = make_video(tmp_path / "plain.mp4", seeds=(1, 2), seconds=1.0)
    meta = _read(plain)
    assert (meta.kind, meta.width, meta.height) == ("video", 160, 120)
    assert meta.duration == pytest.approx(2.0, abs=0.15)
    tagged = tmp_path / "tagged.mp4"
    with av.open(str(plain)) as src, av.open(str(tagged), "w", options={
            "movflags": "use_metadata_tags"}) as dst:
        dst.metadata.update({"creation_time": "2021-03-04T05:06:07.000000Z", "make": "Google",
                             "model": "Pixel 7", "location": "+35.6586+139.7454/"})
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    meta = _read(tagged)
    assert (meta.camera, meta.lat, meta.lon) == ("Google Pixel 7", 35.6586, 139.7454)
    assert meta.taken_source == "video"
    # A UTC creation time is shown on this machine's wall clock, like an mtime.
    assert datetime.fromisoformat(meta.taken) == datetime.fromisoformat("2021-03-04T05:06:07+00:00")


def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


@pytest.mark.parametrize("junk", [
    b"Exif\x00\x00" + b"\x00" * 3,  # cut off inside the TIFF header
    b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 40,  # 65535 entries, 40 bytes
    b"Exif\x00\x00MM\x00*\xff\xff\xff\xf0" + b"\x07" * 60,  # IFD past the end
    b"Exif\x00\x00" + bytes(range(256)) * 3,
])
def test_garbage_exif_is_missing_metadata_not_a_failure(tmp_path, junk):
    good = tmp_path / "good.jpg"
    photo_like_image(4, (96, 72)).convert("RGB").save(good)
    data = good.read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[:2] + _app1(junk) + data[2:])  # right after SOI, as cameras do
    meta = _read(broken)
    assert meta.kind == "image" and (meta.make, meta.lat) == (None, None)
    assert (meta.taken, meta.taken_source) == (_mtime_iso(broken), "mtime")
    assert (meta.width, meta.height) == (96, 72)


def test_wrong_types_blank_dates_and_null_island(tmp_path):
    exif = {"0th": {piexif.ImageIFD.Make: b"\x00\x00", piexif.ImageIFD.Orientation: 1},
            "Exif": {piexif.ExifIFD.DateTimeOriginal: b"0000:00:00 00:00:00"},
            "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                    piexif.GPSIFD.GPSLatitude: ((0, 1), (0, 1), (0, 1)),
                    piexif.GPSIFD.GPSLongitudeRef: b"E",
                    piexif.GPSIFD.GPSLongitude: ((0, 0), (0, 1), (0, 1))}}
    path = tmp_path / "blank.jpg"
    photo_like_image(5, (96, 72)).convert("RGB").save(path, exif=piexif.dump(exif))
    meta = _read(path)
    assert (meta.make, meta.lat, meta.lon, meta.taken_source) == (None, None, None, "mtime")


def test_a_file_that_is_no_image_at_all_still_gets_size_and_mtime(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"definitely not a jpeg" * 10)
    meta = _read(path)
    assert (meta.kind, meta.width, meta.taken_source, meta.file_size) == ("image", None, "mtime",
                                                                         210)
    gone = read_metadata(str(tmp_path / "vanished.png"), 5, 1_600_000_000 * 10**9)
    assert gone.taken_source == "mtime" and gone.width is None
