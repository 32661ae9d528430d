"""The documentation keeps its promises: the README is a short door, every install line installs
this project, the reference pages list every exit code and failure reason, and the site builds
with `mkdocs build --strict` (broken links, pages left out of the nav, missing includes fail)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepvision.errors import ExitCode
from deepvision.extras import DISTRIBUTION, extra_requirements, install_hint
from deepvision.types import Reason

REPO = Path(__file__).resolve().parent.parent
# `pip install deepvision…` or `'deepvision[x]'` would install the unrelated PyPI project.
# "do not `pip install deepvision`" is the warning, not an install line.
WRONG_PROJECT = re.compile(r"(?<![Nn]ot `)pip install\s+['\"]?deepvision(?![\w-])"
                           r"|['\"]deepvision\[")


def _texts() -> dict[str, str]:
    files = [REPO / "README.md", REPO / "ARCHITECTURE.md", REPO / ".ci" / "run",
             *REPO.glob("docs/**/*.md"), *REPO.glob("deepvision/**/*.py"),
             *REPO.glob("bench/*.md")]
    return {str(f.relative_to(REPO)): f.read_text(encoding="utf-8") for f in files}


def test_the_readme_is_a_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, len(lines)


def test_no_install_line_names_the_other_project():
    wrong = {name: WRONG_PROJECT.findall(text) for name, text in _texts().items()}
    assert not {k: v for k, v in wrong.items() if v}


def test_an_install_hint_names_the_extra_of_this_project():
    hint = install_hint("ray")
    assert f"{DISTRIBUTION}[ray]" in hint
    assert hint.startswith("pip install 'ray[data]") or "pip install '.[ray]'" in hint
    assert all(not r.startswith(DISTRIBUTION) for r in extra_requirements("dev"))


def test_the_exit_codes_page_lists_every_code():
    page = (REPO / "docs/reference/exit-codes.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", page, re.M), code


def test_the_failures_page_lists_every_reason():
    page = (REPO / "docs/reference/failures.md").read_text(encoding="utf-8")
    for reason in Reason:
        assert f"| `{reason.value}` |" in page, reason


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    pytest.importorskip("material", reason="the docs extra is not installed")
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).with_name("mkdocs"))
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)
                               + ":/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "deepvision-search" / "index.html").exists()


def test_an_install_hint_reads_the_extra_from_the_installed_metadata(monkeypatch):
    from deepvision import extras

    listed = ['numpy>=1.24', 'ray[data]>=2.40; extra == "ray"',
              'onnx>=1.15; extra == "onnx"', 'onnx>=1.15; extra == "openvino"',
              'deepvision-search[docs,test]; extra == "dev"', 'ruff>=0.5; extra == "dev"']
    monkeypatch.setattr(extras.metadata, "requires", lambda name: listed)
    assert extras.install_hint("ray") == ("pip install 'ray[data]>=2.40' "
                                          "(the extra deepvision-search[ray])")
    assert extras.extra_requirements("dev") == ["ruff>=0.5"]
    assert extras.extra_requirements("nothing") == []
