"""The Embedder: one model on one device, with its decoder and descriptor, built once.

Every way in uses it: `index` and `rebuild` (files from a folder walk), `search` and `eval`
(query files), and callers with images already in memory (bytes from an upload, frames from a
video). Files travel decode workers -> device feeder -> network (loader.py, feeder.py,
network.py); every input position comes back exactly once, as a vector or as a failure, though
not in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from deepvision.pipeline.backends import TORCH, Selection, select
from deepvision.pipeline.decode import (
    DEFAULT_MAX_MEGAPIXELS,
    DecodeError,
    Size,
    check_pixels,
    pil_crop,
    to_rgb,
)
from deepvision.pipeline.feeder import Feeder, background, default_decode_bytes
from deepvision.pipeline.gpudecode import DeviceDecoder, decoding_note, make_decoder
from deepvision.pipeline.loader import decode_loader
from deepvision.pipeline.network import (
    Network,
    NetworkStep,
    TextStep,
    default_batch_size,
    embed_text,
    pick_device,
)
from deepvision.pipeline.transforms import Crop, resize_crop
from deepvision.pipeline.video import VideoOptions
from deepvision.types import EmbeddedBatch, Failure, Reason

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from deepvision.models.descriptor import Descriptor, QueryViews
    from deepvision.models.registry import LoadedModel, ModelSpec, Weights
    from deepvision.progress import Reporter

def report_notes(embedder: Embedder, rep: Reporter) -> None:
    """What the user should know about how the network runs (how `auto` chose the backend, a
    damaged export cache replaced), one line each."""
    for note in embedder.backend.notes:
        rep.info(note)


# An image already in memory: encoded bytes (an upload), a PIL image, or HxWx3 uint8 RGB (a frame).
InMemoryImage = Union[bytes, "Image.Image", np.ndarray]


@dataclass(frozen=True)
class EmbedOptions:
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    batch_size: int = 0  # 0: from free memory on CUDA, 32 on CPU
    workers: int = -1  # -1: see loader.default_workers
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    compile: bool = False  # torch.compile the network (index/rebuild)
    decoder: str = "auto"  # auto | pil | torchvision | nvimgcodec (gpudecode.DECODERS)
    # How decode workers start: None (fork, the default) or "forkserver"/"spawn" for a process
    # with many threads (a server), where a forked child could inherit a lock held elsewhere.
    start_method: str | None = None
    backend: str = "auto"  # auto | torch | onnxruntime | openvino (backends.BACKENDS)
    threads: int = 0  # the CPU runtime's threads; 0: as many as torch uses
    # Images this embedder is expected to embed: `auto` measures the CPU backends only when a
    # run is large enough to pay for it (backends.MEASURE_MIN); -1: a long-running service.
    workload: int = 0


class Embedder:
    """Embeds files or in-memory images with one loaded model. Build it with `Embedder.load`;
    tests pass a stub network `step`, a device `decoder` or small worker tasks (`chunk_size`
    files each) to the constructor, and a `text_step` for the text side."""

    def __init__(self, model: LoadedModel, device: torch.device, opts: EmbedOptions,
                 decoder: DeviceDecoder | None = None, step: NetworkStep | None = None,
                 chunk_size: int | None = None, text_step: TextStep | None = None,
                 backend: Selection | None = None) -> None:
        self.model = model
        self.text_step = text_step or embed_text
        self.device = device
        self.opts = opts
        self.decoder = decoder
        self.chunk_size = chunk_size
        self.backend = backend or Selection(TORCH, step)
        batch = opts.batch_size or default_batch_size(device)
        self.network = Network(model, device, batch, step or self.backend.step)

    @classmethod
    def load(cls, spec: ModelSpec, weights: Weights, descriptor: Descriptor,
             opts: EmbedOptions, step: NetworkStep | None = None,
             text_step: TextStep | None = None) -> Embedder:
        """Pick the device and decoder, build the network with its weights: the expensive part,
        done once."""
        from deepvision.models.registry import compile_network, load_model

        device = pick_device(opts.device)
        decoder = make_decoder(opts.decoder, device)
        model = load_model(spec, weights, device, descriptor)
        backend = Selection(TORCH) if step is not None else select(
            opts.backend, model, device, opts.threads, opts.workload)
        if opts.compile and backend.backend == TORCH:
            compile_network(model)
        return cls(model, device, opts, decoder, step, text_step=text_step, backend=backend)

    def sharing(self, opts: EmbedOptions) -> Embedder:
        """Another Embedder on the same loaded network, backend and decoder, with other
        options for the workers (a service's background index run)."""
        return Embedder(self.model, self.device, opts, self.decoder, self.network.step,
                        text_step=self.text_step, backend=self.backend)

    @property
    def dim(self) -> int:
        return self.model.spec.dim

    @property
    def has_text(self) -> bool:
        return self.model.spec.has_text

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dim) L2-normalised text embeddings, in input order, in batches
        of the network's size. UsageError for a model without a text encoder."""
        if not self.has_text:
            from deepvision.errors import UsageError

            raise UsageError(f"model {self.model.spec.name} has no text encoder")
        step = self.network.batch
        parts = [self.text_step(self.model, texts[i:i + step], self.device)
                 for i in range(0, len(texts), step)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    @property
    def decoder_name(self) -> str:
        return self.decoder.name if self.decoder is not None else "pil"

    def describe(self) -> str:
        """One line for the user: the model, its weights, the device, the backend (when it is
        not torch) and who decodes what."""
        runs = "" if self.backend.backend == TORCH else f" with {self.backend.backend}"
        return (f"model {self.model.spec.name} ({self.model.weights.origin}) on {self.device}"
                f"{runs}; {decoding_note(self.decoder, self.opts.decoder, self.device)}")

    def embed_files(self, paths: Sequence[str], video: VideoOptions | None = None,
                    views: QueryViews | None = None) -> Iterator[EmbeddedBatch]:
        """Decode and embed `paths` in batches. Every position comes back once, in items or in
        failures; batches are not in input order. video: sample video files so (their frames
        come back together, items repeating the position; EmbeddedBatch.files() groups them);
        None: a video is decoded as an image, and fails. views: also every crop's query views
        (EmbeddedBatch.query_views; each costs one more network pass a crop)."""
        if not paths:
            return
        pre = self.model.preprocess
        loader = decode_loader(paths, pre, self.device, self.opts.max_megapixels,
                               self.opts.workers, self.decoder is not None, self.chunk_size,
                               self.opts.start_method, video)
        feeder = Feeder(self.decoder, paths, pre, self.device, self.opts.max_megapixels,
                        self.network.batch, default_decode_bytes(self.device))
        # The worker processes are forked here, on the caller's thread, before the feeder thread
        # exists: forking while another thread runs risks copying a lock it holds.
        chunks = iter(loader)
        try:
            yield from self.network.batches(paths, background(feeder.pieces(chunks), depth=2),
                                            views)
        finally:
            del chunks  # the last reference: shuts the workers down, also when stopped early

    def embed_images(self, images: Sequence[InMemoryImage],
                     names: Sequence[str] | None = None) -> EmbeddedBatch:
        """Embed images already in memory, in this process (no workers). names[i] (default
        "<image i>") is what a failure is reported under."""
        labels = list(names) if names is not None else [f"<image {i}>" for i in range(len(images))]
        crops, items, failures = [], [], []
        for pos, image in enumerate(images):
            try:
                crops.append(self.prepare(image, labels[pos]))
            except DecodeError as exc:
                failures.append((pos, Failure(labels[pos], exc.reason, exc.message)))
                continue
            items.append(pos)
        out = self.embed_crops([labels[i] for i in items], crops)
        return EmbeddedBatch([items[i] for i in out.items], out.vectors,
                             [*failures, *((items[i], f) for i, f in out.failures)])

    def prepare(self, image: InMemoryImage, name: str) -> Crop:
        """One image in memory -> the model's uint8 crop (3, crop, crop), decoded and checked
        as a file would be, with its picture's short side. Raises DecodeError with the reason.
        Thread-safe: a service decodes uploads on its request threads and batches only the
        network."""
        return self._crop(image, name)

    def embed_crops(self, names: Sequence[str], crops: Sequence[Crop],
                    views: QueryViews | None = None) -> EmbeddedBatch:
        """Crops from `prepare`, through the network in one go (positions as in `crops`);
        views: also their query views."""
        count = views.count if views is not None else 0
        if not crops:
            return EmbeddedBatch([], np.zeros((0, self.dim), np.float32), [],
                                 query_views=np.zeros((0, count, self.dim), np.float32)
                                 if count else None)
        import torch

        pixels = torch.stack([c.pixels for c in crops]).to(self.device)
        return self.network.checked(names, list(range(len(crops))), pixels, views=views,
                                    sides=[c.side for c in crops])

    def _crop(self, image: InMemoryImage, label: str) -> Crop:
        import torch
        from PIL import Image as PILImage
        from torchvision.transforms.v2.functional import pil_to_tensor

        pre, limit = self.model.preprocess, self.opts.max_megapixels
        if isinstance(image, (bytes, bytearray, memoryview)):
            return pil_crop(label, pre, limit, data=bytes(image))
        if isinstance(image, PILImage.Image):
            check_pixels(image, limit, pre.resize)
            return Crop(resize_crop(pil_to_tensor(to_rgb(image)), pre), min(image.size))
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise DecodeError(Reason.CORRUPT, f"expected an HxWx3 uint8 RGB array, got shape "
                              f"{array.shape} of {array.dtype}")
        check_pixels(Size(array.shape[1], array.shape[0]), limit, pre.resize)
        pixels = resize_crop(torch.from_numpy(array.copy()).permute(2, 0, 1), pre)  # own it
        return Crop(pixels, min(array.shape[:2]))
