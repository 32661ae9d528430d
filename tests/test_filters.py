"""Filters (#28) with oracles: random filters on planted metadata in a real sqlite catalog.

The catalog must select exactly the files a plain-Python reading of the filter passes (and
their vectors: a video's frames, a vector shared by byte-identical files when any passes);
every FAISS structure must return only those vectors, still k of them: flat exactly numpy's
brute force over the passing vectors, the approximate ones with recall@10 >= 0.95.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from vectorfactory import clustered

from deepvision.errors import UsageError
from deepvision.filters import Filter, build_filter, distance_km, parse_when
from deepvision.store import faiss_index, ondisk
from deepvision.store.catalog import Catalog
from deepvision.store.faiss_index import ONDISK, VectorIndex, plan_index
from deepvision.types import FileMeta

DIM = 64
CAMERAS = [("Canon", "Canon EOS R5"), ("NIKON CORPORATION", "NIKON Z 6"), ("Apple", "iPhone 12"),
           (None, None)]
PLACES = [(48.8566, 2.3522), (35.6762, 139.6503), (-33.8688, 151.2093), None]
FOLDERS = ["/p/2019", "/p/2019/trip", "/p/2020", "/videos", "/p/2020-old"]


@dataclass
class Planted:
    path: str
    file_id: int
    vector_ids: list[int]
    meta: FileMeta
    when: datetime


def _meta(rng: np.random.Generator, kind: str) -> tuple[FileMeta, datetime]:
    when = datetime(2015, 1, 1) + timedelta(seconds=int(rng.integers(0, 10 * 365 * 86400)))
    offset = ["", "+09:00", "-05:00"][int(rng.integers(0, 3))]
    make, model = CAMERAS[int(rng.integers(0, len(CAMERAS)))]
    place = PLACES[int(rng.integers(0, len(PLACES)))]
    lat, lon = (None, None) if place is None else (
        place[0] + float(rng.normal(0, 0.2)), place[1] + float(rng.normal(0, 0.2)))
    width, height = int(rng.integers(100, 5000)), int(rng.integers(100, 5000))
    meta = FileMeta(kind=kind, file_size=int(rng.integers(1, 10**7)),
                    taken=when.isoformat() + offset, taken_source="exif", make=make,
                    model=model, lat=lat, lon=lon, width=width, height=height,
                    duration=3.0 if kind == "video" else None)
    return meta, when


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Catalog, np.ndarray, list[Planted]]:
    """2400 image contents, 60 videos of 5 frames, 300 byte-identical copies (other paths,
    other metadata): 2760 files over 2700 vectors."""
    rng = np.random.default_rng(7)
    vectors = clustered(2700, seed=3)
    catalog = Catalog(tmp_path_factory.mktemp("cat") / "catalog.sqlite")
    files: list[Planted] = []
    with catalog.write():
        contents, row = [], 0
        for c in range(2460):
            frames = 1 if c < 2400 else 5
            ids = [catalog.add_vector(f"h{c}", vectors[row + f], f, None if frames == 1 else f)
                   for f in range(frames)]
            contents.append((f"h{c}", ids))
            row += frames
        copies = [int(c) for c in rng.choice(2400, 300, replace=False)]
        for n, c in enumerate(list(range(2460)) + copies):
            digest, ids = contents[c]
            kind = "video" if c >= 2400 else "image"
            folder = "/videos" if kind == "video" else FOLDERS[int(rng.integers(0, 5))]
            path = f"{folder}/f{n:05d}.{'mp4' if kind == 'video' else 'jpg'}"
            catalog.upsert_file(path, 1, 1, digest, ids[0] if kind == "image" else None)
            meta, when = _meta(rng, kind)
            catalog.put_metadata(path, 1, meta)
            files.append(Planted(path, 0, ids, meta, when))
    catalog.close()
    catalog = Catalog(catalog.path, readonly=True)
    ids_of = {h.path: h.file_id for hs in catalog.hits_for(range(1, 2701)).values() for h in hs}
    for f in files:
        f.file_id = ids_of[f.path]
    assert row == len(vectors)
    return catalog, vectors, files


def passes(f: Planted, flt: Filter) -> bool:
    """The oracle: the filter's meaning, read plainly."""
    m = f.meta
    checks = [
        not flt.folders or any(f.path.startswith(d.rstrip("/") + "/") for d in flt.folders),
        flt.kind is None or m.kind == flt.kind,
        flt.after is None or f.when >= flt.after,
        flt.before is None or f.when < flt.before,
        flt.min_width is None or (m.width or 0) >= flt.min_width,
        flt.min_height is None or (m.height or 0) >= flt.min_height,
        flt.camera is None or flt.camera.lower() in f"{m.make or ''} {m.model or ''}".lower(),
        flt.near is None or (m.lat is not None and distance_km(m.lat, m.lon, *flt.near)
                             <= flt.radius_km),
    ]
    return all(checks)


def random_filter(rng: np.random.Generator) -> Filter:
    fields: dict = {}
    if rng.random() < 0.4:
        start = datetime(2015, 1, 1) + timedelta(days=int(rng.integers(0, 3000)))
        fields["after"] = start
        if rng.random() < 0.5:
            fields["before"] = start + timedelta(days=int(rng.integers(1, 1500)))
    if rng.random() < 0.3:
        fields["camera"] = ["canon", "NIKON Z", "iphone", "eos r5"][int(rng.integers(0, 4))]
    if rng.random() < 0.3:
        fields["folders"] = tuple(rng.choice(FOLDERS, int(rng.integers(1, 3)), replace=False))
    if rng.random() < 0.2:
        fields["kind"] = ["image", "video"][int(rng.integers(0, 2))]
    if rng.random() < 0.3:
        fields["min_width"] = int(rng.integers(100, 4800))
    if rng.random() < 0.2:
        fields["min_height"] = int(rng.integers(100, 4800))
    if rng.random() < 0.25:
        place = PLACES[int(rng.integers(0, 3))]
        fields["near"], fields["radius_km"] = place, float(rng.choice([5, 20, 60]))
    return Filter(**fields) if fields else Filter(min_width=2500)


def _oracle_vectors(files: list[Planted], flt: Filter) -> np.ndarray:
    return np.unique([v for f in files if passes(f, flt) for v in f.vector_ids]).astype(np.int64)


FILTERS = [random_filter(np.random.default_rng(s)) for s in range(40)]


def test_the_catalog_selects_exactly_the_passing_files_and_their_vectors(planted):
    catalog, _, files = planted
    sizes = []
    for flt in FILTERS:
        want = _oracle_vectors(files, flt)
        np.testing.assert_array_equal(catalog.passing_vectors(flt), want, err_msg=str(flt))
        ids = [f.file_id for f in files]
        assert catalog.passing_files(ids, flt) == {f.file_id for f in files if passes(f, flt)}
        sizes.append(len(want))
    assert min(sizes) < 50 and max(sizes) > 1000  # both roads below are taken


@pytest.fixture(scope="module")
def structures(planted, tmp_path_factory) -> dict[str, VectorIndex]:
    _, vectors, _ = planted
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    out = {}
    for kind in ("flat", "ivf", "ivfpq", "hnsw"):
        plan = plan_index(kind, len(vectors), DIM)
        assert plan.kind == kind
        out[kind] = VectorIndex.from_blocks(DIM, [(ids, vectors)], plan, sample=vectors)
    plan = plan_index(ONDISK, len(vectors), DIM)
    folder = tmp_path_factory.mktemp("ondisk")
    out[ONDISK] = ondisk.build(ondisk.train(vectors, plan), [(ids, vectors)], plan,
                               folder / "faiss-1.bin", ondisk.LocalRunner(1))
    for index in out.values():
        index.configure()
    return out


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", ONDISK, "hnsw"])
def test_filtered_search_returns_k_passing_vectors_like_brute_force(planted, structures, kind,
                                                                    monkeypatch):
    # Small filters go exact (flat and HNSW: below 5 %, copied out of their storage), larger
    # ones through FAISS's ID selector: a low threshold sends most filters down the FAISS road.
    monkeypatch.setattr(faiss_index, "EXACT_MAX", 40)
    catalog, vectors, _ = planted
    index = structures[kind]
    queries = clustered(20, seed=11)
    stored = lambda u: vectors[u - 1]  # noqa: E731 (ids are rows + 1)
    recalls = []
    for flt in FILTERS:
        allowed = catalog.passing_vectors(flt)
        scores, got = index.top(queries, 10, stored, allowed)
        if not len(allowed):
            assert not (got >= 0).any()
            continue
        assert np.isin(got[got >= 0], allowed).all(), flt
        sims = queries @ vectors[allowed - 1].T
        truth = allowed[np.argsort(-sims, axis=1, kind="stable")[:, :10]]
        assert (got >= 0).sum(axis=1).min() == truth.shape[1], flt  # still k (or all) results
        if kind == "flat":
            np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(truth, axis=1))
            np.testing.assert_allclose(scores, -np.sort(-sims, axis=1)[:, :10], atol=1e-5)
        recalls += [len(set(a) & set(b)) / len(b) for a, b in zip(got, truth, strict=True)]
    assert np.mean(recalls) >= 0.95, (kind, np.mean(recalls))


def test_filtered_range_search_keeps_only_passing_pairs(planted, structures):
    catalog, vectors, _ = planted
    flt = Filter(folders=("/p/2019",))
    allowed = catalog.passing_vectors(flt)
    for kind in ("flat", "ivf", "hnsw"):
        lims, scores, ids = structures[kind].filtered_range(vectors[:50], 0.8, allowed)
        assert np.isin(ids, allowed).all() and (scores > 0.8).all() and len(ids)
    exact = (vectors[:50] @ vectors[allowed - 1].T > 0.8).sum()
    lims, _, _ = structures["flat"].filtered_range(vectors[:50], 0.8, allowed)
    assert int(lims[-1]) == int(exact)


def test_build_filter_checks_every_value_before_any_work():
    flt = build_filter(after="2024-05", before="2024-05-31", camera=" Pixel ",
                       folders=["/a/b/"], kind="video", near="48.85, 2.29", radius_km=2)
    assert flt.after == datetime(2024, 5, 1) and flt.before == datetime(2024, 6, 1)
    assert (flt.camera, flt.folders, flt.near, flt.radius_km) == ("Pixel", ("/a/b",),
                                                                   (48.85, 2.29), 2)
    assert flt.active and flt.needs_metadata and not Filter().active
    assert not Filter(folders=("/x",)).needs_metadata
    assert parse_when("2024", "--before", end=True) == datetime(2025, 1, 1)
    assert parse_when("2023-12", "--before", end=True) == datetime(2024, 1, 1)
    assert parse_when("2024-02-29T23:59", "--before", end=True) == datetime(2024, 3, 1)
    bad = [({"after": "yesterday"}, "--after 'yesterday'"),
           ({"after": "2024-13-01"}, "month must be in 1..12"),
           ({"after": "2024-06", "before": "2024-05"}, "not earlier than --before"),
           ({"radius_km": 5.0}, "--radius needs --near"),
           ({"near": "91,0"}, "latitude must be within"),
           ({"near": "48.8"}, "use LAT,LON"),
           ({"near": "1,2", "radius_km": -1.0}, "--radius -1"),
           ({"camera": "  "}, "--camera is empty"),
           ({"min_width": 0}, "--min-width 0"),
           ({"kind": "gif"}, "choose image or video")]
    for fields, message in bad:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("+", r"\+")):
            build_filter(**fields)


def test_distance_is_the_great_circle():
    # Paris - Tokyo: 9,712 km on the mean-radius sphere; a degree of latitude: 111.19 km
    assert distance_km(48.8566, 2.3522, 35.6762, 139.6503) == pytest.approx(9712, abs=5)
    assert distance_km(10, 20, 11, 20) == pytest.approx(math.pi * 6371.0088 / 180, rel=1e-9)


def test_an_index_without_metadata_says_what_to_run(tmp_path: Path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    Catalog(path).close()
    with sqlite3.connect(path) as db:  # what a version 3 catalog looks like to a reader
        db.execute("DROP TABLE filemeta")
    old = Catalog(path, readonly=True)
    assert old.structure_version() == 3 and old.metadata_counts() == {"read": 0}
    assert old.passing_vectors(Filter(folders=("/x",))).tolist() == []  # paths need no metadata
    with pytest.raises(UsageError, match="run `deepvision index` on its folders once"):
        old.passing_vectors(Filter(kind="image"))


# ---- the real CLI on real files (stub network) --------------------------------------------------


def _photo(path: Path, seed: int, taken: str | None, camera: tuple[bytes, bytes] | None,
           size: tuple[int, int] = (96, 72)) -> Path:
    import piexif
    from imagefactory import photo_like_image

    exif: dict = {"0th": {}, "Exif": {}}
    if camera:
        exif["0th"] = {piexif.ImageIFD.Make: camera[0], piexif.ImageIFD.Model: camera[1]}
    if taken:
        exif["Exif"] = {piexif.ExifIFD.DateTimeOriginal: taken.encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    photo_like_image(seed, size).convert("RGB").save(path, exif=piexif.dump(exif), quality=92)
    return path


@pytest.fixture
def album(cli, tiny_model, tmp_path) -> tuple[Path, Path]:
    """Photos of 2018 and 2023 in two folders (one byte-identical copy across them), a video,
    indexed with the stub model."""
    from videofactory import make_video

    root = tmp_path / "album"
    for i in range(6):
        year = 2018 if i < 3 else 2023
        folder = root / ("old" if i < 3 else "new")
        _photo(folder / f"p{i}.jpg", seed=i, taken=f"{year}:0{i + 1}:1{i} 12:00:00",
               camera=(b"Canon", b"Canon EOS 80D") if i % 2 else (b"Apple", b"iPhone 8"),
               size=(96 + 64 * (i % 3), 72))
    (root / "new" / "copy_of_p0.jpg").write_bytes((root / "old" / "p0.jpg").read_bytes())
    make_video(root / "clips" / "clip.mp4", seeds=(0, 4), seconds=1.0)
    idx = tmp_path / "idx"
    run = cli("index", root, "--index-dir", idx, "--model", tiny_model, "--workers", "0",
              "--json", "--quiet")
    assert run.exit_code == 0, run.stderr
    assert run.json()["metadata_read"] == 8
    return root, idx


def _search(cli, album, *flags: str) -> list[dict]:
    from importlib import resources

    import jsonschema

    root, idx = album
    run = cli("search", root / "old" / "p0.jpg", "--index-dir", idx, "--format", "json",
              "--workers", "0", "-k", "20", *map(str, flags))
    assert run.exit_code == 0, run.stderr
    schema = json.loads(resources.files("deepvision.output").joinpath(
        "schemas/search.schema.json").read_text())
    jsonschema.validate(run.json(), schema)
    return run.json()["queries"][0]["matches"]


def test_search_flags_select_by_date_folder_camera_kind_and_size(cli, album):
    root, _ = album
    names = lambda ms: sorted(Path(m["path"]).name for m in ms)  # noqa: E731
    assert len(_search(cli, album)) == 8
    assert names(_search(cli, album, "--before", "2018")) == [
        "copy_of_p0.jpg", "p0.jpg", "p1.jpg", "p2.jpg"]  # the copy carries p0's EXIF
    assert names(_search(cli, album, "--after", "2023-05", "--before", "2023-06-30")) == [
        "p4.jpg", "p5.jpg"]
    # the copy shares p0's vector but lives in new/ and has p0's EXIF (2018): a folder filter
    # and a date filter each keep one of the two files behind that one vector
    assert names(_search(cli, album, "--folder", root / "new", "--before", "2019")) == [
        "copy_of_p0.jpg"]
    assert names(_search(cli, album, "--folder", root / "old", "--folder", root / "clips")) == [
        "clip.mp4", "p0.jpg", "p1.jpg", "p2.jpg"]
    canon = _search(cli, album, "--camera", "eos 80")
    assert names(canon) == ["p1.jpg", "p3.jpg", "p5.jpg"]
    assert {m["camera"] for m in canon} == {"Canon EOS 80D"}
    (clip,) = _search(cli, album, "--kind", "video")
    assert clip["width"] == 160 and clip["timestamp"] is not None
    wide = _search(cli, album, "--min-width", "150")
    assert names(wide) == ["clip.mp4", "p1.jpg", "p2.jpg", "p4.jpg", "p5.jpg"]
    by_date = _search(cli, album, "--sort", "date", "--kind", "image")
    taken = [m["taken"] for m in by_date]
    assert taken[:7] == sorted(taken[:7]) and taken[0].startswith("2018-01-10")


def test_filters_are_checked_before_any_work_and_dupes_takes_them(cli, album):
    root, idx = album
    bad = cli("search", root / "old" / "p0.jpg", "--index-dir", idx, "--after", "2024-02-30")
    assert bad.exit_code == 2 and "--after '2024-02-30'" in bad.stderr
    bad = cli("dupes", "--index-dir", idx, "--radius", "3")
    assert bad.exit_code == 2 and "--radius needs --near" in bad.stderr
    everything = cli("dupes", "--index-dir", idx, "--format", "json").json()
    def paths(doc: dict) -> list[set[str]]:
        return [{Path(m["path"]).name for m in g["files"]} for g in doc["groups"]]

    assert any({"p0.jpg", "copy_of_p0.jpg"} <= group for group in paths(everything))
    inside_old = cli("dupes", "--index-dir", idx, "--format", "json", "--folder", root / "old")
    assert inside_old.exit_code == 0, inside_old.stderr  # the copy is outside: no pair
    assert not any("copy_of_p0.jpg" in group for group in paths(inside_old.json()))
    same_year = cli("dupes", "--index-dir", idx, "--format", "json", "--before", "2019")
    assert any({"p0.jpg", "copy_of_p0.jpg"} <= group for group in paths(same_year.json()))
    nothing = cli("search", root / "old" / "p0.jpg", "--index-dir", idx, "--near", "0.5,0.5",
                  "--format", "json", "--workers", "0")
    assert nothing.exit_code == 0 and nothing.json()["queries"][0]["matches"] == []
    assert "no indexed file passes the filter (within 10 km of 0.5,0.5)" in nothing.stderr


def test_a_long_lived_searcher_follows_renames_and_metadata(cli, album, tiny_model):
    """serve's Searcher keeps the passing ids of recent filters: a rename (no vector changes,
    so the same generation) must still change what passes."""
    from deepvision.services.search import Query, RankOptions, Searcher
    from deepvision.store.indexstore import IndexStore

    root, idx = album
    store = IndexStore(idx)
    searcher = Searcher(store, embedder=None)  # type: ignore[arg-type]  # ranks vectors only
    with store.open_read() as snap:
        query = Query(snap.stored(np.array([1])), (None,))
        generation = snap.catalog.generation
    opts = RankOptions(top_k=20, filter=Filter(folders=(str(root / "old"),)))

    def names() -> set[str]:
        (found,), _ = searcher.rank_queries([query], opts)
        return {Path(m.path).name for m in found}

    assert names() == {"p0.jpg", "p1.jpg", "p2.jpg"}
    (root / "old" / "p1.jpg").rename(root / "new" / "p1.jpg")
    run = cli("index", root, "--index-dir", idx, "--model", tiny_model, "--workers", "0",
              "--json", "--quiet")
    assert run.json()["renamed"] == 1 and run.json()["metadata_read"] == 1
    with store.open_read() as snap:
        assert snap.catalog.generation == generation  # the FAISS cache stays valid
    assert names() == {"p0.jpg", "p2.jpg"}
