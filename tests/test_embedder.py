"""The Embedder, built once: files and images already in memory take the same road."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from imagefactory import make_photo_like
from PIL import Image

from deepvision.models.descriptor import Descriptor
from deepvision.models.registry import resolve
from deepvision.pipeline.embedder import Embedder, EmbedOptions
from deepvision.pipeline.network import embed_pixels


@pytest.fixture
def embedder(tiny_model: str) -> Embedder:
    spec, weights, _ = resolve(tiny_model, None)
    return Embedder.load(spec, weights, Descriptor(), EmbedOptions(device="cpu", workers=0))


def _by_position(batches, n: int, dim: int) -> tuple[np.ndarray, dict[int, str]]:
    vectors = np.full((n, dim), np.nan, np.float32)
    failures: dict[int, str] = {}
    for batch in batches:
        vectors[batch.items] = batch.vectors
        failures.update((i, str(f.reason)) for i, f in batch.failures)
    return vectors, failures


def test_in_memory_images_embed_like_their_files(embedder: Embedder, tmp_path: Path) -> None:
    png = make_photo_like(tmp_path / "a.png", seed=3)
    jpg = make_photo_like(tmp_path / "b.jpg", seed=4)
    from_files, failed = _by_position(embedder.embed_files([str(png), str(jpg)]), 2,
                                      embedder.dim)
    assert not failed
    rgb = Image.open(png).convert("RGB")
    batch = embedder.embed_images([png.read_bytes(), rgb, np.asarray(rgb), jpg.read_bytes()])
    assert batch.items == [0, 1, 2, 3] and not batch.failures
    expected = np.stack([from_files[0]] * 3 + [from_files[1]])
    assert np.allclose(batch.vectors, expected, atol=1e-5)


def test_a_bad_in_memory_image_is_a_failure_with_its_name(embedder: Embedder) -> None:
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(good, "PNG")
    thin = Image.new("RGB", (1, 4_000_000))  # resized: 40 x 160,000,000 px
    batch = embedder.embed_images([b"not an image", good.getvalue(), thin,
                                   np.zeros((4, 4), np.uint8)],
                                  names=["upload.jpg", "ok.png", "strip.png", "frame 7"])
    assert batch.items == [1]
    assert [(i, f.path, str(f.reason)) for i, f in batch.failures] == [
        (0, "upload.jpg", "not-an-image"), (2, "strip.png", "too-large"),
        (3, "frame 7", "corrupt")]


def test_an_injected_network_step_is_used(tiny_model: str, tmp_path: Path) -> None:
    """The injected step gets the batches' pixels and its vectors are the ones each file gets:
    a step that mirrors the real one's vectors (v -> -v) mirrors every file's vector, in place."""
    spec, weights, _ = resolve(tiny_model, None)
    calls: list[int] = []

    def step(model, pixels, device):
        calls.append(len(pixels))
        return -embed_pixels(model, pixels, device)

    options = EmbedOptions(device="cpu", workers=0, batch_size=2)
    emb = Embedder.load(spec, weights, Descriptor(), options, step)
    plain = Embedder.load(spec, weights, Descriptor(), options)
    files = [str(make_photo_like(tmp_path / f"{i}.png", seed=i)) for i in range(5)]
    vectors, failed = _by_position(emb.embed_files(files), 5, emb.dim)
    expected, _ = _by_position(plain.embed_files(files), 5, plain.dim)
    assert not failed and sorted(calls) == [1, 2, 2]
    np.testing.assert_allclose(vectors, -expected, atol=1e-6)
    assert len({tuple(np.round(v, 4)) for v in expected}) == 5  # five different photos
