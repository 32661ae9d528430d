"""Helpers for test_hostile.py: exit codes, output checks, bounded subprocesses, mounts.

Nothing here imports deepvision, so the helpers keep working while the package is refactored.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path

import pytest
from conftest import REPO, Run

TRACEBACK = "Traceback (most recent call last)"

# Real offline weights: the only model a subprocess can use (the stub `tiny` is in-process).
REAL_MODEL = "efficientnet-lite0"
SUBPROCESS_TIMEOUT = 120.0  # seconds; a hang fails the test instead of blocking the suite
MEMORY_CAP = 6 << 30  # RLIMIT_AS for subprocesses: a runaway allocation fails, not the machine


class Exit(IntEnum):
    """The exit-code contract (deepvision.errors.ExitCode), spelled out here so that the tests
    can be collected against code that does not define the new codes yet."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    PARTIAL = 3
    NO_INDEX = 4
    INCOMPATIBLE = 5
    NO_WEIGHTS = 6
    NO_IMAGES = 7
    LOCKED = 8
    MASS_DELETE = 9
    STORAGE = 10
    CORRUPT = 11


def _code_name(code: int) -> str:
    try:
        return Exit(code).name
    except ValueError:
        return f"unknown code {code}"


# --------------------------------------------------------------------------- output checks


def assert_no_traceback(run: object) -> None:
    """No command, whatever its input, may end in a Python traceback."""
    for stream in ("stderr", "stdout"):
        text = getattr(run, stream)
        assert TRACEBACK not in text, f"traceback on {stream}:\n{text[-4000:]}"


def expect_exit(run: object, code: Exit) -> None:
    assert_no_traceback(run)
    got = run.exit_code  # type: ignore[attr-defined]
    assert got == code, (f"exit {got} ({_code_name(got)}), expected {int(code)} ({code.name}); "
                         f"stderr:\n{run.stderr[-4000:]}")  # type: ignore[attr-defined]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def expect_error(run: object, code: Exit) -> str:
    """The exit code, and exactly one `error:` line on stderr (returned)."""
    expect_exit(run, code)
    lines = error_lines(run.stderr)  # type: ignore[attr-defined]
    assert len(lines) == 1, (f"expected one line starting 'error:' on stderr, got {len(lines)}:"
                             f"\n{run.stderr}")  # type: ignore[attr-defined]
    return lines[0]


# Raw terminal control characters: C0 except newline, DEL, and C1 (ESC [ can also come as \x9b).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def control_chars(text: str) -> list[str]:
    """Every raw control character in `text` (with some context), for an assertion message."""
    return [repr(text[max(m.start() - 15, 0):m.end() + 15]) for m in _CONTROL.finditer(text)]


# --------------------------------------------------------------------------- subprocesses


def _cap_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_capped(*args: object, timeout: float = SUBPROCESS_TIMEOUT,
               memory: int = MEMORY_CAP) -> Run:
    """`python -m deepvision ARGS` with an address-space cap and a wall-clock limit.

    The process gets its own session so that a timeout kills it and its decode workers; a
    timeout fails the test with whatever the process had written to stderr."""
    argv = [sys.executable, "-m", "deepvision", *map(str, args)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            encoding="utf-8", errors="replace", start_new_session=True,
                            preexec_fn=lambda: _cap_memory(memory))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hung = True
    else:
        hung = False
    if hung:
        pytest.fail(f"`deepvision {' '.join(map(str, args))}` did not finish within {timeout:g} s"
                    f" (hung?); stderr so far:\n{err[-3000:]}", pytrace=False)
    run = Run(proc.returncode, out, err)
    assert_no_traceback(run)
    return run


# --------------------------------------------------------------------------- files and trees


def tree_snapshot(root: Path) -> dict[str, str]:
    """Relative path -> what is there (content hash, link target or kind), for a whole tree."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = f"link -> {os.readlink(path)}"
            elif os.path.isdir(path):
                out[rel] = "folder"
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = "special"
    return out


def fill_leaving(filler: Path, leave_bytes: int, chunk: int = 1 << 20) -> None:
    """Write `filler` until the file system it is on has only `leave_bytes` free."""
    st = os.statvfs(filler.parent)
    todo = max(st.f_bavail * st.f_frsize - leave_bytes, 0)
    with open(filler, "wb") as f:
        while todo > 0:
            n = min(chunk, todo)
            f.write(b"\0" * n)
            todo -= n


# --------------------------------------------------------------------------- mounts


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount file systems")


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def _unmount(path: Path) -> None:
    if _sh("umount", str(path)).returncode != 0:
        _sh("umount", "-l", str(path))  # still busy (an open file): detach it anyway


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path` (skips the test where mounting is not permitted)."""
    _need_root()
    path.mkdir(parents=True, exist_ok=True)
    done = _sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _unmount(path)


@contextmanager
def read_only_view(source: Path, path: Path) -> Iterator[Path]:
    """`source` bind-mounted read-only at `path` (skips the test where that is not permitted)."""
    _need_root()
    path.mkdir(parents=True, exist_ok=True)
    done = _sh("mount", "--bind", str(source), str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        done = _sh("mount", "-o", "remount,bind,ro", str(path))
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        try:
            (path / ".probe").write_bytes(b"")
        except OSError:
            pass  # read-only, as wanted
        else:
            pytest.skip("the read-only bind mount still accepts writes here")
        yield path
    finally:
        _unmount(path)
