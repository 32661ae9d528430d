"""`index --ray`: the embedding stage on a real Ray cluster on this machine (2 CPUs).

The cluster is a real `ray start --head` process the tests start (or `--ray local`, which the
CLI starts itself); the CLI runs in its own process with the real EfficientNet-Lite0, so the
vectors can be compared with an in-process run of the same folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from imagefactory import make_bad_files, make_good_set

pytest.importorskip("ray")

MODEL = "efficientnet-lite0"
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _no_token_auth() -> Iterator[None]:
    """Ray 2.5x turns token authentication on for new clusters and writes ~/.ray/auth_token;
    the test clusters (and every CLI process, which inherits this) run without it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        yield


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head node with 2 CPUs, in its own process group, stopped (with its workers) after
    the module. Its temp folder is short: Ray's socket paths must fit in 107 bytes."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="/tmp/dvray-")
    proc = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
         "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_port(port, proc)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # its orderly stop can take half a minute
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_leftovers(temp)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "ray start --head exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(2)  # the GCS listens before the raylet has registered
                return
        time.sleep(0.25)
    raise AssertionError(f"the Ray head did not listen on {port} within {timeout} s")


def _ray_processes(marker: str) -> list[int]:
    """PIDs of this user's processes whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def _kill_leftovers(temp: str) -> None:
    for pid in _ray_processes(temp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _index(folder: Path, idx: Path, *extra: object, timeout: float = 400):
    return run_cli("index", folder, "--index-dir", idx, "--model", MODEL, "--json", *extra,
                   timeout=timeout)


def _catalog(idx: Path) -> sqlite3.Connection:
    """The live catalog, read-only, straight from the files (not through deepvision)."""
    manifest = json.loads((idx / "default" / "manifest.json").read_text())
    return sqlite3.connect(f"file:{idx / 'default' / manifest['catalog']}?mode=ro", uri=True)


def _vectors(idx: Path) -> dict[tuple[str, int], np.ndarray]:
    """Every stored vector by (path, frame): an image's one, a video's sampled frames."""
    db = _catalog(idx)
    rows = db.execute("SELECT f.path, v.frame, v.vec FROM files f JOIN vectors v ON "
                      "v.hash = f.hash WHERE f.status = 'ok'").fetchall()
    db.close()
    return {(p, frame): np.frombuffer(v, np.float16).astype(np.float32) for p, frame, v in rows}


def _committed(idx: Path) -> int:
    """Files with a vector in the live catalog; 0 while it does not exist yet."""
    try:
        db = _catalog(idx)
        try:
            return db.execute("SELECT count(*) FROM files WHERE vector_id IS NOT NULL"
                              ).fetchone()[0]
        finally:
            db.close()
    except (OSError, ValueError, sqlite3.Error):
        return 0


def _failures(doc: dict) -> set[tuple[str, str]]:
    return {(f["path"], f["reason"]) for f in doc["failures"]}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 files: generated photos, every kind of broken file, and a short video."""
    folder = tmp_path_factory.mktemp("mixed")
    make_good_set(folder / "good", 48, size=(160, 120))
    make_bad_files(folder / "bad")
    try:
        from videofactory import make_video

        make_video(folder / "clip.mp4", seeds=(101, 102), seconds=1.0)
    except ImportError:  # the video extra is not installed
        pass
    return folder


@pytest.mark.slow
def test_ray_gives_the_local_vectors_and_failure_reasons(cluster, mixed, tmp_path):
    local = _index(mixed, tmp_path / "local")
    remote = _index(mixed, tmp_path / "ray", "--ray", cluster)
    assert local.exit_code == remote.exit_code == 3, remote.stderr  # 3: some files failed
    lo, ra = local.json(), remote.json()
    assert (lo["engine"], ra["engine"]) == ("local", "ray")
    assert "1 node, 2 CPUs, 0 GPUs" in ra["cluster"] and "embedding actor" in ra["cluster"]
    assert _failures(ra) == _failures(lo) and len(_failures(lo)) >= 8
    for key in ("added", "embedded", "frames_embedded", "total_files"):
        assert ra[key] == lo[key], key
    a, b = _vectors(tmp_path / "local"), _vectors(tmp_path / "ray")
    assert set(a) == set(b) and len(a) >= 48
    cosine = [float(a[p] @ b[p] / np.linalg.norm(a[p]) / np.linalg.norm(b[p])) for p in a]
    assert min(cosine) >= 0.999
    query = sorted(a)[3][0]
    hit = run_cli("search", query, "--index-dir", tmp_path / "ray", "--format", "json").json()
    assert hit["queries"][0]["matches"][0]["path"] == query


@pytest.mark.slow
def test_a_rerun_embeds_only_what_changed_and_a_noop_needs_no_cluster(cluster, tmp_path):
    folder = tmp_path / "photos"
    paths = make_good_set(folder, 4, size=(160, 120))  # and 10 tricky-but-valid ones
    n = len(paths)
    first = run_cli("index", folder, "--index-dir", tmp_path / "idx", "--model", MODEL,
                    "--ray", "local", timeout=400)
    assert first.exit_code == 0, first.stderr
    # Which cluster and how many actors, up front; the usual summary at the end.
    assert "a local Ray cluster: 1 node" in first.stderr, first.stderr
    assert "1 embedding actor" in first.stderr and f"added {n}," in first.stderr
    assert _committed(tmp_path / "idx") == n
    from imagefactory import make_photo_like

    make_photo_like(paths[0], seed=500)  # changed content
    make_photo_like(folder / "new.png", seed=501)
    paths[1].unlink()
    again = _index(folder, tmp_path / "idx", "--ray", cluster).json()
    assert (again["embedded"], again["updated"], again["added"], again["removed"]) == (2, 1, 1, 1)
    noop = _index(folder, tmp_path / "idx", "--ray", cluster).json()
    assert noop["embedded"] == 0 and noop["unchanged"] == n
    assert noop["cluster"] is None  # nothing to embed: the cluster was never joined
    rebuilt = run_cli("rebuild", "--index-dir", tmp_path / "idx", "--json", "--ray", cluster,
                      timeout=400)
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert (rebuilt.json()["engine"], rebuilt.json()["embedded"]) == ("ray", n)


def _start(folder: Path, idx: Path, cluster: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "deepvision", "index", str(folder), "--index-dir", str(idx),
         "--model", MODEL, "--json", "--commit-every", "4", "--batch-size", "4",
         "--ray", cluster], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO)


def _wait_committed(idx: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = _committed(idx)
        if n:
            return n
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError("nothing was committed")


@pytest.fixture
def sixty(tmp_path: Path) -> Path:
    make_good_set(tmp_path / "sixty", 50, size=(320, 240))  # and 10 tricky ones
    return tmp_path / "sixty"


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_every_image_is_indexed_once(cluster, sixty, tmp_path):
    idx = tmp_path / "idx"
    proc = _start(sixty, idx, cluster)
    _wait_committed(idx, proc)
    actors = _ray_processes("ray::MapWorker")
    assert actors and proc.poll() is None  # the run is still going when its actor dies
    for pid in actors:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["embedded"] == doc["added"] == doc["total_files"] == 60
    vectors = _vectors(idx)
    assert len(vectors) == 60
    db = _catalog(idx)
    assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 60  # none twice
    db.close()


@pytest.mark.slow
def test_a_killed_driver_resumes_without_re_embedding(cluster, sixty, tmp_path):
    idx = tmp_path / "idx"
    proc = _start(sixty, idx, cluster)
    _wait_committed(idx, proc)
    proc.kill()
    proc.communicate()
    committed = _committed(idx)
    assert 0 < committed < 60
    resumed = _index(sixty, idx, "--ray", cluster)
    assert resumed.exit_code == 0, resumed.stderr
    doc = resumed.json()
    assert doc["embedded"] == 60 - committed and len(_vectors(idx)) == 60


@pytest.mark.slow
def test_every_node_must_read_the_files(cluster, tmp_path):
    """The up-front check runs on the cluster's node: a file it cannot read is named."""
    import ray

    from deepvision.errors import UsageError
    from deepvision.services.distributed.cluster import check_workers
    from deepvision.store.manifest import Manifest

    present = make_good_set(tmp_path, 1)[0]
    manifest = Manifest(name="default", model=MODEL, weights="sha256:none", weights_origin="",
                        weights_path="", dim=1280, catalog="c.sqlite")
    ray.init(address=cluster, log_to_driver=False)
    try:
        with pytest.raises(UsageError, match=r"cannot read .*missing\.jpg.*same path on every"):
            check_workers(ray, [str(present), str(tmp_path / "missing.jpg")], manifest, None)
        with pytest.raises(UsageError, match="weights"):  # readable, but no such weights there
            check_workers(ray, [str(present)], manifest, None)
    finally:
        ray.shutdown()


def test_a_node_with_another_version_is_refused():
    from deepvision.services.distributed.cluster import NodeReport

    assert NodeReport("n1", "0.1.0", (), None).problem("0.1.0") is None
    assert "install the same version" in NodeReport("n1", "0.0.9", (), None).problem("0.1.0")


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--ray", "photos/"), {}, "not a Ray cluster address"),
    (("--ray",), {"RAY_ADDRESS": ""}, "RAY_ADDRESS is not set"),
    (("--ray", "127.0.0.1:99999"), {}, "port 99999 is out of range"),
    (("--ray", "ray://127.0.0.1:65536"), {}, "port 65536 is out of range"),
    (("--ray", "127.0.0.1:0"), {}, "port 0 is out of range"),
    (("--ray",), {"RAY_ADDRESS": "localhost:70000"}, "port 70000 is out of range"),
])
def test_bad_addresses_are_usage_errors_before_any_work(tmp_path, args, env, message):
    folder = tmp_path / "photos"
    make_good_set(folder, 2)
    done = subprocess.run([sys.executable, "-m", "deepvision", "index", str(folder),
                           "--index-dir", str(tmp_path / "idx"), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **env})
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "idx" / "default").exists()


def test_an_unreachable_cluster_is_its_own_exit_code(tmp_path):
    folder = tmp_path / "photos"
    make_good_set(folder, 2)
    done = _index(folder, tmp_path / "idx", "--ray", f"127.0.0.1:{_free_port()}", timeout=200)
    assert done.exit_code == 12 and "cannot reach the Ray cluster" in done.stderr, done.stderr


def test_without_ray_installed_the_extra_is_named(tmp_path):
    code = ("import sys\nsys.modules['ray'] = None\nfrom deepvision.cli import main\n"
            "sys.argv = ['deepvision', *sys.argv[1:]]\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code, "index", str(tmp_path), "--index-dir",
                           str(tmp_path / "idx"), "--ray", "local"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "deepvision-search[ray]" in done.stderr, done.stderr


@pytest.mark.slow
def test_an_on_disk_index_encodes_its_shards_on_the_ray_cluster(cluster, tmp_path):
    """`index --ray` hands the store ClusterShards: the shard tasks of an on-disk IVF-PQ build
    run on the cluster, and merge into what one process builds."""
    from test_scale_index import check_same, sharded, single_process
    from vectorfactory import DIM, clustered

    from deepvision.services.distributed.shards import ClusterShards
    from deepvision.store import ondisk
    from deepvision.store.faiss_index import ONDISK, plan_index

    n = 3000
    ids, db, q = np.arange(n, dtype=np.int64) * 5 + 1, clustered(n, 3), clustered(30, 4)
    trained = ondisk.train(db[::2], plan_index(ONDISK, n, DIM))
    index = sharded(trained, ids, db, tmp_path, ClusterShards(cluster))
    check_same(index, single_process(trained, ids, db), ids, db, q)
    import ray

    assert not ray.is_initialized()  # left the cluster when the shards were done


# --------------------------------------------------------------------------- a killed driver


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (ppid is the 4th field of /proc/PID/stat)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> dict[int, str]:
    """The live descendants of `pid` and their command lines."""
    tree, found, todo = _children(), {}, [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            with contextlib.suppress(OSError):
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                .replace(b"\0", b" ").decode(errors="replace"))
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (dead) parent's reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_local_cluster_does_not_outlive_a_killed_driver(tmp_path):
    """kill -9 of an `index --ray local` run once its cluster works (a worker is up): every
    process the cluster started (GCS, raylet, agents, workers) is gone soon after."""
    folder = tmp_path / "photos"
    make_good_set(folder, 4, size=(160, 120))
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "deepvision", "index", str(folder), "--index-dir",
         str(tmp_path / "idx"), "--model", MODEL, "--ray", "local"],
        stdout=log, stderr=log, cwd=REPO, start_new_session=True)
    cluster: dict[int, str] = {}
    try:
        end = time.monotonic() + 300
        while not any("ray::" in cmd for cmd in cluster.values()):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            assert time.monotonic() < end, f"no Ray worker started: {cluster}"
            time.sleep(0.5)
            cluster = _descendants(driver.pid)
        cluster = _descendants(driver.pid)  # everything up to the moment of the kill
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
        end = time.monotonic() + 90  # the watchdog stops them politely first; CI can be busy
        while any(map(_alive, cluster)) and time.monotonic() < end:
            time.sleep(0.5)
        left = {pid: cmd for pid, cmd in cluster.items() if _alive(pid)}
        assert not left, f"outlived the killed driver: {left}"
    finally:
        for pid in [driver.pid, *cluster]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
