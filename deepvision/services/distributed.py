"""`index --ray`: the embedding stage on a Ray cluster (Ray Data), everything else as a local run.

The driver (this process) discovers, plans and commits exactly as a local `index` does
(services.sync.IndexRun); only the files that need embedding become a Ray dataset. Decode
tasks (CPU) turn each file into its model crops or its failure with the loader's own code
(`loader.PillowRun`: the same reasons as a local run); embedding actors each build the index's
Embedder once (`services.embedding.index_embedder`, a local run's code path) and run its network
on those crops. One row is one file from end to end, so a video's frames stay together. Rows
stream back to the driver, which commits them in chunks: workers never write the index, so a
killed driver resumes like a killed local run, and a lost worker is Ray's to retry.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepvision.errors import ClusterError, DeepVisionError, UsageError
from deepvision.extras import install_hint
from deepvision.pipeline.backends import Selection
from deepvision.pipeline.discover import looks_like_video
from deepvision.pipeline.embedder import EmbedOptions
from deepvision.pipeline.loader import PILLOW_CHUNK, PillowRun
from deepvision.pipeline.transforms import Preprocess
from deepvision.pipeline.video import VideoOptions
from deepvision.services.raywatch import Watchdog
from deepvision.store.manifest import Manifest
from deepvision.types import EmbeddedBatch, Failure, Reason

LOCAL = "local"  # --ray local: start a cluster on this machine for this run
_WATCHDOGS: list[Watchdog] = []  # --ray local: the one guarding the cluster this process started
HOST_PORT = re.compile(r"(?:ray://)?([\w.\-]+):(\d{1,5})")  # HOST:PORT or ray://HOST:PORT
CLIENT = re.compile(r"ray://[\w.\-]+")  # Ray Client on its default port
DECODE_MEMORY = 1 << 30  # bytes: a photo at the 178 MP default limit is 534 MB as RGB, + its crop
CHECK_SAMPLE = 16  # files every node must be able to read before the run starts
ACTOR_BATCH = {"cpu": 32, "gpu": 128}  # rows per actor call (a GPU's network batch is larger)


def import_ray() -> Any:
    """Ray with Ray Data (the streaming batch inference engine), imported only when --ray asks
    for it; without them, the store's error naming the extra to install."""
    from deepvision.store.ondisk import load_ray

    ray = load_ray()
    try:
        import ray.data
    except ImportError:  # ray without its `data` extra: the `ray` extra brings both
        raise UsageError(f"Ray Data is not installed: {install_hint('ray')}") from None
    return ray


def resolve_address(address: str | None) -> str:
    """--ray's value: `local`, or an address as Ray takes it (host:port, ray://host:10001,
    auto); none given: RAY_ADDRESS."""
    chosen = address or os.environ.get("RAY_ADDRESS", "")
    forms = ("pass --ray HOST:PORT (or ray://HOST:10001) for a running cluster, or --ray local "
             "to start one on this machine")
    if not chosen:
        raise UsageError(f"--ray was given without an address and RAY_ADDRESS is not set; {forms}")
    if chosen not in (LOCAL, "auto") and not (HOST_PORT.fullmatch(chosen)
                                               or CLIENT.fullmatch(chosen)):
        raise UsageError(f"--ray {chosen}: not a Ray cluster address (give the folders before "
                         f"--ray if that was one); {forms}")
    port = HOST_PORT.fullmatch(chosen)
    if port is not None and not 1 <= int(port[2]) <= 65535:
        raise UsageError(f"--ray {chosen}: port {int(port[2])} is out of range (1-65535); "
                         f"{forms}")
    return chosen


@dataclass(frozen=True)
class Cluster:
    """What the driver connected to."""

    address: str
    nodes: int
    cpus: int
    gpus: int

    def describe(self) -> str:
        where = "a local Ray cluster" if self.address == LOCAL else f"Ray cluster {self.address}"
        return (f"{where}: {self.nodes} node{'s' * (self.nodes != 1)}, {self.cpus} CPUs, "
                f"{self.gpus} GPUs")


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


def connect(address: str, ray: Any) -> Cluster:
    """Join (or for `local` start) the cluster, quietly: Ray's own logs and progress bars would
    drown the run's progress line. ClusterError when it cannot be reached."""
    import logging

    _reachable(address)
    # Ray's C++ side logs to stderr, at "error" level even for the notice that a Ray Data actor's
    # constructor arguments live in the object store; Python errors still come through.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if address == LOCAL and not ray.is_initialized():
        _WATCHDOGS.append(Watchdog())  # the throwaway cluster dies with this process
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 include_dashboard=False, configure_logging=True, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        _stop_watchdogs()
        auth = ("" if os.environ.get("RAY_AUTH_MODE") else "; a cluster with token "
                "authentication (Ray's default) also needs RAY_AUTH_MODE=token here, with its "
                "token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
        raise ClusterError(f"--ray {address}: cannot connect to the Ray cluster ({exc}){auth}"
                           ) from None
    # Ray prints the raylet's messages ("a worker died ...") to stdout, which is the data
    # channel of `index --json`: they go to stderr until disconnect() puts stdout back.
    sys.stdout = _StderrInstead(sys.stdout)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Cluster(address, nodes, int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT that does not answer fails in seconds: Ray itself keeps retrying for
    minutes before it gives up."""
    m = HOST_PORT.fullmatch(address)
    if m is None:
        return  # local, auto, or ray://HOST on the default port: Ray's own checks
    try:
        socket.create_connection((m[1], int(m[2])), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"--ray {address}: cannot reach the Ray cluster ({exc.strerror or exc}"
                           "); start one with `ray start --head`, or pass --ray local") from None


class _StderrInstead:
    """Stands in for sys.stdout while connected to Ray: writes go to stderr."""

    def __init__(self, stdout: Any) -> None:
        self.stdout = stdout

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stderr, name)


def disconnect(ray: Any) -> None:
    """Leave the cluster (for `local`: stop it) and give stdout back."""
    ray.shutdown()
    _stop_watchdogs()
    if isinstance(sys.stdout, _StderrInstead):
        sys.stdout = sys.stdout.stdout


def _stop_watchdogs() -> None:
    while _WATCHDOGS:
        _WATCHDOGS.pop().stop()


class ClusterShards:
    """An on-disk IVF-PQ build's shard tasks (store.ondisk) on the --ray cluster, joined the same
    way as for embedding (checked, quiet) and left when the shards are done."""

    def __init__(self, address: str) -> None:
        self.address = address

    def map(self, fn: Callable[..., np.ndarray], shared: np.ndarray,
            jobs: Iterable[tuple[Any, ...]]) -> Iterator[np.ndarray]:
        from deepvision.store.ondisk import RayRunner

        ray = import_ray()
        connect(self.address, ray)
        try:
            yield from RayRunner(self.address).map(fn, shared, jobs)
        finally:
            disconnect(ray)


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


def check_workers(ray: Any, paths: Sequence[str], manifest: Manifest,
                  weights_file: Path | None) -> None:
    """Before any work: every node can read a sample of the files at the same paths (a shared
    filesystem), runs this deepvision, and finds the index's weights. UsageError naming the node,
    the file and the fix otherwise."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    step = max(1, len(paths) // CHECK_SAMPLE)
    sample = list(paths[::step][:CHECK_SAMPLE])
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    reports = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(sample, manifest, weights_file) for node in nodes])
    for report in reports:
        problem = report.problem(_version())
        if problem:
            raise UsageError(problem)


@dataclass(frozen=True)
class NodeReport:
    """What a probe found on one node."""

    host: str
    version: str
    unreadable: tuple[tuple[str, str], ...]  # (path, why)
    weights: str | None  # why the index's weights cannot be used there; None: fine

    def problem(self, driver_version: str) -> str | None:
        if self.version != driver_version:
            return (f"Ray worker on {self.host} runs deepvision {self.version}, this machine "
                    f"{driver_version}: install the same version on every node")
        if self.unreadable:
            path, why = self.unreadable[0]
            return (f"Ray worker on {self.host} cannot read {path} ({why}); --ray needs the "
                    "files at the same path on every node (a shared filesystem mounted at the "
                    "same place), or index on this machine without --ray")
        if self.weights:
            return (f"Ray worker on {self.host}: {self.weights}; put the weights file at the "
                    "same path on every node (or pass --weights with a shared path)")
        return None


def probe_node(sample: Sequence[str], manifest: Manifest,
               weights_file: Path | None) -> NodeReport:
    """Runs on a node: can it read the sample, and find the index's weights?"""
    from deepvision.models.registry import weights_for_index

    unreadable = []
    for path in sample:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            unreadable.append((path, exc.strerror or type(exc).__name__))
    try:
        weights_for_index(manifest.model, manifest.weights, manifest.weights_path, weights_file)
        weights = None
    except DeepVisionError as exc:
        weights = str(exc)
    return NodeReport(socket.gethostname(), _version(), tuple(unreadable), weights)


def _version() -> str:
    from deepvision import __version__

    return __version__


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
