"""Broken files indexed alongside good ones: the run completes, keeps every good image, and
names every bad one with its reason."""

from __future__ import annotations

import os
from functools import partial

from imagefactory import make_bad_files, make_good_set, non_image_files

from deepvision.errors import ExitCode
from deepvision.pipeline.network import embed_pixels
from deepvision.services.embedding import index_embedder


def test_bad_files_are_skipped_with_reasons_and_good_ones_all_indexed(cli, tiny_model, tmp_path):
    folder = tmp_path / "mixed"
    good = make_good_set(folder, 20)  # 20 plain + every tricky-but-valid kind
    bad = make_bad_files(folder / "bad")
    non_image_files(folder)
    idx = tmp_path / "idx"

    run = cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "2",
              "--batch-size", "4", "--json")
    assert run.exit_code == ExitCode.PARTIAL, run.stderr
    summary = run.json()
    assert summary["added"] == len(good) and summary["total_files"] == len(good)
    reported = {os.path.relpath(f["path"], folder / "bad"): f["reason"]
                for f in summary["failures"]}
    assert reported == bad
    reasons = list(bad.values())
    assert summary["failed_by_reason"] == {r: reasons.count(r) for r in set(reasons)}
    assert summary["ignored"] == 2  # README.txt and data.csv: not images, not failures

    # Every good image answers as its own best match.
    for path in good:
        res = cli("search", path, "--index-dir", idx, "--format", "json", "-k", "1",
                  "--workers", "0")
        assert res.exit_code == 0, res.stderr
        assert res.json()["queries"][0]["matches"][0]["path"] == str(path)


def test_human_summary_groups_by_reason_and_names_files(cli, tiny_model, tmp_path):
    folder = tmp_path / "mixed"
    make_good_set(folder, 3)
    bad = make_bad_files(folder)
    run = cli("index", folder, "--index-dir", tmp_path / "idx", "--model", "tiny",
              "--workers", "0")
    assert run.exit_code == ExitCode.PARTIAL
    for name, reason in bad.items():
        assert f"skipped ({reason})" in run.stderr
        assert name in run.stderr
    # Quiet still reports the bad files (they need action) but nothing else.
    (folder / "another_empty.jpg").write_bytes(b"")
    quiet = cli("index", folder, "--index-dir", tmp_path / "idx", "--quiet")
    assert quiet.exit_code == ExitCode.PARTIAL
    assert "another_empty.jpg" in quiet.stderr and "added" not in quiet.stderr


def test_non_finite_features_are_reported_not_indexed(sync, photos, tmp_path):
    """A NaN embedding (fp16 overflow, broken weights) must not reach FAISS as a bogus row."""
    import numpy as np

    def poisoned(model, pixels, device):
        vectors = embed_pixels(model, pixels, device)
        vectors[0] = np.nan
        return vectors

    summary = sync(photos, tmp_path / "idx", batch_size=64,
                   embedders=partial(index_embedder, step=poisoned))
    assert [f["reason"] for f in summary["failures"]] == ["corrupt"]
    assert summary["total_files"] == 11 and summary["embedded"] == 11


def test_out_of_memory_halves_the_batch_without_losing_or_duplicating(cli, sync, photos,
                                                                      tmp_path):
    """A CUDA OOM (simulated: the CPU cannot run out the same way) on batches over 3 images."""
    import torch

    seen: list[int] = []

    def small_memory(model, pixels, device):
        if len(pixels) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        seen.append(len(pixels))
        return embed_pixels(model, pixels, device)

    idx = tmp_path / "idx"
    run = sync(photos, idx, batch_size=8, embedders=partial(index_embedder, step=small_memory))
    assert run["embedded"] == 12 and sum(seen) == 12 and max(seen) <= 3
    for p in sorted(photos.iterdir()):
        hit = cli("search", p, "--index-dir", idx, "--format", "json", "-k", "1", "--workers",
                  "0").json()["queries"][0]["matches"][0]
        assert hit["path"] == str(p)  # vectors stayed aligned with their files
