"""Measure descriptor / matching options for issue #17 on evaluation sets from make_evalset.py.

    python bench/quality_options.py embed --set /tmp/evalset --model efficientnet-lite0 \
        --cache /tmp/q17/cache_today_lite0.npz
    python bench/quality_options.py score --set /tmp/evalset --cache ...npz [...]

`embed` runs the backbone once per image and view and keeps, per view, three pooled descriptors
(average, GeM p=3, R-MAC) in a cache; `score` then evaluates every option from the cache with the
same metrics as `deepvision eval` (services/eval_metrics.score_rankings), so options that differ
only in how views are combined cost no extra network time to compare. The chosen default is then
re-measured end to end with `deepvision eval` (bench/QUALITY.md).

Views per image: the short-side-resize + centre crop of the pipeline ("crop"), turned by 0, 90,
180, 270 degrees; the mirrored crop; the whole image squashed to the model's square ("full"),
turned likewise; five 60 % sub-crops (four corners and the centre) for database-side augmentation;
the centre 87.5 % / 75 % of the whole picture's square enlarged to it ("zoom87", "zoom75", as
`search --zoom` derives it).

An option is a pooling and how views become vectors: a named recipe ("rmac:full+qturns"), or
"POOL:db=RECIPES|q=RECIPES" with RECIPES such as "full0/crop0" (two vectors per image),
"full0+0.5*crop0" (a weighted sum), "full#" (the four turns), "0.9^crop0" (that view's scores
count at 0.9). `embed --fmaps` also keeps the feature maps; `regions` pools them with other
region grids into a cache `score` reads like any other (pool names as in REGION_POOLS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

VIEWS = ("crop0", "crop1", "crop2", "crop3", "flip", "full0", "full1", "full2", "full3",
         "sub_tl", "sub_tr", "sub_bl", "sub_br", "sub_c", "zoom87", "zoom75")
POOLS = ("avg", "gem", "rmac")


def rmac(fmap, levels: int = 3):
    """The package's R-MAC (descriptor.rmac: the pipeline's region grid), L2-normalised."""
    import torch.nn.functional as F  # noqa: N812

    from deepvision.models.descriptor import rmac as package_rmac

    return F.normalize(package_rmac(fmap, levels), dim=1)


def view_tensors(path: str, pre, full_side: int):
    import torch
    from torchvision.transforms.v2 import functional as F  # noqa: N812
    from torchvision.transforms.v2.functional import pil_to_tensor

    from deepvision.pipeline.decode import load_rgb
    from deepvision.pipeline.transforms import resize_crop

    img = pil_to_tensor(load_rgb(path, 178.0, pre.draft_size, resize_short=pre.resize))
    crop = resize_crop(img, pre)
    full = F.resize(img, [full_side, full_side], antialias=True,
                    interpolation=F.InterpolationMode(pre.interpolation))
    h, w = img.shape[-2:]
    sh, sw = round(h * 0.6), round(w * 0.6)
    boxes = [(0, 0), (0, w - sw), (h - sh, 0), (h - sh, w - sw), ((h - sh) // 2, (w - sw) // 2)]
    subs = [resize_crop(img[:, y:y + sh, x:x + sw].contiguous(), pre) for y, x in boxes]
    views = [torch.rot90(crop, k, (1, 2)) for k in range(4)] + [crop.flip(-1)]
    views += [torch.rot90(full, k, (1, 2)) for k in range(4)] + subs
    # zoomNN: the centre NN % of the whole picture's square (both sides), resized back to the
    # square: derived from the one decoded square, as the descriptor's views would derive it
    for keep in (0.875, 0.75):
        side = round(full_side * keep)
        start = (full_side - side) // 2
        views.append(F.resize(full[:, start:start + side, start:start + side], [full_side] * 2,
                              antialias=True, interpolation=F.InterpolationMode(pre.interpolation)))
    return views


def embed(args: argparse.Namespace) -> None:
    import torch

    from deepvision.models.registry import get_spec
    from deepvision.pipeline.transforms import pixel_stats
    from deepvision.services.eval_set import load_evalset

    torch.set_num_threads(2)
    spec = get_spec(args.model)
    pre = spec.preprocess()
    trunk = spec.build(spec.find_weights(None, False)).eval()
    mean, std = pixel_stats(pre)
    items = load_evalset(Path(args.set)).items
    if args.edits:  # a cheaper subset: the database of `--protocol copies`, queries of these edits
        from deepvision.services.eval_set import edit_name

        keep = {"original", "natural", *args.edits.split(",")}
        items = tuple(i for i in items if i.group is None or edit_name(i.path) in keep)
    names = args.only.split(",") if args.only else VIEWS[: args.views]
    out = {pool: np.zeros((len(items), len(names), spec.dim), np.float16) for pool in POOLS}
    fmaps = None  # --fmaps: the raw feature maps too, to try other region grids later
    start = time.perf_counter()
    net_seconds = 0.0
    for i, item in enumerate(items):
        views = view_tensors(item.path, pre, pre.crop)
        batch = torch.stack([views[VIEWS.index(n)] for n in names])
        t0 = time.perf_counter()
        with torch.inference_mode():
            fmap = trunk((batch.float() - mean) / std).float()
            pooled = {"avg": fmap.mean(dim=(2, 3)),
                      "gem": fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3),
                      "rmac": rmac(fmap)}
        net_seconds += time.perf_counter() - t0
        for pool, vec in pooled.items():
            out[pool][i] = torch.nn.functional.normalize(vec, dim=1).numpy()
        if args.fmaps:
            if fmaps is None:
                fmaps = np.zeros((len(items), *fmap.shape), np.float16)
            fmaps[i] = fmap.numpy()
        if i % 50 == 0:
            print(f"{i}/{len(items)} {time.perf_counter() - start:.0f} s", file=sys.stderr)
    np.savez(args.cache, paths=np.array([it.path for it in items]),
             groups=np.array([it.group or "" for it in items]), views=np.array(names),
             net_seconds_per_view=net_seconds / (len(items) * len(names)), **out,
             **({"fmaps": fmaps} if fmaps is not None else {}))
    print(f"{len(items)} images x {len(names)} views: network {net_seconds:.0f} s "
          f"({net_seconds / (len(items) * len(names)) * 1000:.1f} ms per view), "
          f"wall {time.perf_counter() - start:.0f} s")


# ---- options: how the cached views become database and query vectors -------------------------


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _v(cache: dict, pool: str, names: tuple[str, ...]) -> np.ndarray:
    """(n, len(names), d) float32 views."""
    have = [str(v) for v in cache["views"]]
    idx = [have.index(n) for n in names]
    return cache[pool][:, idx].astype(np.float32)


def _sides(cache: dict) -> np.ndarray:
    """Each image's short side in pixels (read from the files, once per cache)."""
    if "_sides" not in cache:
        from PIL import Image

        sides = []
        for path in cache["paths"]:
            with Image.open(str(path)) as im:
                sides.append(min(im.size))
        cache["_sides"] = np.array(sides)
    return cache["_sides"]


def recipe_vectors(cache: dict, pool: str, recipes: str) -> np.ndarray:
    """(n, len, d) vectors from recipes such as "full0/crop0" (two vectors per image) or
    "full0+0.5*crop0" (one: the weighted sum of two views' descriptors, re-normalised); a "#"
    stands for each turn 0..3 ("full#" = "full0/full1/full2/full3"); "0.9^crop0" scales that
    view's scores by 0.9; "zoom75@224": the view only for images whose short side is at least
    224 px, full0 in its place for the others (QueryViews.zooms, the package's size gate)."""
    out = []
    for recipe in recipes.split("/"):
        # "0.9^crop0": the view's scores count at 0.9 (a secondary view that must win clearly)
        discount, _, recipe = recipe.rpartition("^")
        recipe, _, gate = recipe.partition("@")
        for k in (range(4) if "#" in recipe else (None,)):
            total = 0.0
            for term in recipe.replace("#", str(k)).split("+"):
                weight, _, name = term.rpartition("*")
                total = total + float(weight or 1.0) * _v(cache, pool, (name,))
            vectors = float(discount or 1.0) * _norm(total)
            if gate:
                small = _sides(cache) < int(gate)
                vectors[small] = _v(cache, pool, ("full0",))[small]
            out.append(vectors)
    return np.concatenate(out, axis=1)


def option_vectors(cache: dict, option: str) -> tuple[np.ndarray, np.ndarray]:
    """(db (n, m, d), queries (n, q, d)): each image's database vectors and query vectors; a
    query's score against an image is the max over the q x m pairs. "POOL:db=RECIPES|q=RECIPES"
    names both sides' vectors explicitly (recipe_vectors)."""
    pool, _, rest = option.partition(":")
    if rest.startswith("db="):
        db_part, _, q_part = rest.partition("|")
        return (recipe_vectors(cache, pool, db_part[3:]),
                recipe_vectors(cache, pool, q_part.removeprefix("q=")))
    if "both" in rest:  # centre crop and whole picture, their descriptors summed (2 passes)
        k = 4 if "qturns" in rest else 1
        crop = _v(cache, pool, tuple(f"crop{i}" for i in range(k)))
        full = _v(cache, pool, tuple(f"full{i}" for i in range(k)))
        views = _norm(crop + full)
        return views[:, :1], views
    frame = "full" if "full" in rest else "crop"
    base = (f"{frame}0",)
    turns = tuple(f"{frame}{k}" for k in range(4))
    if "sumturns" in rest:  # rotation-invariant descriptor: the four turns summed (both sides)
        v = _norm(_v(cache, pool, turns).sum(1, keepdims=True))
        db, q = v, v
    else:
        db = _v(cache, pool, base)
        q = _v(cache, pool, turns) if "qturns" in rest else db
        if "dbturns" in rest:
            db = _v(cache, pool, turns)
    if "flip" in rest:  # summed with the mirror image (only for the crop frame)
        f = _norm(_v(cache, pool, ("crop0",)) + _v(cache, pool, ("flip",)))
        db, q = f, f
    if "dbsub" in rest:  # database-side augmentation: five 60 % sub-crops as extra vectors
        db = np.concatenate([db, _v(cache, pool, ("sub_tl", "sub_tr", "sub_bl", "sub_br",
                                                   "sub_c"))], axis=1)
    return db, q


def scores_matrix(db: np.ndarray, q: np.ndarray, whiten: int = 0) -> np.ndarray:
    """(n, n) query-by-image similarity: the max over all query views and database vectors."""
    if whiten:
        db, q = _whitened(db, q, whiten)
    n = db.shape[0]
    out = np.full((n, n), -np.inf, np.float32)
    for a in range(q.shape[1]):
        for b in range(db.shape[1]):
            np.maximum(out, q[:, a] @ db[:, b].T, out=out)
    return out


def _whitened(db: np.ndarray, q: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA-whitening learned on the database's own first vectors, with shrinkage (the
    eigenvalues are floored at their mean, so the noise directions of a small collection are
    not blown up), applied to both sides."""
    x = db[:, 0]
    mu = x.mean(0)
    u, s, _ = np.linalg.svd((x - mu).T @ (x - mu) / len(x), hermitian=True)
    k = min(dims, len(x) - 1)
    lam = np.maximum(s[:k], s[:k].mean())
    proj = u[:, :k] / np.sqrt(lam)
    return _norm((db - mu) @ proj), _norm((q - mu) @ proj)


def score(sim: np.ndarray, groups: np.ndarray, paths: np.ndarray, protocol: str = "all") -> dict:
    """protocol "all": every grouped image queries all others (deepvision eval). "copies": the
    database holds only originals, natural-pair members and distractors; every edited copy
    (and natural-pair member) queries it, and its original (its partner) is what it must find."""
    from deepvision.services.eval_set import edit_name

    labels = np.unique(groups, return_inverse=True)[1]
    grouped = groups != ""
    edits = np.array([edit_name(str(p)) for p in paths])
    in_db = (~grouped | (edits == "original") | (edits == "natural")) if protocol == "copies" \
        else np.ones(len(paths), bool)
    queries = grouped & ((edits != "original") if protocol == "copies" else True)
    per_edit: dict[str, list[tuple[float, float]]] = {}
    for qi in np.flatnonzero(queries):
        row = sim[qi].copy()
        row[qi] = -np.inf
        row[~in_db] = -np.inf
        row = row[: len(row)]
        order = np.argsort(-row, kind="stable")[: int(in_db.sum()) - int(in_db[qi])]
        hits = (labels[order] == labels[qi]) & grouped[order]
        nrel = int(hits.sum())
        if not nrel:
            continue
        ranks = np.flatnonzero(hits) + 1
        ap = float((np.arange(1, nrel + 1) / ranks).sum() / nrel)
        per_edit.setdefault(edit_name(str(paths[qi])) or "?", []).append((float(hits[0]), ap))
    allq = [x for v in per_edit.values() for x in v]
    return {"R@1": np.mean([r for r, _ in allq]), "mAP": np.mean([a for _, a in allq]),
            "n": len(allq),
            "edits": {e: (np.mean([r for r, _ in v]), np.mean([a for _, a in v]), len(v))
                      for e, v in sorted(per_edit.items())}}


def score_cmd(args: argparse.Namespace) -> None:
    cache = dict(np.load(args.cache))
    rows = {}
    for option in args.options.split(","):
        name, _, wh = option.partition("+w")
        db, q = option_vectors(cache, name)
        res = score(scores_matrix(db, q, int(wh or 0)), cache["groups"], cache["paths"],
                    args.protocol)
        res["db_vectors"], res["query_views"] = db.shape[1], q.shape[1]
        rows[option] = res
        worst = sorted(res["edits"].items(), key=lambda kv: (kv[1][0], kv[1][1]))[:4]
        print(f"{option:28s} R@1 {res['R@1']:.4f} mAP {res['mAP']:.4f}  worst: "
              + "  ".join(f"{e} {r:.3f}/{a:.3f}" for e, (r, a, _) in worst))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))


def cost(args: argparse.Namespace) -> None:
    """Network time per image, side by side in one process, through the pipeline's Network
    (its query views included): the old default (avg, centre crop), R-MAC of the whole picture
    at index time (one pass) and at query time with the default's query views (turns: 4
    passes) and with `--zoom` (turns + zoom: 5), and the turn-invariant descriptor, with the
    load average."""
    import os

    import torch

    from deepvision.models.descriptor import Descriptor, QueryViews
    from deepvision.models.registry import get_spec, load_model
    from deepvision.pipeline.network import Network

    torch.set_num_threads(2)
    spec = get_spec(args.model)
    weights = spec.find_weights(None, False)
    pixels = torch.randint(0, 256, (args.batch, 3, 224, 224), dtype=torch.uint8)
    rows = {"avg, crop (old default), index or query": (Descriptor("avg", frame="crop"), None),
            "rmac, full (the default), index": (Descriptor(), None),
            "rmac, full + query turns (--no-zoom), query":
                (Descriptor(), QueryViews(True, 0.0)),
            "rmac, full + query turns + zoom (the default), query":
                (Descriptor(), QueryViews(True, 0.75)),
            "rmac, full, turn-invariant, index": (Descriptor(turns=True), None)}
    print(f"load average before: {os.getloadavg()}")
    for name, (d, views) in rows.items():
        net = Network(load_model(spec, weights, torch.device("cpu"), d), torch.device("cpu"),
                      args.batch)
        net.embed(pixels[:2])  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            net.checked([""] * len(pixels), list(range(len(pixels))), pixels, views=views,
                        sides=[224] * len(pixels))  # pictures that fill the input: zoomed
            best = min(best, time.perf_counter() - t0)
        print(f"{name:52s} {best / args.batch * 1000:7.1f} ms per image (best of {args.repeat})")
    print(f"load average after: {os.getloadavg()}")


def _rmac_grid(fmap, levels: int, whole: bool = True, avg: bool = False):
    """R-MAC with `levels` levels (the package's region grid), optionally without the
    whole-map term or plus average pooling."""
    import torch.nn.functional as F  # noqa: N812

    from deepvision.models.descriptor import _region_starts

    h, w = fmap.shape[2:]
    total = F.normalize(fmap.amax(dim=(2, 3)), dim=1) if whole else 0.0
    for level in range(1, levels + 1):
        side = max(1, int(2 * min(h, w) / (level + 1)))
        for y in _region_starts(h, side, level):
            for x in _region_starts(w, side, level):
                total = total + F.normalize(fmap[:, :, y:y + side, x:x + side].amax(dim=(2, 3)),
                                            dim=1)
    if avg:
        total = F.normalize(total, dim=1) + F.normalize(fmap.mean(dim=(2, 3)), dim=1)
    return F.normalize(total, dim=1)


def _regional_gem(fmap, levels: int = 3, p: float = 3.0):
    """R-MAC's regions, each GeM-pooled instead of max-pooled."""
    import torch.nn.functional as F  # noqa: N812

    from deepvision.models.descriptor import _region_starts

    x = fmap.clamp(min=1e-6)
    h, w = x.shape[2:]
    total = F.normalize(x.pow(p).mean(dim=(2, 3)).pow(1 / p), dim=1)
    for level in range(1, levels + 1):
        side = max(1, int(2 * min(h, w) / (level + 1)))
        for y in _region_starts(h, side, level):
            for xx in _region_starts(w, side, level):
                region = x[:, :, y:y + side, xx:xx + side]
                total = total + F.normalize(region.pow(p).mean(dim=(2, 3)).pow(1 / p), dim=1)
    return F.normalize(total, dim=1)


REGION_POOLS = {
    "rmac": lambda f: _rmac_grid(f, 3), "rmac1": lambda f: _rmac_grid(f, 1),
    "rmac2": lambda f: _rmac_grid(f, 2), "rmac4": lambda f: _rmac_grid(f, 4),
    "rmac5": lambda f: _rmac_grid(f, 5), "rmacnog": lambda f: _rmac_grid(f, 3, whole=False),
    "rmac+avg": lambda f: _rmac_grid(f, 3, avg=True), "rgem": _regional_gem,
}


def regions(args: argparse.Namespace) -> None:
    """An `embed --fmaps` cache -> a cache of the same views pooled with REGION_POOLS."""
    import torch

    cache = dict(np.load(args.cache))
    fmaps = cache.pop("fmaps")
    n, v, d = fmaps.shape[:3]
    out = {name: np.zeros((n, v, d), np.float16) for name in REGION_POOLS}
    for i in range(0, n, 64):
        f = torch.from_numpy(fmaps[i:i + 64].astype(np.float32)).flatten(0, 1)
        for name, pool in REGION_POOLS.items():
            out[name][i:i + 64] = pool(f).reshape(-1, v, d).numpy()
    np.savez(args.out, **{**cache, **out})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--set", required=True)
    e.add_argument("--model", default="efficientnet-lite0")
    e.add_argument("--cache", required=True)
    e.add_argument("--views", type=int, default=len(VIEWS), help="the first N of VIEWS")
    e.add_argument("--only", default=None, help="these views of VIEWS, comma-separated")
    e.add_argument("--fmaps", action="store_true", help="also keep the feature maps")
    e.add_argument("--edits", default=None, help="only originals, natural pairs, distractors "
                   "and copies with these edits")
    s = sub.add_parser("score")
    s.add_argument("--cache", required=True)
    s.add_argument("--options", default="avg,avg:qturns,avg:sumturns,avg:full,avg:full+qturns")
    s.add_argument("--json", default=None)
    s.add_argument("--protocol", choices=("all", "copies"), default="all")
    g = sub.add_parser("regions")
    g.add_argument("--cache", required=True, help="from embed --fmaps")
    g.add_argument("--out", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--model", default="efficientnet-lite0")
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    {"embed": embed, "score": score_cmd, "regions": regions, "cost": cost}[args.cmd](args)


if __name__ == "__main__":
    main()
