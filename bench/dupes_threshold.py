"""How the `dupes` default threshold was chosen: score ranges of copies vs distinct photos.

Every shipped photo in bulk_images/ plus three copies (half size q90, quality 40, quarter size
q60) embedded with EfficientNet-Lite0; prints the lowest copy-to-original score per copy kind
and the highest score between two distinct photos.

    python bench/dupes_threshold.py [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import publish  # noqa: E402

from deepvision.models import registry  # noqa: E402
from deepvision.models.descriptor import Descriptor  # noqa: E402
from deepvision.pipeline.embedder import Embedder, EmbedOptions  # noqa: E402
from deepvision.services.dupes import DEFAULT_THRESHOLD  # noqa: E402

COPIES = {"half": (0.5, 90), "q40": (1.0, 40), "quarter_q60": (0.25, 60)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dv-dupes-"))
    paths, group, kind = [], [], []
    for g, src in enumerate(sorted((REPO / "bulk_images").glob("*.jpg"))):
        im = Image.open(src).convert("RGB")
        for name, (scale, quality) in {"orig": (1.0, 95), **COPIES}.items():
            out = work / f"{src.stem}__{name}.jpg"
            im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale)))).save(
                out, quality=quality)
            paths.append(str(out))
            group.append(g)
            kind.append(name)
    spec, weights, _ = registry.resolve("efficientnet-lite0", None)
    embedder = Embedder.load(spec, weights, Descriptor(), EmbedOptions())
    device = embedder.device
    vecs = np.zeros((len(paths), spec.dim), np.float32)
    for batch in embedder.embed_files(paths):
        vecs[batch.items] = batch.vectors
    sims = vecs @ vecs.T
    g, k = np.array(group), np.array(kind)
    originals = k == "orig"
    lines = [f"## dupes threshold (bench/dupes_threshold.py) — {time.strftime('%Y-%m-%d')}", "",
             f"EfficientNet-Lite0, {originals.sum()} shipped photos, {device}. "
             "Score of each copy with its own original:", "",
             "| copy | lowest | median |", "| --- | ---: | ---: |"]
    for name in COPIES:
        rows = np.flatnonzero(k == name)
        own = np.array([sims[r, np.flatnonzero(originals & (g == g[r]))[0]] for r in rows])
        lines.append(f"| {name} | {own.min():.3f} | {np.median(own):.3f} |")
    distinct = sims[np.ix_(originals, originals)][~np.eye(originals.sum(), dtype=bool)]
    lines += ["", f"Highest score between two distinct photos: {distinct.max():.3f}. "
              f"Default `--threshold` {DEFAULT_THRESHOLD}: above every distinct pair, below every "
              "half-size and quality-40 copy; quarter-size thumbnails of small photos can fall "
              "below it (lower the threshold to group those).", ""]
    report = "\n".join(lines)
    publish(report, args.out)


if __name__ == "__main__":
    main()
