"""Live service latency and throughput (issue: `deepvision serve`).

Builds (or reuses) an index of the shipped photos, starts the real `deepvision serve` on a free
loopback port, and sends multipart searches (POST /api/search, k=10) of 640x480 JPEG crops of the
shipped photos (quality 90, made in memory) from 1, 4 and 16 concurrent clients: one thread and
one keep-alive httpx client each. For each level: requests, errors, latency p50/p99 and
throughput (answered queries / wall seconds). In the same run, the one-shot CLI
(`deepvision search IMAGE --index-dir DIR`, a fresh process each time: imports, model load, one
query; median of 3) gives the service's per-query speed-up (CLI median / one-client p50).

Targets (CPU, EfficientNet-Lite0, 2 cores): one client p50 <= 100 ms; >= 30x faster than the
one-shot CLI; 16 clients with zero errors and throughput >= one client's.

A/B: `--baseline DIR` (another checkout of deepvision, e.g. `git archive main | tar -x -C DIR`)
serves the same index from that code beside this one, and the levels alternate between the two
(`--rounds` times each), so both see the same machine at the same moments. `--baseline .
--baseline-flags=--no-verify` compares this code with and without an option (the cost of
verification, #25).

    python bench/serve.py [--index-dir DIR] [--clients 1 4 16] [--requests 120]
        [--images 24] [--workers N] [--baseline DIR [--rounds 3]] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, cpu_name, publish

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "bulk_images"
MODEL = "efficientnet-lite0"
SIZE = (640, 480)
START_TIMEOUT = 180.0
REQUEST_TIMEOUT = 60.0
TARGET_P50_MS = 100.0
TARGET_SPEEDUP = 30.0
_URL = re.compile(r"\bon\s+http://(?:\[[0-9a-fA-F:]+\]|[\w.-]+):(\d+)/?")


# ---- queries -----------------------------------------------------------------------------------


def query_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """`n` distinct 640x480 JPEGs: random crops (40-90% of each side) of the shipped photos,
    resized, quality 90. Edited copies, as a user would search with."""
    rng = np.random.default_rng(seed)
    sources = sorted(PHOTOS.glob("*.jpg"))
    out = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            cw, ch = int(w * rng.uniform(0.4, 0.9)), int(h * rng.uniform(0.4, 0.9))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize(SIZE, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# ---- the index and the server ------------------------------------------------------------------


def deepvision(*args: object) -> list[str]:
    return [sys.executable, "-m", "deepvision", *map(str, args)]


def ensure_index(index_dir: Path) -> None:
    if (index_dir / "default" / "manifest.json").exists():
        print(f"reusing the index in {index_dir}", file=sys.stderr)
        return
    print(f"indexing {PHOTOS} into {index_dir}", file=sys.stderr)
    subprocess.run(deepvision("index", PHOTOS, "--index-dir", index_dir, "--model", MODEL,
                              "--workers", 0, "--quiet"), check=True, cwd=REPO, timeout=900)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _drain(server: Server) -> None:
    # Read stderr to the end: the access log would otherwise fill the pipe and stall the server.
    assert server.proc.stderr is not None
    for line in server.proc.stderr:
        server.log.append(line)


def start_server(index_dir: Path, extra: list[str], source: Path = REPO) -> Server:
    """`deepvision serve` of the code in `source` (this checkout, or a baseline's)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    proc = subprocess.Popen(deepvision("serve", "--index-dir", index_dir, "--port", 0, *extra),
                            cwd=source, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                            env=env)
    server = Server(proc)
    threading.Thread(target=_drain, args=(server,), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        text = "".join(server.log)
        start = text.find("serving index")
        found = _URL.search(text, start) if start >= 0 else None
        if found:
            server.port = int(found.group(1))
            return server
        time.sleep(0.1)
    stop_server(server)
    sys.exit(f"the server did not start (exit {proc.returncode}); stderr:\n"
             f"{''.join(server.log)[-3000:]}")


def stop_server(server: Server) -> int | None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=20)
    return server.proc.returncode


def wait_healthy(httpx, url: str) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(base_url=url, timeout=5, trust_env=False) as c:
        while True:
            try:
                resp = c.get("/api/health")
                if resp.status_code == 200:
                    return c.get("/api/stats", timeout=REQUEST_TIMEOUT).json()
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


# ---- load --------------------------------------------------------------------------------------


@dataclass
class Level:
    clients: int
    requests: int
    seconds: float
    latencies: list[float]  # seconds, answered queries only
    errors: list[str]

    @property
    def answered(self) -> int:
        return len(self.latencies)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3 if self.latencies else float("nan")

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else float("nan")


def _one_query(client, data: bytes, i: int) -> str | None:
    """None when the query was answered with matches, else what went wrong."""
    resp = client.post("/api/search", params={"k": 10},
                       files={"image": (f"q{i}.jpg", data, "image/jpeg")})
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    (query,) = resp.json()["queries"]
    if query["error"] or not query["matches"]:
        return f"no matches: {query['error']}"
    return None


def run_level(httpx, url: str, images: list[bytes], clients: int, requests: int) -> Level:
    todo = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, trust_env=False) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    problem = _one_query(c, images[i % len(images)], i)
                except Exception as exc:  # a failed request is a figure, not a crash
                    problem = repr(exc)
                took = time.perf_counter() - start
                with lock:
                    if problem:
                        errors.append(problem)
                    else:
                        latencies.append(took)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Level(clients, requests, time.perf_counter() - start, latencies, errors)


def one_shot_cli(index_dir: Path, image: Path, runs: int = 3) -> float:
    """Median wall seconds of a whole `deepvision search IMAGE --index-dir DIR` process."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(deepvision("search", image, "--index-dir", index_dir), check=True,
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=600)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- report ------------------------------------------------------------------------------------


def machine_line() -> str:
    name = cpu_name()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"(?m)^Model name:\s*(.+)$", out)
        name = found.group(1).strip() if found else name
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    cuda = (f"CUDA {torch.version.cuda}, GPU {torch.cuda.get_device_name(0)}"
            if torch.cuda.is_available() else "no CUDA device")
    return f"{name}, {os.cpu_count()} cores; torch {torch.__version__}; {cuda}"


def verdicts(levels: dict[int, Level], speedup: float) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    out = []
    one = levels.get(1)
    if one:
        p50 = one.percentile_ms(50)
        out.append(f"- one client p50 <= {TARGET_P50_MS:g} ms: {p50:.1f} ms, "
                   f"{mark(p50 <= TARGET_P50_MS)}")
        out.append(f"- >= {TARGET_SPEEDUP:g}x faster than the one-shot CLI: {speedup:.0f}x, "
                   f"{mark(speedup >= TARGET_SPEEDUP)}")
    many = levels.get(16)
    if one and many:
        ok = not many.errors and many.throughput >= one.throughput
        out.append(f"- 16 clients: {len(many.errors)} errors, {many.throughput:.1f} q/s vs "
                   f"{one.throughput:.1f} q/s for one client, {mark(ok)}")
    return out


def report(levels: dict[int, Level], cli_s: float, stats: dict, n_images: int,
           exit_code: int | None) -> str:
    one = levels.get(1)
    speedup = cli_s / (one.percentile_ms(50) / 1e3) if one and one.latencies else float("nan")
    rows = [f"| {lv.clients} | {lv.requests} | {len(lv.errors)} | {lv.percentile_ms(50):.1f} | "
            f"{lv.percentile_ms(99):.1f} | {lv.throughput:.1f} |" for lv in levels.values()]
    first_errors = [e for lv in levels.values() for e in lv.errors][:3]
    lines = [
        f"## Live service (bench/serve.py) — {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine_line()}. Index: {stats.get('files')} shipped photos, model "
        f"{stats.get('model')} ({stats.get('index_type')}). Queries: {n_images} distinct "
        f"{SIZE[0]}x{SIZE[1]} JPEG crops of the shipped photos (quality 90), multipart "
        "POST /api/search, k=10, one keep-alive httpx client per thread, server with its default "
        f"options on loopback. Command: `{command_line()}`",
        "",
        "| clients | requests | errors | p50 ms | p99 ms | queries/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"One-shot `deepvision search IMAGE --index-dir DIR` (a fresh process: imports, model "
        f"load, one query), median of 3: {cli_s:.2f} s; per-query speed-up of the service "
        f"(one client, p50): {speedup:.0f}x. Server exit code after SIGTERM: {exit_code}.",
        "",
        "Targets (CPU, EfficientNet-Lite0, 2 cores):",
        *verdicts(levels, speedup),
    ]
    if first_errors:
        lines += ["", "First errors: " + "; ".join(first_errors)]
    return "\n".join(lines) + "\n"


def ab_levels(httpx, urls: dict[str, str], images: list[bytes], clients: list[int],
              requests: int, rounds: int) -> dict[tuple[str, int], list[Level]]:
    """Each level on each side, alternating sides, `rounds` times: (side, clients) -> runs."""
    runs: dict[tuple[str, int], list[Level]] = {}
    for url in urls.values():
        run_level(httpx, url, images, 1, 5)  # warm-up: first-call costs
    for n in clients:
        for _ in range(rounds):
            for side, url in urls.items():
                lv = run_level(httpx, url, images, n, max(requests, 2 * n))
                runs.setdefault((side, n), []).append(lv)
                print(f"{side}, {n} clients: p50 {lv.percentile_ms(50):.1f} ms, "
                      f"{lv.throughput:.1f} q/s, {len(lv.errors)} errors", file=sys.stderr)
    return runs


def ab_report(runs: dict[tuple[str, int], list[Level]], stats: dict, n_images: int,
              baseline: Path, flags: str = "") -> str:
    """Per side and level: the median over rounds of p50, p99 and queries/s, and each round."""
    rows = []
    for (side, n), levels in runs.items():
        p50 = statistics.median(lv.percentile_ms(50) for lv in levels)
        p99 = statistics.median(lv.percentile_ms(99) for lv in levels)
        qps = statistics.median(lv.throughput for lv in levels)
        each = ", ".join(f"{lv.percentile_ms(50):.0f}/{lv.throughput:.1f}" for lv in levels)
        errors = sum(len(lv.errors) for lv in levels)
        rows.append(f"| {side} | {n} | {errors} | {p50:.1f} | {p99:.1f} | {qps:.1f} | {each} |")
    return "\n".join([
        f"## Live service A/B (bench/serve.py) — {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine_line()}. Index: {stats.get('files')} shipped photos, model "
        f"{stats.get('model')}. Queries: {n_images} distinct {SIZE[0]}x{SIZE[1]} JPEG crops, "
        "multipart POST /api/search, k=10. `before`: the code in "
        f"{baseline} (serve flags: {flags or 'none'}); `after`: this checkout; both serve the "
        "same index at once and the "
        f"levels alternate between them. Command: `{command_line()}`",
        "",
        "| code | clients | errors | p50 ms | p99 ms | queries/s | each round (p50 ms / q/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
    ]) + "\n"


def main_ab(args: argparse.Namespace, httpx, index_dir: Path, images: list[bytes],
            extra: list[str]) -> str:
    servers = {"before": start_server(index_dir, [*extra, *args.baseline_flags.split()],
                                      args.baseline.resolve()),
               "after": start_server(index_dir, extra)}
    try:
        stats = wait_healthy(httpx, servers["after"].url)
        wait_healthy(httpx, servers["before"].url)
        runs = ab_levels(httpx, {k: s.url for k, s in servers.items()}, images, args.clients,
                         args.requests, args.rounds)
    finally:
        for server in servers.values():
            stop_server(server)
    return ab_report(runs, stats, len(images), args.baseline, args.baseline_flags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-dir", type=Path, default=None,
                    help="index folder to reuse (built from bulk_images/ if it holds none)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=120, help="queries per concurrency level")
    ap.add_argument("--images", type=int, default=24, help="distinct query images")
    ap.add_argument("--workers", type=int, default=None, help="serve --workers (default: its)")
    ap.add_argument("--out", type=Path, default=None, help="append the section to this markdown")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another deepvision checkout to compare with (A/B, same run)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B: runs of each level per side")
    ap.add_argument("--baseline-flags", default="",
                    help="A/B: extra `serve` flags of the baseline side, e.g. --no-verify")
    args = ap.parse_args()

    import httpx

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        index_dir = (args.index_dir or Path(tmp) / "idx").resolve()
        ensure_index(index_dir)
        images = query_jpegs(args.images)
        query = Path(tmp) / "query.jpg"
        query.write_bytes(images[0])

        extra = ["--workers", str(args.workers)] if args.workers is not None else []
        if args.baseline is not None:
            publish(main_ab(args, httpx, index_dir, images, extra), args.out)
            return
        server = start_server(index_dir, extra)
        try:
            stats = wait_healthy(httpx, server.url)
            run_level(httpx, server.url, images, 1, 5)  # warm-up: first-call costs
            levels = {}
            for clients in args.clients:
                n = max(args.requests, 2 * clients)
                levels[clients] = run_level(httpx, server.url, images, clients, n)
                lv = levels[clients]
                print(f"{clients} clients: p50 {lv.percentile_ms(50):.1f} ms, "
                      f"{lv.throughput:.1f} q/s, {len(lv.errors)} errors", file=sys.stderr)
        finally:
            code = stop_server(server)
        cli_s = one_shot_cli(index_dir, query)
    publish(report(levels, cli_s, stats, len(images), code), args.out)


if __name__ == "__main__":
    main()
