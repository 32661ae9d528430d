"""GPU paths: run on a machine with CUDA (and faiss-gpu), skipped cleanly everywhere else.

The oracle for the CUDA decode road is the CPU Pillow road on the same files: same failures,
embeddings with cosine >= 0.99 (the issue's bound), every image exactly once.
bench/gpu_session.sh runs these together with the throughput benchmark on a lent GPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parent.parent


def _cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")


def _gpu_decoders() -> list[str]:
    """Device decoders that work on this machine's GPU (nvimgcodec only where installed)."""
    import torch

    from deepvision.errors import UsageError
    from deepvision.pipeline.gpudecode import make_decoder

    names = []
    for name in ("torchvision", "nvimgcodec"):
        try:
            make_decoder(name, torch.device("cuda"))
            names.append(name)
        except UsageError:
            pass
    return names


def _embed(model_name: str, paths: list[str], device: str, decoder: str, *,
           device_decoder=None, step=None, **kw):
    """Vectors by position (NaN rows for failures), failures by path, and every position seen.
    device_decoder, step: stand-ins for the device JPEG decoder and the network step, given to
    the Embedder (otherwise Embedder.load picks the decoder --decoder DECODER names)."""
    import torch

    from deepvision.models import registry
    from deepvision.models.descriptor import Descriptor
    from deepvision.pipeline.embedder import Embedder, EmbedOptions

    spec, weights, _ = registry.resolve(model_name, None)
    opts = EmbedOptions(device=device, decoder=decoder, **kw)
    if device_decoder is None:
        embedder = Embedder.load(spec, weights, Descriptor(), opts, step=step)
    else:
        dev = torch.device(device)
        embedder = Embedder(registry.load_model(spec, weights, dev), dev, opts,
                            decoder=device_decoder, step=step)
    assert embedder.device.type == torch.device(device).type
    vectors = np.full((len(paths), spec.dim), np.nan, np.float32)
    failures, seen = {}, []
    for batch in embedder.embed_files(paths):
        vectors[batch.items] = batch.vectors
        seen += batch.items + [i for i, _ in batch.failures]
        failures.update((paths[i], f.reason) for i, f in batch.failures)
    return vectors, failures, sorted(seen)


def _mixed_folder(dest: Path) -> list[str]:
    """Real photos (RGB and greyscale JPEGs) plus every road a GPU decoder must hand to Pillow."""
    from imagefactory import make_exif_rotated_pair

    dest.mkdir(parents=True, exist_ok=True)
    paths = sorted(str(p) for p in (REPO / "bulk_images").glob("*.jpg"))
    base = Image.open(paths[0]).convert("RGB")
    base.save(dest / "progressive.jpg", quality=90, progressive=True)
    base.convert("CMYK").save(dest / "cmyk.jpg", quality=90)
    base.save(dest / "lossless.png")
    base.resize((4032, 3024)).save(dest / "camera_12mp.jpg", quality=90)
    paths += [str(p) for p in make_exif_rotated_pair(dest)]
    paths += [str(dest / n) for n in ("progressive.jpg", "cmyk.jpg", "lossless.png",
                                      "camera_12mp.jpg")]
    return paths


def test_cuda_decode_roads_agree_with_the_cpu_pillow_road(tmp_path):
    """Every GPU decoder, with autocast and channels_last, against the CPU Pillow road on real
    photos, EXIF rotation, greyscale, 12 MP, and the formats that fall back to Pillow."""
    _cuda()
    paths = _mixed_folder(tmp_path)
    ref, ref_fail, _ = _embed("efficientnet-lite0", paths, "cpu", "pil", workers=0)
    assert not ref_fail
    decoders = _gpu_decoders()
    assert decoders, "no GPU JPEG decoder works on this CUDA machine"
    for name in [*decoders, "pil"]:
        vectors, failures, seen = _embed("efficientnet-lite0", paths, "cuda", name, workers=2)
        assert seen == list(range(len(paths))), name
        assert not failures, (name, failures)
        cosines = (ref * vectors).sum(axis=1)
        worst = int(np.argmin(cosines))
        assert cosines.min() >= 0.99, (name, paths[worst], float(cosines[worst]))


def test_auto_picks_a_gpu_decoder_on_cuda(cli, tmp_path):
    _cuda()
    run = cli("index", REPO / "bulk_images", "--index-dir", tmp_path / "idx", "--json",
              "--model", "efficientnet-lite0")
    assert run.exit_code == 0, run.stderr
    assert run.json()["device"].startswith("cuda")
    assert run.json()["decoder"] in ("torchvision", "nvimgcodec"), run.stderr


def test_rejected_and_broken_jpegs_fall_back_with_pillows_reasons(tmp_path):
    """A JPEG that looks complete but holds garbage, and the broken-file corpus, get the same
    failure reasons on the CUDA road as on the CPU Pillow road; the good files are embedded."""
    _cuda()
    from imagefactory import make_bad_files, make_photo_like

    bad = tmp_path / "bad"
    make_bad_files(bad)
    good = [str(make_photo_like(tmp_path / f"good_{i}.jpg", seed=i, size=(320, 240)))
            for i in range(6)]
    body = io.BytesIO()
    Image.open(good[0]).save(body, "JPEG", quality=90)
    data = bytearray(body.getvalue())
    data[600:-2] = np.random.default_rng(0).integers(0, 256, len(data) - 602,
                                                     dtype=np.uint8).tobytes()
    (tmp_path / "garbage_inside.jpg").write_bytes(bytes(data))
    broken = sorted(str(p) for p in bad.iterdir() if p.is_file() and not p.is_symlink())
    paths = [*good, str(tmp_path / "garbage_inside.jpg"), *broken]
    ref, ref_fail, _ = _embed("efficientnet-lite0", paths, "cpu", "pil", workers=0)
    for name in _gpu_decoders():
        vectors, failures, seen = _embed("efficientnet-lite0", paths, "cuda", name, workers=2)
        assert seen == list(range(len(paths))), name
        assert failures == ref_fail, name
        ok = ~np.isnan(ref).any(axis=1)
        assert ((ref[ok] * vectors[ok]).sum(axis=1) >= 0.99).all(), name


def test_decode_and_network_oom_back_off_on_cuda(tmp_path):
    """Injected CUDA out-of-memory in the device decoder and in the network, with the real
    streams: every image exactly once, the same vectors as a run without OOM."""
    _cuda()
    import torch
    from imagefactory import make_photo_like

    from deepvision.pipeline.gpudecode import make_decoder
    from deepvision.pipeline.network import embed_pixels

    paths = [str(make_photo_like(tmp_path / f"p{i:02d}.jpg", seed=i, size=(320 + i, 240)))
             for i in range(40)]
    clean, _, _ = _embed("efficientnet-lite0", paths, "cuda", "auto", batch_size=32)
    real = make_decoder("auto", torch.device("cuda"))
    assert real is not None

    class Tight:
        name = "tight"

        def decode(self, data):
            if len(data) > 3:
                raise torch.cuda.OutOfMemoryError("injected")
            return real.decode(data)

    def small_memory(model, pixels, device):
        if len(pixels) > 8:
            raise torch.cuda.OutOfMemoryError("injected")
        return embed_pixels(model, pixels, device)

    vectors, failures, seen = _embed("efficientnet-lite0", paths, "cuda", "auto",
                                     device_decoder=Tight(), step=small_memory, batch_size=32)
    assert seen == list(range(len(paths))) and not failures
    np.testing.assert_allclose((clean * vectors).sum(axis=1), 1.0, atol=1e-3)


def test_many_shapes_through_the_streams_match_the_cpu_road(tmp_path, tiny_model):
    """A larger run mixing shapes, Pillow-decoded files and GPU-decoded JPEGs, so decode on the
    feeder's stream overlaps the network: a race (memory reused too early, a missing wait)
    would show up as vectors that differ from the CPU road's."""
    _cuda()
    from imagefactory import make_photo_like

    paths = []
    for i in range(600):
        ext = "png" if i % 10 == 0 else "jpg"
        size = ((160, 120), (320, 240), (333, 250), (120, 160))[i % 4]
        paths.append(str(make_photo_like(tmp_path / f"s{i:03d}.{ext}", seed=i, size=size)))
    ref, _, _ = _embed("tiny", paths, "cpu", "pil", workers=2, batch_size=64)
    for name in _gpu_decoders():
        vectors, failures, seen = _embed("tiny", paths, "cuda", name, workers=4, batch_size=64)
        assert seen == list(range(len(paths))) and not failures, name
        cosines = (ref * vectors).sum(axis=1)
        assert cosines.min() >= 0.99, (name, paths[int(np.argmin(cosines))])


def test_gpu_faiss_search_matches_cpu_and_saves_a_cpu_index(tmp_path):
    faiss = pytest.importorskip("faiss")
    if faiss.get_num_gpus() == 0:
        pytest.skip("the installed FAISS sees no GPU (faiss-cpu, or both builds installed)")
    from deepvision.store.faiss_index import VectorIndex, plan_index

    rng = np.random.default_rng(0)
    db = rng.standard_normal((20_000, 128)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    plan = plan_index("ivf", len(db), 128)
    index = VectorIndex.from_blocks(128, [(np.arange(len(db)), db)], plan, sample=db)
    index.configure()
    cpu_scores, cpu_ids = index.search(db[:50], 10)
    gpu = index.on_gpu()
    gpu_scores, gpu_ids = gpu.search(db[:50], 10)
    assert (cpu_ids[:, 0] == gpu_ids[:, 0]).all()
    np.testing.assert_allclose(cpu_scores[:, 0], gpu_scores[:, 0], atol=1e-3)
    index.save(tmp_path / "x.faiss")  # the CPU index is what is saved
    assert len(VectorIndex.load(tmp_path / "x.faiss", plan)) == len(db)
