"""IVF-PQ training and on-disk build costs (issue 14, for docs/SCALE.md).

For each nlist: k-means + PQ codebook training on the sample deepvision takes (64 points per
list, VectorIndex.train), then encoding `--encode` vectors in shards and merging them into one
on-disk .ivfdata (store/ondisk.py, the local thread pool), the path an `ivfpq-ondisk` build
takes. Synthetic clustered unit vectors of the default model's width (EfficientNet-Lite0:
1280-d). The fitted cost per (training vector x list x dim) is what SCALE.md extrapolates from.

    python bench/ivf_train.py --nlist 256 512 1024 [--dim 1280] [--encode 200000] [--out ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, cpu_name, publish
from index_scale import clustered

from deepvision.store import ondisk
from deepvision.store.faiss_index import (
    ONDISK,
    TRAIN_POINTS_PER_CENTROID,
    IndexPlan,
    VectorIndex,
    _pq_m,
)


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def plan_for(nlist: int, dim: int) -> IndexPlan:
    m = _pq_m(dim, dim)  # what plan_index gives an on-disk index: dim/8 sub-quantizers
    return IndexPlan(ONDISK, f"IVF{nlist},PQ{m}x8", nlist=nlist, pq_m=m, pq_nbits=8,
                     nprobe=16)


def measure(nlist: int, dim: int, encode: int, work: Path) -> dict:
    plan = plan_for(nlist, dim)
    sample = clustered(TRAIN_POINTS_PER_CENTROID * nlist, dim, seed=1)
    before = load_avg()
    t = time.perf_counter()
    coarse = VectorIndex.new(dim, IndexPlan("ivf", f"IVF{nlist},Flat", nlist=nlist))
    coarse.train(sample)  # the coarse k-means alone: the part that grows with nlist
    kmeans_s = time.perf_counter() - t
    t = time.perf_counter()
    trained = ondisk.train(sample, plan)  # k-means again + the PQ codebooks
    train_s = time.perf_counter() - t
    del sample
    db = clustered(encode, dim, seed=2)
    blocks = ((np.arange(s, min(encode, s + 4096)), db[s:s + 4096])
              for s in range(0, encode, 4096))
    t = time.perf_counter()
    index = ondisk.build(trained, blocks, plan, work / f"faiss-{nlist}.bin", ondisk.LocalRunner())
    build_s = time.perf_counter() - t
    data = work / f"faiss-{nlist}.ivfdata"
    row = {"nlist": nlist, "factory": plan.factory, "train_n": TRAIN_POINTS_PER_CENTROID * nlist,
           "train_s": train_s, "kmeans_s": kmeans_s, "encode_n": len(index), "build_s": build_s,
           "ivfdata_b": data.stat().st_size, "load": f"{before} / {load_avg()}"}
    data.unlink()
    (work / f"faiss-{nlist}.bin").unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nlist", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--encode", type=int, default=200_000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dv-ivf-") as tmp:
        for nlist in args.nlist:
            rows.append(measure(nlist, args.dim, args.encode, Path(tmp)))
            print(rows[-1], flush=True)
    lines = [f"## IVF-PQ training and on-disk build (bench/ivf_train.py) — "
             f"{time.strftime('%Y-%m-%d')}", "",
             f"Machine: Intel Xeon, 2 cores, 24 GiB, no GPU ({cpu_name()}, {os.cpu_count()} "
             f"cores), faiss-cpu, shared with other sessions' work (load averages per row). "
             f"Synthetic clustered {args.dim}-d unit vectors. Command: `{command_line()}`", "",
             "| nlist | structure | training vectors | coarse k-means s | ns per (vector x list "
             "x dim) | k-means + PQ train s | encoded + merged | build s | vectors/s | .ivfdata "
             "B/vector | load before / after |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        unit = r["kmeans_s"] / (r["train_n"] * r["nlist"] * args.dim) * 1e9
        lines.append(f"| {r['nlist']:,} | `{r['factory']}` | {r['train_n']:,} | "
                     f"{r['kmeans_s']:.1f} | {unit:.4f} | {r['train_s']:.1f} | "
                     f"{r['encode_n']:,} | {r['build_s']:.1f} | "
                     f"{r['encode_n'] / r['build_s']:,.0f} | {r['ivfdata_b'] / r['encode_n']:.0f} "
                     f"| {r['load']} |")
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
