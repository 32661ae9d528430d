"""Model registry: name -> network, preprocessing, dimension and weights identity.

Importing this module is cheap (no torch); networks are built only by `load_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

from deepvision.errors import IncompatibleIndexError, UsageError, WeightsUnavailableError
from deepvision.models import backbones, openclip
from deepvision.models.descriptor import PRE_17, Descriptor, extractor
from deepvision.models.weights import Weights, user_file
from deepvision.preprocess import Preprocess

if TYPE_CHECKING:
    import torch

    from deepvision.models.openclip import TextEncoder

AUTO = "auto"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dim: int
    description: str
    preprocess: Callable[[], Preprocess]
    find_weights: Callable[[Path | None, bool], Weights]
    build: Callable[[Weights], torch.nn.Module]  # normalised float NCHW -> feature map NCHW
    # The trunk's text tower (CLIP family): what `search --text` embeds with; None: images only.
    text: Callable[[torch.nn.Module], TextEncoder] | None = None
    # The trunk gives one finished embedding (a 1x1 map), not a feature map to pool: GeM and
    # other scales do not apply (a ViT takes one input size).
    pooled: bool = False

    @property
    def has_text(self) -> bool:
        return self.text is not None


@dataclass
class LoadedModel:
    spec: ModelSpec
    weights: Weights
    preprocess: Preprocess
    network: torch.nn.Module  # uint8 NCHW -> (N, dim) descriptors, on its device
    descriptor: Descriptor = Descriptor()
    text: TextEncoder | None = None  # strings -> (N, dim) on its device, not normalised


def clip_spec(name: str, dim: int, description: str, arch: str, tag: str | None) -> ModelSpec:
    """A registry row for an open_clip architecture + pretrained tag (models/openclip.py)."""
    m = openclip.OpenClipModel(arch, tag)
    return ModelSpec(name, dim, description, partial(openclip.preprocess, m),
                     partial(openclip.find_weights, m), partial(openclip.build, m),
                     text=partial(openclip.text_encoder, m), pooled=True)


REGISTRY: dict[str, ModelSpec] = {
    "resnet50": ModelSpec("resnet50", 2048, "torchvision ResNet50, ImageNet IMAGENET1K_V2",
                          backbones.resnet50_preprocess, backbones.resnet50_weights,
                          backbones.build_resnet50),
    "efficientnet-lite0": ModelSpec("efficientnet-lite0", 1280,
                                    "EfficientNet-Lite0, ImageNet (bundled, offline)",
                                    backbones.lite0_preprocess, backbones.lite0_weights,
                                    backbones.build_lite0),
    "efficientnet-lite2": ModelSpec("efficientnet-lite2", 1280,
                                    "EfficientNet-Lite2, ImageNet (pip extra lite2, offline)",
                                    backbones.lite2_preprocess, backbones.lite2_weights,
                                    backbones.build_lite2),
}
# CLIP family (open_clip): deepvision name, embedding size, open_clip architecture and weights tag.
# Never picked by `auto`: a text-capable index is asked for with --model.
CLIP_MODELS = (
    ("clip-vit-b-32", 512, "ViT-B-32", "laion2b_s34b_b79k", "LAION-2B"),
    ("clip-vit-b-32-openai", 512, "ViT-B-32-quickgelu", "openai", "OpenAI"),
    ("clip-vit-b-16", 512, "ViT-B-16", "laion2b_s34b_b88k", "LAION-2B"),
    ("clip-vit-l-14", 768, "ViT-L-14", "laion2b_s32b_b82k", "LAION-2B"),
    ("siglip-vit-b-16", 768, "ViT-B-16-SigLIP", "webli", "WebLI"),
)
REGISTRY.update({
    name: clip_spec(name, dim, f"open_clip {arch}, {data} ({tag}); text + image", arch, tag)
    for name, dim, arch, tag, data in CLIP_MODELS})
MODEL_CHOICES = (AUTO, *REGISTRY)


def text_models() -> list[str]:
    """The registered models that can embed text (`search --text`)."""
    return [name for name, spec in REGISTRY.items() if spec.has_text]


def default_descriptor(spec: ModelSpec) -> Descriptor:
    """What a new index of this model gets: the measured default (issue #17) for backbones with
    a feature map; a model that gives one finished embedding (CLIP) keeps its own recipe."""
    return PRE_17 if spec.pooled else Descriptor()


def check_descriptor(spec: ModelSpec, descriptor: Descriptor) -> None:
    """A model that gives one finished embedding takes the default descriptor (or --flip)."""
    if spec.pooled and (descriptor.pooling != "avg" or descriptor.scales != (1.0,)):
        raise UsageError(f"{spec.name} gives one embedding per image: --pooling and --scales "
                         "do not apply to it (--flip does)")


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
            found = user_file(recorded)
        if found.identity != identity and recorded.is_file():
            found = user_file(recorded)
    if found.identity != identity:
        raise IncompatibleIndexError(
            f"the {model} weights found ({found.path}, {found.identity}) are not the ones this "
            f"index was built with ({identity}); {hint}")
    return found


def load_model(spec: ModelSpec, weights: Weights, device: torch.device,
               descriptor: Descriptor | None = None, compile: bool = False) -> LoadedModel:
    """Build the network with its weights, wrapped to take uint8 pixels and return descriptors.
    compile: torch.compile it (pays a one-off compile on the first batches; see bench/)."""
    import torch

    descriptor = descriptor or default_descriptor(spec)
    check_descriptor(spec, descriptor)
    pre = model_preprocess(spec, descriptor)
    trunk = spec.build(weights)
    # channels_last: faster convolutions with cuDNN (bf16) and with oneDNN on the CPU alike.
    wrapped = extractor(trunk, pre, descriptor).eval().to(  # type: ignore[call-overload]
        device, memory_format=torch.channels_last)  # torch's stubs lack this overload of to()
    text = spec.text(trunk) if spec.text is not None else None  # the trunk is on `device` now
    model = LoadedModel(spec, weights, pre, wrapped, descriptor, text)
    if compile:
        compile_network(model)
    return model


def model_preprocess(spec: ModelSpec, descriptor: Descriptor) -> Preprocess:
    """The crops `spec` takes with `descriptor`, without building the network (decode tasks on
    other machines make them)."""
    pre = spec.preprocess()
    if descriptor.frame == "full":  # the whole picture, resized to the square (issue #17)
        pre = replace(pre, resize_mode="squash")
    return pre


def compile_network(model: LoadedModel) -> None:
    """torch.compile the network in place: one graph per batch shape."""
    import torch

    # torch.compile of a Module is a Module (OptimizedModule); its stubs say Callable.
    model.network = cast(torch.nn.Module, torch.compile(model.network, dynamic=False))


