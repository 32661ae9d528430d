"""`index --ray`'s Ray Data pipeline: the files to embed as a dataset, decoded in CPU tasks and
embedded by actors that each hold the index's Embedder, streamed back to the driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepvision.errors import ClusterError, DeepVisionError, UsageError
from deepvision.pipeline.backends import Selection
from deepvision.pipeline.discover import looks_like_video
from deepvision.pipeline.embedder import EmbedOptions
from deepvision.pipeline.loader import PILLOW_CHUNK
from deepvision.pipeline.transforms import Preprocess
from deepvision.pipeline.video import VideoOptions
from deepvision.services.distributed.cluster import (
    Cluster,
    check_workers,
    connect,
    disconnect,
    import_ray,
)
from deepvision.services.distributed.rows import EmbedActor, decode_rows, rows_to_batch
from deepvision.store.manifest import Manifest
from deepvision.types import EmbeddedBatch

DECODE_MEMORY = 1 << 30  # bytes: a photo at the 178 MP default limit is 534 MB as RGB, + its crop
ACTOR_BATCH = {"cpu": 32, "gpu": 128}  # rows per actor call (a GPU's network batch is larger)


@dataclass(frozen=True)
class ActorPlan:
    """How many embedding actors and what each holds. GPUs: one actor per GPU. CPUs only: half
    the cores embed (actors of up to 2 cores), half decode, so neither side starves."""

    actors: int
    cpus: float
    gpus: float

    @classmethod
    def for_cluster(cls, cluster: Cluster, device: str) -> ActorPlan:
        if cluster.gpus >= 1 and device != "cpu":
            return cls(cluster.gpus, 1, 1)
        if device not in ("auto", "cpu"):
            raise UsageError(f"--device {device}: the Ray cluster has no GPUs; use --device cpu "
                             "or a cluster with GPUs")
        half = max(1, cluster.cpus // 2)
        per = min(2, half)
        return cls(max(1, half // per), per, 0)

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def describe(self) -> str:
        each = "1 GPU" if self.gpus else f"{self.cpus:g} CPU{'s' * (self.cpus != 1)}"
        return f"{self.actors} embedding actor{'s' * (self.actors != 1)} ({each} each)"


class RayEmbedders:
    """An EmbedderFactory for IndexRun: joins the cluster only once something needs embedding
    (a no-op nightly rerun never touches it)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.cluster: Cluster | None = None
        self.plan: ActorPlan | None = None

    def __call__(self, manifest: Manifest, weights_file: Path | None,
                 opts: EmbedOptions) -> RayEmbedder:
        ray = import_ray()
        self.cluster = connect(self.address, ray)
        self.plan = ActorPlan.for_cluster(self.cluster, opts.device)
        return RayEmbedder(ray, self.cluster, self.plan, manifest, weights_file, opts)


@dataclass
class RayEmbedder:
    """The surface of `Embedder` an index run uses, with the work on the cluster. `device` and
    `backend` are what the actors report once they have run."""

    ray: Any
    cluster: Cluster
    plan: ActorPlan
    manifest: Manifest
    weights_file: Path | None
    opts: EmbedOptions
    device: str = ""
    backend: Selection = field(default_factory=lambda: Selection("pending"))
    decoder_name: str = "pil"

    def describe(self) -> str:
        return (f"{self.cluster.describe()}; {self.plan.describe()}, decoding in CPU tasks; "
                f"model {self.manifest.model}")

    def embed_files(self, paths: Sequence[str],
                    video: VideoOptions | None = None) -> Iterator[EmbeddedBatch]:
        """Every position comes back once, as vectors or a failure (a retried task's second
        answer is dropped); ClusterError if the cluster loses any for good."""
        if not paths:
            return
        from deepvision.models.registry import get_spec, model_preprocess

        pre = model_preprocess(get_spec(self.manifest.model), self.manifest.descriptor)
        try:
            check_workers(self.ray, paths, self.manifest, self.weights_file)
            dataset = self._dataset(paths, pre, video)
            seen: set[int] = set()
            for rows in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                self._note(rows)
                yield rows_to_batch(rows, paths, self.manifest.dim, seen)
        except self.ray.exceptions.RayError as exc:
            raise _unwrap(exc) from None
        finally:
            disconnect(self.ray)
        if len(seen) != len(paths):
            lost = next(p for i, p in enumerate(paths) if i not in seen)
            raise ClusterError(f"the Ray cluster returned {len(seen)} of {len(paths)} files "
                               f"(lost: {lost}, ...); run again to embed the rest")

    def _dataset(self, paths: Sequence[str], pre: Preprocess,
                 video: VideoOptions | None) -> Any:
        data = self.ray.data
        decode = {"fn_kwargs": {"pre": pre, "max_megapixels": self.opts.max_megapixels,
                                "video": video},
                  "batch_format": "numpy", "num_cpus": 1,
                  # What a decode holds at the pixel limit. Also keeps decoding in tasks of its
                  # own: Ray fuses a task map with the same resources into the actor map after
                  # it, and each actor then decodes serially before it embeds.
                  "memory": DECODE_MEMORY}
        images: list[dict[str, Any]] = []
        videos: list[dict[str, Any]] = []
        for pos, path in enumerate(paths):
            (videos if video is not None and looks_like_video(path) else images).append(
                {"pos": pos, "path": path})
        parts = [data.from_items(rows, override_num_blocks=_blocks(len(rows), self.cluster))
                 .map_batches(decode_rows, batch_size=size, **decode)
                 for rows, size in ((images, PILLOW_CHUNK), (videos, 1)) if rows]
        crops = parts[0] if len(parts) == 1 else parts[0].union(parts[1])
        kind = "gpu" if self.plan.gpus else "cpu"
        actor_opts = _actor_options(self.opts, self.plan, len(paths))
        return crops.map_batches(
            EmbedActor, batch_size=self.opts.batch_size or ACTOR_BATCH[kind],
            batch_format="numpy", compute=data.ActorPoolStrategy(size=self.plan.actors),
            num_cpus=self.plan.cpus, num_gpus=self.plan.gpus,
            fn_constructor_kwargs={"manifest": self.manifest, "weights_file": self.weights_file,
                                   "opts": actor_opts})

    def _note(self, rows: dict[str, np.ndarray]) -> None:
        if len(rows["device"]):
            self.device = str(rows["device"][0])
            self.backend = Selection(str(rows["backend"][0]))


def _blocks(n: int, cluster: Cluster) -> int:
    """Enough blocks to spread the decode tasks over the cluster, not more than the files."""
    return max(1, min(n // PILLOW_CHUNK + 1, 4 * max(1, cluster.cpus)))


def _actor_options(opts: EmbedOptions, plan: ActorPlan, workload: int) -> EmbedOptions:
    """What each actor's Embedder is built with: its device, no decoding of its own (the
    crops arrive decoded), the runtime's threads as the cores it holds."""
    threads = opts.threads or int(plan.cpus)
    device = opts.device if plan.gpus and opts.device != "auto" else plan.device
    return replace(opts, device=device, decoder="pil", workers=0, threads=threads,
                   workload=workload // max(1, plan.actors))



def _unwrap(exc: BaseException) -> DeepVisionError:
    """A worker's DeepVisionError (weights missing on a node, a backend that cannot run) as the
    error it is; anything else as a ClusterError that says what Ray reported."""
    cause = getattr(exc, "cause", None)
    while cause is not None and not isinstance(cause, DeepVisionError):
        cause = getattr(cause, "cause", None) or cause.__cause__
    if isinstance(cause, DeepVisionError):
        return cause
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ClusterError(f"the Ray cluster failed the run: {first}; files embedded so far are "
                        "committed, run again to go on")
