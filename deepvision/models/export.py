"""Exported networks for the CPU inference runtimes (ONNX Runtime, OpenVINO).

One ONNX file per (model, weights identity, pooling, export recipe), exported from the same torch
module the torch backend runs, in a cache directory. A sidecar JSON records the key and the
file's checksum: a file whose sidecar is missing, names another key or another checksum (a
killed export, a truncated copy, a stray edit) is exported again, never trusted.

What is exported is the view head (trunk + pooling + L2 normalisation, float NCHW in, any batch
and size); the views themselves (normalisation, scales, mirror) stay in torch: the antialiased
resize has no ONNX form.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepvision.atomic import atomic_write, atomic_write_text
from deepvision.errors import BackendError, UsageError

if TYPE_CHECKING:
    import torch

    from deepvision.models.registry import LoadedModel

# Bump when the export recipe changes (what is exported, opset, names): old files go stale.
EXPORT_VERSION = 1
OPSET = 18
INPUT, OUTPUT = "views", "descriptors"


@dataclass(frozen=True)
class Exported:
    path: Path
    key: str
    fresh: bool  # exported by this call (not from the cache)
    note: str | None  # said to the user when the file was exported (first use, or replaced)


def cache_dir() -> Path:
    """$DEEPVISION_CACHE_DIR/export, else $XDG_CACHE_HOME/deepvision/export (~/.cache). Not
    beside the weights: those often sit in read-only or package-managed folders."""
    root = os.environ.get("DEEPVISION_CACHE_DIR")
    if root:
        return Path(root) / "export"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "deepvision" / "export"


def export_key(model: LoadedModel) -> str:
    """What the exported file depends on: the model, its weights' identity, the pooling, the
    recipe, and the torch release that traced it."""
    import torch

    settings = {"model": model.spec.name, "weights": model.weights.identity,
                "pooling": model.descriptor.pooling, "export": EXPORT_VERSION, "opset": OPSET,
                "torch": torch.__version__.split("+")[0]}
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def onnx_file(model: LoadedModel, directory: Path | None = None) -> Exported:
    """The model's exported view head: from the cache when it checks out, else exported now."""
    folder = directory or cache_dir()
    key = export_key(model)
    path = folder / f"{model.spec.name}-{key}.onnx"
    problem = _problem(path, _sidecar(path), key)
    if problem is None:
        return Exported(path, key, False, None)
    _export(model, path, key)
    if problem == "missing":
        note = f"exported {model.spec.name} to ONNX (once; cached as {path})"
    else:
        note = f"exported {model.spec.name} again ({problem}): {path}"
    return Exported(path, key, True, note)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _problem(path: Path, sidecar: Path, key: str) -> str | None:
    """Why the cached file cannot be used, or None when it can."""
    if not path.is_file() or not sidecar.is_file():
        return "missing"
    try:
        meta = json.loads(sidecar.read_text())
        if meta.get("key") != key:
            return "stale cache entry"
        if meta.get("bytes") != path.stat().st_size or meta.get("sha256") != _sha256(path):
            return "the cached file was damaged"
    except (OSError, ValueError, AttributeError):
        return "unreadable cache entry"
    return None


def _export(model: LoadedModel, path: Path, key: str) -> None:
    """Trace the view head into `path`, then write its sidecar, each atomically: a killed
    export leaves no pair that passes the check."""
    meta: dict[str, object] = {"key": key, "model": model.spec.name,
                               "weights": model.weights.identity,
                               "pooling": model.descriptor.pooling}

    def write(tmp: str) -> None:
        _trace(model, Path(tmp))
        meta.update(bytes=os.path.getsize(tmp), sha256=_sha256(Path(tmp)))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
        atomic_write_text(_sidecar(path), json.dumps(meta, indent=1))
    except OSError as exc:
        raise UsageError(f"cannot write the export cache {path.parent}: "
                         f"{exc.strerror or exc}; set DEEPVISION_CACHE_DIR to a writable "
                         "folder") from None


def _trace(model: LoadedModel, target: Path) -> None:
    import torch

    head = _head(model.network).float().cpu().eval()
    crop = model.preprocess.crop
    example = torch.zeros(2, 3, crop, crop)
    dims = {0: "batch", 2: "height", 3: "width"}
    # The TorchScript exporter: the dynamo one needs onnxscript and takes ~20x longer for the
    # same graph here. Its deprecation warnings are about the exporter, not the user's run.
    # Traced with autograd on: without it nn.MultiheadAttention (CLIP's ViT) takes its fused
    # inference kernel, which has no ONNX form.
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(head, (example,), str(target), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: dims, OUTPUT: {0: "batch"}})
        except Exception as exc:  # the exporter raises many kinds; all mean "cannot export"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise BackendError(f"{model.spec.name} cannot be exported to ONNX ({first}); use "
                               "--backend torch") from None


def _head(network: object) -> torch.nn.Module:
    """The Extractor's view head, also under torch.compile's wrapper."""
    inner = getattr(network, "_orig_mod", network)
    return inner.head  # type: ignore[attr-defined]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

