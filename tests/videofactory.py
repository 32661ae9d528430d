"""Generate small video files (good, rotated and broken) with PyAV for the test-suite.

Scenes are the generated photo-like images of imagefactory, so a still taken from scene k is
an ordinary image file the tests can query with.
"""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
from imagefactory import photo_like_image

SIZE = (160, 120)
FPS = 10


def scene(seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """HxWx3 uint8 RGB: a distinct generated picture per seed."""
    return np.array(photo_like_image(seed, size).convert("RGB"))


def make_video(path: Path, seeds: tuple[int, ...] = (101, 102, 103), seconds: float = 2.0,
               fps: int = FPS, size: tuple[int, int] = SIZE, codec: str = "libx264",
               audio: bool = False) -> Path:
    """One scene per seed, `seconds` each, with a little motion (a drifting bar) so that the
    frames inside a scene are not identical either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as box:
        stream = box.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        sound = box.add_stream("aac", rate=16000) if audio else None
        n = 0
        for seed in seeds:
            base = scene(seed, size)
            for i in range(int(seconds * fps)):
                img = base.copy()
                x = (i * 3) % (size[0] - 8)
                img[: size[1] // 8, x:x + 8] = 255
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = n
                n += 1
                for packet in stream.encode(frame):
                    box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
        if sound is not None:
            _add_silence(box, sound, n / fps)
    return path


def _add_silence(box: av.container.OutputContainer, stream: av.AudioStream,
                 seconds: float) -> None:
    samples = int(seconds * stream.rate)
    for start in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.rate = stream.rate
        frame.pts = start
        for packet in stream.encode(frame):
            box.mux(packet)
    for packet in stream.encode():
        box.mux(packet)


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w", format="mp4") as box:
        stream = box.add_stream("aac", rate=16000)
        _add_silence(box, stream, seconds)
    return path


def truncate(src: Path, dest: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def _tkhd_matrix_offset(data: bytes) -> int:
    # tkhd version 0: 4 bytes version/flags, 5 x 4 bytes times/ids, 8 reserved, 4 x 2 layer/
    # group/volume/reserved, then the 3x3 matrix of 32-bit fixed-point numbers.
    i = data.index(b"tkhd")
    assert data[i + 4] == 0, "tkhd version 1 not handled"
    return i + 4 + 4 + 20 + 8 + 8


def rotate_mp4(src: Path, dest: Path) -> Path:
    """The same file with a phone's portrait display matrix (shown turned 90° clockwise)."""
    data = bytearray(src.read_bytes())
    off = _tkhd_matrix_offset(data)
    data[off:off + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    dest.write_bytes(bytes(data))
    return dest


def unknown_codec(src: Path, dest: Path) -> Path:
    """An MP4 whose video track claims a codec no FFmpeg knows (fourcc avc1 -> zzz9)."""
    data = src.read_bytes()
    assert data.count(b"avc1") >= 1
    i = data.index(b"avc1", data.index(b"stsd"))
    dest.write_bytes(data[:i] + b"zzz9" + data[i + 4:])
    return dest


def declared_size_video(path: Path, size: tuple[int, int] = (65000, 65000)) -> Path:
    """A small MJPEG AVI whose headers (the AVI's and every JPEG frame's SOF0) declare `size`:
    a frame size FFmpeg refuses when over its ~268-megapixel limit (it then reports width 0),
    or one it accepts but that is over --max-megapixels."""
    small = (64, 48)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as box:
        stream = box.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height = small
        stream.pix_fmt = "yuvj420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(scene(200 + i, small), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    data = path.read_bytes()
    header = struct.pack("<ii", *small)  # avih dwWidth/dwHeight, strf biWidth/biHeight
    assert data.count(header) >= 1
    data = bytearray(data.replace(header, struct.pack("<ii", *size)))
    sof = data.find(b"\xff\xc0")
    while sof >= 0:  # SOF0: marker, length (2), precision (1), height (2), width (2)
        data[sof + 5:sof + 9] = struct.pack(">HH", size[1], size[0])
        sof = data.find(b"\xff\xc0", sof + 2)
    path.write_bytes(bytes(data))
    return path
