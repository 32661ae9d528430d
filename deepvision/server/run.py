"""Starting the service: load the model and the index once, bind, serve until SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn

from deepvision.errors import UsageError
from deepvision.match.verifier import Verifier, index_verifier
from deepvision.pipeline.backends import OPEN_ENDED
from deepvision.pipeline.embedder import Embedder, EmbedOptions, report_notes
from deepvision.progress import Reporter
from deepvision.server.app import ServeConfig, Service, create_app
from deepvision.server.budget import PixelBudget
from deepvision.server.security import is_local_host
from deepvision.services.batching import QueryBatcher
from deepvision.services.dupes import DEFAULT_THRESHOLD
from deepvision.services.embedding import index_embedder
from deepvision.services.jobs import JobRunner
from deepvision.services.review_session import ReviewSession
from deepvision.services.search import Searcher
from deepvision.services.sync import IndexRequest, IndexRun
from deepvision.store.indexstore import IndexStore

DECODE_BUDGET_IMAGES = 1


@dataclass(frozen=True)
class ServeRequest:
    store: IndexStore
    config: ServeConfig
    embed: EmbedOptions = EmbedOptions()
    weights: Path | None = None
    no_token: bool = False  # a non-loopback bind without a token, asked for explicitly
    access_log: bool = True
    # What ranks the queries: tests pass a Searcher whose results they plant (the page test).
    searcher: Callable[[IndexStore, Embedder, Verifier | None], Searcher] = Searcher
    verify: bool = True  # local-feature verification of each query's candidates (#25)
    dupes_threshold: float = DEFAULT_THRESHOLD  # the review page's groups (#27)


def is_loopback(host: str) -> bool:
    """A bind address only this machine can reach (the Host check's own test)."""
    return is_local_host(host)


def check_security(host: str, token: str | None, no_token: bool) -> str | None:
    """UsageError for an open non-loopback bind; a warning line for an explicit --no-token."""
    if is_loopback(host) or token:
        return None
    if not no_token:
        raise UsageError(f"--host {host} is reachable from other machines: pass --token T "
                         "(clients send Authorization: Bearer T), or --no-token to serve it "
                         "without one")
    return (f"warning: serving {host} without a token (--no-token): anyone who can reach this "
            "port can search the index and download its images")


def serve(req: ServeRequest, rep: Reporter) -> None:
    """Blocks until SIGTERM / Ctrl-C. Library errors are raised before anything is bound."""
    warning = check_security(req.config.host, req.config.token, req.no_token)
    manifest = req.store.check()  # a missing or damaged index fails before the model loads
    embedder = index_embedder(manifest, req.weights, replace(req.embed, workload=OPEN_ENDED))
    verifier = index_verifier(req.store)
    searcher = req.searcher(req.store, embedder, verifier if req.verify else None)
    sock = _bind(req.config.host, req.config.port)
    url = f"http://{_url_host(req.config.host)}:{sock.getsockname()[1]}/"
    service = Service(
        searcher=searcher, batcher=QueryBatcher(searcher, embedder.network.batch),
        jobs=JobRunner(req.store.lock_held),
        index_job=partial(_index_job, req, embedder), config=req.config,
        budget=PixelBudget(decode_budget(req.embed.max_megapixels)),
        review=ReviewSession(req.store, req.dupes_threshold, verifier=verifier),
        on_ready=partial(_ready, rep, req.store, embedder, url, warning))
    config = uvicorn.Config(create_app(service), log_config=_log_config(req.access_log),
                            access_log=req.access_log, timeout_graceful_shutdown=30,
                            lifespan="on")
    server = _Server(config)
    server.run(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn re-sends a captured SIGTERM to itself after its graceful shutdown (so the
    process dies by the signal); a service stopped by its supervisor has finished cleanly and
    exits 0. Ctrl-C (SIGINT) keeps uvicorn's behaviour."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and captured and captured[-1] == sig:
            captured.pop()


def decode_budget(max_megapixels: float) -> int:
    """Pixels all decodes in flight may hold together: one image at the per-image limit, or
    many smaller ones. A PNG decode holds ~10 bytes per pixel at its peak (one 100 MP PNG
    upload: +985 MB resident, given back after; a JPEG decodes at 1/8 scale: +4 MB; README,
    "Search service"), so the budget, not the number of requests, bounds the memory: ~1.2 GB
    of decodes at the default 120 MP."""
    return int(DECODE_BUDGET_IMAGES * max_megapixels * 1e6)


def _log_config(access: bool) -> dict[str, Any]:
    """uvicorn's logging, with one line per request (access, its ?token= values hidden) and
    only problems otherwise."""
    from copy import deepcopy

    from uvicorn.config import LOGGING_CONFIG

    config = deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "deepvision.server.security.RedactToken"}}
    config["handlers"]["access"]["filters"] = ["redact"]
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access else "WARNING"
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # results go nowhere near stdout
    return config


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror} (another server "
                         "there? pick --port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _ready(rep: Reporter, store: IndexStore, embedder: Embedder, url: str,
           warning: str | None) -> None:
    with store.open_read() as snap:
        files = snap.catalog.counts()["files"]
    if warning:
        print(warning, file=sys.stderr, flush=True)
    rep.info(embedder.describe())
    report_notes(embedder, rep)
    # Always printed (also with --quiet): scripts and tests read the URL from this line.
    print(f"serving index {os.path.abspath(store.dir)} (model {embedder.model.spec.name}, "
          f"{files} files) on {url}", file=sys.stderr, flush=True)


def _index_job(req: ServeRequest, embedder: Embedder, rep: Any) -> dict[str, Any]:
    """An incremental `index` of the recorded folders, sharing the loaded model. Its decode
    workers start by forkserver: forking this many-threaded process could copy a held lock."""
    from deepvision.output.render import index_summary_document

    opts = replace(req.embed, start_method="forkserver")

    def shared(*_: object) -> Embedder:
        return embedder.sharing(opts)

    run = IndexRun(IndexRequest(roots=(), store=req.store, embed=opts), rep, embedders=shared)
    return index_summary_document(run.run())
