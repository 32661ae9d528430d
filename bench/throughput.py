"""Extraction throughput (issue: GPU throughput), one command for any machine.

Generates realistic synthetic JPEGs (gradients + noise + shapes, quality 90) at several sizes and
measures in one run, for each size:

- end to end: a whole `index` run (`run_index`, the CLI's code path) into a fresh index, once per
  decoder choice (--e2e-decoders; default `auto`, and on CUDA also each other device decoder and
  `pil`). Two figures: steady, the marginal rate between a run over the first quarter of the
  images and a run over all of them (model load, worker start, FAISS save cancel out), and wall,
  images / seconds of the whole run.
- read: the files' bytes, one thread (page cache; the workers read in parallel in an index run).
- Pillow workers: decode (JPEG draft mode) + resize + crop in the DataLoader workers, exactly as
  `index --decoder pil` (and auto on the CPU) runs them; no network.
- device decode, per decoder (--decoders): pipeline = the workers pass JPEG bytes on and the
  `Feeder` decodes, orients and resizes them in batches on the device, as `index` does, without
  the network; ceiling ("alone" in the table) = the decoder on bytes already in memory
  (decode + orient + resize).
  On the CPU these are torchvision's libjpeg-turbo and nvImageCodec's CPU backend.
- network: random uint8 crops through `embed_pixels`, median of --repeats timed runs after a
  warm-up; on CUDA once with the pixels already on the device (the ceiling, as device-decoded
  crops arrive) and once copied from pinned memory (as Pillow crops arrive). --compile adds
  torch.compile: the first batch (compile cost) and the compiled rate.
- backends (--backends; default on the CPU: torch and every installed runtime): the network
  alone and the end-to-end run once per backend (`index --backend NAME`), and the ratio to torch
  eager. --split also runs end to end at the first size for each runtime backend with every
  (decode workers, backend threads) pair of 1..cores each: how the CPU is best shared.
- naive: the seed design (one process, PIL full decode, torchvision transforms, fp32, NCHW), as
  many images as fit in --naive-seconds after a warm-up.

The table comes last, then one line per size naming the limiting stage and, on CUDA, checking the
issue's H100 targets (end to end, steady: 640x480 >= 7,000 img/s and >= 50x naive, 1920x1080 >=
2,500, 4032x3024 >= 450).

    python bench/throughput.py [--n 256] [--sizes 640x480 1920x1080 4032x3024]
        [--model efficientnet-lite0 | --model resnet50 --weights FILE] [--device auto]
        [--decoders nvimgcodec torchvision] [--e2e-decoders auto pil] [--compile]
        [--backends torch onnxruntime openvino] [--threads N] [--split]
        [--repeats 5] [--naive-seconds 10] [--budget SECONDS] [--out bench/RESULTS.md]

Images per size: --n at the first size, n * sqrt(first pixels / pixels) at the others (at least
48). Stage figures are steady-state rates; only the bracketed end-to-end figure is a wall rate.

On the GPU machine, `bash bench/gpu_session.sh` (see its header for the wheels to carry) installs
the wheels, runs the GPU tests and then this script with a random ResNet50 state dict, for timing
only (never ship it); --budget stops it starting another size past that many seconds:
    python bench/throughput.py --model resnet50 --weights /tmp/r50_random.pt --n 8192 --compile
        --naive-seconds 6 --budget 430 --out $OUT/throughput.md
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, machine, publish

from deepvision.errors import UsageError
from deepvision.models import registry as models
from deepvision.models.weights import Weights
from deepvision.pipeline.backends import RUNTIMES, backend_problem, runtime_step
from deepvision.pipeline.decode import DEFAULT_MAX_MEGAPIXELS, load_rgb, read_file
from deepvision.pipeline.embedder import EmbedOptions
from deepvision.pipeline.feeder import Feeder, default_decode_bytes
from deepvision.pipeline.gpudecode import (
    DeviceDecoder,
    JpegHeader,
    decoder_available,
    device_jpeg_header,
    make_decoder,
)
from deepvision.pipeline.loader import decode_loader, default_workers
from deepvision.pipeline.network import default_batch_size, embed_pixels, pick_device
from deepvision.pipeline.transforms import Preprocess, orient, resize_crop_grouped
from deepvision.progress import Silent
from deepvision.services.sync import IndexRequest, run_index
from deepvision.store.indexstore import IndexStore

if TYPE_CHECKING:
    import torch

DEVICE_DECODERS = ("nvimgcodec", "torchvision")
# The targets, for an H100: end-to-end img/s per size; end to end / naive at 640x480.
TARGETS = {"640x480": 7000.0, "1920x1080": 2500.0, "4032x3024": 450.0}
RATIO_TARGETS = {"640x480": 50.0}
NOISE_TILE = 256
NAN = float("nan")


# ---- images ------------------------------------------------------------------------------------


def synthetic_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    """Gradients, sensor-like noise (sigma 12) and a dozen flat shapes, JPEG quality 90. The noise
    is one random 256 px tile repeated: JPEG codes every 8x8 block on its own, so file sizes and
    decode work are those of full-frame noise, and a 12-megapixel file takes 0.2 s, not 1.8 s."""
    rng = np.random.default_rng(seed)
    w, h = size
    tile = rng.standard_normal((NOISE_TILE, NOISE_TILE, 3), dtype=np.float32) * 12
    base = np.tile(tile, (-(-h // NOISE_TILE), -(-w // NOISE_TILE), 1))[:h, :w]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base[..., 0] += x * rng.uniform(50, 255)
    base[..., 1] += y * rng.uniform(50, 255)
    base[..., 2] += (1 - x) * rng.uniform(50, 255)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 20, w // 3)), y0 + int(rng.integers(h // 20, h // 3))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    im.save(path, quality=90)


def _write(job: tuple[Path, tuple[int, int], int]) -> None:
    synthetic_jpeg(*job)


def make_images(folder: Path, size: tuple[int, int], n: int) -> list[str]:
    """n synthetic JPEGs in `folder`, written by one process per core (before torch starts)."""
    folder.mkdir(parents=True)
    jobs = [(folder / f"img_{i:05d}.jpg", size, i) for i in range(n)]
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_write, jobs, chunksize=max(1, n // (4 * cores))))
    return [str(path) for path, _, _ in jobs]


def head_folder(folder: Path, paths: list[str], k: int) -> Path:
    """The first k images in a folder of their own (hard links), for the short end-to-end run."""
    head = folder.with_name(folder.name + "_head")
    head.mkdir()
    for p in paths[:k]:
        os.link(p, head / Path(p).name)
    return head


def parse_size(text: str) -> tuple[int, int]:
    if not re.fullmatch(r"\d+x\d+", text):
        raise SystemExit(f"--sizes {text!r}: use WIDTHxHEIGHT, such as 640x480")
    w, h = (int(v) for v in text.split("x"))
    return w, h


def images_per_size(n: int, sizes: list[tuple[int, int]]) -> list[int]:
    """n at the first size; other sizes n * sqrt(first pixels / pixels), a multiple of 16 and at
    least 48: seconds of work per stage at every size, without spending the run on generating
    and decoding 12-megapixel files (n / 40 of them would be too few to time on a GPU)."""
    first = sizes[0][0] * sizes[0][1]
    return [max(48, int(n * math.sqrt(first / (w * h))) // 16 * 16) for w, h in sizes]


# ---- timing helpers ----------------------------------------------------------------------------


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else NAN


def sync(device: torch.device) -> None:
    """Wait for the device: CUDA work is asynchronous, a host clock read before this lies."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def expect(stage: str, got: int, failed: int, wanted: int) -> None:
    if failed or got != wanted:
        print(f"WARNING {stage}: {got} of {wanted} images decoded, {failed} failures",
              file=sys.stderr, flush=True)


class Counted:
    """A device decoder that counts the images it decoded (the others fell back to Pillow)."""

    def __init__(self, inner: DeviceDecoder) -> None:
        self.inner = inner
        self.name = inner.name
        self.decoded = 0

    def decode(self, data: Any) -> list[Any]:
        images = self.inner.decode(data)
        self.decoded += sum(image is not None for image in images)
        return images


@dataclass(frozen=True)
class Network:
    ceiling: float  # pixels already on the device (on the CPU: the only figure)
    h2d: float | None  # pixels copied from pinned host memory first; None on the CPU

    @property
    def fed_from_host(self) -> float:
        return self.ceiling if self.h2d is None else self.h2d


@dataclass(frozen=True)
class DeviceDecode:
    pipeline: float  # workers -> bytes -> Feeder, as `index` runs it, no network
    ceiling: float  # the decoder alone on bytes in memory: decode + orient + resize
    share: float  # fraction of the images the device decoder took (the rest: Pillow fallback)


@dataclass(frozen=True)
class EndToEnd:
    steady: float  # marginal rate between the head run and the full run
    wall: float  # images / seconds of the whole full run


@dataclass
class Row:
    size: str
    n: int
    read: float = NAN
    pillow: float = NAN
    device: dict[str, DeviceDecode] = field(default_factory=dict)
    naive: float = NAN
    e2e: dict[str, EndToEnd] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.size}: {self.n} images", f"read {fmt(self.read)}",
                 f"Pillow workers {fmt(self.pillow)}"]
        parts += [f"{k} {fmt(v.pipeline)} / {fmt(v.ceiling)}" for k, v in self.device.items()]
        parts.append(f"naive {fmt(self.naive)}")
        parts += [f"e2e {k} {fmt(v.steady)} ({fmt(v.wall)} wall)" for k, v in self.e2e.items()]
        return ", ".join(parts) + " img/s"


def fmt(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


# ---- stages ------------------------------------------------------------------------------------


def stage_read(paths: list[str]) -> float:
    start = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            f.read()
    return rate(len(paths), time.perf_counter() - start)


def preload(paths: list[str], pre: Preprocess) -> list[tuple[torch.Tensor, JpegHeader]]:
    """Every file's bytes and JPEG header in memory, for the decoder-alone ceiling."""
    import torch

    out = []
    for p in paths:
        data = read_file(p)
        header = device_jpeg_header(data, DEFAULT_MAX_MEGAPIXELS, pre)
        if header is not None:
            out.append((torch.frombuffer(bytearray(data), dtype=torch.uint8), header))
    expect("preload", len(out), 0, len(paths))
    return out


def decode_groups(items: list[tuple[torch.Tensor, JpegHeader]], decode_batch: int,
                  decode_bytes: int) -> list[list[tuple[torch.Tensor, JpegHeader]]]:
    """The batches the Feeder would cut: up to decode_batch images and decode_bytes of pixels."""
    groups: list[list[tuple[torch.Tensor, JpegHeader]]] = []
    part: list[tuple[torch.Tensor, JpegHeader]] = []
    size = 0
    for item in items:
        part.append(item)
        size += 3 * item[1].height * item[1].width
        if len(part) >= decode_batch or size >= decode_bytes:
            groups.append(part)
            part, size = [], 0
    return [*groups, part] if part else groups


@dataclass
class Bench:
    """What every stage needs: the model, the device and how the index run is configured."""

    spec: models.ModelSpec
    weights: Weights
    weights_file: Path | None
    model: models.LoadedModel
    device: torch.device
    batch: int
    workers: int
    decoders: dict[str, DeviceDecoder]
    picked: str  # what --decoder auto chose here
    e2e_decoders: list[str]
    naive_seconds: float
    repeats: int
    backends: list[str]  # torch first
    threads: int  # the runtime backends' threads; 0: as `index` picks it

    @property
    def runtimes(self) -> list[str]:
        return [name for name in self.backends if name != "torch"]

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def options(self, decoder: str = "auto", backend: str = "torch",
                workers: int | None = None, threads: int | None = None) -> EmbedOptions:
        return EmbedOptions(device=str(self.device), batch_size=self.batch,
                            workers=self.workers if workers is None else workers,
                            decoder=decoder, backend=backend,
                            threads=self.threads if threads is None else threads)

    def steady(self, stage: Callable[[list[str]], tuple[int, float]], paths: list[str],
               head: int) -> float:
        """A loader stage's steady rate: the marginal rate between a run over the first `head`
        images and one over all, so that the workers' start cancels out as in `end_to_end`."""
        n_head, t_head = stage(paths[:head])
        n_all, t_all = stage(paths)
        return rate(n_all - n_head, t_all - t_head)

    def pillow_workers(self, paths: list[str]) -> tuple[int, float]:
        """Decode + resize + crop by Pillow in the loader workers, as `index --decoder pil` runs
        them; no network. Returns (images, seconds)."""
        opts = self.options()
        loader = decode_loader(paths, self.model.preprocess, self.device, opts.max_megapixels,
                               opts.workers, jpeg_bytes=False)
        got = failed = 0
        start = time.perf_counter()
        for chunk in loader:
            got += len(chunk.decoded)
            failed += len(chunk.failures)
        seconds = time.perf_counter() - start
        expect("Pillow workers", got, failed, len(paths))
        return got, seconds

    def device_pipeline(self, paths: list[str], decoder: Counted) -> tuple[int, float]:
        """Workers read each file and parse its header, JPEG bytes go to the Feeder, which
        decodes, orients and resizes them in batches on the device: `index` without the
        network. Synchronised at the end, so queued device work is counted."""
        opts = self.options()
        loader = decode_loader(paths, self.model.preprocess, self.device, opts.max_megapixels,
                               opts.workers, jpeg_bytes=True)
        feeder = Feeder(decoder, paths, self.model.preprocess, self.device,
                        opts.max_megapixels, self.batch, default_decode_bytes(self.device))
        got = failed = 0
        start = time.perf_counter()
        for piece in feeder.pieces(loader):
            got += len(piece.items)
            failed += len(piece.failures)
        sync(self.device)
        seconds = time.perf_counter() - start
        expect(f"{decoder.name} pipeline", got, failed, len(paths))
        return got, seconds

    def device_ceiling(self, items: list[tuple[torch.Tensor, JpegHeader]],
                       decoder: DeviceDecoder) -> float:
        """The decoder alone on bytes in memory: decode + orient + resize_crop_grouped, in the
        Feeder's batches, synchronised after each as the Feeder does (nvImageCodec frees its
        buffers outside torch's stream-aware cache)."""
        pre = self.model.preprocess
        groups = decode_groups(items, self.batch, default_decode_bytes(self.device))
        got = 0
        sync(self.device)
        start = time.perf_counter()
        for part in groups:
            images = decoder.decode([data for data, _ in part])
            upright = [orient(image, header.orientation)
                       for image, (_, header) in zip(images, part, strict=True)
                       if image is not None]
            if upright:
                got += len(resize_crop_grouped(upright, pre))
            sync(self.device)
        return rate(got, time.perf_counter() - start)

    def device_decode(self, paths: list[str], head: int) -> dict[str, DeviceDecode]:
        items = preload(paths, self.model.preprocess)
        out = {}
        for name, decoder in self.decoders.items():
            self.device_ceiling(items[:16], decoder)  # warm-up: handles, kernels, this shape
            counted = Counted(decoder)
            pipeline = self.steady(lambda part, d=counted: self.device_pipeline(part, d),
                                   paths, head)
            ceiling = self.device_ceiling(items, decoder)
            # counted saw the head run and the full run
            out[name] = DeviceDecode(pipeline, ceiling, counted.decoded / (len(paths) + head))
        return out

    def naive(self, paths: list[str]) -> float:
        """One process, PIL full decode, torchvision transforms, fp32 NCHW: the seed design.
        After a warm-up batch, as many batches as fit in naive_seconds (it is slow)."""
        import torch
        from torchvision import transforms

        pre = self.spec.preprocess()
        tf = transforms.Compose([
            transforms.Resize(pre.resize, interpolation=transforms.InterpolationMode(
                pre.interpolation)),
            transforms.CenterCrop(pre.crop), transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std)])
        trunk = self.spec.build(self.weights).eval().to(self.device)
        batch = 32  # decode-bound: the batch size hardly matters

        def run(part: list[str]) -> None:
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in part])
            trunk(x.to(self.device)).mean(dim=(2, 3)).cpu()  # .cpu() waits for the device

        with torch.inference_mode():
            noise = torch.rand(batch, 3, pre.crop, pre.crop, device=self.device)
            warm_up(lambda _: trunk(noise).mean().item())
            run(paths[:batch])  # and the decoders' first calls
            done = 0
            start = time.perf_counter()
            for s in range(0, len(paths), batch):
                run(paths[s:s + batch])
                done += len(paths[s:s + batch])
                if time.perf_counter() - start >= self.naive_seconds:
                    break
            seconds = time.perf_counter() - start
        return rate(done, seconds)

    def end_to_end(self, folder: Path, head: Path, work: Path, decoder: str,
                   opts: EmbedOptions | None = None) -> EndToEnd:
        """Whole `index` runs into fresh indexes (model load, discovery, hashing, decoding,
        network, sqlite commits, FAISS save): over the head folder, then over all images."""
        runs = []
        opts = opts or self.options(decoder)
        for root in (head, folder):
            self.free_cache()  # run_index sizes its decode batches from free GPU memory
            label = f"{decoder}_{opts.backend}_{opts.workers}_{opts.threads}"
            store = IndexStore(work / "idx", f"e2e_{root.name}_{label}")
            req = IndexRequest(roots=(root,), store=store, model=self.spec.name,
                               weights=self.weights_file, embed=opts, commit_every=100_000)
            summary = run_index(req, Silent())
            if summary.failures:
                print(f"WARNING e2e {decoder}: {len(summary.failures)} failures, first: "
                      f"{summary.failures[0]}", file=sys.stderr, flush=True)
            runs.append(summary)
        short, full = runs
        steady = rate(full.embedded - short.embedded, full.seconds - short.seconds)
        return EndToEnd(steady, full.images_per_second)

    def measure(self, size: str, folder: Path, paths: list[str], head: Path,
                work: Path) -> Row:
        row = Row(size, len(paths))
        load_rgb(paths[0])  # registers the HEIF plugin outside the timings
        row.read = stage_read(paths)
        n_head = len(os.listdir(head))
        row.pillow = self.steady(self.pillow_workers, paths, n_head)
        row.device = self.device_decode(paths, n_head)
        row.naive = self.naive(paths)
        for decoder in self.e2e_decoders:
            row.e2e[decoder] = self.end_to_end(folder, head, work, decoder)
        for backend in self.runtimes:
            row.e2e[run_key("auto", backend)] = self.end_to_end(
                folder, head, work, "auto", self.options("auto", backend))
        return row

    def split(self, folder: Path, head: Path, work: Path) -> dict[tuple[str, int, int], float]:
        """End to end (steady) per runtime backend and (decode workers, backend threads)."""
        cores = os.cpu_count() or 1
        out = {}
        for backend in self.runtimes:
            for workers in range(1, cores + 1):
                for threads in range(1, cores + 1):
                    opts = self.options("auto", backend, workers, threads)
                    e = self.end_to_end(folder, head, work, "auto", opts)
                    out[backend, workers, threads] = e2e_figure(e)[0]
                    print(f"split {backend} workers {workers} threads {threads}: "
                          f"{fmt(out[backend, workers, threads])} img/s", flush=True)
        return out

    def free_cache(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.empty_cache()


def network(model: models.LoadedModel, device: torch.device, batch: int,
            repeats: int, step: Callable = embed_pixels) -> Network:
    """The network alone on random uint8 crops (never zeros), features copied back as a real
    run pays it. On CUDA: pixels on the device already, and pixels from pinned host memory.
    step: the inference function (a runtime backend's step: CPU only)."""
    import torch

    crop = model.preprocess.crop
    # Three input sets, rotated: one 512-image batch (77 MB) would otherwise sit in L2.
    host = [torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8) for _ in range(3)]
    if device.type != "cuda":
        return Network(median_rate(model, host, device, repeats, step=step), None)
    on_device = [x.to(device) for x in host]
    pinned = [x.pin_memory() for x in host]
    return Network(median_rate(model, on_device, device, repeats),
                   median_rate(model, pinned, device, repeats))


WARM_UP = 8  # batches


def warm_up(step: Callable[[int], object]) -> None:
    """Run a few batches untimed: cuDNN and oneDNN choose kernels on the first, and on the CPU the
    next ones are still 2-3x slower until glibc's malloc has raised its mmap threshold to the
    activations' size (seen here: batches 1-5 at 12-21 img/s, then 40-45)."""
    for i in range(WARM_UP):
        step(i)


def median_rate(model: models.LoadedModel, inputs: list[torch.Tensor], device: torch.device,
                repeats: int, seconds: float = 0.5, step: Callable = embed_pixels) -> float:
    """Images/s: the median of `repeats` timed runs of about `seconds` each, after a warm-up.
    step: the inference function (embed_pixels: torch; a runtime backend's step)."""
    batch = len(inputs[0])
    warm_up(lambda i: step(model, inputs[i % len(inputs)], device))
    sync(device)
    start = time.perf_counter()
    step(model, inputs[1], device)
    sync(device)
    steps = max(1, round(seconds / (time.perf_counter() - start)))
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            step(model, inputs[i % len(inputs)], device)
        sync(device)
        rates.append(rate(steps * batch, time.perf_counter() - start))
    return statistics.median(rates)


def runtime_network(b: Bench, name: str) -> float:
    """A runtime backend's network alone (CPU), measured as `network` measures torch."""
    from deepvision.pipeline.backends import resolve_threads

    step, _ = runtime_step(name, b.model, resolve_threads(b.threads))
    return network(b.model, b.device, b.batch, b.repeats, step=step).ceiling


def compiled_network(spec: models.ModelSpec, weights: Weights, device: torch.device,
                     batch: int, repeats: int) -> tuple[float, Network]:
    """torch.compile: seconds of the first batch (the compile), then the compiled rates."""
    import torch

    model = models.load_model(spec, weights, device, compile=True)
    crop = model.preprocess.crop
    x = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8).to(device)
    sync(device)
    start = time.perf_counter()
    embed_pixels(model, x, device)
    sync(device)
    seconds = time.perf_counter() - start
    result = network(model, device, batch, repeats)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return seconds, result


def device_decoders(names: list[str] | None, device: torch.device
                    ) -> tuple[dict[str, DeviceDecoder], dict[str, str]]:
    """The device decoders to time and, for a default one that cannot run here, why not.
    A decoder named in --decoders that cannot run is an error."""
    found: dict[str, DeviceDecoder] = {}
    missing: dict[str, str] = {}
    for name in names or DEVICE_DECODERS:
        why = decoder_available(name)
        if why is None:
            try:
                decoder = make_decoder(name, device)
            except UsageError as exc:
                why = str(exc)
        if why is not None:
            if names:
                raise SystemExit(why)
            missing[name] = why
            continue
        assert decoder is not None  # make_decoder returns None only for pil/auto
        found[name] = decoder
    return found, missing


# ---- report ------------------------------------------------------------------------------------


def decoder_label(name: str, cuda: bool) -> str:
    if cuda:
        return name
    return {"torchvision": "torchvision (CPU libjpeg-turbo)",
            "nvimgcodec": "nvimgcodec (CPU backend, libjpeg-turbo)"}.get(name, name)


def run_key(decoder: str, backend: str) -> str:
    return decoder if backend == "torch" else f"{decoder} + {backend}"


def e2e_label(name: str, picked: str) -> str:
    return name.replace("auto", f"auto (= {picked})", 1) if name.startswith("auto") else name


def headline(row: Row) -> EndToEnd | None:
    """The end-to-end figure the targets and the ratio use: auto's, else the first one run."""
    return row.e2e.get("auto") or next(iter(row.e2e.values()), None)


def e2e_figure(e: EndToEnd | None) -> tuple[float, str]:
    """The steady end-to-end rate; the wall rate where the head run was no faster than the full
    one (too few images for the difference to mean anything)."""
    if e is None:
        return NAN, "steady"
    return (e.wall, "wall") if math.isnan(e.steady) else (e.steady, "steady")


def verdict(row: Row, b: Bench, net: Network) -> str:
    """The closing note for one size: the limiting stage with its figures, and the targets."""
    dd = row.device.get(b.picked)
    if b.picked == "pil":
        decode = (f"Pillow decode+resize in {b.workers} workers", row.pillow)
        feed = ("network, crops copied from host memory" if b.cuda else "network",
                net.fed_from_host)
    else:
        decode = (f"{b.picked} decode+resize pipeline", dd.pipeline if dd else NAN)
        feed = ("network, pixels on the device", net.ceiling)
    (slow, slow_rate), (other, other_rate) = sorted(
        [decode, feed], key=lambda s: math.inf if math.isnan(s[1]) else s[1])
    e2e, kind = e2e_figure(headline(row))
    text = (f"**{row.size}**: limiting stage: {slow}, {fmt(slow_rate)} img/s "
            f"({other} {fmt(other_rate)}); end to end {fmt(e2e)} img/s {kind}"
            + (f", {e2e / slow_rate:.0%} of it" if slow_rate > 0 else ""))
    if dd is not None and dd.pipeline < 0.8 * dd.ceiling:
        text += (f"; the {b.picked} decoder alone reaches {fmt(dd.ceiling)} img/s, so feeding it "
                 f"(reading and header parsing in {b.workers} workers, the hand-over, the "
                 "Feeder's batching) holds its pipeline back")
    if dd is not None and dd.share < 1.0:
        text += f"; {b.picked} decoded only {dd.share:.0%} of the images (the rest: Pillow)"
    if not b.cuda:
        return text + " (the decode workers and the network share the CPU's cores)."
    if dd is not None and dd.pipeline > 0 and e2e < 0.9 * slow_rate:
        text += (f"; decode and network share the GPU: one after the other they would give "
                 f"{fmt(1 / (1 / dd.pipeline + 1 / net.ceiling))} img/s")
    checks = []
    if row.size in TARGETS:
        target = TARGETS[row.size]
        checks.append(f"target ≥ {target:,.0f} img/s {'met' if e2e >= target else 'MISSED'}")
    if row.size in RATIO_TARGETS:
        target = RATIO_TARGETS[row.size]
        ratio = e2e / row.naive
        checks.append(f"≥ {target:.0f}× naive {'met' if ratio >= target else 'MISSED'} "
                      f"({ratio:.1f}×)")
    if checks:
        text += "; " + ", ".join(checks)
    if any("MISSED" in c for c in checks):
        stages = [f"read {fmt(row.read)} (1 thread)", f"Pillow workers {fmt(row.pillow)}"]
        stages += [f"{k} pipeline {fmt(v.pipeline)} / alone {fmt(v.ceiling)}"
                   for k, v in row.device.items()]
        stages += [f"network {fmt(net.ceiling)} on device / {fmt(net.fed_from_host)} with H2D",
                   f"naive {fmt(row.naive)}"]
        stages += [f"e2e {e2e_label(k, b.picked)} {fmt(v.steady)} ({fmt(v.wall)} wall)"
                   for k, v in row.e2e.items()]
        text += ". Per stage (img/s): " + ", ".join(stages)
    return text + "."


def report(rows: list[Row], b: Bench, net: Network, compiled: tuple[float, Network] | None,
           missing: dict[str, str], runtime_nets: dict[str, float],
           split: dict[tuple[str, int, int], float]) -> str:
    cuda = b.cuda
    e2e_keys = [*b.e2e_decoders, *(run_key("auto", r) for r in b.runtimes)]
    e2e_cols = [f"e2e {e2e_label(d, b.picked)} steady (wall)" for d in e2e_keys]
    dec_cols = [f"{decoder_label(d, cuda)} decode+resize pipeline / alone"
                for d in b.decoders]
    net_col = "network on device / with H2D" if cuda else "network"
    head = ["size", "images", *e2e_cols, "read (1 thread)",
            f"Pillow workers decode+resize ({b.workers})", *dec_cols, net_col, "naive",
            "e2e / naive"]
    lines = [f"## Extraction throughput (bench/throughput.py) — {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {machine(b.device)}; device {b.device}; model {b.spec.name} "
             f"({b.weights.origin}); batch {b.batch}; {b.workers} decode workers; "
             f"`--decoder auto` picks {b.picked} here. Synthetic JPEGs (gradients, noise, "
             "shapes; quality 90), files in the page cache. Command: "
             f"`{command_line()}`", "",
             "All figures are images/s, steady state. End to end: whole `index` runs, the "
             "marginal rate between a run over the first quarter of the images and one over all "
             "(model load, worker start, FAISS save cancel out); in brackets the wall rate of "
             "the full run (images / its seconds). Pillow workers and device pipeline: the same "
             "head/full difference, the index's loader without the network; pipeline = workers "
             "pass JPEG bytes, the Feeder decodes, orients and resizes on the device; alone = "
             "the decoder on bytes in memory. Network: median of "
             f"{b.repeats} timed runs on random crops after a warm-up"
             + ("; on device = pixels already on the GPU, with H2D = copied from pinned memory"
                if cuda else "") + ". Naive: one process, PIL full decode, torchvision "
             "transforms, fp32 NCHW, after a warm-up. e2e / naive: end to end (auto) "
             "over naive."]
    if not cuda and b.decoders:
        lines[-1] += " Device decoders on the CPU: CPU libjpeg-turbo figures, not GPU ones."
    for name, why in missing.items():
        lines.append(f"\n{name}: {why}" if name == "time budget" else f"\n{name} not timed: {why}")
    if compiled is not None:
        seconds, c = compiled
        lines.append(f"\n`--compile`: first batch {seconds:.1f} s (the compile); then network "
                     f"{fmt(c.ceiling)}" + (f" on device / {fmt(c.h2d)} with H2D" if cuda else "")
                     + f" img/s (not compiled: {fmt(net.ceiling)}"
                     + (f" / {fmt(net.h2d)}" if cuda else "") + ").")
    lines += ["", "| " + " | ".join(head) + " |",
              "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        cells = [r.size, str(r.n)]
        cells += [f"{fmt(r.e2e[d].steady)} ({fmt(r.e2e[d].wall)})" for d in e2e_keys]
        cells += [fmt(r.read), fmt(r.pillow)]
        cells += [f"{fmt(r.device[d].pipeline)} / {fmt(r.device[d].ceiling)}"
                  for d in b.decoders]
        cells.append(f"{fmt(net.ceiling)} / {fmt(net.h2d)}" if cuda else fmt(net.ceiling))
        ratio = e2e_figure(headline(r))[0] / r.naive
        cells += [fmt(r.naive), f"{ratio:.1f}×"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [verdict(r, b, net) for r in rows]
    lines += backend_lines(rows, b, net, runtime_nets, split)
    if not cuda:
        lines.append("The targets (≥ 7,000 / 2,500 / 450 img/s, ≥ 50× naive) are for an H100 and "
                     "are not checked on the CPU.")
    return "\n".join(lines) + "\n"


def backend_lines(rows: list[Row], b: Bench, net: Network, runtime_nets: dict[str, float],
                  split: dict[tuple[str, int, int], float]) -> list[str]:
    """Each runtime backend against torch eager: network alone, end to end per size, and the
    end-to-end ratio to naive; then the workers x threads split, if measured."""
    if not runtime_nets:
        return []
    lines = ["", "| backend | network img/s | × torch | "
             + " | ".join(f"e2e {r.size} img/s | × torch | × naive" for r in rows) + " |",
             "| --- |" + " ---: |" * (2 + 3 * len(rows))]
    torch_cells = [fmt(net.ceiling), "1.0×"]
    for r in rows:
        e = e2e_figure(r.e2e.get("auto"))[0]
        torch_cells += [fmt(e), "1.0×", f"{e / r.naive:.1f}×"]
    lines.append("| torch (eager) | " + " | ".join(torch_cells) + " |")
    for name, rate_ in runtime_nets.items():
        cells = [fmt(rate_), f"{rate_ / net.ceiling:.2f}×"]
        for r in rows:
            e = e2e_figure(r.e2e.get(run_key("auto", name)))[0]
            base = e2e_figure(r.e2e.get("auto"))[0]
            cells += [fmt(e), f"{e / base:.2f}×", f"{e / r.naive:.1f}×"]
        lines.append(f"| {name} ({b.threads or 'default'} threads) | " + " | ".join(cells) + " |")
    if split:
        lines += ["", f"End to end at {rows[0].size if rows else '?'} (steady img/s) by decode "
                  "workers × backend threads:", "",
                  "| backend | workers | threads | e2e img/s |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {k[0]} | {k[1]} | {k[2]} | {fmt(v)} |" for k, v in split.items()]
    return lines


# ---- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256,
                    help="images at the first size (fewer at larger sizes, at least 48)")
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080", "4032x3024"])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=0, help="0: as `index` picks it")
    ap.add_argument("--workers", type=int, default=-1, help="-1: as `index` picks it")
    ap.add_argument("--decoders", nargs="+", choices=DEVICE_DECODERS,
                    help="device decoders to time (default: those that work here)")
    ap.add_argument("--e2e-decoders", nargs="+", choices=("auto", "pil", *DEVICE_DECODERS),
                    help="--decoder values for the end-to-end runs (default: auto; on CUDA "
                         "also the other device decoders and pil)")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile: its cost and the compiled network")
    ap.add_argument("--backends", nargs="+", choices=("torch", *RUNTIMES),
                    help="inference backends to time (default: torch, and on the CPU every "
                         "installed runtime)")
    ap.add_argument("--threads", type=int, default=0,
                    help="runtime backends' threads (0: as `index` picks them)")
    ap.add_argument("--split", action="store_true",
                    help="also time every decode workers x backend threads pair end to end "
                         "at the first size (runtime backends)")
    ap.add_argument("--repeats", type=int, default=5, help="timed network runs (median)")
    ap.add_argument("--naive-seconds", type=float, default=10.0)
    ap.add_argument("--budget", type=float, default=0.0,
                    help="seconds: start no further size (nor the compile) after this many; "
                         "0: no limit. The table then has the sizes done so far")
    ap.add_argument("--out", type=Path, help="append the markdown section to this file")
    return ap.parse_args()


def over_budget(budget: float, began: float) -> bool:
    return budget > 0 and time.perf_counter() - began > budget


ImageSet = tuple[str, Path, list[str], Path]  # size, folder, paths, head folder


def write_sets(work: Path, texts: list[str], n: int) -> list[ImageSet]:
    sizes = [parse_size(t) for t in texts]
    sets = []
    for text, size, count in zip(texts, sizes, images_per_size(n, sizes), strict=True):
        start = time.perf_counter()
        paths = make_images(work / text, size, count)
        head = head_folder(work / text, paths, max(16, count // 4))
        print(f"{text}: wrote {count} JPEGs in {time.perf_counter() - start:.1f} s", flush=True)
        sets.append((text, work / text, paths, head))
    return sets


def make_bench(args: argparse.Namespace, spec: models.ModelSpec, weights: Weights
               ) -> tuple[Bench, dict[str, str]]:
    """The model on its device, configured as `index` would be, and the decoders to time."""
    device = pick_device(args.device)
    model = models.load_model(spec, weights, device)
    batch = args.batch_size or default_batch_size(device)
    workers = args.workers if args.workers >= 0 else default_workers(device)
    decoders, missing = device_decoders(args.decoders, device)
    auto = make_decoder("auto", device)
    picked = auto.name if auto is not None else "pil"
    e2e = args.e2e_decoders or (["auto", *(d for d in [*decoders, "pil"] if d != picked)]
                                if device.type == "cuda" else ["auto"])
    print(f"device {device}, batch {batch}, {workers} workers, auto decoder: {picked}, "
          f"device decoders timed: {', '.join(decoders) or 'none'}", flush=True)
    backends = args.backends or ["torch", *(r for r in RUNTIMES if backend_problem(r) is None
                                            and device.type == "cpu")]
    for name in backends:
        problem = backend_problem(name)
        if problem:
            raise SystemExit(problem)
    backends = ["torch", *(name for name in backends if name != "torch")]
    return Bench(spec, weights, args.weights, model, device, batch, workers, decoders, picked,
                 e2e, args.naive_seconds, args.repeats, backends, args.threads), missing


def main() -> None:
    began = time.perf_counter()
    args = parse_args()
    os.environ.setdefault("DEEPVISION_OFFLINE", "1")
    for text in args.sizes:
        parse_size(text)  # before any heavy work
    spec, weights, _ = models.resolve(args.model, args.weights)
    with tempfile.TemporaryDirectory(prefix="dv-throughput-") as tmp:
        work = Path(tmp)
        sets = write_sets(work, args.sizes, args.n)  # before torch starts: the pool forks
        b, missing = make_bench(args, spec, weights)
        start = time.perf_counter()
        net = network(b.model, b.device, b.batch, args.repeats)
        print(f"network: {fmt(net.ceiling)} img/s" + (
            f" on device, {fmt(net.h2d)} with H2D" if net.h2d is not None else "")
            + f" ({time.perf_counter() - start:.1f} s)", flush=True)
        runtime_nets = {}
        for name in b.runtimes:
            runtime_nets[name] = runtime_network(b, name)
            print(f"network {name}: {fmt(runtime_nets[name])} img/s", flush=True)
        rows: list[Row] = []
        skipped: list[str] = []
        for text, folder, paths, head in sets:
            if over_budget(args.budget, began):
                skipped.append(text)
                continue
            start = time.perf_counter()
            rows.append(b.measure(text, folder, paths, head, work))
            print(f"{rows[-1].summary()} ({time.perf_counter() - start:.1f} s)", flush=True)
        split = {}
        if args.split and sets and b.runtimes:
            text, folder, paths, head = sets[0]
            split = b.split(folder, head, work)
        compiled = None
        # Last: the longest single step, and the sizes' figures are printed by then.
        if args.compile and not over_budget(args.budget, began):
            compiled = compiled_network(spec, weights, b.device, b.batch, args.repeats)
            print(f"compiled: first batch {compiled[0]:.1f} s, then "
                  f"{fmt(compiled[1].ceiling)} img/s", flush=True)
        elif args.compile:
            skipped.append("--compile")
        if skipped:
            missing["time budget"] = (f"--budget {args.budget:g} s was spent before "
                                      f"{', '.join(skipped)}; not measured")
    publish(report(rows, b, net, compiled, missing, runtime_nets, split), args.out)


if __name__ == "__main__":
    main()
