"""Helpers for test_serve_api.py: a real `deepvision serve` process on a free loopback port, and
raw HTTP exchanges that a client library would tidy up (dot segments left in a path, a body past
the upload cap, a body that arrives a byte at a time).

Nothing here imports deepvision, so the helpers keep working while the package is refactored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 90.0  # seconds from Popen to the first answer: imports + model load on 2 cores
STOP_TIMEOUT = 20.0  # SIGTERM to exit
HTTP_TIMEOUT = 30.0  # one request, one response (a search on a busy 2-core machine)

# `serving index <dir> (model <m>, N files) on http://HOST:PORT/`, perhaps wrapped by the console.
_START_LINE = "serving index"
_URL = re.compile(r"\bon\s+(http://(?:\[[0-9a-fA-F:]+\]|[\w.-]+):(\d+))/?")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --------------------------------------------------------------------------- the server process


@dataclass
class Server:
    """A running `deepvision serve`; requests always go to 127.0.0.1, whatever it binds."""

    proc: subprocess.Popen[str]
    port: int
    announced: str  # the URL as the server printed it
    log: list[str] = field(default_factory=list)  # stderr lines so far (access log included)
    address: str = LOOPBACK  # where requests go (a server bound to 127.0.0.2 or ::1)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def rss_bytes(self) -> int:
        """The server process's resident memory now (Linux)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def stderr(self) -> str:
        return "".join(self.log)


def serve_argv(*args: object, program: Sequence[str] = ("-m", "deepvision")) -> list[str]:
    """program: what runs the CLI (a test launcher that registers a test-only model)."""
    return [sys.executable, *program, "serve", *map(str, args)]


def _drain(stream: Iterable[str], log: list[str]) -> None:
    # Read stderr to the end: a full pipe would block the server's access log, then the server.
    for line in stream:
        log.append(_ANSI.sub("", line))


def _announced_url(log: list[str]) -> tuple[str, int] | None:
    text = "".join(log)
    start = text.find(_START_LINE)
    if start < 0:
        return None
    found = _URL.search(text, start)
    return (found.group(1), int(found.group(2))) if found else None


def _wait_for_url(proc: subprocess.Popen[str], log: list[str], deadline: float,
                  argv: list[str]) -> tuple[str, int]:
    while time.monotonic() < deadline:
        found = _announced_url(log)
        if found:
            return found
        if proc.poll() is not None:
            time.sleep(0.2)  # let the reader thread collect the last lines
            pytest.fail(f"`{' '.join(argv[2:])}` exited {proc.returncode} before serving; "
                        f"stderr:\n{''.join(log)[-4000:]}", pytrace=False)
        time.sleep(0.1)
    pytest.fail(f"`{' '.join(argv[2:])}` printed no '{_START_LINE} ... on http://HOST:PORT/' "
                f"line within {START_TIMEOUT:g} s; stderr so far:\n{''.join(log)[-4000:]}",
                pytrace=False)


def _wait_until_answering(port: int, deadline: float, log: list[str], address: str) -> None:
    """The start line may come a moment before the socket accepts: poll /api/health."""
    head = request_head("GET", "/api/health", port, address=address)
    while time.monotonic() < deadline:
        try:
            if raw_request(port, head, timeout=5, address=address).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server announced port {port} but /api/health never answered 200; "
                f"stderr:\n{''.join(log)[-4000:]}", pytrace=False)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, bool]:
    """SIGTERM, then SIGKILL for the whole session after STOP_TIMEOUT: (exit code, was killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=STOP_TIMEOUT), True


@contextmanager
def serving(*args: object, start_timeout: float = START_TIMEOUT,
            program: Sequence[str] = ("-m", "deepvision"),
            address: str = LOOPBACK) -> Iterator[Server]:
    """`deepvision serve ARGS` (pass `--port 0`), until it answers /api/health; on exit SIGTERM
    and a check that it shut down cleanly (exit 0 within STOP_TIMEOUT). address: where it
    listens (its --host, when that is another loopback address)."""
    argv = serve_argv(*args, program=program)
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                            start_new_session=True)
    log: list[str] = []
    reader = threading.Thread(target=_drain, args=(proc.stderr, log), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + start_timeout
        announced, port = _wait_for_url(proc, log, deadline, argv)
        _wait_until_answering(port, deadline, log, address)
        server = Server(proc, port, announced, log, address)
        yield server
    finally:
        code, killed = _stop(proc)
        reader.join(timeout=5)
    assert not killed, (f"the server did not stop within {STOP_TIMEOUT:g} s of SIGTERM; "
                        f"stderr:\n{''.join(log)[-3000:]}")
    assert code == 0, f"unclean shutdown: exit {code}; stderr:\n{''.join(log)[-3000:]}"


def run_serve(*args: object, timeout: float = START_TIMEOUT) -> tuple[int, str]:
    """`deepvision serve ARGS` that is expected to exit by itself: (exit code, stderr)."""
    argv = serve_argv(*args)
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, encoding="utf-8", errors="replace",
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"`{' '.join(argv[2:])}` was still running after {timeout:g} s (serving?);"
                    f" stderr:\n{err[-3000:]}", pytrace=False)
    return proc.returncode, _ANSI.sub("", err)


# --------------------------------------------------------------------------- raw HTTP


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def request_head(method: str, target: str, port: int,
                 headers: dict[str, str] | None = None, address: str = LOOPBACK,
                 host: str | None = None) -> bytes:
    """An HTTP/1.1 request head with `target` sent exactly as given (no dot-segment removal);
    host: the Host header's exact value (default: the address and port)."""
    if host is None:
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def multipart(field_name: str, filename: str, content: bytes,
              content_type: str = "image/jpeg") -> tuple[bytes, str]:
    """A one-field multipart/form-data body and its Content-Type."""
    boundary = "deepvision-test-7MA4YWxkTrZu0gW"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def chunked(body: bytes, piece: int = 1 << 20) -> Iterator[bytes]:
    """`body` in Transfer-Encoding: chunked framing."""
    for i in range(0, len(body), piece):
        part = body[i:i + piece]
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def _send_all(sock: socket.socket, head: bytes, body: Iterable[bytes]) -> None:
    # The server may answer (413) and close before the body is through: that is not an error
    # of the exchange, the answer is what the test reads.
    try:
        sock.sendall(head)
        for part in body:
            sock.sendall(part)
    except OSError:
        pass


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    found = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if found:
        return len(rest) >= int(found.group(1))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return rest.endswith(b"0\r\n\r\n")
    return False  # read to EOF (we sent Connection: close)


def _dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while pos < len(data):
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            break
        size = int(data[pos:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[line_end + 2:line_end + 2 + size]
        pos = line_end + 2 + size + 2
    return bytes(out)


def _parse(data: bytes) -> RawResponse:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response head in {data[:500]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    elif "content-length" in headers:
        rest = rest[:int(headers["content-length"])]
    return RawResponse(int(status_line.split()[1]), headers, rest)


def raw_request(port: int, head: bytes, body: Iterable[bytes] = (),
                timeout: float = HTTP_TIMEOUT, address: str = LOOPBACK) -> RawResponse:
    """Send `head` and `body` on a fresh loopback connection (from a thread, so a server that
    answers early is heard) and read one response, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((address, port), timeout=timeout)
    sender = threading.Thread(target=_send_all, args=(sock, head, body), daemon=True)
    sender.start()
    data = b""
    try:
        while not _complete(data) and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                part = sock.recv(1 << 16)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            data += part
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes a sender still blocked in sendall
        sock.close()
        sender.join(timeout=5)
    if not data:
        raise TimeoutError(f"no response within {timeout:g} s")
    return _parse(data)


class SlowClients:
    """Connections that send a request head (or part of it) and then one byte every `interval`
    seconds, never finishing, for at most `max_seconds`: a slow-loris on the server."""

    def __init__(self, port: int, starts: list[bytes], interval: float = 0.25,
                 max_seconds: float = 20.0) -> None:
        self.socks = [socket.create_connection((LOOPBACK, port), timeout=5) for _ in starts]
        for sock, start in zip(self.socks, starts, strict=True):
            sock.sendall(start)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, args=(interval, max_seconds),
                                        daemon=True)
        self._thread.start()

    def _trickle(self, interval: float, max_seconds: float) -> None:
        end = time.monotonic() + max_seconds
        while not self._stop.wait(interval) and time.monotonic() < end:
            for sock in self.socks:
                try:
                    sock.send(b"x")
                    self.sent += 1
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
