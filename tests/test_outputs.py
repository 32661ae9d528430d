"""Output formats through the real CLI: JSON against the documented schemas, CSV parsed back,
HTML opened in headless Chromium, near-duplicate groups, completion and --version."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from imagefactory import make_photo_like
from PIL import Image
from schema_helpers import strict

from deepvision.errors import ExitCode

jsonschema = pytest.importorskip("jsonschema")

EVIL = '"><img src=x onerror=alert(1)>.jpg'


def schema(name: str) -> dict:
    return strict(name)  # every field deepvision writes is documented


@pytest.fixture
def indexed(cli, tiny_model, photos, tmp_path) -> tuple[Path, Path]:
    idx = tmp_path / "idx"
    run = cli("index", photos, "--index-dir", idx, "--model", "tiny", "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    jsonschema.validate(run.json(), schema("index"))
    return photos, idx


def test_search_json_and_info_json_follow_their_schemas(cli, indexed, tmp_path):
    photos, idx = indexed
    (tmp_path / "bad.jpg").write_text("nope")
    run = cli("search", photos, tmp_path / "bad.jpg", "--index-dir", idx, "--format", "json",
              "--workers", "0")
    assert run.exit_code == ExitCode.PARTIAL, run.stderr  # answered, one query unreadable
    doc = run.json()
    jsonschema.validate(doc, schema("search"))
    bad = [q for q in doc["queries"] if q["query"] == str(tmp_path / "bad.jpg")]
    assert len(bad) == 1 and bad[0]["matches"] == [], bad
    assert bad[0]["error"].startswith("not-an-image: "), bad
    good = [q for q in doc["queries"] if q is not bad[0]]
    assert good and all(q["error"] is None and q["matches"] for q in good)
    info = cli("info", "--index-dir", idx, "--json", "--failed")
    jsonschema.validate(info.json(), schema("info"))


def test_csv_parses_back_to_the_json_results(cli, indexed):
    photos, idx = indexed
    args = ("search", photos, "--index-dir", idx, "-k", "4", "--workers", "0")
    doc = cli(*args, "--format", "json").json()
    rows = list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout)))
    want = [(q["query"], m["rank"], m["path"], m["score"])
            for q in doc["queries"] for m in q["matches"]]
    got = [(r["query"], int(r["rank"]), r["path"], float(r["score"])) for r in rows]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert all(abs(g[3] - w[3]) < 1e-5 for g, w in zip(got, want, strict=True))
    assert len(rows) == 12 * 4


def test_dupes_json_and_csv(cli, tiny_model, tmp_path):
    folder = tmp_path / "d"
    for i in range(4):
        make_photo_like(folder / f"u{i}.png", seed=100 + i)
    shutil.copy(folder / "u0.png", folder / "u0_copy.png")  # byte-identical: one vector
    idx = tmp_path / "idx"
    assert cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0"
               ).exit_code == 0
    doc = cli("dupes", "--index-dir", idx, "--format", "json", "--threshold", "0.9999").json()
    jsonschema.validate(doc, schema("dupes"))
    assert [[Path(f["path"]).name for f in g["files"]] for g in doc["groups"]] == [
        ["u0.png", "u0_copy.png"]]
    rows = list(csv.DictReader(io.StringIO(
        cli("dupes", "--index-dir", idx, "--format", "csv", "--threshold", "0.9999").stdout)))
    assert [(r["group"], Path(r["path"]).name) for r in rows] == [("1", "u0.png"),
                                                                  ("1", "u0_copy.png")]


def test_dupes_finds_exactly_the_known_groups_with_the_real_model(tmp_path):
    """Resized and recompressed copies of real photos, at the default threshold."""
    folder, idx = tmp_path / "photos", tmp_path / "idx"
    folder.mkdir()
    for src in sorted((REPO / "bulk_images").glob("*.jpg")):
        with Image.open(src) as im:
            im.thumbnail((384, 384))
            im.convert("RGB").save(folder / src.name, quality=90)
    cat, coffee, rocket = (folder / f"{n}.jpg" for n in ("chelsea_cat", "coffee_cup",
                                                          "rocket_launch"))
    with Image.open(cat) as im:
        im.resize((im.width // 2, im.height // 2)).save(folder / "cat_half.jpg", quality=85)
        im.save(folder / "cat_q40.jpg", quality=40)
    with Image.open(coffee) as im:
        im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(folder / "coffee_small.png")
    shutil.copy(rocket, folder / "rocket_backup.jpg")
    assert run_cli("index", folder, "--index-dir", idx, "--model", "efficientnet-lite0",
                   "--quiet").exit_code == 0
    run = run_cli("dupes", "--index-dir", idx, "--format", "json")
    assert run.exit_code == 0, run.stderr
    groups = [sorted(Path(f["path"]).name for f in g["files"]) for g in run.json()["groups"]]
    assert groups == [["cat_half.jpg", "cat_q40.jpg", "chelsea_cat.jpg"],
                      ["coffee_cup.jpg", "coffee_small.png"],
                      ["rocket_backup.jpg", "rocket_launch.jpg"]]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return exe


def headless(*args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_html_report_in_headless_chromium(cli, tiny_model, tmp_path):
    folder = tmp_path / "photos"
    for i in range(5):
        make_photo_like(folder / f"p{i}.jpg", seed=i, size=(120, 90))
    make_photo_like(folder / EVIL, seed=7, size=(120, 90))
    idx = tmp_path / "idx"
    assert cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0"
               ).exit_code == 0
    (folder / "p4.jpg").unlink()  # indexed, then deleted: must show as missing
    report = tmp_path / "report" / "search.html"
    run = cli("search", folder, "--index-dir", idx, "-k", "3", "--workers", "0",
              "--html", report)
    assert run.exit_code == 0, run.stderr

    dom = headless("--dump-dom", report.as_uri()).stdout
    assert dom.count("<section") == 5  # one per query image
    # 5 queries + 3 matches each, minus the tiles of the deleted file, which say so instead.
    missing = dom.count("missing or unreadable")
    assert missing >= 1 and dom.count("<img") + missing == 5 * 4
    assert not re.search(r"<img[^>]*\bonerror=", dom)  # the name stayed text, never markup
    assert "&gt;.jpg" in dom  # ... and is shown, escaped

    for size, name in (("390,844", "phone.png"), ("1280,900", "desktop.png")):
        shot = tmp_path / name
        headless(f"--screenshot={shot}", f"--window-size={size}", report.as_uri())
        assert shot.stat().st_size > 5000  # something was drawn


def test_shell_completion_and_version(cli):
    """The installed `deepvision` script completes its commands, through the environment
    protocol bash's completion function uses (no shell detection: `--show-completion` alone
    asks shellingham which shell runs the tests, and fails without a known one)."""
    import os
    import sys

    script = Path(sys.executable).with_name("deepvision")
    if not script.exists():
        pytest.skip("the deepvision console script is not installed in this environment")
    env = {**os.environ, "_DEEPVISION_COMPLETE": "complete_bash",
           "COMP_WORDS": "deepvision in", "COMP_CWORD": "1"}
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["index", "info"]
    env["_DEEPVISION_COMPLETE"] = "source_bash"
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert "complete " in done.stdout and "_DEEPVISION_COMPLETE" in done.stdout
    assert cli("--version").stdout.startswith("deepvision ")
