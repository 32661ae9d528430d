"""Helpers for the duplicate review tests: a folder of groups (an original, a byte-identical
copy, a smaller re-encoded copy), trees by content hash, and a catalog checked against the disk."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import xxhash
from conftest import REPO, Run
from imagefactory import make_photo_like
from PIL import Image

THRESHOLD = "0.97"  # the stub model scores a group's copies >= 0.9999, distinct photos lower


def make_groups(folder: Path, n: int, solos: int = 2) -> None:
    """n groups of 3 (aK.png, aK_copy.png identical, aK_small.jpg re-encoded) and a few
    photos with no duplicate."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        original = make_photo_like(folder / f"a{k:03d}.png", seed=500 + k)
        shutil.copy(original, folder / f"a{k:03d}_copy.png")
        with Image.open(original) as im:
            im.resize((80, 60)).save(folder / f"a{k:03d}_small.jpg", quality=90)
    for k in range(solos):
        make_photo_like(folder / f"solo{k:03d}.png", seed=900 + k)


def tree(*folders: Path) -> dict[str, tuple[bool, str]]:
    """path -> (is a symlink, content hash) of every file below the folders."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() or path.is_symlink():
                out[str(path)] = (path.is_symlink(), xxhash.xxh3_128(path.read_bytes()).hexdigest())
    return out


def catalog_path(idx: Path) -> Path:
    manifest = json.loads((idx / "default" / "manifest.json").read_text(encoding="utf-8"))
    return idx / "default" / manifest["catalog"]


def catalog_problems(idx: Path) -> list[str]:
    """Rows that disagree with the disk, contents without vectors, vectors without files."""
    db = sqlite3.connect(f"file:{catalog_path(idx)}?mode=ro", uri=True)
    try:
        problems = []
        for path, size, mtime_ns, hash_ in db.execute(
                "SELECT path, size, mtime_ns, hash FROM files WHERE status = 'ok'"):
            try:
                st = os.stat(path)
            except OSError:
                problems.append(f"{path}: in the catalog, not on disk")
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                problems.append(f"{path}: size/mtime differ from the catalog")
            if xxhash.xxh3_128(Path(path).read_bytes()).hexdigest() != hash_:
                problems.append(f"{path}: content differs from the catalog")
            if not db.execute("SELECT 1 FROM vectors WHERE hash = ?", (hash_,)).fetchone():
                problems.append(f"{path}: no vectors for its content")
        problems.extend(f"orphan vectors {h}" for (h,) in db.execute(
            "SELECT DISTINCT hash FROM vectors WHERE hash NOT IN "
            "(SELECT hash FROM files WHERE status = 'ok' AND hash IS NOT NULL)"))
        return problems
    finally:
        db.close()


def indexed(idx: Path) -> set[str]:
    db = sqlite3.connect(f"file:{catalog_path(idx)}?mode=ro", uri=True)
    try:
        return {p for (p,) in db.execute("SELECT path FROM files WHERE status = 'ok'")}
    finally:
        db.close()


def index(cli: Callable, folder: Path, idx: Path) -> None:
    done = cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0",
               "--quiet")
    assert done.exit_code == 0, done.stderr


def process_env(home: Path) -> dict[str, str]:
    """A subprocess whose trash is inside the test's folder (send2trash reads these)."""
    home.mkdir(exist_ok=True)
    return {**os.environ, "DEEPVISION_OFFLINE": "1", "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local" / "share")}


def deepvision(env: dict[str, str], *args: object, timeout: float = 300) -> Run:
    proc = subprocess.run([sys.executable, "-m", "deepvision", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def spawn(env: dict[str, str], *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepvision", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            env=env)
