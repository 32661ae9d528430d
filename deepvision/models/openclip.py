"""CLIP-family models through open_clip: one network with an image tower and a text tower.

A row of the registry names an open_clip architecture and a pretrained tag; preprocessing,
weights lookup and the network all come from open_clip's own definitions for that pair.
Importing this module is cheap: open_clip (and torch, timm) load inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepvision.errors import WeightsUnavailableError
from deepvision.extras import install_hint
from deepvision.models.weights import Weights, file_identity, reachable, user_file
from deepvision.preprocess import Preprocess

if TYPE_CHECKING:
    import torch

HF_HOST = "https://huggingface.co"
# The files open_clip looks for in a Hugging Face repo, in its own order of preference.
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class OpenClipModel:
    """One open_clip architecture with one set of pretrained weights (tag None: only a user's
    --weights file, e.g. a test's own small configuration)."""

    arch: str
    tag: str | None

    @property
    def label(self) -> str:
        return f"open_clip {self.arch}" + (f" / {self.tag}" if self.tag else "")


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"CLIP models need open_clip ({exc.name} is missing): {install_hint('clip')}") from None
    return open_clip


def _pretrained_cfg(m: OpenClipModel) -> dict:
    cfg = _open_clip().get_pretrained_cfg(m.arch, m.tag) if m.tag else {}
    if m.tag and not cfg:
        raise WeightsUnavailableError(f"open_clip does not know the weights {m.label}; "
                                      "upgrade open-clip-torch")
    return cfg


def preprocess(m: OpenClipModel) -> Preprocess:
    """open_clip's eval transform for this architecture and tag, as the one Preprocess both
    decode roads follow: the merge open_clip's create_model does (its defaults, then the tag's
    own mean/std/interpolation/resize mode, the size from the vision tower's config)."""
    oc = _open_clip()
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    arch_cfg = oc.get_model_config(m.arch)
    if arch_cfg is None:
        raise WeightsUnavailableError(f"open_clip has no architecture {m.arch!r}; "
                                      "upgrade open-clip-torch")
    merged = merge_preprocess_dict(PreprocessCfg(), _pretrained_cfg(m))
    size = arch_cfg["vision_cfg"].get("image_size", merged["size"])
    return from_open_clip({**merged, "size": size})


def from_open_clip(cfg: dict) -> Preprocess:
    """open_clip's preprocessing fields (PreprocessCfg as a dict) -> Preprocess."""
    size = cfg["size"]
    if not isinstance(size, int):
        if len(size) != 2 or size[0] != size[1]:
            raise WeightsUnavailableError(f"non-square CLIP input {size} is not supported")
        size = int(size[0])
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise WeightsUnavailableError(f"open_clip resize mode {mode!r} is not supported")
    interpolation = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
    # open_clip resizes the short side straight to the input size (no crop margin).
    return Preprocess(size, size, tuple(cfg["mean"]), tuple(cfg["std"]), interpolation, mode)


def find_weights(m: OpenClipModel, weights_file: Path | None, allow_download: bool) -> Weights:
    """--weights FILE, else the Hugging Face cache open_clip downloads into, else a download
    (allowed and reachable), else WeightsUnavailableError saying how to bring them here."""
    if weights_file is not None:
        return user_file(weights_file)
    cfg = _pretrained_cfg(m)
    repo = cfg.get("hf_hub", "").rstrip("/")
    cached = _hf_cached(repo) if repo else None
    if cached is not None:
        return Weights(cached, file_identity(cached), f"{m.label} (Hugging Face cache)")
    if repo and allow_download and reachable(HF_HOST):
        path = Path(_open_clip().download_pretrained(cfg))
        return Weights(path, file_identity(path), f"{m.label} (downloaded)")
    raise WeightsUnavailableError(_missing_message(m, repo))


def _hf_cached(repo: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in HF_FILES:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    return None


def _missing_message(m: OpenClipModel, repo: str) -> str:
    if not m.tag:
        return f"{m.label} has no published weights: pass a state dict with --weights FILE"
    return (f"the {m.label} weights are not in the Hugging Face cache and cannot be downloaded "
            f"here; on a machine with internet run `hf download {repo} {HF_FILES[0]}` (it "
            "prints the file's path), copy that file here and pass it with --weights FILE; or "
            "copy that machine's ~/.cache/huggingface/hub folder here")


def build(m: OpenClipModel, weights: Weights) -> torch.nn.Module:
    """The whole open_clip model with its weights, as a trunk: normalised pixels -> its image
    embedding as a 1x1 feature map (so descriptor.py's pooling passes it through unchanged)."""
    import torch

    oc = _open_clip()
    quick_gelu = bool(_pretrained_cfg(m).get("quick_gelu", False))
    # open_clip warns that the model is "initialized randomly": true only until the next line.
    logging.disable(logging.WARNING)
    try:
        net = oc.create_model(m.arch, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.disable(logging.NOTSET)
    try:
        oc.load_checkpoint(net, str(weights.path))
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError(
            f"cannot load weights {weights.path}: {first} (is it a state dict for {m.label}?)"
        ) from exc

    class ClipTrunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_image(x)[:, :, None, None]

    return ClipTrunk()


# Strings -> (N, dim) float text embeddings on `device`, not yet normalised.
TextEncoder = Callable[[Sequence[str], "torch.device"], "torch.Tensor"]


def text_encoder(m: OpenClipModel, trunk: torch.nn.Module) -> TextEncoder:
    """The text tower of the trunk `build` made. The tokenizer loads on the first text: an
    image-only run never needs it (SigLIP's comes from the Hugging Face cache)."""
    tokenizer = None

    def encode(texts: Sequence[str], device: torch.device) -> torch.Tensor:
        nonlocal tokenizer
        if tokenizer is None:
            tokenizer = _tokenizer(m)
        clip: Any = trunk.clip  # open_clip's model: encode_text is its own
        return clip.encode_text(tokenizer(list(texts)).to(device))

    return encode


def _tokenizer(m: OpenClipModel) -> Callable[[list[str]], torch.Tensor]:
    try:
        return _open_clip().get_tokenizer(m.arch)
    except (OSError, ImportError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"the {m.label} text tokenizer cannot be loaded here ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); it comes from the Hugging Face "
            "cache: load this model once on a machine with internet and copy "
            "~/.cache/huggingface/hub") from None
