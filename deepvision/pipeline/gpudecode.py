"""Bytes -> model-sized pixels on the embedding device: batched JPEG decode on the GPU.

Decode, not the network, is what limits a GPU indexer (bench/RESULTS.md). So on CUDA the decode
workers only read each file and look at its header; a JPEG a GPU decoder can take travels to the
main process as bytes, where a batch of them is decoded at once (nvImageCodec, which drives the
hardware JPEG engine of A100/H100-class GPUs, or torchvision's nvJPEG), turned upright by its EXIF
orientation, resized with one call per image shape and centre-cropped, all on the device.
Everything else (PNG, WebP, HEIC, progressive or CMYK JPEG, any file a GPU decoder rejects) is
decoded by Pillow on the CPU. Both roads end in `transforms.resize_crop`, so an image's
embedding does not depend on which one decoded it beyond rounding.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from deepvision.errors import UsageError
from deepvision.pipeline.decode import (
    DecodeError,
    check_pixels,
    configure_pillow,
    exif_orientation,
)
from deepvision.pipeline.transforms import Preprocess

if TYPE_CHECKING:
    import torch

DECODERS = ("auto", "pil", "torchvision", "nvimgcodec")
NVIMGCODEC_HINT = ("install NVIDIA nvImageCodec for your CUDA version: the extra "
                   "deepvision-search[nvimgcodec-cu13] (or nvimgcodec-cu12), e.g. "
                   "pip install '.[nvimgcodec-cu13]' in deepvision's checkout")
NVIMGCODEC_MISSING = f"--decoder nvimgcodec: nvImageCodec is not installed; {NVIMGCODEC_HINT}"
# Pillow modes a GPU JPEG decoder turns into RGB like Pillow does; CMYK/YCCK (Adobe inversion)
# and anything exotic go to Pillow.
_DEVICE_MODES = ("RGB", "L")


@dataclass(frozen=True)
class JpegHeader:
    height: int  # as stored, before the orientation is applied
    width: int
    orientation: int  # EXIF 1-8, 1 = upright


def device_jpeg_header(data: bytes, max_megapixels: float,
                       pre: Preprocess) -> JpegHeader | None:
    """The header of a JPEG that a GPU decoder can take, or None for a file Pillow should decode:
    another format, a progressive or CMYK JPEG, or one without its end-of-image marker (possibly
    half-written: Pillow decides whether it is truncated). Only the header is parsed.
    Raises DecodeError for a JPEG over the pixel limit, like the Pillow road."""
    # The end marker may be followed by padding; such rare files simply take the Pillow road.
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return None
    configure_pillow()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if (im.format != "JPEG" or im.mode not in _DEVICE_MODES
                    or im.info.get("progressive") or im.info.get("progression")):
                return None
            check_pixels(im, max_megapixels, pre.resize)
            return JpegHeader(im.height, im.width, exif_orientation(im))
    except DecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return None  # a header Pillow cannot read: the Pillow road reports it with its reason


class DeviceDecoder(Protocol):
    """Decodes a batch of JPEG byte strings into stored-orientation uint8 (3, H, W) tensors on
    its device, None for each image it cannot decode (that image then takes the Pillow road)."""

    name: str

    def decode(self, data: Sequence[torch.Tensor]) -> list[torch.Tensor | None]: ...


class TorchvisionDecoder:
    """torchvision.io.decode_jpeg: nvJPEG on CUDA (libjpeg-turbo on the CPU)."""

    name = "torchvision"

    def __init__(self, device: torch.device) -> None:
        import torch
        from torchvision.io import ImageReadMode

        # torchvision 0.29 deprecates its image decoding (for TorchCodec); it still works, and
        # one warning per batch would drown the progress bar.
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                module=r"torchvision\.io")
        if device.type == "cuda" and not hasattr(torch.ops.image, "decode_jpegs_cuda"):
            raise UsageError("this torchvision build has no GPU JPEG decoder; "
                             "use --decoder pil or --decoder nvimgcodec")
        self.device = device
        self.mode = ImageReadMode.RGB

    def decode(self, data: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        import torch
        from torchvision.io import decode_jpeg

        try:
            return list(decode_jpeg(list(data), mode=self.mode, device=self.device))
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError:
            # A batched call returns nothing if one image fails: find it, one at a time.
            return [self._one(t) for t in data]

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        import torch
        from torchvision.io import decode_jpeg

        try:
            return decode_jpeg(data, mode=self.mode, device=self.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError:
            return None


class NvImageCodecDecoder:
    """NVIDIA nvImageCodec: the hardware JPEG decoder where the GPU has one, CUDA nvJPEG
    otherwise. Without CUDA it runs its CPU backend (used by the tests on CPU-only machines)."""

    name = "nvimgcodec"

    def __init__(self, device: torch.device) -> None:
        try:
            from nvidia import nvimgcodec
        except ImportError:
            raise UsageError(NVIMGCODEC_MISSING) from None
        self.device = device
        if device.type == "cuda":
            # No CPU backend: a JPEG the GPU cannot decode comes back None and goes to Pillow,
            # which reports corrupt files with the same reasons as everywhere else.
            kinds: tuple[Any, ...] = (nvimgcodec.BackendKind.HW_GPU_ONLY,
                                      nvimgcodec.BackendKind.GPU_ONLY,
                                      nvimgcodec.BackendKind.HYBRID_CPU_GPU)
            device_id = device.index if device.index is not None else _current_cuda_index()
        else:
            kinds = (nvimgcodec.BackendKind.CPU_ONLY,)
            device_id = nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY
        self._decoder = nvimgcodec.Decoder(device_id=device_id,
                                           backends=[nvimgcodec.Backend(k) for k in kinds])
        # Orientation is applied by `orient`, the same for every decoder.
        self._params = nvimgcodec.DecodeParams(apply_exif_orientation=False,
                                               color_spec=nvimgcodec.ColorSpec.SRGB)
        self._device_buffer = nvimgcodec.ImageBufferKind.STRIDED_DEVICE

    def decode(self, data: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        import torch

        stream = torch.cuda.current_stream(self.device).cuda_stream \
            if self.device.type == "cuda" else 0
        images = self._decoder.decode([t.numpy() for t in data], params=self._params,
                                      cuda_stream=stream)
        return [None if im is None else self._tensor(im) for im in images]

    def _tensor(self, image: object) -> torch.Tensor:
        import numpy as np
        import torch

        if image.buffer_kind == self._device_buffer:  # type: ignore[attr-defined]
            hwc = torch.from_dlpack(image)  # synchronised with the current stream
        else:
            hwc = torch.from_numpy(np.asarray(image))
        if hwc.shape[-1] == 1:  # a greyscale JPEG decoded as one channel
            hwc = hwc.expand(-1, -1, 3)
        return hwc.permute(2, 0, 1)


def _current_cuda_index() -> int:
    import torch

    return torch.cuda.current_device()


def make_decoder(name: str, device: torch.device) -> DeviceDecoder | None:
    """The device decoder for --decoder NAME on `device`; None means Pillow in the workers.

    auto: on CUDA nvImageCodec where installed and working, else torchvision's nvJPEG; on the
    CPU Pillow (its JPEG draft mode decodes camera files several times faster than a full
    decode). A decoder named explicitly that cannot decode a probe JPEG is an error."""
    if name not in DECODERS:
        raise UsageError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    if name == "pil" or (name == "auto" and device.type != "cuda"):
        return None
    candidates = [name] if name != "auto" else ["nvimgcodec", "torchvision"]
    problems = []
    for candidate in candidates:
        try:
            decoder = (NvImageCodecDecoder(device) if candidate == "nvimgcodec"
                       else TorchvisionDecoder(device))
            if _decodes_probe(decoder):
                return decoder
            problems.append(f"{candidate} could not decode a test JPEG on {device}")
        except UsageError as exc:
            problems.append(str(exc))
        except RuntimeError as exc:  # the library loads but cannot start on this GPU/driver
            problems.append(f"{candidate} cannot start on {device}: {exc}")
    if name == "auto":
        return None  # Pillow in the workers still works
    raise UsageError(f"{problems[0]}; use --decoder pil")


def _decodes_probe(decoder: DeviceDecoder) -> bool:
    """One 16x16 JPEG through the decoder: a library that loads but lacks its codec (nvImageCodec
    without the nvJPEG wheel) would otherwise send every image to the slow fallback."""
    import numpy as np
    import torch

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buf, "JPEG")
    data = torch.from_numpy(np.frombuffer(buf.getvalue(), np.uint8).copy())
    try:
        out = decoder.decode([data])
    except RuntimeError:
        return False
    return out[0] is not None and tuple(out[0].shape) == (3, 16, 16)


def decoder_available(name: str) -> str | None:
    """Why --decoder NAME cannot work here (checked before any heavy work), or None."""
    if name == "nvimgcodec":
        import importlib.util

        try:
            found = importlib.util.find_spec("nvidia.nvimgcodec") is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return NVIMGCODEC_MISSING
    return None


def decoding_note(decoder: DeviceDecoder | None, asked: str, device: torch.device) -> str:
    """One line for the user: who decodes what, and why when `auto` could not use the GPU."""
    if decoder is not None:
        return f"JPEG decoded by {decoder.name} on {device}, other formats by Pillow"
    if asked == "auto" and device.type == "cuda":
        return ("images decoded by Pillow: no working GPU JPEG decoder "
                f"(torchvision without nvJPEG; for nvImageCodec: {NVIMGCODEC_HINT})")
    return "images decoded by Pillow"
