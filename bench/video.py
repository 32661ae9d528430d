"""Video throughput: frames decoded, sampled and embedded per second, and index size per minute.

Generates a 1080p H.264 video (libx264 `veryfast`, CABAC and B-frames as phones write them;
8 scenes of generated pictures, each panning so that every frame differs), then measures on
this machine, in one run:

- decode: PyAV decoding every frame, nothing else (the floor of any sampler);
- sample: `pipeline.video.sample_video` (decode, scene checks, RGB and model crops of the kept
  frames), as a decode worker runs it; and its long-video road (keyframes only, taken when
  --max-frames-per-video binds), forced with a cap of 5;
- network: the kept frames through the model (EfficientNet-Lite0 by default);
- index: `deepvision index` on a folder holding the video (the whole road, default workers),
  and the index's size on disk per video minute.

    python bench/video.py [--seconds 60] [--model efficientnet-lite0] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import command_line, machine, publish  # noqa: E402

from deepvision.models import registry  # noqa: E402
from deepvision.models.descriptor import Descriptor  # noqa: E402
from deepvision.pipeline.embedder import Embedder, EmbedOptions  # noqa: E402
from deepvision.pipeline.transforms import Crop  # noqa: E402
from deepvision.pipeline.video import VideoOptions, sample_video  # noqa: E402
from deepvision.progress import Silent  # noqa: E402
from deepvision.services.sync import IndexRequest, IndexRun  # noqa: E402
from deepvision.store.indexstore import IndexStore  # noqa: E402

W, H, FPS, SCENES = 1920, 1080, 30, 8
REPEATS = 3


def picture(seed: int) -> np.ndarray:
    """A gradient with blocks of colour, twice the frame's width (it pans across)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:2 * W].astype(np.float32)
    base = np.stack([(x / (2 * W)) * 255 * rng.random(), (y / H) * 255 * rng.random(),
                     np.full_like(x, 255 * rng.random())], axis=-1)
    for _ in range(40):
        x0, y0 = rng.integers(0, 2 * W - 200), rng.integers(0, H - 200)
        base[y0:y0 + rng.integers(40, 200), x0:x0 + rng.integers(40, 200)] = rng.integers(0, 255, 3)
    return base.astype(np.uint8)


def make_video(path: Path, seconds: float) -> None:
    import av

    frames = int(seconds * FPS)
    per_scene = frames // SCENES + 1
    with av.open(str(path), "w") as box:
        stream = box.add_stream("libx264", rate=FPS, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        pic = picture(0)
        for i in range(frames):
            if i % per_scene == 0:
                pic = picture(i // per_scene)
            shift = (i % per_scene) * 4  # a slow pan: 120 px per second
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pic[:, shift:shift + W]),
                                               format="rgb24")
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)


def decode_only(path: Path) -> tuple[int, float]:
    import av

    start = time.perf_counter()
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for _ in box.decode(stream))
    return n, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="dv-video-"))
    folder = work / "videos"
    folder.mkdir()
    video = folder / "clip.mp4"
    t0 = time.perf_counter()
    make_video(video, args.seconds)
    made = time.perf_counter() - t0
    spec, weights, _ = registry.resolve(args.model, None)
    embedder = Embedder.load(spec, weights, Descriptor(), EmbedOptions(device="cpu"))
    decode_times, sample_times = [], []
    for _ in range(REPEATS):  # side by side, alternating: the best of each
        decoded, seconds = decode_only(video)
        decode_times.append(seconds)
        start = time.perf_counter()
        sampled = sample_video(str(video), embedder.model.preprocess, VideoOptions(), 120.0)
        sample_times.append(time.perf_counter() - start)
    decode_s, sample_s = min(decode_times), min(sample_times)
    # The long-video road: a cap that binds (here 5 frames a minute) decodes keyframes only.
    start = time.perf_counter()
    keyed = sample_video(str(video), embedder.model.preprocess, VideoOptions(max_frames=5), 120.0)
    keyed_s = time.perf_counter() - start
    start = time.perf_counter()
    crops = [Crop(c, side) for c, side in zip(sampled.crops, sampled.sides, strict=True)]
    embedder.embed_crops([str(video)] * len(crops), crops)
    network_s = time.perf_counter() - start

    store = IndexStore(work / "indexes")
    start = time.perf_counter()
    summary = IndexRun(IndexRequest(roots=(folder,), store=store, model=args.model,
                                    embed=EmbedOptions(device="cpu")), Silent()).run()
    index_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in store.dir.iterdir() if p.is_file())
    minutes = args.seconds / 60
    load_after = os.getloadavg()[0]
    kept = len(sampled.times)
    report = "\n".join([
        f"## Video (bench/video.py) — {date.today().isoformat()}",
        "",
        f"Machine: {machine()}; 1-min load average {load_before:.2f} before, {load_after:.2f} "
        f"after (the machine is shared). Command: "
        f"`{command_line()}`. Video: {W}x{H} H.264 (libx264 veryfast, generated in "
        f"{made:.0f} s), {args.seconds:g} s at {FPS} fps, {SCENES} panning scenes, "
        f"{video.stat().st_size / 1e6:.1f} MB; model {spec.name}; defaults "
        "(--video-interval 5, --max-frames-per-video 200).",
        "",
        "| stage | frames | seconds | frames/s | x real time |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| decode only (PyAV, every frame; best of {REPEATS}) | {decoded} | {decode_s:.2f} | "
        f"{decoded / decode_s:.0f} | {args.seconds / decode_s:.1f} |",
        f"| sample (decode + scene checks + crops of {kept} kept; best of {REPEATS}) | "
        f"{sampled.decoded} | "
        f"{sample_s:.2f} | {sampled.decoded / sample_s:.0f} | {args.seconds / sample_s:.1f} |",
        f"| sample, long-video road (cap binds: --max-frames-per-video 5; keyframes only, "
        f"{len(keyed.times)} kept) | {keyed.decoded} | {keyed_s:.2f} | "
        f"{args.seconds / keyed_s:.0f} s of video/s | {args.seconds / keyed_s:.1f} |",
        f"| network (kept frames) | {kept} | {network_s:.2f} | {kept / network_s:.1f} | "
        f"{args.seconds / network_s:.1f} |",
        f"| `index` end to end | {summary.frames_embedded} embedded of {decoded} | "
        f"{index_s:.2f} | {decoded / index_s:.0f} decoded/s | {args.seconds / index_s:.1f} |",
        "",
        f"Kept frames at (s): {', '.join(f'{t:.1f}' for t in sampled.times)}.",
        f"Index on disk: {size / 1e3:.0f} kB for {args.seconds:g} s of video "
        f"({size / 1e3 / minutes:.0f} kB per video minute: {summary.frames_embedded} vectors "
        f"of {spec.dim} dims, float16 in the catalog plus the FAISS file).",
    ])
    publish(report, args.out)


if __name__ == "__main__":
    main()
