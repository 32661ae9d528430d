"""`deepvision serve` through its HTTP API: a real server process on a free loopback port, a real
HTTP client (httpx), the real EfficientNet-Lite0 weights over the shipped photos.

One server (module scope) answers most tests; extra ones start only where options differ
(`--host 0.0.0.0 --token`). Requests only ever go to 127.0.0.1. Cases:
- search by upload (multipart and a raw image/* body) and by an allowed path: the source photo
  first, the document of `search --format json` (schema) with an integer `id` per match;
- paths outside --allow-path (also through a symlink, `..`, a FIFO) are refused unread; image
  endpoints resist traversal and serve exactly the indexed bytes and a small JPEG thumbnail;
- /api/stats (info schema), /api/health, the access log;
- every bad upload of the contract answers its status and `{"error", "message"}`, and the
  server goes on answering; slow clients do not hold up other clients' searches;
- a foreign Host header is refused; no CORS headers by default; /docs uses local assets only;
- the live index: a separate `index` process, and a job through POST /api/index while queries
  run, are both visible without a restart; 409 while another writer holds the lock;
- the token: required on non-loopback binds, enforced with 401, /api/health open.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")

from conftest import run_cli  # noqa: E402
from filelock import FileLock  # noqa: E402
from imagefactory import photo_like_image, write_bomb_png  # noqa: E402
from PIL import Image  # noqa: E402
from schema_helpers import strict  # noqa: E402
from serve_helpers import (  # noqa: E402
    HTTP_TIMEOUT,
    RawResponse,
    Server,
    SlowClients,
    chunked,
    multipart,
    raw_request,
    request_head,
    run_serve,
    serving,
)

REPO = Path(__file__).resolve().parent.parent
MODEL = "efficientnet-lite0"
QUERY_NAME = "coffee_cup__third_q30.jpg"  # an edited copy of bulk_images/coffee_cup.jpg
SOURCE_NAME = "coffee_cup.jpg"
DEFAULT_UPLOAD_CAP = 50 << 20  # --max-upload-mb 50
TOKEN = "s3cret"
LIVE_WAIT = 20.0  # seconds for an index change to show in the server's answers
JOB_WAIT = 120.0  # seconds for a POST /api/index job to finish


@dataclass(frozen=True)
class Tree:
    """allowed/ (given to --allow-path) holds photos/ (indexed) and queries/; outside/ is not
    allowed; idx/ holds the index."""

    root: Path
    allowed: Path
    photos: Path
    queries: Path
    outside: Path
    idx: Path

    @property
    def store(self) -> Path:
        return self.idx / "default"


def schema(name: str) -> dict:
    return strict(name)  # every field deepvision writes is documented


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    root = tmp_path_factory.mktemp("serve").resolve()
    allowed = root / "allowed"
    t = Tree(root, allowed, allowed / "photos", allowed / "queries", root / "outside",
             root / "idx")
    shutil.copytree(REPO / "bulk_images", t.photos)  # a copy: tests add files to it
    t.queries.mkdir()
    t.outside.mkdir()
    shutil.copy(REPO / "that_one_image" / QUERY_NAME, t.queries / QUERY_NAME)
    done = run_cli("index", t.photos, "--index-dir", t.idx, "--model", MODEL, "--workers", 0,
                   "--json", timeout=300)
    assert done.exit_code == 0, f"index failed ({done.exit_code}):\n{done.stderr[-3000:]}"
    return t


@pytest.fixture(scope="module")
def server(tree: Tree) -> Iterator[Server]:
    with serving("--index-dir", tree.idx, "--port", 0, "--workers", 0,
                 "--allow-path", tree.allowed) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    # trust_env=False: a proxy from the environment must never see these requests.
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def token_server(tree: Tree) -> Iterator[Server]:
    """Binds every interface (a token is then required); the tests still talk to 127.0.0.1."""
    with serving("--index-dir", tree.idx, "--host", "0.0.0.0", "--port", 0, "--workers", 0,
                 "--token", TOKEN) as srv:
        yield srv


# --------------------------------------------------------------------------- helpers


def query_bytes(tree: Tree) -> bytes:
    return (tree.queries / QUERY_NAME).read_bytes()


def jpeg_bytes(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    photo_like_image(seed, size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def search_upload(client: httpx.Client, data: bytes, name: str = QUERY_NAME,
                  **params: object) -> httpx.Response:
    return client.post("/api/search", params=params, files={"image": (name, data, "image/jpeg")})


def single_query(doc: dict) -> dict:
    assert len(doc["queries"]) == 1, doc
    (query,) = doc["queries"]
    assert query["error"] is None, query
    return query


def check_search_doc(doc: dict, tree: Tree) -> list[dict]:
    """The `search --format json` document, each match with an integer `id` (the schema's
    optional field for the service). Returns the matches."""
    matches = single_query(doc)["matches"]
    assert matches, doc
    for m in matches:
        assert isinstance(m.get("id"), int) and not isinstance(m["id"], bool), m
    jsonschema.validate(doc, schema("search"))
    assert doc["index"] == str(tree.store) and doc["model"] == MODEL, doc
    assert [m["rank"] for m in matches] == list(range(1, len(matches) + 1))
    return matches


def top_path(resp: httpx.Response) -> str:
    assert resp.status_code == 200, (resp.status_code, resp.text[:2000])
    return single_query(resp.json())["matches"][0]["path"]


def expect_error(resp: httpx.Response | RawResponse, status: int, reason: str) -> dict:
    """`status` and the JSON error document `{"error": reason, "message": "..."}`."""
    code = resp.status_code if isinstance(resp, httpx.Response) else resp.status
    body = resp.content if isinstance(resp, httpx.Response) else resp.body
    assert code == status, (code, body[:2000])
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), (ctype, body[:2000])
    doc = json.loads(body)
    assert doc.get("error") == reason, doc
    assert isinstance(doc.get("message"), str) and doc["message"], doc
    return doc


def still_serving(client: httpx.Client, tree: Tree) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200, health.text
    assert top_path(search_upload(client, query_bytes(tree))) == str(tree.photos / SOURCE_NAME)


def wait_for_top(client: httpx.Client, data: bytes, want: Path, seconds: float) -> float:
    """Poll a search by upload until `want` is its top match: the seconds it took."""
    start = time.monotonic()
    while True:
        got = top_path(search_upload(client, data, name=want.name))
        if got == str(want):
            return time.monotonic() - start
        if time.monotonic() - start > seconds:
            pytest.fail(f"{want} was not the top match {seconds:g} s after indexing "
                        f"(top: {got})", pytrace=False)
        time.sleep(0.25)


def wait_for_job(client: httpx.Client, job: str) -> dict:
    deadline = time.monotonic() + JOB_WAIT
    while True:
        resp = client.get(f"/api/jobs/{job}")
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["job"] == job and doc["state"] in ("running", "done", "failed"), doc
        if doc["state"] != "running":
            return doc
        assert time.monotonic() < deadline, f"job still running after {JOB_WAIT:g} s: {doc}"
        time.sleep(0.2)


# --------------------------------------------------------------------------- search


def test_search_by_upload_finds_the_source_first(client, tree):
    resp = search_upload(client, query_bytes(tree), k=5)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    matches = check_search_doc(doc, tree)
    assert single_query(doc)["query"] == QUERY_NAME
    assert matches[0]["path"] == str(tree.photos / SOURCE_NAME), matches
    assert 1 <= len(matches) <= 5
    assert len({m["id"] for m in matches}) == len(matches)


def test_search_by_raw_image_body(client, tree):
    resp = client.post("/api/search", params={"k": 3}, content=query_bytes(tree),
                       headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    matches = check_search_doc(doc, tree)
    assert single_query(doc)["query"] == "upload"
    assert matches[0]["path"] == str(tree.photos / SOURCE_NAME) and len(matches) <= 3


def test_search_by_allowed_path(client, tree):
    query = tree.queries / QUERY_NAME
    resp = client.get("/api/search", params={"path": str(query), "k": 5})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    matches = check_search_doc(doc, tree)
    assert single_query(doc)["query"] == str(query)
    assert matches[0]["path"] == str(tree.photos / SOURCE_NAME)


@pytest.mark.parametrize("k", [0, -1, 1001, "ten"])
def test_k_outside_its_range_is_a_json_422(client, tree, k):
    resp = search_upload(client, query_bytes(tree), k=k)
    assert resp.status_code == 422, resp.text
    assert isinstance(resp.json(), dict)


# --------------------------------------------------------------------------- paths


def _forbidden_paths(tree: Tree) -> dict[str, str]:
    """Each a path that must be refused before anything is opened."""
    link = tree.queries / "passwd.jpg"
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    fifo = tree.outside / "pipe.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)  # opening it for reading would block: a quick 403 proves it stayed shut
    (tree.outside / "secret.jpg").write_bytes(query_bytes(tree))
    return {
        "etc-passwd": "/etc/passwd",
        "symlink-out": str(link),
        "dot-dot": f"{tree.allowed}/../outside/secret.jpg",
        "outside-fifo": str(fifo),
        "sibling-prefix": f"{tree.allowed}-evil/x.jpg",  # shares the allowed folder's prefix
        "relative": "etc/passwd",
    }


@pytest.mark.parametrize("case", ["etc-passwd", "symlink-out", "dot-dot", "outside-fifo",
                                  "sibling-prefix", "relative"])
def test_paths_outside_the_allowed_folders_are_refused_unread(client, tree, case):
    path = _forbidden_paths(tree)[case]
    start = time.monotonic()
    resp = client.get("/api/search", params={"path": path}, timeout=15)
    assert time.monotonic() - start < 10
    assert resp.status_code in (400, 403), (resp.status_code, resp.text)
    if case != "relative":
        expect_error(resp, 403, "forbidden-path")
    assert "root:" not in resp.text


def test_missing_file_inside_an_allowed_folder_is_404(client, tree):
    resp = client.get("/api/search", params={"path": str(tree.queries / "no-such-file.jpg")})
    expect_error(resp, 404, "not-found")


def test_fifo_inside_an_allowed_folder_does_not_hang(client, tree):
    fifo = tree.queries / "fifo.jpg"
    os.mkfifo(fifo)
    try:
        resp = client.get("/api/search", params={"path": str(fifo)}, timeout=20)
    finally:
        fifo.unlink()
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert "error" in resp.json()
    still_serving(client, tree)


TRAVERSALS = [
    "/api/images/../../etc/passwd",
    "/api/images/%2e%2e%2fetc%2fpasswd",
    "/api/images/..%2f..%2f..%2fetc%2fpasswd",
    "/api/images/%2fetc%2fpasswd",
    "/api/images/-1",
    "/api/images/999999",
    "/api/images/1.5",
    "/api/images/0x1",
    "/api/images/-1/thumbnail",
    "/api/images/999999/thumbnail",
    "/api/images/..%2f..%2fetc%2fpasswd/thumbnail",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/swagger/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/../../../../etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_image_endpoints_resist_traversal(server, target):
    # Raw: an HTTP client library would resolve the dot segments before sending.
    resp = raw_request(server.port, request_head("GET", target, server.port))
    assert 400 <= resp.status < 500, (target, resp.status, resp.body[:500])
    assert b"root:" not in resp.body


def test_image_and_thumbnail_by_id(client, tree):
    matches = check_search_doc(search_upload(client, query_bytes(tree)).json(), tree)
    source = tree.photos / SOURCE_NAME
    (top,) = [m for m in matches if m["path"] == str(source)]
    resp = client.get(f"/api/images/{top['id']}")
    assert resp.status_code == 200, resp.text[:500]
    assert resp.content == source.read_bytes()
    assert resp.headers["content-type"].startswith("image/jpeg")

    thumb = client.get(f"/api/images/{top['id']}/thumbnail")
    assert thumb.status_code == 200, thumb.text[:500]
    assert thumb.headers["content-type"].startswith("image/jpeg")
    with Image.open(io.BytesIO(thumb.content)) as im:
        assert im.format == "JPEG"
        assert max(im.size) <= 256, im.size
        im.load()


def test_every_match_id_serves_its_own_file(client, tree):
    matches = check_search_doc(search_upload(client, query_bytes(tree), k=50).json(), tree)
    for m in matches[:8]:
        resp = client.get(f"/api/images/{m['id']}")
        assert resp.status_code == 200, (m, resp.status_code)
        assert resp.content == Path(m["path"]).read_bytes(), m


# --------------------------------------------------------------------------- stats, health, docs


def test_stats_is_the_info_document(client, tree):
    resp = client.get("/api/stats")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    jsonschema.validate(doc, schema("info"))
    assert doc["index"] == str(tree.store) and doc["model"] == MODEL
    assert doc["files"] >= 21 and str(tree.photos) in doc["folders"]


def test_health_and_the_access_log(client, server, tree):
    resp = client.get("/api/health")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["status"] == "ok", doc
    assert set(doc) == {"status", "generation"}, doc  # no path: it is open without a token
    assert isinstance(doc["generation"], int) and not isinstance(doc["generation"], bool)
    deadline = time.monotonic() + 5
    while "GET /api/health" not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "GET /api/health" in server.stderr(), server.stderr()[-2000:]


def test_docs_use_local_assets_only(client, server):
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    foreign = [u for u in re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", html)
               if not u.startswith((server.url, server.announced))]
    assert not foreign, f"/docs refers to outside URLs: {foreign}"
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in (a for a in assets if not a.startswith("data:")):  # inline, nothing to fetch
        got = client.get(asset)
        assert got.status_code == 200, (asset, got.status_code)
    inline = [s for s in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S)
              if s.strip()]
    csp = resp.headers.get("content-security-policy", "")
    if inline and "script-src" in csp:
        allows = ("'unsafe-inline'", "'nonce-", "'sha256-", "'sha384-", "'sha512-")
        assert any(a in csp for a in allows), \
            f"/docs has an inline script that its own CSP blocks: {csp}"

    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    doc = spec.json()
    assert "openapi" in doc and "/api/search" in doc["paths"], list(doc.get("paths", {}))


def test_no_cors_headers_by_default(client, tree):
    origin = {"origin": "http://evil.example"}
    preflight = {**origin, "access-control-request-method": "POST"}
    for resp in (client.get("/api/health", headers=origin),
                 client.post("/api/search", headers=origin,
                             files={"image": (QUERY_NAME, query_bytes(tree), "image/jpeg")}),
                 client.options("/api/search", headers=preflight)):
        assert not any(h.startswith("access-control-") for h in resp.headers), \
            (resp.request.method, dict(resp.headers))


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example"])
def test_foreign_host_header_is_refused(client, server, host):
    resp = client.get("/api/health", headers={"host": host})
    assert resp.status_code == 400, (resp.status_code, resp.text)
    resp = client.get("/api/stats", headers={"host": host})
    assert resp.status_code == 400, (resp.status_code, resp.text)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_loopback_host_headers_are_accepted(client, server, host):
    resp = client.get("/api/health", headers={"host": f"{host}:{server.port}"})
    assert resp.status_code == 200, (resp.status_code, resp.text)


# --------------------------------------------------------------------------- bad uploads


def _truncated_jpeg() -> bytes:
    # Noise barely compresses, so half the file really is half the scan data.
    import numpy as np

    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _bomb_png(tree: Tree) -> bytes:
    # 12000x11000 = 132 megapixels (over the default 120), ~20 KB on the wire.
    return write_bomb_png(tree.outside / "bomb.png", (12_000, 11_000)).read_bytes()


BAD_UPLOADS = {
    # case: (status, reason)
    "not-an-image": (422, "not-an-image"),
    "truncated": (422, "truncated"),
    "empty": (422, "empty"),
    "too-many-pixels": (422, "too-large"),
    "no-image-field": (400, "bad-request"),
    "form-without-file": (400, "bad-request"),
    "text-body": (400, "bad-request"),
    "no-content-type": (400, "bad-request"),
}


def _bad_upload(client: httpx.Client, tree: Tree, case: str) -> httpx.Response:
    def form(data: bytes, name: str = "x.jpg", field: str = "image") -> httpx.Response:
        return client.post("/api/search", files={field: (name, data, "image/jpeg")})

    if case == "not-an-image":
        return form(b"Shopping list:\n- milk\n- eggs\n", "notes.jpg")
    if case == "truncated":
        return form(_truncated_jpeg(), "truncated.jpg")
    if case == "empty":
        return form(b"", "empty.jpg")
    if case == "too-many-pixels":
        return form(_bomb_png(tree), "bomb.png")
    if case == "no-image-field":
        return form(query_bytes(tree), field="file")
    if case == "form-without-file":
        return client.post("/api/search", data={"image": "not a file"},
                           headers={"content-type": "application/x-www-form-urlencoded"})
    if case == "text-body":
        return client.post("/api/search", content=b"hello",
                           headers={"content-type": "text/plain"})
    if case == "no-content-type":
        return client.post("/api/search", content=query_bytes(tree))
    raise AssertionError(case)


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_answers_its_error_and_the_server_goes_on(client, tree, case):
    status, reason = BAD_UPLOADS[case]
    resp = _bad_upload(client, tree, case)
    doc = expect_error(resp, status, reason)
    if reason == "too-large":
        assert "megapixels" in doc["message"], doc
    still_serving(client, tree)


def _over_cap(tree: Tree, framing: str, port: int) -> tuple[bytes, list[bytes]]:
    """A request whose body is 60 MB (the default cap is 50): its head and body parts."""
    blob = query_bytes(tree) + bytes(60 * (1 << 20))
    assert len(blob) > DEFAULT_UPLOAD_CAP
    if framing == "multipart":
        body, ctype = multipart("image", "big.jpg", blob)
        headers = {"Content-Type": ctype, "Content-Length": str(len(body))}
        parts = [body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    elif framing == "raw":
        headers = {"Content-Type": "image/jpeg", "Content-Length": str(len(blob))}
        parts = [blob[i:i + (1 << 20)] for i in range(0, len(blob), 1 << 20)]
    else:  # chunked, no Content-Length: the cap has to count, not trust a header
        body, ctype = multipart("image", "big.jpg", blob)
        headers = {"Content-Type": ctype, "Transfer-Encoding": "chunked"}
        parts = list(chunked(body))
    return request_head("POST", "/api/search", port, headers), parts


@pytest.mark.parametrize("framing", ["multipart", "raw", "chunked"])
def test_upload_over_the_cap_is_413(server, client, tree, framing):
    head, parts = _over_cap(tree, framing, server.port)
    resp = raw_request(server.port, head, parts, timeout=60)
    expect_error(resp, 413, "too-large-upload")
    still_serving(client, tree)


def test_slow_clients_do_not_block_other_searches(server, client, tree):
    body, ctype = multipart("image", "slow.jpg", query_bytes(tree))
    slow_form = request_head("POST", "/api/search", server.port,
                             {"Content-Type": ctype, "Content-Length": str(len(body) + 100_000)})
    slow_raw = request_head("POST", "/api/search", server.port,
                            {"Content-Type": "image/jpeg", "Content-Length": "100000"})
    partial_head = f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: "
    starts = ([slow_form + body[:200]] * 4 + [slow_raw + query_bytes(tree)[:200]] * 4
              + [partial_head.encode()] * 2)
    with SlowClients(server.port, starts, interval=0.25, max_seconds=30) as slow:
        time.sleep(1.0)  # every slow connection is now inside the server, mid-request
        for _ in range(3):
            start = time.monotonic()
            assert top_path(search_upload(client, query_bytes(tree))) == \
                str(tree.photos / SOURCE_NAME)
            took = time.monotonic() - start
            assert took < 10, f"a search took {took:.1f} s beside slow clients"
        assert slow.sent > 0
    still_serving(client, tree)


# --------------------------------------------------------------------------- the live index


def test_a_separate_index_run_shows_without_restart(client, tree):
    before = client.get("/api/health").json()["generation"]
    data = jpeg_bytes(seed=4242)
    new = tree.photos / "live_added.jpg"
    new.write_bytes(data)
    assert top_path(search_upload(client, data)) != str(new)

    done = run_cli("index", tree.photos, "--index-dir", tree.idx, "--workers", 0, "--json",
                   timeout=300)
    assert done.exit_code == 0, done.stderr[-3000:]
    assert done.json()["added"] == 1, done.stdout

    wait_for_top(client, data, new, LIVE_WAIT)
    after = client.get("/api/health").json()["generation"]
    assert after > before, (before, after)
    assert client.get("/api/stats").json()["files"] == done.json()["total_files"]


def test_index_job_while_queries_run(client, server, tree):
    added = [tree.photos / f"job_added_{i}.jpg" for i in range(3)]  # a job that lasts a while
    for i, path in enumerate(added):
        path.write_bytes(jpeg_bytes(seed=5151 + i))
    data, new = added[0].read_bytes(), added[0]
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def query_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT, trust_env=False) as c:
            while not stop.is_set():
                try:
                    resp = search_upload(c, query_bytes(tree))
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code}: {resp.text[:300]}")
                    elif single_query(resp.json())["matches"][0]["path"] != \
                            str(tree.photos / SOURCE_NAME):
                        failures.append(f"wrong top match: {resp.text[:300]}")
                    answered[0] += 1
                except Exception as exc:  # any failure of a query is the finding
                    failures.append(repr(exc))

    threads = [threading.Thread(target=query_loop, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        before = answered[0]
        resp = client.post("/api/index")
        assert resp.status_code == 202, resp.text
        started = resp.json()
        assert started["state"] == "running" and isinstance(started["job"], str), started
        job = wait_for_job(client, started["job"])
        during = answered[0] - before
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=HTTP_TIMEOUT + 5)
    assert not failures, failures[:5]
    assert during > 0, "no query was answered while the job ran"
    assert job["state"] == "done" and job["error"] is None, job
    assert isinstance(job["done"], int) and isinstance(job["total"], int), job
    summary = job["summary"]
    jsonschema.validate(summary, schema("index"))
    assert summary["added"] >= len(added) and summary["failed"] == 0, summary
    wait_for_top(client, data, new, LIVE_WAIT)


def test_unknown_job_is_404(client):
    resp = client.get("/api/jobs/no-such-job")
    assert resp.status_code == 404
    assert "error" in resp.json()


def test_index_job_while_another_writer_holds_the_lock_is_409(client, tree):
    lock = FileLock(str(tree.store / ".lock"), timeout=0)
    with lock:
        resp = client.post("/api/index")
        expect_error(resp, 409, "locked")
    still_serving(client, tree)


# --------------------------------------------------------------------------- the token


def test_non_loopback_host_needs_a_token(tree):
    code, err = run_serve("--index-dir", tree.idx, "--host", "0.0.0.0", "--port", 0)
    assert code == 2, (code, err[-2000:])
    assert "--token" in err, err[-2000:]
    assert "Traceback" not in err


def test_serve_without_an_index_is_exit_4(tree):
    code, err = run_serve("--index-dir", tree.root / "nothing-here", "--port", 0)
    assert code == 4, (code, err[-2000:])
    assert "Traceback" not in err


def test_token_is_enforced(token_server, tree):
    with httpx.Client(base_url=token_server.url, timeout=HTTP_TIMEOUT, trust_env=False) as c:
        assert c.get("/api/health").status_code == 200
        good = {"authorization": f"Bearer {TOKEN}"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN},
                        {"authorization": f"Basic {TOKEN}"}):
            expect_error(c.get("/api/stats", headers=headers), 401, "unauthorized")
            resp = c.post("/api/search", headers=headers,
                          files={"image": (QUERY_NAME, query_bytes(tree), "image/jpeg")})
            expect_error(resp, 401, "unauthorized")
            assert c.get("/api/images/1", headers=headers).status_code == 401
            assert c.post("/api/index", headers=headers).status_code == 401
            assert c.get("/", headers=headers).status_code == 401
        assert c.get("/api/stats", headers=good).status_code == 200
        resp = c.post("/api/search", headers=good,
                      files={"image": (QUERY_NAME, query_bytes(tree), "image/jpeg")})
        assert top_path(resp) == str(tree.photos / SOURCE_NAME)


def test_page_token_sets_a_cookie_that_authorizes(token_server):
    with httpx.Client(base_url=token_server.url, timeout=HTTP_TIMEOUT, trust_env=False) as c:
        resp = c.get(f"/?token={quote(TOKEN)}")
        assert resp.status_code == 303, resp.text[:500]  # on to the page without the token
        assert resp.headers["location"] == "/"
        cookies = resp.headers.get_list("set-cookie")
        assert cookies, dict(resp.headers)
        pair = cookies[0].split(";", 1)[0]
        c.cookies.clear()
        resp = c.get("/api/stats", headers={"cookie": pair})
        assert resp.status_code == 200, resp.text[:500]
        wrong = f"{pair.split('=', 1)[0]}=wrong"
        assert c.get("/api/stats", headers={"cookie": wrong}).status_code == 401
