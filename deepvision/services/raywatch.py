"""`--ray local`: the throwaway cluster does not outlive its driver, even one killed with -9.

Ray starts a local cluster as processes of its own (GCS, raylet, its agents, workers). A
driver killed with SIGKILL never reaches `ray.shutdown()`, and Ray's own fate-sharing only
reaches its direct children: the agents the raylet started stayed behind. So before the
cluster starts, the driver puts a token in its environment, which every process of the
cluster inherits, and starts a watchdog: a small process of its own session that waits for
the driver to end (or to close its pipe, after a normal shutdown) and then stops every process
of this user that carries the token. Linux only (it reads /proc); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

MARK = "DEEPVISION_RAY_CLUSTER"  # the environment variable that names a cluster's processes
GRACE = 3.0  # seconds between SIGTERM and SIGKILL
POLL = 0.5  # seconds between checks that the driver is still there


class Watchdog:
    """Started before `ray.init` starts a local cluster, stopped after `ray.shutdown`."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        env = {k: v for k, v in os.environ.items() if k != MARK}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deepvision.services.raywatch", str(os.getpid()), self.token],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env, start_new_session=True)  # no terminal signal (Ctrl-C) reaches it
        os.environ[MARK] = self.token  # inherited by every process ray.init starts

    def stop(self) -> None:
        """After ray.shutdown: the watchdog sweeps what is left and exits (not waited for)."""
        if os.environ.get(MARK) == self.token:
            del os.environ[MARK]
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def marked(token: str, own: int | None = None) -> list[int]:
    """PIDs of this user's processes whose environment holds MARK=token."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return found


def sweep(token: str) -> None:
    """SIGTERM every marked process, then SIGKILL what is still there after GRACE."""
    own = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = marked(token, own)
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, sig)
        end = time.monotonic() + GRACE
        while pids and time.monotonic() < end:
            time.sleep(0.1)
            pids = marked(token, own)
        if not pids:
            return


def _wait_for(driver: int) -> None:
    """Until the driver closes the pipe or is gone (a killed driver's forked children may
    still hold the pipe open: its parent changing says it is gone)."""
    while os.getppid() == driver:
        ready, _, _ = select.select([sys.stdin], [], [], POLL)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            return


def main(argv: list[str]) -> None:
    driver, token = int(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _wait_for(driver)
    sweep(token)


if __name__ == "__main__":
    main(sys.argv[1:])
