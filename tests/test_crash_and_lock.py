"""Real processes, real weights: kill -9 at any moment, concurrent runs, the writer lock.

Every `index` run here is a real `python -m deepvision` subprocess with EfficientNet-Lite0 over 60
tiny generated images, committing every 8 images, so a run lasts a few seconds and leaves several
commits behind. Searches and `info` between runs go through the in-process CLI (the same code,
without paying for a torch import each time); a traceback there fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Run
from imagefactory import make_photo_like

from deepvision.errors import ExitCode

N_IMAGES = 60
MODEL = "efficientnet-lite0"
RUN_ARGS = ("--model", MODEL, "--commit-every", 8, "--batch-size", 4, "--workers", 0)
ENV = {**os.environ, "DEEPVISION_OFFLINE": "1"}
PROCESS_TIMEOUT = 180  # seconds; a hung run fails the test instead of the whole session


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 distinct tiny photos, read-only for the tests (every test has its own index)."""
    folder = tmp_path_factory.mktemp("library")
    for i in range(N_IMAGES):
        make_photo_like(folder / f"p{i:03d}.jpg", seed=i, size=(64, 48))
    return folder


@dataclass
class Proc:
    popen: subprocess.Popen
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def finish(self, timeout: float = PROCESS_TIMEOUT) -> Run:
        code = self.popen.wait(timeout=timeout)
        return Run(code, self.out.read_text(encoding="utf-8"), self.stderr())

    def kill9(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        assert self.popen.returncode == -signal.SIGKILL


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `python -m deepvision ARGS...`; whatever is still running at teardown is killed."""
    procs: list[Proc] = []

    def start(*args: object) -> Proc:
        n = len(procs)
        out, err = tmp_path / f"proc{n}.stdout", tmp_path / f"proc{n}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen([sys.executable, "-m", "deepvision", *map(str, args)],
                                     stdout=fo, stderr=fe, cwd=REPO, env=ENV)
        proc = Proc(popen, out, err)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.running():
            proc.popen.kill()
            proc.popen.wait(timeout=30)


def _index_args(folder: Path, idx: Path, *extra: object) -> tuple[object, ...]:
    return ("index", folder, "--index-dir", idx, *RUN_ARGS, "--json", *extra)


def _index_dir(idx: Path) -> Path:
    return idx / "default"


def _catalog_path(idx: Path) -> Path | None:
    try:
        manifest = json.loads((_index_dir(idx) / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return _index_dir(idx) / manifest["catalog"]


def _committed(idx: Path) -> int:
    """Vectors in the live catalog as another process sees them: the last committed state."""
    path = _catalog_path(idx)
    if path is None or not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        con.close()


def _wait_until(cond: Callable[[], bool], proc: Proc, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if not proc.running():
            pytest.fail(f"the run ended (exit {proc.popen.returncode}) before {what}:\n"
                        f"{proc.stderr()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _lock_owner(idx: Path) -> Path:
    return _index_dir(idx) / ".lock.owner"


def _search(cli, query: Path, idx: Path, k: int = N_IMAGES) -> Run:
    return cli("search", query, "--index-dir", idx, "--workers", "0", "--format", "json",
               "-k", k)


def _assert_clean_error(run: Run) -> None:
    assert "Traceback" not in run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("error:")], run.stderr


def _assert_searchable_at(cli, idx: Path, folder: Path, committed: int) -> None:
    """`search` answers from the last commit; before any commit of a new index it fails cleanly
    or finds nothing."""
    query = folder / "p000.jpg"  # the first file in path order: in the first chunk committed
    run = _search(cli, query, idx)
    if run.exit_code == ExitCode.NO_INDEX:  # killed before the new index's manifest existed
        assert committed == 0
        _assert_clean_error(run)
        return
    assert run.exit_code == 0, run.stderr
    (result,) = run.json()["queries"]
    matches = result["matches"]
    assert result["error"] is None and len(matches) == committed
    assert [m["rank"] for m in matches] == list(range(1, committed + 1))
    assert len({m["path"] for m in matches}) == committed
    if committed:
        assert matches[0]["path"] == str(query)
        assert matches[0]["score"] == pytest.approx(1.0, abs=1e-3)


def _assert_info_at(cli, idx: Path, committed: int) -> None:
    """`info` describes the last commit, or says cleanly that there is no index yet."""
    run = cli("info", "--index-dir", idx, "--json")
    if run.exit_code == ExitCode.NO_INDEX:
        assert committed == 0
        _assert_clean_error(run)
        return
    assert run.exit_code == 0, run.stderr
    data = run.json()
    assert data["files"] == committed and data["vectors"] == committed
    assert data["model"] == MODEL


def _assert_complete(cli, idx: Path, summary: dict, committed: int) -> None:
    assert summary["total_files"] == N_IMAGES
    assert summary["embedded"] == N_IMAGES - committed  # the committed part is not redone
    assert summary["added"] == N_IMAGES - committed
    assert summary["unchanged"] == committed
    assert summary["failed"] == 0 and summary["removed"] == 0
    info = cli("info", "--index-dir", idx, "--json").json()
    assert info["files"] == N_IMAGES and info["vectors"] == N_IMAGES
    leftovers = sorted(p.name for p in _index_dir(idx).iterdir()
                       if p.name.endswith(".tmp")
                       or (p.name.startswith("catalog-") and p.suffix == ".sqlite"))
    assert leftovers == [_catalog_path(idx).name], leftovers  # one catalog, no temp files


# --------------------------------------------------------------------------- kill -9


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    # A brand-new index whose manifest is written, before its first commit (model loading).
    "new-index-before-first-commit": lambda idx: _catalog_path(idx) is not None,
    # Mid-embedding, after a commit or two.
    "after-first-commit": lambda idx: _committed(idx) >= 8,
    # Late: most of the work committed, the last chunk(s) and the FAISS save still to come.
    "late": lambda idx: _committed(idx) >= N_IMAGES - 12,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_leaves_a_searchable_index_and_the_rerun_resumes(cli, spawn, library, tmp_path,
                                                                point):
    idx = tmp_path / "idx"
    run = spawn(*_index_args(library, idx))
    _wait_until(lambda: KILL_POINTS[point](idx), run, point)
    run.kill9()

    committed = _committed(idx)
    if point != "new-index-before-first-commit":
        assert committed >= 8
    assert committed < N_IMAGES or point == "late"
    _assert_searchable_at(cli, idx, library, committed)
    _assert_info_at(cli, idx, committed)

    rerun = spawn(*_index_args(library, idx)).finish()
    assert rerun.exit_code == 0, rerun.stderr
    assert "being updated" not in rerun.stderr  # the dead run's lock died with it
    _assert_complete(cli, idx, rerun.json(), committed)
    _assert_searchable_at(cli, idx, library, N_IMAGES)


# --------------------------------------------------------------------------- the writer lock


def test_stale_lock_of_a_killed_run_does_not_block_the_next(cli, spawn, library, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(library.iterdir())[:4]:
        (small / p.name).write_bytes(p.read_bytes())
    idx = tmp_path / "idx"

    holder = spawn(*_index_args(small, idx))
    _wait_until(_lock_owner(idx).exists, holder, "the lock to be taken")
    holder.kill9()
    # The owner note outlives its process; only the kernel's flock matters, and that is gone.
    assert f"pid {holder.pid}" in _lock_owner(idx).read_text(encoding="utf-8")
    # Killed this early, usually before the new index had a manifest: a clean "no index".
    committed = _committed(idx)
    _assert_searchable_at(cli, idx, small, committed)
    _assert_info_at(cli, idx, committed)

    started = time.monotonic()
    nxt = spawn(*_index_args(small, idx)).finish()
    assert nxt.exit_code == 0, nxt.stderr
    assert nxt.exit_code != ExitCode.LOCKED and "being updated" not in nxt.stderr
    assert nxt.json()["total_files"] == 4
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_second_concurrent_run_is_refused_or_waits_with_wait(cli, spawn, library, tmp_path):
    idx = tmp_path / "idx"
    first = spawn(*_index_args(library, idx))
    _wait_until(_lock_owner(idx).exists, first, "the first run to take the lock")

    started = time.monotonic()
    refused = spawn(*_index_args(library, idx)).finish(timeout=60)
    took = time.monotonic() - started
    assert first.running(), "the first run ended too early for this test to mean anything"
    assert refused.exit_code == ExitCode.LOCKED, refused.stderr
    assert "--wait" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stdout == ""
    assert took < 20  # at once: it neither waits nor loads the model

    waiter = spawn(*_index_args(library, idx, "--wait"))
    time.sleep(0.5)
    assert first.running(), "the first run ended before the waiting run started"

    done = first.finish()
    assert done.exit_code == 0, done.stderr
    assert done.json()["embedded"] == N_IMAGES
    waited = waiter.finish()
    assert waited.exit_code == 0, waited.stderr
    summary = waited.json()
    # It ran after the first had finished: everything was already there.
    assert summary["embedded"] == 0 and summary["unchanged"] == N_IMAGES
    assert summary["total_files"] == N_IMAGES and summary["device"] is None


@pytest.mark.slow
def test_search_during_an_index_run_reads_the_last_commit(cli, spawn, library, tmp_path):
    # Pay for the heavy imports first, so the in-process search is quick next to the writer.
    import faiss  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    idx = tmp_path / "idx"
    writer = spawn(*_index_args(library, idx))
    _wait_until(lambda: _committed(idx) >= 8, writer, "the first commit")

    before = _committed(idx)
    run = _search(cli, library / "p000.jpg", idx)
    info = cli("info", "--index-dir", idx, "--json")
    still_running = writer.running()

    assert run.exit_code == 0, run.stderr
    (result,) = run.json()["queries"]
    matches = result["matches"]
    assert result["error"] is None and before <= len(matches) <= N_IMAGES
    assert matches[0]["path"] == str(library / "p000.jpg")
    assert len({m["path"] for m in matches}) == len(matches)
    assert all(Path(m["path"]).parent == library for m in matches)
    assert info.exit_code == 0, info.stderr
    assert before <= info.json()["files"] <= N_IMAGES
    assert still_running, "the index run ended before the search: nothing concurrent was tested"

    done = writer.finish()
    assert done.exit_code == 0, done.stderr
    assert done.json()["total_files"] == N_IMAGES
