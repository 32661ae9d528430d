"""Video files -> a few upright frames as model crops, with their times, or a DecodeError.

PyAV (FFmpeg bundled in its wheels) decodes on the CPU, in the decode workers. Which frames
are kept is the `FrameSampler`'s rule: the first frame, a frame whose small thumbnail
differs enough from the last kept one and from the one looked at just before it (a scene
change), and at least one every `interval`
seconds; at most `max_frames`, spread over the whole video. H.264 and friends must decode the
frames between keyframes anyway, so every frame is decoded, but only the ones looked at are
converted (a 16x16 thumbnail every SCENE_STEP seconds) and only the kept ones to RGB; a video
long enough for the cap to bind has only its keyframes decoded.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from deepvision.extras import install_hint
from deepvision.pipeline.decode import DecodeError, Size, check_pixels, file_error
from deepvision.pipeline.transforms import DRAFT_HEADROOM, Preprocess, resize_crop
from deepvision.types import Reason

# FFmpeg's av_image_check_size: (w + 128) * (h + 128) * 8 bytes must stay under 2^31.
FFMPEG_MAX_PIXELS = (2**31 - 1) // 8
REFUSED_SIZE = re.compile(r"Picture size (\d+)x(\d+) is invalid")  # its log line when over

if TYPE_CHECKING:
    import torch

# Mean absolute difference (0..1) of 16x16 RGB thumbnails above which a frame is a new scene.
# Measured on bench/video.py's 1080p scenes: cuts 0.10-0.33, within a panning scene 0.01-0.03
# (grey thumbnails separated them less: cuts from 0.076). A pan that drifts far from the last
# kept frame counts as new content too, which is what a search wants.
SCENE_THRESHOLD = 0.08
SCENE_STEP = 0.25  # seconds between frames looked at for a scene change
SCENE_MIN_GAP = 0.5  # seconds: a strobe or a flash does not fill the video's frame budget
THUMB = 16
# A truncated video decodes fine up to where it was cut: it is reported when its last frame
# falls this far short of the duration its header declares (MAX(1 s, 5 %)).
TRUNCATED_SLACK = (1.0, 0.05)


@dataclass(frozen=True)
class VideoOptions:
    interval: float = 5.0  # seconds: at least one frame this often
    max_frames: int = 200  # per video; spread over the whole video when it is long
    timeout: float = 300.0  # seconds of decoding per file before it fails with `timeout`


@dataclass
class FrameSampler:
    """The sampling rule, on (time, thumbnail) pairs: which frames to keep.

    duration (seconds, None: unknown) stretches the interval so that a long video's frames
    spread over all of it; `thin` keeps the count within max_frames whatever happens."""

    interval: float
    max_frames: int
    duration: float | None = None
    kept_at: list[float] = field(default_factory=list)
    _last_thumb: np.ndarray | None = None  # of the last kept frame
    _looked: np.ndarray | None = None  # of the last frame looked at
    _last_look: float | None = None

    @property
    def every(self) -> float:
        if self.duration and self.duration > 0:
            return max(self.interval, self.duration / self.max_frames)
        return self.interval

    def looks_at(self, t: float) -> bool:
        """Whether the frame at `t` needs a thumbnail (most frames do not)."""
        return self._last_look is None or t - self._last_look >= SCENE_STEP or self._due(t)

    def offer(self, t: float, thumb: np.ndarray) -> bool:
        """Keep the frame at `t` (its thumbnail: float 0..1)?"""
        self._last_look = t
        cut = self._new_scene(t, thumb)
        self._looked = thumb
        if not self.kept_at or self._due(t) or cut:
            self.kept_at.append(t)
            self._last_thumb = thumb
            return True
        return False

    def _due(self, t: float) -> bool:
        return bool(self.kept_at) and t - self.kept_at[-1] >= self.every

    def _new_scene(self, t: float, thumb: np.ndarray) -> bool:
        """A cut: different from the last kept frame, and abruptly so (from the frame looked at
        just before). A pan drifts away from the last kept frame slowly: the interval covers it
        (on bench/video.py's panning scenes, comparing with the last kept frame alone kept 33
        frames a minute for 8 scenes)."""
        if not self.kept_at or t - self.kept_at[-1] < SCENE_MIN_GAP:
            return False
        return min(_diff(thumb, self._last_thumb), _diff(thumb, self._looked)) > SCENE_THRESHOLD


def _diff(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return 1.0 if a is None or b is None else float(np.abs(a - b).mean())


def spread(n: int, limit: int) -> list[int]:
    """`limit` indices out of range(n), evenly spread, first and last included."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]


@dataclass
class SampledVideo:
    times: list[float]
    crops: list[torch.Tensor]  # uint8 (3, crop, crop), upright
    sides: list[int]  # each kept frame's short side (transforms.Crop.side)
    decoded: int = 0  # frames the decoder produced
    duration: float | None = None  # as the header declares it
    end: float = 0.0  # time of the last demuxed packet
    keyframes_only: bool = False  # a long video: only its keyframes were decoded

    def keep(self, rows: list[int]) -> None:
        self.times = [self.times[i] for i in rows]
        self.crops = [self.crops[i] for i in rows]
        self.sides = [self.sides[i] for i in rows]


def sample_video(path: str, pre: Preprocess, opts: VideoOptions,
                 max_megapixels: float, clock: Any = time.monotonic) -> SampledVideo:
    """Decode `path` and keep the frames the sampling rule picks, as model crops. Raises
    DecodeError with the reason (empty, truncated, corrupt, no-video-stream,
    unsupported-format, too-large, timeout, ...). clock: injectable for the timeout tests."""
    deadline = clock() + opts.timeout
    with _video_errors(), _open_regular(path) as f, _open_container(f, opts.timeout) as box:
        stream = _video_stream(box, path, (max_megapixels, pre.resize, opts.timeout))
        check_pixels(Size(stream.codec_context.width, stream.codec_context.height),
                     max_megapixels, pre.resize)
        out = _decode(box, stream, pre, opts, max_megapixels,
                      lambda: _check_deadline(clock, deadline, opts.timeout))
    if not out.times:
        raise DecodeError(Reason.CORRUPT, "no decodable video frame")
    _check_complete(out)
    return out


def _decode(container: Any, stream: Any, pre: Preprocess, opts: VideoOptions,
            max_megapixels: float, tick: Any) -> SampledVideo:
    duration = _duration(container, stream)
    sampler = FrameSampler(opts.interval, opts.max_frames, duration)
    out = SampledVideo([], [], [], 0, duration)
    stream.thread_type = "AUTO"  # frame threads: a long video is one worker's task
    if sampler.every > opts.interval:
        # The cap binds (a video longer than max_frames x interval): decode keyframes only.
        # Encoders put one at every cut (x264's scenecut) and phones one every 1-2 s, so the
        # rule still sees the scenes, at a fraction of the decoding (bench/video.py: sampling
        # a 1-minute 1080p video from its 8 keyframes took 0.26 s, decoding its 1800 frames 3.2 s).
        stream.codec_context.skip_frame = "NONKEY"
        out.keyframes_only = True
    # Times count from the stream's start, as players (and frame_image's seek) show them.
    start = float(stream.start_time * stream.time_base) if stream.start_time else None
    for frame in _frames(container, stream, tick, out, start or 0.0):
        out.decoded += 1
        start = frame.time if start is None else start
        t = max(0.0, frame.time - start)
        if not sampler.looks_at(t) or not sampler.offer(t, _thumb(frame)):
            continue
        check_pixels(Size(frame.width, frame.height), max_megapixels, pre.resize)
        out.times.append(t)
        out.crops.append(frame_crop(frame, pre))
        out.sides.append(min(frame.width, frame.height))
        if len(out.times) > 2 * opts.max_frames:  # bounded memory whatever the video does
            out.keep(spread(len(out.times), opts.max_frames))
    out.keep(spread(len(out.times), opts.max_frames))
    return out


def _frames(container: Any, stream: Any, tick: Any, out: SampledVideo,
            base: float) -> Iterator[Any]:
    """The stream's timed frames; `tick` (the deadline) runs per packet and per frame, so a
    demuxer that keeps reading without producing frames is stopped too. out.end: where the
    packets end (also when only keyframes are decoded)."""
    for packet in container.demux(stream):
        tick()
        if packet.pts is not None and packet.time_base is not None:
            out.end = max(out.end, float(packet.pts * packet.time_base) - base)
        for frame in packet.decode():
            tick()
            if frame.time is not None:
                yield frame


def frame_crop(frame: Any, pre: Preprocess) -> torch.Tensor:
    """One decoded frame -> the model's upright uint8 crop. FFmpeg scales it down to twice the
    resize target first (as JPEG draft mode does for photos); the final resize is the one
    every image gets (transforms.resize_crop)."""
    import torch

    w, h = frame.width, frame.height
    scale = min(1.0, DRAFT_HEADROOM * pre.resize / max(1, min(w, h)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = frame.reformat(width=size[0], height=size[1], format="rgb24",
                         interpolation="AREA").to_ndarray()
    turns = round((frame.rotation or 0) / 90) % 4  # display matrix: degrees counter-clockwise
    upright = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
    return resize_crop(torch.from_numpy(upright).permute(2, 0, 1), pre)


def frame_image(path: str, at: float, long_side: int) -> Any:
    """The upright frame nearest `at` seconds as a PIL image at most `long_side` px (for HTML
    thumbnails). Raises DecodeError."""
    with _video_errors(), _open_regular(path) as f, _open_container(f, 30) as box:
        stream = _video_stream(box, path)
        base = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        if at > 0:
            box.seek(int((base + at) / stream.time_base), stream=stream, backward=True,
                     any_frame=False)
        best = None
        for frame in box.decode(stream):
            if frame.time is None:
                continue
            best = frame
            if frame.time - base >= at - 1e-3:
                break
        if best is None:
            raise DecodeError(Reason.CORRUPT, "no decodable video frame")
        image = best.to_image()
        turns = round((best.rotation or 0) / 90) % 4
    image = image.rotate(90 * turns, expand=True) if turns else image
    image.thumbnail((long_side, long_side))
    return image


def _thumb(frame: Any) -> np.ndarray:
    small = frame.reformat(width=THUMB, height=THUMB, format="rgb24", interpolation="AREA")
    return small.to_ndarray().astype(np.float32) / 255.0


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _video_stream(container: Any, path: str,
                  limits: tuple[float, int | None, float] | None = None) -> Any:
    """The first video stream. limits (max megapixels, the short side it is resized to, the
    timeout): a frame size FFmpeg refused is `too-large`, not an unknown codec."""
    if not container.streams.video:
        raise DecodeError(Reason.NO_VIDEO_STREAM, "no video stream (audio only?)")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.width:
        codec = getattr(stream.codec_context, "name", None)
        size = _refused_size(path, limits[2]) if codec and limits else None
        if size is not None and limits is not None:
            check_pixels(size, limits[0], limits[1])
            raise DecodeError(Reason.TOO_LARGE, (
                f"{size.width}x{size.height} is {size.width * size.height / 1e6:.0f} "
                f"megapixels per frame, more than FFmpeg decodes (about "
                f"{FFMPEG_MAX_PIXELS / 1e6:.0f} MP; --max-megapixels cannot raise that)"))
        raise DecodeError(Reason.UNSUPPORTED_FORMAT, f"video codec {codec or 'unknown'} cannot "
                          "be decoded here (FFmpeg in PyAV)")
    return stream


def _refused_size(path: str, timeout: float) -> Size | None:
    """The frame size a video declares when FFmpeg refused it as too large: FFmpeg then
    reports a width of 0, and only its log says what the size was (so the file is opened a
    second time, with the log captured, on this failure path only)."""
    import av
    import av.logging

    previous, skipped = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # the same file twice logs the same line twice
    try:
        with av.logging.Capture() as logs:
            try:
                with _open_regular(path) as f, _open_container(f, timeout):
                    pass
            except (DecodeError, OSError, av.error.FFmpegError):
                pass
    finally:
        av.logging.set_level(previous)
        av.logging.set_skip_repeated(skipped)
    for _level, _name, message in logs:
        m = REFUSED_SIZE.search(message)
        if m:
            return Size(int(m[1]), int(m[2]))
    return None


def _check_deadline(clock: Any, deadline: float, limit: float) -> None:
    if clock() > deadline:
        raise DecodeError(Reason.TIMEOUT, f"sampling took longer than {limit:g} s; raise it "
                          "with --video-timeout")


def _check_complete(out: SampledVideo) -> None:
    if not out.duration or out.decoded < 2:
        return
    slack = max(TRUNCATED_SLACK[0], TRUNCATED_SLACK[1] * out.duration)
    if out.duration - out.end > slack:
        raise DecodeError(Reason.TRUNCATED, f"video ends after {out.end:.1f} s of the "
                          f"{out.duration:.1f} s its header declares (cut off?)")


def _open_container(f: IO[bytes], timeout: float) -> Any:
    import av

    try:
        return av.open(f, "r", timeout=timeout, buffer_size=1 << 20)
    except av.error.InvalidDataError:
        if _iso_cut_off(f):
            raise DecodeError(Reason.TRUNCATED, "the file ends before its index (moov box): "
                              "cut off while copying or recording?") from None
        raise


def _iso_cut_off(f: IO[bytes]) -> bool:
    """An MP4/MOV whose top-level boxes run past the end of the file, or that has no moov
    box: what a copy or a recording cut short looks like (reads 16 bytes per box)."""
    size = os.fstat(f.fileno()).st_size
    offset, kinds = 0, []
    while offset + 8 <= size:
        f.seek(offset)
        head = f.read(16)
        length, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if length == 1 and len(head) >= 16:
            length = int.from_bytes(head[8:16], "big")
        elif length == 0:
            length = size - offset
        if length < 8:
            return False  # not boxes at all
        kinds.append(kind)
        offset += length
    return bool(kinds) and kinds[0] == b"ftyp" and (offset > size or b"moov" not in kinds)


@contextmanager
def _open_regular(path: str) -> Iterator[IO[bytes]]:
    """The file, if it is a non-empty regular file (a FIFO swapped in would block forever)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError(Reason.SPECIAL_FILE,
                              "not a regular file (a FIFO, device or socket): not read")
        if st.st_size == 0:
            raise DecodeError(Reason.EMPTY, "zero-byte file")
        yield f


@contextmanager
def _video_errors() -> Iterator[None]:
    """PyAV's and the file system's exceptions as DecodeErrors with their reasons."""
    try:
        import av
    except ImportError:
        raise DecodeError(Reason.UNSUPPORTED_FORMAT,
                          f"videos need PyAV: {install_hint('video')}") from None
    try:
        yield
    except DecodeError:
        raise
    except (FileNotFoundError, PermissionError) as exc:
        raise file_error(exc) from exc
    except (av.error.DecoderNotFoundError, av.error.PatchWelcomeError) as exc:
        raise DecodeError(Reason.UNSUPPORTED_FORMAT, f"unsupported video: {exc}") from exc
    except av.error.EOFError as exc:
        raise DecodeError(Reason.TRUNCATED, f"video ends unexpectedly: {exc}") from exc
    except MemoryError as exc:
        raise DecodeError(Reason.TOO_LARGE, "out of memory decoding this video; lower "
                          "--max-megapixels or --workers") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(Reason.CORRUPT, f"cannot decode video: {exc}") from exc
