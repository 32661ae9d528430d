"""Inference backends: what runs the network on a CPU (torch, ONNX Runtime or OpenVINO), and how
`auto` picks one.

A runtime backend runs the model's exported view head (models/export.py); the views are made
in torch as for the torch backend, so every backend computes the same descriptor (cosine >=
MIN_COSINE, checked on a probe batch whenever a network is freshly exported). The backend is
therefore not part of an index's identity: an index built with one is searched with another.

`auto` is torch on CUDA and MPS. On a CPU it is the fastest installed backend for this model,
weights, pooling and thread count on this processor: measured once (a probe batch through each,
best of three after a warm-up) and remembered in the cache directory. A run too small to pay for
the export and the timing (under MEASURE_MIN images; `search` with a few queries) uses a
remembered choice or torch, and says so.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepvision.errors import BackendError, DeepVisionError, UsageError
from deepvision.extras import install_hint
from deepvision.models.export import cache_dir, export_key, onnx_file

if TYPE_CHECKING:
    import torch

    from deepvision.models.registry import LoadedModel
    from deepvision.pipeline.network import NetworkStep

AUTO, TORCH = "auto", "torch"
RUNTIMES = ("onnxruntime", "openvino")
BACKENDS = (AUTO, TORCH, *RUNTIMES)
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
MIN_COSINE = 0.999
MEASURE_MIN = 500  # images to embed: enough to pay for exporting and timing once (~5-20 s)
OPEN_ENDED = -1  # workload of a long-running service: always worth measuring
PROBE_IMAGES = 16

# A runtime's loader: (exported file, threads) -> a function from float NCHW views to their
# (N, dim) descriptors.
Runner = Callable[[Path, int], Callable[[np.ndarray], np.ndarray]]


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def backend_problem(name: str) -> str | None:
    """Why an explicitly requested backend cannot be used here (the CLI checks before loading)."""
    if name not in BACKENDS:
        return f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
    if name in RUNTIMES and not (installed(name) and installed("onnx")):  # onnx: the export
        return f"--backend {name} needs the {EXTRAS[name]} extra: {install_hint(EXTRAS[name])}"
    return None


@dataclass
class BackendStep:
    """A NetworkStep that runs the exported head in a runtime: views in torch, the head there,
    the view descriptors summed and L2-normalised as the torch extractor does."""

    backend: str
    run: Callable[[np.ndarray], np.ndarray]
    threads: int
    mean: torch.Tensor  # pixel_stats of the model's preprocessing
    std: torch.Tensor

    def __call__(self, model: LoadedModel, pixels: torch.Tensor,
                 device: torch.device) -> np.ndarray:
        import torch

        from deepvision.models.descriptor import views

        total = None
        with torch.inference_mode():
            for view in views(pixels.cpu(), self.mean, self.std, model.descriptor,
                              channels_last=False):
                out = self.run(view.numpy())
                total = out if total is None else total + out
        assert total is not None
        norms = np.linalg.norm(total, axis=1, keepdims=True)
        return (total / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


@dataclass
class Selection:
    """The backend an Embedder runs: its name, its step (None: torch's embed_pixels) and what to
    tell the user about the choice."""

    backend: str
    step: NetworkStep | None = None
    notes: list[str] = field(default_factory=list)


def select(requested: str, model: LoadedModel, device: torch.device, threads: int,
           workload: int, directory: Path | None = None) -> Selection:
    """The backend for `model` on `device`. threads: the runtime's intra-op threads (0: as many
    as torch uses). workload: images this embedder is expected to embed (OPEN_ENDED: a service)."""
    problem = backend_problem(requested)
    if problem:
        raise UsageError(problem)
    if requested == TORCH:
        return Selection(TORCH)
    if requested != AUTO:
        if device.type != "cpu":
            raise UsageError(f"--backend {requested} runs on the CPU; add --device cpu, or use "
                             f"--backend torch on {device}")
        step, notes = runtime_step(requested, model, resolve_threads(threads), directory)
        return Selection(requested, step, notes)
    return _auto(model, device, resolve_threads(threads), workload, directory)


def runtime_step(name: str, model: LoadedModel, threads: int, directory: Path | None = None,
                 runner: Runner | None = None) -> tuple[BackendStep, list[str]]:
    """The runtime's step on the (cached or freshly) exported head; a fresh export is checked
    against torch on a probe batch and thrown away if they disagree. runner: how the runtime
    loads the file (default: its entry in RUNNERS; tests pass their own)."""
    from deepvision.pipeline.transforms import pixel_stats

    exported = onnx_file(model, directory)
    notes = [exported.note] if exported.note else []
    load = runner or RUNNERS[name]
    step = BackendStep(name, load(exported.path, threads), threads,
                       *pixel_stats(model.preprocess))
    if exported.fresh:
        cosine = agreement(step, model)
        if cosine < MIN_COSINE:
            exported.path.unlink(missing_ok=True)
            exported.path.with_suffix(".json").unlink(missing_ok=True)
            raise BackendError(
                f"{name} disagrees with torch on {model.spec.name} (cosine {cosine:.4f} < "
                f"{MIN_COSINE}); use --backend torch")
    return step, notes


def agreement(step: NetworkStep, model: LoadedModel) -> float:
    """The smallest cosine between `step`'s descriptors and torch's on the probe batch."""
    import torch

    from deepvision.pipeline.network import embed_pixels

    probe = probe_pixels(model)
    ours = step(model, probe, torch.device("cpu"))
    ref = embed_pixels(model, probe, torch.device("cpu"))
    return float((ours * ref).sum(axis=1).min())


def probe_pixels(model: LoadedModel, n: int = PROBE_IMAGES) -> torch.Tensor:
    """Deterministic uint8 crops: smooth colour fields plus noise, so activations are not all
    saturated as with flat or pure-noise input."""
    import torch

    size = model.preprocess.crop
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    noise = torch.randn(n, 3, size, size, generator=g) * 20
    return (smooth + noise).clamp(0, 255).to(torch.uint8)


def _auto(model: LoadedModel, device: torch.device, threads: int, workload: int,
          directory: Path | None) -> Selection:
    if device.type != "cpu":
        return Selection(TORCH)
    available = [name for name in RUNTIMES if backend_problem(name) is None]
    if not available:
        return Selection(TORCH)  # nothing to choose from: say nothing
    key = _measure_key(model, threads, available)
    remembered = _remembered(_choices_file(directory), key)
    if remembered is not None:
        try:
            return _build(remembered, model, threads, directory,
                          f"backend auto: {remembered} (measured earlier on this machine)")
        except (DeepVisionError, RuntimeError, OSError) as exc:
            return Selection(TORCH, notes=[f"backend auto: torch ({remembered}, measured "
                                           f"earlier, cannot run now: {exc})"])
    if 0 <= workload < MEASURE_MIN:
        return Selection(TORCH, notes=[
            f"backend auto: torch for now; {', '.join(available)} installed, measured once by "
            f"a run of {MEASURE_MIN}+ images (or choose with --backend)"])
    return _measure(model, threads, available, key, directory)


def _measure(model: LoadedModel, threads: int, available: list[str], key: str,
             directory: Path | None) -> Selection:
    """Time torch and each installed runtime on the probe batch; keep and remember the fastest."""
    from deepvision.pipeline.network import embed_pixels

    probe = probe_pixels(model)
    timings = {TORCH: _ms_per_image(embed_pixels, model, probe)}
    steps: dict[str, BackendStep] = {}
    notes = []
    for name in available:
        try:
            steps[name], more = runtime_step(name, model, threads, directory)
        except (DeepVisionError, RuntimeError, OSError) as exc:
            notes.append(f"backend auto: {name} skipped ({exc})")
            continue
        notes.extend(more)
        timings[name] = _ms_per_image(steps[name], model, probe)
    best = min(timings, key=timings.__getitem__)
    _remember(_choices_file(directory), key, best, timings)
    figures = ", ".join(f"{name} {ms:.1f}" for name, ms in timings.items())
    notes.append(f"backend auto: {best} (measured ms/image on {threads} threads: {figures})")
    return Selection(best, steps.get(best), notes)


def _build(name: str, model: LoadedModel, threads: int, directory: Path | None,
           note: str) -> Selection:
    if name == TORCH:
        return Selection(TORCH, notes=[note])
    step, notes = runtime_step(name, model, threads, directory)
    return Selection(name, step, [*notes, note])


def _ms_per_image(step: NetworkStep, model: LoadedModel, probe: torch.Tensor) -> float:
    import torch

    cpu = torch.device("cpu")
    step(model, probe, cpu)  # warm-up: first-call allocations and kernel selection
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        step(model, probe, cpu)
        best = min(best, time.perf_counter() - start)
    return best * 1000 / len(probe)


def _measure_key(model: LoadedModel, threads: int, available: list[str]) -> str:
    versions = {name: _version(name) for name in available}
    return json.dumps({"export": export_key(model), "threads": threads, "cpu": _processor(),
                       "versions": versions, "flip": model.descriptor.flip,
                       "scales": list(model.descriptor.scales)}, sort_keys=True)


def _choices_file(directory: Path | None) -> Path:
    return (directory or cache_dir()) / "backend-choices.json"


def _remembered(path: Path, key: str) -> str | None:
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    name = entry.get("backend") if isinstance(entry, dict) else None
    usable = name == TORCH or (name in RUNTIMES and backend_problem(name) is None)
    return name if usable else None


def _remember(path: Path, key: str, best: str, timings: dict[str, float]) -> None:
    """Best effort: a cache that cannot be written means measuring again next time."""
    from deepvision.atomic import atomic_write_text

    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    known[key] = {"backend": best, "ms_per_image": {k: round(v, 3) for k, v in timings.items()},
                  "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known, indent=1))
    except OSError:
        pass


def resolve_threads(requested: int) -> int:
    if requested > 0:
        return requested
    import torch

    return max(1, torch.get_num_threads())


def _processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _onnxruntime(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin by default, burning the cores the decode workers need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: its optimiser's warnings are not the user's
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for a bad model file
        raise BackendError(f"onnxruntime cannot load {path}: {exc}") from None
    name = session.get_inputs()[0].name
    return lambda views: session.run(None, {name: views})[0]  # Run is thread-safe


def _openvino(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    core = _openvino_core()
    try:
        # f32: the CPU plugin's default bf16 (on CPUs with bf16 units) moves descriptors to
        # cosine ~0.997, below MIN_COSINE.
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    except Exception as exc:  # openvino raises RuntimeError subclasses of its own
        raise BackendError(f"openvino cannot load {path}: {exc}") from None
    request = compiled.create_infer_request()
    output = compiled.output(0)
    lock = threading.Lock()  # an infer request serves one call at a time

    def run(views: np.ndarray) -> np.ndarray:
        with lock:
            return np.array(request.infer({0: views})[output])  # own it: the request reuses it

    return run


@functools.cache
def _openvino_core() -> Any:
    """One OpenVINO Core for the process: a Core's destruction unloads its device plugins,
    and a compiled model that outlives it (or a later Core loading them again) crashed the
    process here (SIGSEGV in the test suite)."""
    import openvino as ov

    return ov.Core()


RUNNERS: dict[str, Runner] = {"onnxruntime": _onnxruntime, "openvino": _openvino}

