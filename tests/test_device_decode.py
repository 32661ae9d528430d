"""The device decode road (pipeline/gpudecode.py, transforms.py, the loader's worker chunks and
the Feeder), run on the CPU.

On a CPU device torchvision's decoder is libjpeg-turbo and nvImageCodec runs its CPU backend, so
the whole road a GPU takes (JPEG bytes from the workers, batched decode, EXIF orientation, one
resize per shape, the Pillow fallback, the out-of-memory back-off) runs here, with the Pillow
road (`--decoder pil`) as the oracle: same files, same failure reasons, same vectors.
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from imagefactory import (
    make_bad_files,
    make_exif_rotated_pair,
    make_photo_like,
    photo_like_image,
)
from PIL import Image, ImageOps

from deepvision.errors import ExitCode, UsageError
from deepvision.models import registry as models
from deepvision.pipeline.decode import DecodeError, load_rgb, pil_crop
from deepvision.pipeline.embedder import Embedder, EmbedOptions
from deepvision.pipeline.feeder import Feeder, background
from deepvision.pipeline.gpudecode import (
    JpegHeader,
    TorchvisionDecoder,
    device_jpeg_header,
    make_decoder,
)
from deepvision.pipeline.loader import FileChunks
from deepvision.pipeline.transforms import (
    Preprocess,
    orient,
    resize_crop,
    resize_crop_grouped,
)
from deepvision.types import Reason

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent
ORIENTATION = 0x0112
DEVICE_DECODERS = ["torchvision", "nvimgcodec"]
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS as Pillow ships it
LIMIT_MP = 0.07  # mixed folder: over 256x256 (bad/truncated.jpg), under 320x240 (too_large.jpg)
# What the header tests resize to: the pixel limit also holds for the resized image.
PRE = Preprocess(40, 32, (0.5,) * 3, (0.25,) * 3, "bilinear")


# --------------------------------------------------------------------------- helpers


def _needs(decoder: str) -> None:
    if decoder == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")


def _save(image: Image.Image, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", **kw)
    return path


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def _jpeg_bytes(image: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _undecodable_jpeg(path: Path, seed: int = 5) -> Path:
    """A complete JPEG (FFD8 ... FFD9) whose header Pillow reads but whose scan names a component
    the frame does not have: every decoder, Pillow's included, fails on the pixels."""
    data = bytearray(_jpeg_bytes(photo_like_image(seed, (96, 72)), quality=90))
    sos = data.index(b"\xff\xda")
    data[sos + 5] = 0x7F  # first component id of the scan (the frame has 1, 2, 3)
    path.write_bytes(bytes(data))
    return path


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class Watched:
    """A real decoder, watched: records what it was given, and can refuse images (return None,
    like a decoder that cannot take them) or raise CUDA out-of-memory on chosen calls."""

    def __init__(self, inner, refuse: Callable[[int, bytes], bool] = lambda i, d: False,
                 oom: Callable[[int, int], bool] = lambda call, n: False) -> None:
        self.inner = inner
        self.name = inner.name
        self.refuse = refuse  # (index in the call, bytes) -> return None for it
        self.oom = oom  # (call number, images in the call) -> raise out-of-memory
        self.calls: list[int] = []  # images per decode call, including the failed ones
        self.decoded: list[bytes] = []  # inputs it returned an image for
        self.refused: list[bytes] = []

    def decode(self, data: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        self.calls.append(len(data))
        if self.oom(len(self.calls) - 1, len(data)):
            raise torch.cuda.OutOfMemoryError(f"simulated: {len(data)} images do not fit")
        out = self.inner.decode(data)
        for i, (t, image) in enumerate(zip(data, out, strict=True)):
            raw = t.numpy().tobytes()
            if image is not None and self.refuse(i, raw):
                out[i] = None
            (self.decoded if out[i] is not None else self.refused).append(raw)
        return out


def _run(model, paths: Sequence[Path], decoder, **opts: object
         ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Embed `paths` on the CPU with `decoder` (None: the Pillow road); check that every input
    position comes back exactly once; return {path: vector} and {path: failure reason}."""
    options = EmbedOptions(device="cpu", workers=0, **opts)
    names = [str(p) for p in paths]
    seen: list[int] = []
    vectors: dict[str, np.ndarray] = {}
    reasons: dict[str, str] = {}
    for batch in Embedder(model, CPU, options, decoder=decoder).embed_files(names):
        assert len(batch.items) == len(batch.vectors)
        for pos, vec in zip(batch.items, batch.vectors, strict=True):
            vectors[names[pos]] = vec
        for pos, failure in batch.failures:
            assert failure.path == names[pos]  # the failure names its own file
            reasons[names[pos]] = failure.reason
        seen += batch.items + [pos for pos, _ in batch.failures]
    assert sorted(seen) == list(range(len(paths)))
    return vectors, reasons


def _feed(decoder, paths: Sequence[Path], pre: Preprocess, decode_batch: int = 8,
          chunk: int = 5, max_megapixels: float = 120.0
          ) -> tuple[dict[str, torch.Tensor], dict[str, str], Feeder]:
    """Worker chunks -> Feeder, without a DataLoader: {path: uint8 crop}, {path: reason}."""
    names = [str(p) for p in paths]
    chunks = FileChunks(names, pre, max_megapixels, chunk, jpeg_bytes=decoder is not None)
    feeder = Feeder(decoder, names, pre, CPU, max_megapixels, decode_batch, 256 << 20)
    crops: dict[str, torch.Tensor] = {}
    reasons: dict[str, str] = {}
    seen: list[int] = []
    for piece in feeder.pieces(chunks[k] for k in range(len(chunks))):
        if piece.items:
            assert piece.pixels.shape == (len(piece.items), 3, pre.crop, pre.crop)
            for pos, side in zip(piece.items, piece.sides, strict=True):  # as stored, any road
                with Image.open(names[pos]) as im:
                    assert side == min(im.size), names[pos]
            crops.update({names[pos]: piece.pixels[j] for j, pos in enumerate(piece.items)})
        reasons.update({names[pos]: f.reason for pos, f in piece.failures})
        seen += piece.items + [pos for pos, _ in piece.failures]
    assert sorted(seen) == list(range(len(paths)))
    return crops, reasons, feeder


def _cosines(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {k: float(a[k] @ b[k]) for k in a}


@pytest.fixture
def tiny(tiny_model: str) -> models.LoadedModel:
    spec, weights, _ = models.resolve(tiny_model, None)
    return models.load_model(spec, weights, CPU)


@pytest.fixture(scope="module")
def lite0() -> models.LoadedModel:
    spec, weights, _ = models.resolve("efficientnet-lite0", None)
    return models.load_model(spec, weights, CPU)


def _mixed_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """Every kind of file the two roads must agree on; returns (all files, the JPEGs that a
    device decoder must be given: baseline RGB/L, complete, under the pixel limit)."""
    device = [make_photo_like(root / f"good_{i}.jpg", seed=i, size=size, quality=90)
              for i, size in enumerate([(96, 72), (96, 72), (120, 80), (72, 96), (96, 72)])]
    device += list(make_exif_rotated_pair(root))
    device.append(_save(photo_like_image(30, (80, 60)).convert("L"), root / "grey.jpg"))
    device.append(_undecodable_jpeg(root / "undecodable.jpg"))
    pillow = [
        _save(photo_like_image(31), root / "progressive.jpg", progressive=True),
        _save(photo_like_image(32).convert("CMYK"), root / "cmyk.jpg"),
        make_photo_like(root / "plain.png", seed=33),
        make_photo_like(root / "plain.webp", seed=34),
        # Over the pixel limit the road tests use: refused from its header, in the worker.
        make_photo_like(root / "too_large.jpg", seed=35, size=(320, 240)),
    ]
    bad = sorted(root / "bad" / name for name in make_bad_files(root / "bad"))
    files = sorted(device + pillow) + bad
    return files, device


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(orientation):
    """A lossless PNG carrying the EXIF tag: ImageOps.exif_transpose is the oracle, pixel-exact.
    The image is 5x7 random pixels, so any wrong flip or rotation changes it."""
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "PNG", exif=_exif(orientation))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.getexif()[ORIENTATION] == orientation
        expected = np.asarray(ImageOps.exif_transpose(im))

    chw = torch.from_numpy(stored).permute(2, 0, 1)
    got = orient(chw, orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected)
    # The same on a batch (N, 3, H, W): only the last two dimensions turn.
    batch = orient(torch.stack([chw, chw.flip(0)]), orientation)
    np.testing.assert_array_equal(batch[0].permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(batch[1].permute(1, 2, 0).numpy(), expected[..., ::-1])


# --------------------------------------------------------------------------- routing


def test_header_routes_baseline_rgb_and_grey_jpegs_to_the_device():
    photo = photo_like_image(1, (40, 24))  # width 40, height 24
    header = device_jpeg_header(_jpeg_bytes(photo, exif=_exif(6)), 120, PRE)
    assert header == JpegHeader(height=24, width=40, orientation=6)  # as stored
    assert device_jpeg_header(_jpeg_bytes(photo), 120, PRE) == JpegHeader(24, 40, 1)
    assert device_jpeg_header(_jpeg_bytes(photo.convert("L")), 120, PRE) == JpegHeader(24, 40, 1)


def test_header_sends_everything_else_to_pillow():
    photo = photo_like_image(2, (64, 48))
    whole = _jpeg_bytes(photo)

    def encoded(fmt: str, image: Image.Image = photo) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt)
        return buf.getvalue()

    others = {
        "progressive": _jpeg_bytes(photo, progressive=True),
        "cmyk": _jpeg_bytes(photo.convert("CMYK")),
        "png": encoded("PNG"),
        "webp": encoded("WEBP"),
        "truncated": whole[: len(whole) // 2],
        "garbage": np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
        "jpeg markers around garbage": b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9",
        "empty": b"",
    }
    assert device_jpeg_header(whole, 120, PRE) is not None  # the same photo, whole, does go
    for kind, data in others.items():
        assert device_jpeg_header(data, 120, PRE) is None, kind


def test_header_enforces_the_pixel_limit_like_pillow():
    data = _jpeg_bytes(Image.new("RGB", (1000, 600), (90, 20, 200)))
    with pytest.raises(DecodeError) as info:
        device_jpeg_header(data, max_megapixels=0.5, pre=PRE)
    assert info.value.reason == Reason.TOO_LARGE and "--max-megapixels" in info.value.message
    with pytest.raises(DecodeError) as pillow:
        load_rgb("x.jpg", max_megapixels=0.5, data=data, resize_short=PRE.resize)
    assert pillow.value.reason == info.value.reason
    assert device_jpeg_header(data, max_megapixels=0.6, pre=PRE) == JpegHeader(600, 1000, 1)
    # An extreme aspect ratio: 0.12 MP as stored, 48 MP once its short side is resized to 40.
    strip = _header_only_jpeg(60_000, 2)
    with pytest.raises(DecodeError) as info:
        device_jpeg_header(strip, max_megapixels=10, pre=PRE)
    assert info.value.reason == Reason.TOO_LARGE and "aspect ratio" in info.value.message
    with pytest.raises(DecodeError) as pillow:
        load_rgb("x.jpg", max_megapixels=10, data=strip, resize_short=PRE.resize)
    assert pillow.value.reason == info.value.reason


def _header_only_jpeg(width: int, height: int) -> bytes:
    """A small complete JPEG whose frame header claims width x height (no pixels allocated)."""
    data = bytearray(_jpeg_bytes(Image.new("RGB", (16, 16), (1, 2, 3))))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_header_pixel_limit_holds_in_a_fresh_process(tmp_path, monkeypatch, tiny):
    """A decode worker on the device road may never have run load_rgb, so Pillow's default
    bomb guard is still in force there; our limit, not Pillow's, must decide."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_MAX_PIXELS)
    huge = _header_only_jpeg(20_000, 10_000)  # 200 MP: over 2x Pillow's default
    (tmp_path / "huge.jpg").write_bytes(huge)
    make_photo_like(tmp_path / "fine.jpg", seed=1)
    with pytest.raises(DecodeError) as info:
        device_jpeg_header(huge, max_megapixels=120, pre=tiny.preprocess)
    assert info.value.reason == Reason.TOO_LARGE
    assert device_jpeg_header(huge, max_megapixels=500, pre=tiny.preprocess) == \
        JpegHeader(10_000, 20_000, 1)
    files = [tmp_path / "huge.jpg", tmp_path / "fine.jpg"]
    vectors, reasons = _run(tiny, files, TorchvisionDecoder(CPU))
    assert reasons == {str(files[0]): Reason.TOO_LARGE} and list(vectors) == [str(files[1])]


def test_make_decoder_names():
    assert make_decoder("pil", CPU) is None
    assert make_decoder("auto", CPU) is None  # Pillow's draft mode beats a full CPU decode
    assert isinstance(make_decoder("torchvision", CPU), TorchvisionDecoder)
    with pytest.raises(UsageError, match="unknown decoder"):
        make_decoder("libjpeg", CPU)


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize("budget", [1 << 30, 3 * 50 * 70 * 4 * 2])  # default; 2 images a call
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_grouped_resize_keeps_order_and_equals_one_at_a_time(budget, interpolation):
    pre = Preprocess(40, 32, (0.5,) * 3, (0.25,) * 3, interpolation)
    rng = np.random.default_rng(0)
    shapes = [(50, 70), (70, 50), (50, 70), (33, 90), (50, 70), (70, 50), (50, 70), (40, 40)]
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
              for h, w in shapes]
    out = resize_crop_grouped(images, pre, budget=budget)
    assert out.shape == (len(images), 3, 32, 32) and out.dtype == torch.uint8
    for i, image in enumerate(images):
        assert torch.equal(out[i], resize_crop(image, pre)), (i, shapes[i])


# --------------------------------------------------------------------------- worker chunks


def test_file_chunks_split_and_carry_jpeg_bytes_exactly(tmp_path):
    pre = Preprocess(40, 32, (0.5,) * 3, (0.25,) * 3, "bilinear")
    files = [
        make_photo_like(tmp_path / "a.jpg", seed=1),
        make_photo_like(tmp_path / "b.png", seed=2),
        make_photo_like(tmp_path / "c.jpg", seed=3, size=(50, 90)),
        _save(photo_like_image(4), tmp_path / "d.jpg", progressive=True),
        make_photo_like(tmp_path / "e.jpg", seed=5, exif=_exif(8)),
        tmp_path / "f.jpg",
        make_photo_like(tmp_path / "g.jpg", seed=7),
    ]
    whole = make_photo_like(tmp_path / "whole.jpg", seed=6).read_bytes()
    files[5].write_bytes(whole[: len(whole) // 2])
    names = [str(p) for p in files]
    device = {0, 2, 4, 6}  # baseline JPEGs; d is progressive, f truncated, b a PNG

    for size, count in [(1, 7), (2, 4), (3, 3), (6, 2), (7, 1), (10, 1)]:
        assert len(FileChunks(names, pre, 120, size)) == count
    assert len(FileChunks([], pre, 120, 3)) == 0

    for jpeg_bytes in (False, True):
        chunks = FileChunks(names, pre, 120, 3, jpeg_bytes=jpeg_bytes)
        for k in range(len(chunks)):
            chunk = chunks[k]
            span = set(range(3 * k, min(7, 3 * k + 3)))
            parts = [chunk.decoded, chunk.encoded, [pos for pos, _ in chunk.failures]]
            assert sorted(pos for part in parts for pos in part) == sorted(span)
            assert chunk.encoded == sorted(span & device if jpeg_bytes else set())
            assert [(pos, f.reason) for pos, f in chunk.failures] == \
                ([(5, Reason.TRUNCATED)] if 5 in span else [])
            for j, pos in enumerate(chunk.decoded):
                assert torch.equal(chunk.pixels[j], pil_crop(names[pos], pre, 120).pixels)
            assert chunk.sides == [pil_crop(names[pos], pre, 120).side for pos in chunk.decoded]
            assert len(chunk.offsets) == (len(chunk.encoded) + 1 if jpeg_bytes else 1)
            for j, pos in enumerate(chunk.encoded):
                lo, hi = chunk.offsets[j], chunk.offsets[j + 1]
                data = files[pos].read_bytes()
                assert chunk.blob[lo:hi].numpy().tobytes() == data
                assert chunk.headers[j] == device_jpeg_header(data, 120, pre)
    assert FileChunks(names, pre, 120, 7, jpeg_bytes=True)[0].headers[2].orientation == 8


# --------------------------------------------------------------------------- the whole road


@pytest.mark.parametrize("decoder", DEVICE_DECODERS)
def test_device_crops_equal_pillow_crops(tmp_path, decoder, tiny):
    """Pixel level, before the network: each crop of the device road is the Pillow road's crop
    up to IDCT rounding (a wrong orientation or colour would differ by tens of levels)."""
    _needs(decoder)
    files, device = _mixed_folder(tmp_path)
    pre = tiny.preprocess
    watched = Watched(make_decoder(decoder, CPU))
    crops, reasons, _ = _feed(watched, files, pre, decode_batch=3, max_megapixels=LIMIT_MP)
    pil_crops, pil_reasons, _ = _feed(None, files, pre, max_megapixels=LIMIT_MP)

    assert reasons == pil_reasons
    assert crops.keys() == pil_crops.keys()
    for name in crops:
        diff = (crops[name].int() - pil_crops[name].int()).abs().float()
        assert diff.mean() <= 0.5 and diff.max() <= 2, (name, diff.mean(), diff.max())
    # The right files took the device road: all and only the baseline JPEGs.
    given = sorted(watched.decoded + watched.refused)
    assert given == sorted(p.read_bytes() for p in device)
    assert watched.refused == [(tmp_path / "undecodable.jpg").read_bytes()]
    assert max(watched.calls) <= 3


@pytest.mark.parametrize(("decoder", "workers"),
                         [("torchvision", 0), ("torchvision", 2), ("nvimgcodec", 0)])
def test_whole_road_agrees_with_pillow_road(tmp_path, tiny, decoder, workers):
    """Good, tricky and broken files together, through the Embedder with --decoder NAME: every
    file comes back once, broken ones with Pillow's reasons, good ones with Pillow's vectors.
    Then again with small worker tasks (5 files) and decode batches (4), so that JPEGs cross
    chunk and batch boundaries."""
    _needs(decoder)
    files, _ = _mixed_folder(tmp_path)
    names = [str(p) for p in files]
    opts = EmbedOptions(device="cpu", batch_size=4, workers=workers, max_megapixels=LIMIT_MP,
                        decoder=decoder)
    embedder = Embedder(tiny, CPU, opts, decoder=make_decoder(decoder, CPU))
    pil_vectors, pil_reasons = _run(tiny, files, None, batch_size=4, max_megapixels=LIMIT_MP)
    assert pil_reasons[str(tmp_path / "undecodable.jpg")] == Reason.CORRUPT
    assert pil_reasons[str(tmp_path / "too_large.jpg")] == Reason.TOO_LARGE
    assert pil_reasons[str(tmp_path / "bad" / "truncated.jpg")] == Reason.TRUNCATED

    small = Embedder(tiny, CPU, opts, decoder=make_decoder(decoder, CPU), chunk_size=5)
    for road, batches in (("embed_files", lambda: embedder.embed_files(names)),
                          ("5-file tasks", lambda: small.embed_files(names))):
        vectors, reasons, seen = {}, {}, []
        for batch in batches():
            vectors.update({names[pos]: v
                            for pos, v in zip(batch.items, batch.vectors, strict=True)})
            reasons.update({names[pos]: f.reason for pos, f in batch.failures})
            seen += batch.items + [pos for pos, _ in batch.failures]
        assert sorted(seen) == list(range(len(files))), road
        assert reasons == pil_reasons, road
        cosines = _cosines(vectors, pil_vectors)
        assert min(cosines.values()) >= 0.99, (road, cosines)
        assert len(vectors) == 12, road


def test_refused_images_fall_back_to_pillow(tmp_path, tiny):
    """A decoder that returns None for every other image: those are decoded by Pillow in the
    feeder, so their vectors are the Pillow road's; the undecodable JPEG is reported with the
    reason Pillow gives, naming the file."""
    files = [make_photo_like(tmp_path / f"p{i}.jpg", seed=i, size=(96, 72)) for i in range(7)]
    files.append(make_photo_like(tmp_path / "turned.jpg", seed=7, exif=_exif(6)))
    broken = _undecodable_jpeg(tmp_path / "undecodable.jpg")
    files.append(broken)
    # It goes to the decoder.
    assert device_jpeg_header(broken.read_bytes(), 120, tiny.preprocess) is not None
    with pytest.raises(DecodeError) as pillow:
        load_rgb(str(broken))

    watched = Watched(TorchvisionDecoder(CPU), refuse=lambda i, _: i % 2 == 0)
    vectors, reasons = _run(tiny, files, watched, batch_size=4)
    pil_vectors, pil_reasons = _run(tiny, files, None, batch_size=4)

    assert reasons == pil_reasons == {str(broken): pillow.value.reason}
    assert watched.refused and watched.decoded  # both kinds happened
    by_bytes = {p.read_bytes(): str(p) for p in files}
    for data in watched.refused:
        name = by_bytes[data]
        if name != str(broken):
            np.testing.assert_allclose(vectors[name], pil_vectors[name], atol=1e-5)
    assert min(_cosines(vectors, pil_vectors).values()) >= 0.99


def test_pillow_fallback_decodes_the_bytes_the_worker_read(tmp_path, tiny):
    """A refused JPEG is decoded from the bytes already read, not read again: a file replaced
    after the worker read it still gives the pixels that were read."""
    files = [make_photo_like(tmp_path / f"p{i}.jpg", seed=60 + i) for i in range(3)]
    pre = tiny.preprocess
    names = [str(p) for p in files]
    chunk = FileChunks(names, pre, 120, 8, jpeg_bytes=True)[0]
    assert chunk.encoded == [0, 1, 2]
    for path in files:
        path.write_text("overwritten after it was read")
    refuse_all = Watched(TorchvisionDecoder(CPU), refuse=lambda i, d: True)
    feeder = Feeder(refuse_all, names, pre, CPU, 120, 8, 256 << 20)
    pieces = list(feeder.pieces([chunk]))
    assert [p.failures for p in pieces] == [[]]
    for j, pos in enumerate(pieces[0].items):
        data = chunk.blob[chunk.offsets[pos]:chunk.offsets[pos + 1]].numpy().tobytes()
        assert torch.equal(pieces[0].pixels[j], pil_crop("unused.jpg", pre, 120, data).pixels)
        assert pieces[0].sides[j] == pil_crop("unused.jpg", pre, 120, data).side


# --------------------------------------------------------------------------- OOM back-off


def _jpegs(folder: Path, n: int) -> list[Path]:
    sizes = [(64, 48), (48, 64), (56, 56)]
    return [make_photo_like(folder / f"j{i:02d}.jpg", seed=100 + i, size=sizes[i % 3])
            for i in range(n)]


def test_decode_oom_halves_the_decode_batch(tmp_path, tiny):
    files = _jpegs(tmp_path, 21)
    pre = tiny.preprocess
    expected, _, _ = _feed(TorchvisionDecoder(CPU), files, pre, decode_batch=16, chunk=32)

    tight = Watched(TorchvisionDecoder(CPU), oom=lambda call, n: n > 3)
    crops, reasons, feeder = _feed(tight, files, pre, decode_batch=16, chunk=32)
    assert reasons == {}
    assert crops.keys() == expected.keys()
    for name in crops:
        assert torch.equal(crops[name], expected[name]), name
    assert feeder.decode_batch <= 3
    assert tight.calls[:4] == [16, 8, 4, 2]  # halved after each failure
    assert max(tight.calls[4:]) <= 3
    assert sorted(tight.decoded) == sorted(p.read_bytes() for p in files)  # each once

    # Out of memory in the middle of a halved batch: what was decoded before stays decoded.
    flaky = Watched(TorchvisionDecoder(CPU), oom=lambda call, n: call in (0, 2))
    crops, _, feeder = _feed(flaky, files, pre, decode_batch=16, chunk=32)
    assert flaky.calls[:5] == [16, 8, 8, 4, 4] and feeder.decode_batch == 4
    assert sorted(tight.decoded) == sorted(flaky.decoded)
    assert all(torch.equal(crops[name], expected[name]) for name in expected)

    # Through the Embedder: same vectors as a run without the failures.
    vectors, _ = _run(tiny, files, Watched(TorchvisionDecoder(CPU), oom=lambda call, n: n > 3),
                      batch_size=16)
    plain, _ = _run(tiny, files, TorchvisionDecoder(CPU), batch_size=16)
    assert vectors.keys() == plain.keys()
    for name in plain:
        np.testing.assert_allclose(vectors[name], plain[name], atol=1e-5)


def test_decode_oom_at_one_image_sends_the_rest_to_pillow(tmp_path, tiny):
    files = _jpegs(tmp_path, 20)
    files.append(_undecodable_jpeg(tmp_path / "undecodable.jpg"))
    hopeless = Watched(TorchvisionDecoder(CPU), oom=lambda call, n: True)
    vectors, reasons = _run(tiny, files, hopeless, batch_size=16)
    pil_vectors, pil_reasons = _run(tiny, files, None, batch_size=16)

    assert reasons == pil_reasons and len(reasons) == 1
    assert vectors.keys() == pil_vectors.keys() and len(vectors) == 20
    for name in vectors:  # Pillow decoded all of them: the very same pixels
        np.testing.assert_allclose(vectors[name], pil_vectors[name], atol=1e-5)
    assert hopeless.calls[:5] == [16, 8, 4, 2, 1] and set(hopeless.calls[5:]) <= {1}
    assert not hopeless.decoded


# --------------------------------------------------------------------------- background


def test_background_yields_in_order():
    assert list(background(iter(range(50)), depth=2)) == list(range(50))
    assert list(background(iter([]), depth=2)) == []


def test_background_raises_the_generators_error_in_the_caller():
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield 1
            yield 2
            raise KeyError("boom in the feeder")
        finally:
            closed.set()

    got = []
    with pytest.raises(KeyError, match="boom in the feeder"):
        for item in background(items(), depth=1):
            got.append(item)
    assert got == [1, 2]
    assert closed.wait(5)


def test_background_stops_the_thread_when_the_caller_stops_early():
    closed_on: list[str] = []
    produced = []

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            closed_on.append(threading.current_thread().name)

    items = endless()  # held here, so only background() itself can close it
    for item in background(items, depth=2):
        assert item == 0
        break  # the background generator is dropped here and closes
    assert not [t for t in threading.enumerate() if t.name == "deepvision-feeder"]
    # Closed by the feeder thread, which is the one that was running it.
    assert closed_on == ["deepvision-feeder"]
    assert len(produced) <= 4  # bounded read-ahead: depth + the one in hand + one blocked
    del items


# --------------------------------------------------------------------------- real model


def test_real_model_device_road_agrees_with_pillow(tmp_path, lite0):
    """efficientnet-lite0 on the shipped photos (RGB and greyscale), one EXIF-rotated copy, and
    one 4000x3000 JPEG that Pillow decodes in draft mode at 1/4 scale while the device road
    decodes it whole."""
    files = sorted((REPO / "bulk_images").glob("*.jpg"))
    assert len(files) >= 20
    with Image.open(REPO / "bulk_images" / "chelsea_cat.jpg") as cat:
        rotated = _save(cat.convert("RGB").transpose(Image.Transpose.ROTATE_90),
                        tmp_path / "cat_exif6.jpg", quality=95, exif=_exif(6))
    with Image.open(REPO / "bulk_images" / "coffee_cup.jpg") as cup:
        big = _save(cup.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC),
                    tmp_path / "cup_12mp.jpg", quality=90)
    files += [rotated, big]
    for path in files:
        assert device_jpeg_header(path.read_bytes(), 120, lite0.preprocess) is not None, path

    pil_vectors, reasons = _run(lite0, files, None, batch_size=32)
    assert reasons == {}
    decoders = ["torchvision"]
    try:
        import nvidia.nvimgcodec  # noqa: F401

        decoders.append("nvimgcodec")
    except ImportError:
        pass
    for name in decoders:
        vectors, reasons = _run(lite0, files, make_decoder(name, CPU), batch_size=32)
        assert reasons == {}
        cosines = _cosines(vectors, pil_vectors)
        assert min(cosines.values()) >= 0.99, (name, sorted(cosines.items(), key=lambda x: x[1]))
    # The rotated copy means what the upright photo means (orientation applied on both roads).
    upright = pil_vectors[str(REPO / "bulk_images" / "chelsea_cat.jpg")]
    assert float(upright @ vectors[str(rotated)]) >= 0.97


# --------------------------------------------------------------------------- CLI


def test_cli_index_with_device_decoder_matches_pillow(cli, tiny_model, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(make_photo_like(tmp_path / "w.jpg", seed=50)
                                        .read_bytes()[:400])
    _undecodable_jpeg(photos / "undecodable.jpg")
    make_photo_like(photos / "bigger.jpg", seed=51, size=(300, 200), exif=_exif(3))
    docs = {}
    for decoder in ("pil", "torchvision"):
        run = cli("index", photos, "--index-dir", tmp_path / decoder, "--model", "tiny",
                  "--decoder", decoder, "--device", "cpu", "--workers", "0", "--json")
        assert run.exit_code == ExitCode.PARTIAL, run.stderr  # the two broken files
        docs[decoder] = run.json()
    pil, device = docs["pil"], docs["torchvision"]
    assert device["decoder"] == "torchvision" and pil["decoder"] == "pil"
    for key in ("embedded", "added", "failed", "failed_by_reason", "total_files"):
        assert device[key] == pil[key], key
    assert pil["embedded"] == 13 and pil["failed"] == 2
    assert sorted((f["path"], f["reason"]) for f in device["failures"]) == \
        sorted((f["path"], f["reason"]) for f in pil["failures"])

    scores = {}
    for decoder in ("pil", "torchvision"):
        run = cli("search", photos / "bigger.jpg", "--index-dir", tmp_path / decoder,
                  "--device", "cpu", "--workers", "0", "--format", "json", "-k", "20")
        assert run.exit_code == 0, run.stderr
        scores[decoder] = {m["path"]: m["score"] for m in run.json()["queries"][0]["matches"]}
    assert scores["pil"].keys() == scores["torchvision"].keys()
    assert len(scores["pil"]) == 13
    for path, score in scores["pil"].items():
        assert abs(score - scores["torchvision"][path]) <= 1e-3, path


def test_a_decoder_that_cannot_start_is_a_usage_error_not_a_crash(monkeypatch):
    """nvImageCodec installed but unable to start (driver too old, no device) must give a clear
    message for an explicit --decoder, never a traceback. A stand-in `nvidia.nvimgcodec` whose
    Decoder fails the way the real one does on such a machine (installed or not here)."""

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("CUDA Runtime failure: '#35'")

    codec = types.ModuleType("nvidia.nvimgcodec")
    codec.BackendKind = types.SimpleNamespace(CPU_ONLY="cpu", HW_GPU_ONLY="hw", GPU_ONLY="gpu",
                                              HYBRID_CPU_GPU="hybrid")
    codec.Backend = lambda kind: kind
    codec.NVIMGCODEC_DEVICE_CPU_ONLY = -99999
    codec.Decoder = Broken
    nvidia = types.ModuleType("nvidia")
    nvidia.nvimgcodec = codec
    monkeypatch.setitem(sys.modules, "nvidia", nvidia)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", codec)
    with pytest.raises(UsageError, match=r"nvimgcodec cannot start.*#35.*--decoder pil"):
        make_decoder("nvimgcodec", CPU)
