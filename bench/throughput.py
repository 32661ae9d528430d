"""Extraction throughput (issue: GPU throughput), one command for any machine.

Generates realistic synthetic JPEGs (gradients + noise + shapes, quality 90) at several sizes,
indexes them through the real `index` code path, and measures in the same run: end-to-end
images/s, each stage alone (read, decode+resize in the loader workers, network), and the naive
baseline (one process, PIL decode + torchvision transforms, fp32, NCHW).

    python bench/throughput.py [--n 256] [--sizes 640x480 1920x1080 4032x3024]
        [--model efficientnet-lite0 | --model resnet50 --weights FILE] [--device auto]
        [--out bench/RESULTS.md]

On a GPU machine without ResNet50 weights, time with a random state dict (never ship it):
    python -c "import torch, torchvision; torch.save(torchvision.models.resnet50().state_dict(),
    '/tmp/r50_random.pt')" and pass --model resnet50 --weights /tmp/r50_random.pt.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import cpu_name, publish

from deepvision import models
from deepvision.decode import load_rgb
from deepvision.embed import (
    EmbedOptions,
    ImageFiles,
    default_workers,
    embed_pixels,
    pick_device,
)
from deepvision.indexer import IndexRequest, run_index
from deepvision.render import Reporter
from deepvision.storage import Location


def synthetic_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w, dtype=np.float32), np.linspace(0, 1, h,
                                                                            dtype=np.float32))
    base = np.stack([x * rng.uniform(50, 255), y * rng.uniform(50, 255),
                     (1 - x) * rng.uniform(50, 255)], axis=-1)
    base += rng.normal(0, 12, (h, w, 3)).astype(np.float32)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 20, w // 3)), y0 + int(rng.integers(h // 20, h // 3))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    im.save(path, quality=90)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def stage_read(paths: list[str]) -> float:
    start = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    return rate(len(paths), time.perf_counter() - start)


def stage_decode(paths: list[str], model: models.LoadedModel, workers: int) -> float:
    """Decode + resize + crop in the DataLoader workers exactly as `index` does, no network."""
    from torch.utils.data import DataLoader

    loader = DataLoader(ImageFiles(paths, model.preprocess, 1e9), batch_size=16,
                        num_workers=workers, collate_fn=list)
    start = time.perf_counter()
    n = sum(len(b) for b in loader)
    return rate(n, time.perf_counter() - start)


def stage_network(model: models.LoadedModel, device, batch: int, n: int) -> float:
    import torch

    crop = model.preprocess.crop
    pixels = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8)
    if device.type == "cuda":
        pixels = pixels.pin_memory()
    embed_pixels(model, pixels, device)  # warm-up (cuDNN autotune, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    done = 0
    while done < n:
        embed_pixels(model, pixels, device)  # includes the copy back: a real pipeline pays it
        done += batch
    return rate(done, time.perf_counter() - start)


def naive(paths: list[str], spec: models.ModelSpec, weights: models.Weights, device,
          batch: int) -> float:
    """One process, PIL decode, torchvision transforms, fp32 NCHW: the seed design."""
    import torch
    from torchvision import transforms

    pre = spec.preprocess()
    tf = transforms.Compose([
        transforms.Resize(pre.resize, interpolation=transforms.InterpolationMode(
            pre.interpolation)),
        transforms.CenterCrop(pre.crop), transforms.ToTensor(),
        transforms.Normalize(pre.mean, pre.std)])
    start = time.perf_counter()  # model build included, as in the end-to-end figure
    trunk = spec.build(weights).eval().to(device)
    with torch.inference_mode():
        for s in range(0, len(paths), batch):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[s:s + batch]])
            trunk(x.to(device)).mean(dim=(2, 3)).cpu()
    return rate(len(paths), time.perf_counter() - start)


def end_to_end(folder: Path, work: Path, model_name: str, weights: Path | None,
               opts: EmbedOptions) -> float:
    """A whole `index` run into a fresh index: model load, discovery, hashing, decoding in the
    workers, network, sqlite commits, FAISS save. images / wall seconds."""
    loc = Location(work / "idx", f"e2e_{folder.name}")
    req = IndexRequest(roots=(folder,), location=loc, model=model_name, weights=weights,
                       embed=opts, commit_every=100_000)
    summary = run_index(req, Reporter(quiet=True))
    return summary.images_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="images at the smallest size")
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080", "4032x3024"])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("DEEPVISION_OFFLINE", "1")
    device = pick_device(args.device)
    spec, weights, _ = models.resolve(args.model, args.weights)
    model = models.load_model(spec, weights, device)
    opts = EmbedOptions(device=args.device, batch_size=args.batch_size)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    workers = default_workers()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dv-throughput-") as tmp:
        work = Path(tmp)
        base_pixels = None
        for size_text in args.sizes:
            w, h = (int(v) for v in size_text.split("x"))
            base_pixels = base_pixels or w * h
            n = max(48, int(args.n * base_pixels / (w * h)) // 16 * 16)  # fewer big files
            folder = work / size_text
            folder.mkdir()
            for i in range(n):
                synthetic_jpeg(folder / f"img_{i:05d}.jpg", (w, h), seed=i)
            paths = sorted(str(p) for p in folder.iterdir())
            load_rgb(paths[0])  # warm the plugins
            row = {"size": size_text, "n": n,
                   "read": stage_read(paths),
                   "decode": stage_decode(paths, model, workers),
                   "network": stage_network(model, device, batch, max(n, batch * 4)),
                   "naive": naive(paths, spec, weights, device, batch),
                   "e2e": end_to_end(folder, work, spec.name, args.weights, opts)}
            rows.append(row)
            print(row, flush=True)
    gpu = ""
    if device.type == "cuda":
        import torch

        gpu = f", GPU {torch.cuda.get_device_name(device)}"
    lines = [f"## Extraction throughput (bench/throughput.py) — {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores{gpu}; device {device}; model "
             f"{spec.name} ({weights.origin}); batch {batch}; {workers} decode workers. Synthetic "
             "JPEGs (gradients, noise, shapes; quality 90), files in the page cache. Command: "
             f"`python bench/throughput.py --n {args.n} --sizes {' '.join(args.sizes)} "
             f"--model {args.model}`", "",
             "| size | images | end to end img/s | read img/s | decode+resize img/s | network "
             "img/s | naive img/s | end to end / naive |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['n']} | {r['e2e']:.1f} | {r['read']:.0f} | "
                     f"{r['decode']:.1f} | {r['network']:.1f} | {r['naive']:.1f} | "
                     f"{r['e2e'] / r['naive']:.1f}× |")
    lines.append("")
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
