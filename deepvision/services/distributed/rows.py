"""`--ray`'s rows: one row per file from the decode task to the driver, so a video's frames stay
together.

A decode task (`decode_rows`) answers each file with its crops or its failure; an embedding
actor (`EmbedActor`) turns the crops into vectors; the driver (`rows_to_batch`) reads the rows
back as the EmbeddedBatch a local run gets. Ray Data moves columns of numpy arrays: crops,
vectors and frame times travel as bytes (object columns), a failure as its reason's value
and its message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepvision.pipeline.discover import looks_like_video
from deepvision.pipeline.embedder import EmbedOptions
from deepvision.pipeline.loader import PillowRun
from deepvision.pipeline.transforms import Preprocess
from deepvision.pipeline.video import VideoOptions
from deepvision.store.manifest import Manifest
from deepvision.types import EmbeddedBatch, Failure, Reason

# ---- what runs on the workers: one row per file -----------------------------------------------

def decode_rows(rows: dict[str, np.ndarray], pre: Preprocess, max_megapixels: float,
                video: VideoOptions | None) -> dict[str, np.ndarray]:
    """A decode task: files -> their crops (uint8 bytes, `frames` of them) or their failure."""
    out: dict[str, list[Any]] = {k: [] for k in ("pos", "path", "frames", "pixels", "times",
                                                 "reason", "message")}
    for pos, path in zip(rows["pos"], rows["path"], strict=True):
        run = PillowRun(pre, max_megapixels, video)
        if video is not None and looks_like_video(path):
            run.add_video(0, path)
        else:
            run.add(0, path)
        failure = run.failures[0][1] if run.failures else None
        pixels = (np.stack([c.numpy() for c in run.crops]).tobytes() if run.crops else b"")
        out["pos"].append(int(pos))
        out["path"].append(str(path))
        out["frames"].append(len(run.crops))
        out["pixels"].append(pixels)
        out["times"].append(_times_bytes(run.times))
        out["reason"].append(failure.reason.value if failure else "")
        out["message"].append(failure.message if failure else "")
    return _columns(out)


class EmbedActor:
    """An embedding actor: the index's Embedder, built once, runs its network on decoded
    crops. Rows that failed to decode pass through."""

    def __init__(self, manifest: Manifest, weights_file: Path | None,
                 opts: EmbedOptions) -> None:
        from deepvision.services.embedding import index_embedder

        self.embedder = index_embedder(manifest, weights_file, opts)
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        embedder, n = self.embedder, len(rows["pos"])
        crop = embedder.model.preprocess.crop
        parts, items, times = [], [], []
        for row in range(n):
            k = int(rows["frames"][row])
            if k and not rows["reason"][row]:
                parts.append(np.frombuffer(rows["pixels"][row], np.uint8).reshape(k, 3, crop,
                                                                                    crop))
                items += [row] * k
                times += _times_list(rows["times"][row])
        files = {}
        if parts:
            pixels = torch.from_numpy(np.concatenate(parts)).to(embedder.device)
            batch = embedder.network.checked([str(p) for p in rows["path"]], items, pixels,
                                             times)
            files = {f.pos: f for f in batch.files()}
        return self._answer(rows, files)

    def _answer(self, rows: dict[str, np.ndarray], files: dict[int, Any]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {k: [] for k in ("pos", "vectors", "times", "reason",
                                                     "message")}
        for row in range(len(rows["pos"])):
            got = files.get(row)
            failure = got.failure if got is not None else None
            out["pos"].append(int(rows["pos"][row]))
            out["vectors"].append(got.vectors.astype(np.float32).tobytes()
                                  if got is not None and failure is None else b"")
            out["times"].append(_times_bytes(list(got.times)) if got is not None
                                else rows["times"][row])
            out["reason"].append(failure.reason.value if failure else str(rows["reason"][row]))
            out["message"].append(failure.message if failure else str(rows["message"][row]))
        n = len(out["pos"])
        cols = _columns(out)
        cols["worker"] = np.array([self.where] * n)
        cols["device"] = np.array([str(self.embedder.device)] * n)
        cols["backend"] = np.array([self.embedder.backend.backend] * n)
        return cols


# ---- back on the driver ------------------------------------------------------------------------

def rows_to_batch(rows: dict[str, np.ndarray], paths: Sequence[str], dim: int,
                  seen: set[int]) -> EmbeddedBatch:
    """The actors' rows as the EmbeddedBatch a local run gets (positions into `paths`). A
    position already in `seen` is a retried task's second answer: dropped, never counted twice."""
    items: list[int] = []
    vectors: list[np.ndarray] = []
    times: list[float | None] = []
    failures: list[tuple[int, Failure]] = []
    for row in range(len(rows["pos"])):
        pos = int(rows["pos"][row])
        if pos in seen:
            continue
        seen.add(pos)
        if rows["reason"][row]:
            failures.append((pos, Failure(paths[pos], Reason(str(rows["reason"][row])),
                                          str(rows["message"][row]))))
            continue
        vecs = np.frombuffer(rows["vectors"][row], np.float32).reshape(-1, dim)
        items += [pos] * len(vecs)
        vectors.append(vecs)
        times += _times_list(rows["times"][row])
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    frames = times if any(t is not None for t in times) else None
    return EmbeddedBatch(items, stacked, failures, frames)


def _times_bytes(times: Sequence[float | None]) -> bytes:
    """A file's frame times as float64 bytes; NaN stands for an image's None."""
    return np.array([np.nan if t is None else t for t in times], np.float64).tobytes()


def _times_list(data: bytes) -> list[float | None]:
    """_times_bytes back: one entry per crop (an image's one is None)."""
    return [None if np.isnan(t) else float(t) for t in np.frombuffer(data, np.float64)]


def _columns(out: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for key, values in out.items():
        if values and isinstance(values[0], bytes):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            cols[key] = arr
        else:
            cols[key] = np.array(values)
    return cols
