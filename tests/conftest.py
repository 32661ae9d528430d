"""Shared fixtures: offline mode, a tiny stub backbone, and ways to run the real CLI."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests never download anything: `auto` must pick the bundled model without trying the network.
os.environ["DEEPVISION_OFFLINE"] = "1"
# The CPU backends' export cache goes to a throwaway folder, never the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="dv-test-cache-")
os.environ["DEEPVISION_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: object, timeout: float = 600) -> Run:
    """The real `python -m deepvision` in a subprocess (used where the process matters)."""
    proc = subprocess.run([sys.executable, "-m", "deepvision", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Iterator:
    """The real Typer app in-process (fast: torch is imported once per test session)."""
    from typer.testing import CliRunner

    from deepvision.cli import app

    runner = CliRunner()

    def invoke(*args: object) -> Run:
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return Run(res.exit_code, res.stdout, res.stderr)

    yield invoke


TINY_DIM = 48


def _tiny_preprocess():
    from deepvision.pipeline.transforms import Preprocess

    return Preprocess(40, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")


def _tiny_weights_factory(path: Path, seed: int):
    def find(weights_file: Path | None, allow_download: bool):
        import torch

        from deepvision.models.weights import Weights, file_identity

        target = weights_file or path
        if not target.exists():
            torch.manual_seed(seed)
            torch.save({"proj.weight": torch.randn(TINY_DIM, TINY_DIM)}, target)
        return Weights(target, file_identity(target), "tiny test weights")

    return find


def _tiny_build(weights):
    import torch

    from deepvision.models.weights import load_state

    class Tiny(torch.nn.Module):
        """A 4x4 colour layout, mixed by a fixed random matrix: cheap and deterministic."""

        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AdaptiveAvgPool2d(4)
            self.proj = torch.nn.Linear(TINY_DIM, TINY_DIM, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(self.pool(x).flatten(1))[:, :, None, None]  # a 1x1 "feature map"

    net = Tiny()
    load_state(net, weights)
    return net


@pytest.fixture
def tiny_model(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Registers stub backbones 'tiny' and 'tiny-b' (same shape, other weights): the tests that
    use them check the pipeline, not the network, so they need no real weights."""
    from deepvision.models import registry as models

    folder = tmp_path_factory.mktemp("tiny")
    for name, seed in (("tiny", 1), ("tiny-b", 2)):
        spec = models.ModelSpec(name, TINY_DIM, "test stub", _tiny_preprocess,
                                _tiny_weights_factory(folder / f"{name}.pt", seed), _tiny_build)
        monkeypatch.setitem(models.REGISTRY, name, spec)
    return "tiny"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of 12 distinct small generated images in assorted formats."""
    from imagefactory import make_photo_like

    folder = tmp_path / "photos"
    exts = ["jpg", "png", "webp", "bmp", "gif", "tiff"]
    for i in range(12):
        make_photo_like(folder / f"img_{i:02d}.{exts[i % len(exts)]}", seed=i)
    return folder


@pytest.fixture
def sync(tiny_model: str) -> Iterator:
    """`index` through the service itself, with collaborators injected (hasher, embedders) and
    the summary as `index --json` prints it. Decoding runs in-process (workers 0)."""
    from deepvision.output.render import index_summary_json
    from deepvision.pipeline.embedder import EmbedOptions
    from deepvision.progress import Silent
    from deepvision.services.sync import IndexRequest, IndexRun
    from deepvision.store.indexstore import IndexStore

    def run(folder: Path, idx: Path, *, hasher=None, embedders=None, batch_size: int = 0,
            **fields: object) -> dict:
        req = IndexRequest(roots=(folder,), store=IndexStore(idx), model=tiny_model,
                           embed=EmbedOptions(workers=0, batch_size=batch_size), **fields)
        collaborators = {k: v for k, v in (("hasher", hasher), ("embedders", embedders)) if v}
        return json.loads(index_summary_json(IndexRun(req, Silent(), **collaborators).run()))

    yield run


def no_model(*args: object, **kwargs: object) -> None:
    """An `embedders` factory for runs that must not need the network."""
    raise AssertionError("the model was loaded although nothing needed embedding")
