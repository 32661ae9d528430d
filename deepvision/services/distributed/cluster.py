"""`--ray`'s cluster: the address, joining it quietly (and leaving it), and the probe every node
passes before any work (the files at the same paths, the same deepvision, the index's weights).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepvision.errors import ClusterError, DeepVisionError, UsageError
from deepvision.extras import install_hint
from deepvision.services.raywatch import Watchdog
from deepvision.store.manifest import Manifest

LOCAL = "local"  # --ray local: start a cluster on this machine for this run
_WATCHDOGS: list[Watchdog] = []  # --ray local: the one guarding the cluster this process started
HOST_PORT = re.compile(r"(?:ray://)?([\w.\-]+):(\d{1,5})")  # HOST:PORT or ray://HOST:PORT
CLIENT = re.compile(r"ray://[\w.\-]+")  # Ray Client on its default port
CHECK_SAMPLE = 16  # files every node must be able to read before the run starts


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
