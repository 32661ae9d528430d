"""GPU paths: run on a machine with CUDA (and faiss-gpu), skipped cleanly everywhere else."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cuda() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")


def test_cuda_and_cpu_embeddings_agree(tmp_path):
    """Autocast (bf16/fp16) and channels_last on CUDA must not change what an image means."""
    _cuda()
    import torch
    from imagefactory import make_photo_like

    from deepvision import models
    from deepvision.embed import EmbedOptions, embed_paths

    paths = [str(make_photo_like(tmp_path / f"p{i}.jpg", seed=i, size=(320, 240)))
             for i in range(8)]
    spec, weights, _ = models.resolve("efficientnet-lite0", None)
    out = {}
    for name in ("cpu", "cuda"):
        device = torch.device(name)
        model = models.load_model(spec, weights, device)
        batches = list(embed_paths(model, paths, device, EmbedOptions(device=name, workers=0)))
        out[name] = np.concatenate([b.vectors for b in batches])
    cosines = (out["cpu"] * out["cuda"]).sum(axis=1)
    assert cosines.min() >= 0.99, cosines


def test_gpu_faiss_search_matches_cpu_and_saves_a_cpu_index(tmp_path):
    faiss = pytest.importorskip("faiss")
    if faiss.get_num_gpus() == 0:
        pytest.skip("the installed FAISS sees no GPU (faiss-cpu, or both builds installed)")
    from deepvision.index import VectorIndex, plan_index

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
