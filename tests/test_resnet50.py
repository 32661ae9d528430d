"""The ResNet50 path, end to end. No ImageNet weights exist offline, so the test saves a random
state dict and passes it explicitly with --weights (the product never defaults to random)."""

from __future__ import annotations

import pytest
from imagefactory import make_photo_like

from deepvision.errors import ExitCode


@pytest.fixture(scope="module")
def random_resnet50(tmp_path_factory) -> str:
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "resnet50_random_for_tests.pth"
    torch.save(resnet50().state_dict(), path)
    return str(path)


@pytest.mark.slow
def test_resnet50_with_a_weights_file(cli, random_resnet50, tmp_path):
    folder = tmp_path / "p"
    for i in range(4):
        make_photo_like(folder / f"p{i}.jpg", seed=i, size=(160, 120))
    idx = tmp_path / "idx"
    run = cli("index", folder, "--index-dir", idx, "--model", "resnet50", "--weights",
              random_resnet50, "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    info = cli("info", "--index-dir", idx, "--json").json()
    assert info["model"] == "resnet50" and info["dim"] == 2048
    # search finds the weights file recorded in the manifest by itself
    doc = cli("search", folder / "p2.jpg", "--index-dir", idx, "--format", "json", "-k", "1",
              "--workers", "0").json()
    assert doc["queries"][0]["matches"][0]["path"] == str(folder / "p2.jpg")


def test_auto_with_a_weights_file_means_resnet50(cli, random_resnet50, tmp_path):
    folder = tmp_path / "p"
    make_photo_like(folder / "a.png", seed=1)
    run = cli("index", folder, "--index-dir", tmp_path / "idx", "--weights", random_resnet50,
              "--workers", "0")
    assert run.exit_code == 0, run.stderr
    assert "using resnet50" in run.stderr


def test_resnet50_without_weights_offline_says_how_to_provide_them(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    folder = tmp_path / "p"
    make_photo_like(folder / "a.png", seed=1)
    run = cli("index", folder, "--index-dir", tmp_path / "idx", "--model", "resnet50")
    assert run.exit_code == ExitCode.NO_WEIGHTS
    assert "--weights" in run.stderr and "resnet50-11ad3fa6.pth" in run.stderr
    assert not (tmp_path / "idx" / "default" / "manifest.json").exists()
