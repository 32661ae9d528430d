"""Build the offline evaluation set for `deepvision eval`: real photos, edited copies, distractors.

    python scripts/make_evalset.py --dest /tmp/evalset [--distractors 50] [--groups N]
                                   [--max-side 512] [--force]

Layout (what `deepvision eval DIR` reads):

    DEST/<photo>/<photo>__original.jpg      one group per photo of bulk_images/: the photo
    DEST/<photo>/<photo>__<edit>.jpg        ... and one edited copy per entry of EDITS
    DEST/distractors/distractor_NNN.jpg     synthetic images that belong to no group
    DEST/evalset.json                       how the set was built (also marks DEST as ours)

`distractors` is a reserved folder name for `deepvision eval`: its images have no relevant items,
so they are never scored as queries, but every query has to rank its group-mates above them.
The edit name after the last `__` of a file name gives the per-edit breakdown of the eval.

Everything is deterministic: the edits have fixed parameters and the distractors come from fixed
seeds, so two runs write the same pixels (JPEG encoding included, with the same Pillow).
Every image is at most --max-side px on its long side: the 21 photos times 16 versions plus 50
distractors embed in well under a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps, features

from deepvision.services import edits

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPO_ROOT / "bulk_images"
MARKER = "evalset.json"
DISTRACTOR_DIR = "distractors"  # services/eval_set.py: "no relevant items"
ORIGINAL = "original"
DEFAULT_MAX_SIDE = 512
DEFAULT_DISTRACTORS = 50
DISTRACTOR_SEED = 20_240_707  # far from the small seeds tests use for their own synthetic images


def _load_make_samples() -> ModuleType:
    # scripts/ is not a package: load the sibling file by path (as tests/test_real_weights.py
    # does). dataclasses looks the module up in sys.modules while it runs, so register it first.
    if "make_samples" in sys.modules:
        return sys.modules["make_samples"]
    spec = importlib.util.spec_from_file_location("make_samples",
                                                  Path(__file__).with_name("make_samples.py"))
    if spec is None or spec.loader is None:
        raise ImportError("cannot load scripts/make_samples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_samples = _load_make_samples()


# ---- edits: each a typical way a copy drifts from its original -------------------------------
# Fixed parameters (no randomness), so an edit means the same thing for every photo and in every
# run; the per-edit figures of the eval then compare like with like.


def crop_off_centre_50(img: Image.Image) -> Image.Image:
    """Half the width and half the height, from the upper right: a quarter of the picture."""
    w, h = img.size
    return img.crop((round(w * 0.45), round(h * 0.1), round(w * 0.95), round(h * 0.6)))


def rotate_12_expand(img: Image.Image) -> Image.Image:
    """12° counter-clockwise, canvas grown to keep every pixel; the corners are black."""
    return img.rotate(12, Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))


def rotate_15_cut(img: Image.Image) -> Image.Image:
    """15° clockwise in the same frame: the corners of the photo are cut off, filled black."""
    return img.rotate(-15, Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))


def hue_saturation(img: Image.Image) -> Image.Image:
    """Hue turned by 30° and saturation × 1.6 (an Instagram-style filter)."""
    hsv = np.asarray(img.convert("HSV")).copy()
    # Pillow's HSV stores hue as 0..255 for 0..360°; uint8 arithmetic wraps around like hue does.
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(30 / 360 * 256)).astype(np.uint8)
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.6, 0, 255).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def contrast_50(img: Image.Image) -> Image.Image:
    """Half the contrast: a washed-out, faded copy."""
    return ImageEnhance.Contrast(img).enhance(0.5)


def jpeg_q20(img: Image.Image) -> Image.Image:
    """Full size, JPEG round trip at quality 20: blocky, banded, colour-bleeding."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=20)
    buf.seek(0)
    out = Image.open(buf)
    out.load()  # format stays "JPEG", so save_jpeg keeps the quality-20 tables on disk
    return out


def third_size(img: Image.Image) -> Image.Image:
    """One third of the width and height (a thumbnail), otherwise untouched."""
    return img.resize((max(1, round(img.width / 3)), max(1, round(img.height / 3))),
                      Image.Resampling.LANCZOS)


def greyscale(img: Image.Image) -> Image.Image:
    """Colour dropped (luma only)."""
    return ImageOps.grayscale(img).convert("RGB")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's own default font, scalable when Pillow has FreeType (it does in the wheels); the
    # bitmap fallback is tiny, but the set still builds.
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()


def overlay_text(img: Image.Image) -> Image.Image:
    """A meme-style caption at the top and a watermark at the bottom: white, black outline."""
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    size = max(8, round(h / 8))
    stroke = max(1, size // 12)
    draw.text((w / 2, h * 0.04), "WHEN IT'S FRIDAY", font=_font(size), fill="white",
              anchor="mt", stroke_width=stroke, stroke_fill="black")
    draw.text((w * 0.97, h * 0.96), "© deepvision", font=_font(max(8, size // 2)),
              fill="white", anchor="rb", stroke_width=max(1, stroke // 2), stroke_fill="black")
    return out


def border_10(img: Image.Image) -> Image.Image:
    """A solid dark-red frame 10 % of the width (left, right) and height (top, bottom) wide."""
    w, h = img.size
    pad = (round(w * 0.1), round(h * 0.1), round(w * 0.1), round(h * 0.1))
    return ImageOps.expand(img.convert("RGB"), pad, fill=(120, 20, 30))


def screenshot(img: Image.Image) -> Image.Image:
    """The photo shrunk onto a browser-window screenshot: title bar, address bar, side panel and
    grey text lines around it. The photo covers about 30 % of the screenshot's area."""
    w, h = img.size
    cw, ch = round(w * 1.6), round(h * 1.6)
    canvas = Image.new("RGB", (cw, ch), (246, 246, 246))
    draw = ImageDraw.Draw(canvas)
    bar = max(12, round(ch * 0.08))
    draw.rectangle((0, 0, cw, bar), fill=(43, 43, 48))
    for i, colour in enumerate(((237, 95, 87), (245, 190, 79), (98, 197, 85))):
        r = bar // 4
        x = bar // 2 + i * 3 * r
        draw.ellipse((x - r, bar // 2 - r, x + r, bar // 2 + r), fill=colour)
    draw.rounded_rectangle((round(cw * 0.2), bar // 5, round(cw * 0.8), bar - bar // 5),
                           radius=bar // 5, fill=(70, 70, 76))
    draw.text((round(cw * 0.22), bar // 2), "https://example.com/gallery/photo",
              font=_font(max(8, bar // 3)), fill=(210, 210, 210), anchor="lm")
    side = round(cw * 0.18)
    draw.rectangle((0, bar, side, ch), fill=(228, 228, 232))
    for y in range(bar + bar // 2, ch - bar // 2, max(8, bar // 2)):  # a fake menu
        draw.rectangle((side // 6, y, side - side // 4, y + max(2, bar // 8)), fill=(170, 170, 178))
    photo = img.convert("RGB").resize((round(w * 0.85), round(h * 0.85)), Image.Resampling.LANCZOS)
    left, top = side + round(cw * 0.04), bar + round(ch * 0.04)
    canvas.paste(photo, (left, top))
    for i, y in enumerate(range(top + photo.height + bar // 3, ch - bar // 3, max(6, bar // 3))):
        length = (0.9, 0.75, 0.85, 0.6)[i % 4]  # caption lines below the photo
        draw.rectangle((left, y, left + round((cw - left - cw * 0.04) * length),
                        y + max(2, bar // 10)), fill=(150, 150, 150))
    return canvas


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop70": _samples.crop_centre_70,
    "crop50_offcentre": crop_off_centre_50,
    "rotate12_expand": rotate_12_expand,
    "rotate15_cut": rotate_15_cut,
    "hflip": _samples.flip_horizontal,
    "hue_saturation": hue_saturation,
    "bright140": _samples.brighten_40,
    "contrast50": contrast_50,
    "jpeg_q20": jpeg_q20,
    "third": third_size,
    "third_q30": _samples.third_size_q30,
    "greyscale": greyscale,
    "text": overlay_text,
    "border10": border_10,
    "screenshot": screenshot,
}


# The robustness edits of issue #17 live in the package: `deepvision eval --synthetic` makes the
# same edited copies of a user's own photos.
ROBUST_EDITS = edits.ROBUST_EDITS

# ---- distractors -------------------------------------------------------------------------------


def distractor(seed: int, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """A synthetic picture (gradient, shapes, lines, blur, noise) fully driven by `seed`.

    Nothing like a photograph of the set, so it is never a legitimate match; it only competes
    for the ranks between a query and its group-mates.
    """
    rng = np.random.default_rng(seed)
    long_side = int(rng.integers(max_side * 5 // 8, max_side + 1))
    aspect = float(rng.choice([0.75, 1.0, 4 / 3, 1.5, 2 / 3]))
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (
        round(long_side * aspect), long_side)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w]
    t = xs / max(w - 1, 1) * np.cos(theta) + ys / max(h - 1, 1) * np.sin(theta)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    img = Image.fromarray((c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        box = (x0, y0, max(x1, x0 + w // 10), max(y1, y0 + h // 10))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(2, max(3, w // 30))))
    if rng.random() < 0.5:  # some soft, some hard-edged: both kinds of texture statistics
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 4.0))))
    arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(3, 15), (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# ---- building ----------------------------------------------------------------------------------


def fit(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the long side is at most max_side; an image that fits is returned unchanged
    (so a JPEG round-trip result keeps its format and save_jpeg keeps its quality)."""
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def load_source(path: Path, max_side: int) -> Image.Image:
    # RGB throughout: the colour edits need three channels, and a grey photo stays grey anyway.
    with Image.open(path) as im:
        return fit(im.convert("RGB"), max_side)


def build(dest: Path, distractors: int = DEFAULT_DISTRACTORS, *, groups: int | None = None,
          max_side: int = DEFAULT_MAX_SIDE,
          edits: Mapping[str, Callable[[Image.Image], Image.Image]] = EDITS,
          sources: Path = SOURCE_DIR) -> dict[str, list[Path]]:
    """Write the evaluation set into dest (which must not exist yet, or be empty).

    groups: use only the first N photos of `sources` (sorted by name); None: all of them.
    Returns group name -> written files; the distractors are under "distractors".
    """
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; pick another --dest, or --force to replace it")
    photos = sorted(sources.glob("*.jpg"))[:groups]
    if not photos:
        raise FileNotFoundError(f"no *.jpg photos in {sources}")
    if ORIGINAL in edits or DISTRACTOR_DIR in {p.stem for p in photos}:
        raise ValueError("'original' is not an edit and 'distractors' is not a photo name")
    written: dict[str, list[Path]] = {}
    for photo in photos:
        folder = dest / photo.stem
        folder.mkdir(parents=True)
        img = load_source(photo, max_side)
        versions = {ORIGINAL: img} | {name: fn(img) for name, fn in edits.items()}
        written[photo.stem] = [
            _samples.save_jpeg(fit(out, max_side), folder / f"{photo.stem}__{name}.jpg")
            for name, out in versions.items()]
    written[DISTRACTOR_DIR] = _write_distractors(dest, distractors, max_side)
    info = {"built_by": "scripts/make_evalset.py", "max_side": max_side,
            "groups": [p.stem for p in photos], "edits": [ORIGINAL, *edits],
            "distractors": distractors, "distractor_seed": DISTRACTOR_SEED}
    (dest / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return written


# ---- the robustness set: other photos than bulk_images/, and natural same-scene pairs --------
# Photos from packages that ship them: OpenCV's sample data (Debian opencv-doc, licensed with
# OpenCV, Apache-2.0 AND BSD-3-Clause per its debian/copyright "Files: *"), scikit-image's
# bundled data (licences in skimage/data/README.txt). None of them is one of bulk_images/.
OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (OpenCV samples/data, Debian opencv-doc)"
ROBUST_PHOTOS: dict[str, tuple[str, str]] = {  # name -> (where, file)
    "apple": ("opencv", "apple.jpg"), "baboon": ("opencv", "baboon.jpg"),
    "circuit_board": ("opencv", "board.jpg"), "building": ("opencv", "building.jpg"),
    "butterfly": ("opencv", "butterfly.jpg"), "fruits": ("opencv", "fruits.jpg"),
    "happy_fish": ("opencv", "HappyFish.jpg"), "home": ("opencv", "home.jpg"),
    "orange": ("opencv", "orange.jpg"), "shapes_lightbox": ("opencv", "pca_test1.jpg"),
    "smarties": ("opencv", "smarties.png"), "squirrel": ("opencv", "squirrel_cls.jpg"),
    "starry_night": ("opencv", "starry_night.jpg"), "desk_stuff": ("opencv", "stuff.jpg"),
    "licence_plate": ("opencv", "licenseplate_motion.jpg"),
    "street_scene": ("opencv", "ela_original.jpg"), "chick": ("opencv", "chicky_512.png"),
    "sudoku": ("opencv", "sudoku.png"),
    **{f"scene_text_{i}": ("opencv", f"../text/scenetext0{i}.jpg") for i in range(1, 7)},
    "gravel": ("skimage", "gravel.png"), "corner_text": ("skimage", "text.png"),
}
SKIMAGE_LICENCES = {  # as the skimage.data docstrings state them
    "gravel.png": "CC0 1.0 (CC0Textures Gravel04)",
    "text.png": "Public domain (Wikipedia File:Corner.png)",
    "motorcycle_left.png": "scikit-image data (BSD-3-Clause); Middlebury 2014 stereo, "
                           "Scharstein et al.",
    "motorcycle_right.png": "scikit-image data (BSD-3-Clause); Middlebury 2014 stereo, "
                            "Scharstein et al.",
}
# Two different photographs of one scene or object: stereo pairs, another viewpoint, another
# light, consecutive frames, an object and a scene that holds it.
NATURAL_PAIRS: dict[str, tuple[str, str, str]] = {  # name -> (where, first, second)
    "aloe_stereo": ("opencv", "aloeL.jpg", "aloeR.jpg"),
    "books_stereo": ("opencv", "left.jpg", "right.jpg"),
    "chessboard_stereo": ("opencv", "left01.jpg", "right01.jpg"),
    "motorcycle_stereo": ("skimage", "motorcycle_left.png", "motorcycle_right.png"),
    "graffiti_viewpoint": ("opencv", "graf1.png", "graf3.png"),
    "aerial_viewpoint": ("opencv", "aero1.jpg", "aero3.jpg"),
    "leuven_light": ("opencv", "leuvenA.jpg", "leuvenB.jpg"),
    "suzanne_views": ("opencv", "Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg"),
    "rubber_whale_frames": ("opencv", "rubberwhale1.png", "rubberwhale2.png"),
    "basketball_frames": ("opencv", "basketball1.png", "basketball2.png"),
    "box_in_scene": ("opencv", "box.png", "box_in_scene.png"),
}
NATURAL = "natural"  # the edit name of both members of a pair
# Real photos that belong to no group: a database of only synthetic distractors would make
# finding the one real photo too easy.
REAL_DISTRACTORS: dict[str, tuple[str, str]] = {
    "segmentation_0": ("opencv", "../hfs/data/000.jpg"),
    "segmentation_1": ("opencv", "../hfs/data/001.jpg"),
    "segmentation_2": ("opencv", "../hfs/data/002.jpg"),
    "plant": ("opencv", "../alphamat/input_images/plant.jpg"),
    "fuzzy_input": ("opencv", "../fuzzy/input.png"),
    "text_motion": ("opencv", "text_motion.jpg"), "text_defocus": ("opencv", "text_defocus.jpg"),
    "cards": ("opencv", "cards.png"), "notes": ("opencv", "notes.png"),
    "stanford": ("opencv", "../ximgproc/stanford.png"),
}


def source_file(where: str, file: str, opencv_data: Path | None) -> Path:
    if where == "bulk":
        return SOURCE_DIR / file
    if where == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data" / file
    if opencv_data is None:
        raise FileNotFoundError("the robustness set needs --opencv-data DIR (OpenCV's "
                                "samples/data, e.g. from `apt-get download opencv-doc`)")
    return opencv_data / file


def licence_of(where: str, file: str) -> str:
    if where == "bulk":
        return "see bulk_images/LICENSES.md"
    return OPENCV_LICENCE if where == "opencv" else SKIMAGE_LICENCES[file]


def build_robust(dest: Path, opencv_data: Path | None, distractors: int = DEFAULT_DISTRACTORS,
                 *, max_side: int = DEFAULT_MAX_SIDE,
                 edits: Mapping[str, Callable[[Image.Image], Image.Image]] = ROBUST_EDITS,
                 photos: Mapping[str, tuple[str, str]] = ROBUST_PHOTOS,
                 pairs: Mapping[str, tuple[str, str, str]] = NATURAL_PAIRS,
                 real_distractors: Mapping[str, tuple[str, str]] = REAL_DISTRACTORS,
                 with_shipped: bool = True) -> dict[str, list[Path]]:
    """The robustness set of issue #17: each photo (those of ROBUST_PHOTOS, and with_shipped
    the ones of bulk_images/ too) with the edits of ROBUST_EDITS, each natural pair as a group
    of two (edit name `natural`), real photos of no group and the synthetic distractors of
    `build` in distractors/."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; pick another --dest, or --force to replace it")
    if with_shipped:
        photos = {p.stem: ("bulk", p.name) for p in sorted(SOURCE_DIR.glob("*.jpg"))} | photos
    files_extra = {name: source_file(where, file, opencv_data)
                   for name, (where, file) in real_distractors.items()}
    files = {name: source_file(where, file, opencv_data) for name, (where, file) in photos.items()}
    for name, (where, a, b) in pairs.items():
        files[f"{name}_a"] = source_file(where, a, opencv_data)
        files[f"{name}_b"] = source_file(where, b, opencv_data)
    missing = [str(p) for p in [*files.values(), *files_extra.values()] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing source photos: {', '.join(missing[:3])}")
    written: dict[str, list[Path]] = {}
    for name in photos:
        folder = dest / name
        folder.mkdir(parents=True)
        img = load_source(files[name], max_side)
        versions = {ORIGINAL: img} | {edit: fn(img) for edit, fn in edits.items()}
        written[name] = [_samples.save_jpeg(fit(out, max_side), folder / f"{name}__{edit}.jpg")
                         for edit, out in versions.items()]
    for name in pairs:
        folder = dest / f"pair_{name}"
        folder.mkdir(parents=True)
        written[f"pair_{name}"] = [
            _samples.save_jpeg(load_source(files[f"{name}_{m}"], max_side),
                               folder / f"{name}_{m}__{NATURAL}.jpg") for m in "ab"]
    written[DISTRACTOR_DIR] = _write_distractors(dest, distractors, max_side) + [
        _samples.save_jpeg(load_source(path, max_side), dest / DISTRACTOR_DIR / f"real_{name}.jpg")
        for name, path in files_extra.items()]
    credits = {name: _credit(name, path, photos | real_distractors, pairs)
               for name, path in (files | files_extra).items()}
    info = {"built_by": "scripts/make_evalset.py --robust", "max_side": max_side,
            "groups": list(photos), "edits": [ORIGINAL, *edits], "natural_pairs": list(pairs),
            "real_distractors": list(real_distractors), "sources": credits,
            "distractors": distractors, "distractor_seed": DISTRACTOR_SEED}
    (dest / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return written


def _credit(name: str, path: Path, photos: Mapping[str, tuple[str, str]],
            pairs: Mapping[str, tuple[str, str, str]]) -> dict[str, str]:
    where = photos[name][0] if name in photos else pairs[name[:-2]][0]
    return {"file": f"{where}:{path.name}", "licence": licence_of(where, path.name)}


def _write_distractors(dest: Path, n: int, max_side: int) -> list[Path]:
    folder = dest / DISTRACTOR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return [_samples.save_jpeg(distractor(DISTRACTOR_SEED + i, max_side),
                               folder / f"distractor_{i:03d}.jpg") for i in range(n)]


# ---- the strong-edit sets of issue #25: two sets from different photos ------------------------
# Set a: bulk_images/, scikit-image's bundled photos that bulk_images/ does not already use, and
# the photos of Debian's mate-backgrounds. Set b: OpenCV's sample photos (Debian opencv-doc).
# scikit-learn's and matplotlib's sample photos (china, flower, grace_hopper) are already in
# bulk_images/, so they belong to set a; no photo is in both sets, so a rule tuned on one can be
# checked on the other.
OPENCV_DATA = Path("/work/data/ocv/usr/share/doc/opencv-doc/examples/data")
MATE_DATA = Path("/work/data/mate/usr/share/backgrounds/mate")
STRONG_MAX_SIDE = 768  # originals; queries may be up to QUERY_MAX_SIDE (the page is 1280 wide)
QUERY_MAX_SIDE = 1280
STRONG_DISTRACTORS = 60
MATE_NATURE = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
               "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")
STRONG_PHOTOS: dict[str, dict[str, tuple[str, str]]] = {
    "a": {
        **{f"skimage_{n}": ("skimage", f"{n}.png")
           for n in ("gravel", "text", "microaneurysms", "motorcycle_left", "horse")},
        **{f"mate_{n.lower()}": ("mate", f"nature/{n}.jpg") for n in MATE_NATURE},
        "mate_elephants": ("mate", "abstract/Elephants.jpg"),
        "mate_float": ("mate", "desktop/Float-into-MATE.png"),
    },
    "b": {
        **{n: ("opencv", f) for n, f in (
            ("happy_fish", "HappyFish.jpg"), ("apple", "apple.jpg"), ("baboon", "baboon.jpg"),
            ("circuit_board", "board.jpg"), ("building", "building.jpg"),
            ("butterfly", "butterfly.jpg"), ("chick", "chicky_512.png"),
            ("street_scene", "ela_original.jpg"), ("fruits", "fruits.jpg"), ("home", "home.jpg"),
            ("licence_plate", "licenseplate_motion.jpg"), ("football", "messi5.jpg"),
            ("orange", "orange.jpg"), ("shapes_lightbox", "pca_test1.jpg"),
            ("smarties", "smarties.png"), ("squirrel", "squirrel_cls.jpg"),
            ("starry_night", "starry_night.jpg"), ("desk_stuff", "stuff.jpg"),
            ("sudoku", "sudoku.png"), ("text_motion", "text_motion.jpg"),
            ("cards", "cards.png"), ("suzanne", "Blender_Suzanne1.jpg"),
            ("aloe", "aloeL.jpg"), ("books", "left.jpg"), ("graffiti", "graf1.png"),
            ("aerial", "aero1.jpg"), ("leuven", "leuvenA.jpg"),
            ("rubber_whale", "rubberwhale1.png"), ("basketball", "basketball1.png"),
            ("box_in_scene", "box_in_scene.png"), ("plant", "../alphamat/input_images/plant.jpg"),
            ("stanford", "../ximgproc/stanford.png"))},
        **{f"scene_text_{i}": ("opencv", f"../text/scenetext0{i}.jpg") for i in range(1, 7)},
        **{f"segmentation_{i}": ("opencv", f"../hfs/data/00{i}.jpg") for i in range(3)},
    },
}
STRONG_REAL_DISTRACTORS: dict[str, dict[str, tuple[str, str]]] = {
    "a": {"mate_flow": ("mate", "abstract/Flow.png"), "mate_gulp": ("mate", "abstract/Gulp.png"),
          "mate_stripes": ("mate", "desktop/Stripes.png"),
          "mate_warm": ("mate", "desktop/Ubuntu-Mate-Warm-no-logo.png"),
          "mate_green": ("mate", "desktop/GreenTraditional.jpg"),
          "skimage_logo": ("skimage", "logo.png")},
    "b": {"text_defocus": ("opencv", "text_defocus.jpg"), "notes": ("opencv", "notes.png"),
          "fuzzy_input": ("opencv", "../fuzzy/input.png"), "chessboard": ("opencv", "left01.jpg"),
          "linux_logo": ("opencv", "LinuxLogo.jpg"), "ellipses": ("opencv", "ellipses.jpg")},
}
SKIMAGE_LICENCES |= {
    "microaneurysms.png": "CC0 1.0 (Andreas Maier; HRF database, Budai et al. 2013)",
    "horse.png": "Public domain (openclipart 'horse' by marauder)",
    "logo.png": "scikit-image logo (BSD-3-Clause)",
}
# Debian's mate-backgrounds, debian/copyright: GPL-2+ with these holders, but the
# Ubuntu-Mate-*-no-logo pictures, which are CC-BY-SA-4.0 (strong_licence).
MATE_HOLDERS = {
    "Aqua": "2008 Charles Barbin", "LadyBird": "2008 Charles Barbin",
    "YellowFlower": "2008 Charles Barbin", "Garden": "2008 Charles Barbin",
    "Blinds": "2008 Lennart Poettering, Andrea Cimitan",
    "Dune": "2007 Marco Cogoni, 2008 Hylke Bons", "FreshFlower": "2005 Jens Ansorg",
    "GreenMeadow": "2005 Timothy Schellhase, 2008 Lapo Calamandrei",
    "RainDrops": "2008 blackcombwhistler07", "Storm": "2008 Sergey Nazarov",
    "TwoWings": "2008 Charles Barbin, 2008 Hylke Bons", "Wood": "2008 Jean-François Fortin Tam",
    "Elephants": "2020 Wyng Stancikaite", "Float-into-MATE": "2013 François Vogelweith, "
    "2014 Joseph Krieger", "Flow": "2008 Daniel Galleguillos, Hylke Bons",
    "Gulp": "2008 Daniel Galleguillos, Hylke Bons", "Stripes": "2010 Jakub Steiner",
    "GreenTraditional": "2012 l0r4n0n",
}
MISSING_DATA = {
    "opencv": "OpenCV's sample photos are missing ({path}): run `apt-get download opencv-doc && "
              "dpkg -x opencv-doc_*.deb /work/data/ocv`, or pass --opencv-data",
    "mate": "MATE's background photos are missing ({path}): run `apt-get download "
            "mate-backgrounds && dpkg -x mate-backgrounds_*.deb /work/data/mate`, or pass "
            "--mate-data",
}


@dataclass(frozen=True)
class DataDirs:
    """Where the photos of the Debian packages were unpacked."""

    opencv: Path = OPENCV_DATA
    mate: Path = MATE_DATA


def data_file(where: str, file: str, dirs: DataDirs) -> Path:
    """The source photo; a clear error naming the package when its data is not unpacked."""
    if where in ("opencv", "mate"):
        root = dirs.opencv if where == "opencv" else dirs.mate
        path = root / file
        if not path.is_file():
            raise FileNotFoundError(MISSING_DATA[where].format(path=path))
        return path
    return source_file(where, file, None)


def strong_licence(where: str, file: str) -> str:
    if where == "mate" and Path(file).name.startswith("Ubuntu-Mate-"):
        return "CC-BY-SA-4.0 (© 2014 Goce Mitevski; Debian mate-backgrounds, debian/copyright)"
    if where == "mate":
        return f"GPL-2+ (© {MATE_HOLDERS[Path(file).stem]}; Debian mate-backgrounds, " \
            "debian/copyright)"
    return licence_of(where, Path(file).name)


def strong_photos(source: str) -> dict[str, tuple[str, str]]:
    """The originals of set `source`: for set a, bulk_images/ too."""
    photos = STRONG_PHOTOS[source]
    if source == "a":
        photos = {p.stem: ("bulk", p.name) for p in sorted(SOURCE_DIR.glob("*.jpg"))} | photos
    return photos


def build_strong(dest: Path, source: str, dirs: DataDirs = DataDirs(),
                 distractors: int = STRONG_DISTRACTORS, *, max_side: int = STRONG_MAX_SIDE,
                 groups: int | None = None) -> dict[str, list[Path]]:
    """The strong-edit set `source` (a or b) of issue #25, in `build`'s layout: each photo's
    folder holds <name>__original.jpg and one <name>__<edit>.jpg per STRONG_EDITS entry; the
    distractors (synthetic and real photos of no group) are in distractors/. evalset.json holds
    the truth boxes of the geometric edits and every photo's licence."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; pick another --dest, or --force to replace it")
    photos = dict(list(strong_photos(source).items())[:groups])
    extra = STRONG_REAL_DISTRACTORS[source]
    files = {n: data_file(w, f, dirs) for n, (w, f) in (photos | extra).items()}
    written: dict[str, list[Path]] = {}
    truth: dict[str, dict[str, object]] = {}
    for name in photos:
        written[name], boxes = _strong_group(dest / name, name, load_source(files[name], max_side))
        truth |= boxes
    written[DISTRACTOR_DIR] = _write_distractors(dest, distractors, max_side) + [
        _samples.save_jpeg(load_source(files[n], max_side), dest / DISTRACTOR_DIR / f"real_{n}.jpg")
        for n in extra]
    credits = {n: {"file": f"{w}:{f}", "licence": strong_licence(w, f)}
               for n, (w, f) in (photos | extra).items()}
    info = {"built_by": f"scripts/make_evalset.py --strong --source {source}",
            "max_side": max_side, "query_max_side": QUERY_MAX_SIDE, "groups": list(photos),
            "edits": [ORIGINAL, *edits.STRONG_EDITS], "real_distractors": list(extra),
            "distractors": distractors, "distractor_seed": DISTRACTOR_SEED, "truth": truth,
            "sources": credits, "licences": sorted({c["licence"] for c in credits.values()})}
    (dest / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return written


def _strong_group(folder: Path, name: str,
                  img: Image.Image) -> tuple[list[Path], dict[str, dict[str, object]]]:
    """One photo's folder; the truth boxes keyed by the query's path relative to the set."""
    folder.mkdir(parents=True)
    out = [_samples.save_jpeg(img, folder / f"{name}__{ORIGINAL}.jpg")]
    truth: dict[str, dict[str, object]] = {}
    for edit, fn in edits.STRONG_EDITS.items():
        if edit in edits.STRONG_TRUTH:
            edited, box = edits.STRONG_TRUTH[edit](img)
            truth[f"{name}/{name}__{edit}.jpg"] = {"box": box.as_list(),
                                                   "of": edits.TRUTH_OF[edit]}
        else:
            edited = fn(img)
        # fit never shrinks a page (1280 wide): the box stays true for the file on disk.
        out.append(_samples.save_jpeg(fit(edited, QUERY_MAX_SIDE), folder / f"{name}__{edit}.jpg"))
    return out, truth


# ---- the near-duplicate pools of issue #25: true copies beside series of similar shots --------
# A duplicate finder must group a photo with its copies (resized, slightly cropped, brightened,
# re-saved) and must not group different shots of one scene: stereo pairs, a camera-calibration
# series (one chessboard from similar angles), viewpoint and lighting series, burst-like frames
# of a video. truth.json lists every copy pair and every similar pair (paths relative to pool/).
POOL_DIR = "pool"  # what `dupes` indexes; videos/ holds the clips the bursts were cut from
TRUTH = "truth.json"
EXACT_COPIES = 3  # photos that also get a byte-identical duplicate (the `exact` tier)
POOL_SERIES: dict[str, dict[str, list[tuple[str, str]]]] = {  # series name -> (where, file)s
    "a": {"motorcycle_stereo": [("skimage", "motorcycle_left.png"),
                                ("skimage", "motorcycle_right.png")]},
    "b": {
        "aloe_stereo": [("opencv", "aloeL.jpg"), ("opencv", "aloeR.jpg")],
        "books_stereo": [("opencv", "left.jpg"), ("opencv", "right.jpg")],
        "chessboard_calibration": [("opencv", f"{side}{i:02d}.jpg") for side in ("left", "right")
                                   for i in (*range(1, 10), *range(11, 15))],
        "graffiti_viewpoint": [("opencv", "graf1.png"), ("opencv", "graf3.png")],
        "aerial_viewpoint": [("opencv", "aero1.jpg"), ("opencv", "aero3.jpg")],
        "leuven_light": [("opencv", "leuvenA.jpg"), ("opencv", "leuvenB.jpg")],
        "suzanne_views": [("opencv", "Blender_Suzanne1.jpg"), ("opencv", "Blender_Suzanne2.jpg")],
        "rubber_whale_frames": [("opencv", "rubberwhale1.png"), ("opencv", "rubberwhale2.png")],
        "basketball_frames": [("opencv", "basketball1.png"), ("opencv", "basketball2.png")],
    },
}
# Burst-like series cut from videos: (where, file, first second, step, frames). "made": a clip
# this script films over the photo (a slow pan and zoom, things moving across, the light
# drifting); otherwise a real clip (vtest.avi: a fixed camera, people walking by).
POOL_BURSTS: dict[str, dict[str, tuple[str, str, float, float, int]]] = {
    "a": {"burst_garden": ("made", "mate_garden", 0.3, 0.7, 6),
          "burst_ladybird": ("made", "mate_ladybird", 0.3, 0.7, 6),
          "burst_twowings": ("made", "mate_twowings", 0.3, 0.7, 6)},
    "b": {"burst_pedestrians": ("opencv", "vtest.avi", 10.0, 1.0, 8),
          "burst_scene_text": ("made", "scene_text_2", 0.3, 0.7, 6)},
}
BURST_SECONDS, BURST_FPS = 4.5, 25


@dataclass
class PoolTruth:
    """What truth.json records: pairs of file names in pool/, and where each came from."""

    copies: list[list[str]] = field(default_factory=list)  # the same picture (exact included)
    exact: list[list[str]] = field(default_factory=list)  # the same bytes
    similar: list[list[str]] = field(default_factory=list)  # two shots of one scene
    series: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

    def credit(self, name: str, where: str, file: str) -> None:
        self.sources[name] = {"file": f"{where}:{file}", "licence": strong_licence(where, file)}

    def add_series(self, series: str, names: list[str]) -> None:
        """Every two shots of one series are a similar pair, none a copy pair."""
        self.similar.extend([a, b] for i, a in enumerate(names) for b in names[i + 1:])
        self.series[series] = names


def build_dupes_pool(dest: Path, source: str, dirs: DataDirs = DataDirs(), *,
                     max_side: int = STRONG_MAX_SIDE,
                     copies: int | None = None) -> dict[str, Any]:
    """The near-duplicate pool `source` (a or b): dest/pool/ holds the photos of the strong set
    `source` that are in no series (each with a near_copy, the first EXACT_COPIES also with a
    byte copy), a few photos of no pair, the series and the bursts; dest/truth.json the pairs.
    Returns what truth.json holds."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; pick another --dest, or --force to replace it")
    pool = dest / POOL_DIR
    pool.mkdir(parents=True)
    truth = PoolTruth()
    in_series = {f for series in POOL_SERIES[source].values() for _, f in series}
    _pool_photos(pool, source, dirs, max_side, copies, in_series, truth)
    for series, members in POOL_SERIES[source].items():
        truth.add_series(series, [
            _samples.save_jpeg(load_source(data_file(w, f, dirs), max_side),
                               pool / f"{series}_{i:02d}.jpg").name
            for i, (w, f) in enumerate(members)])
        for i, (where, file) in enumerate(members):
            truth.credit(f"{series}_{i:02d}", where, file)
    for series, spec in POOL_BURSTS[source].items():
        truth.add_series(series, _burst(dest, series, spec, strong_photos(source), dirs,
                                        max_side))
        where, file = strong_photos(source)[spec[1]] if spec[0] == "made" else spec[:2]
        truth.credit(series, where, file)
    info = {"built_by": f"scripts/make_evalset.py --dupes-pool --source {source}",
            "max_side": max_side, "images": len(list(pool.iterdir())), **asdict(truth),
            "licences": sorted({c["licence"] for c in truth.sources.values()})}
    (dest / TRUTH).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (dest / MARKER).write_text(json.dumps({"built_by": info["built_by"]}) + "\n", encoding="utf-8")
    return info


def _pool_photos(pool: Path, source: str, dirs: DataDirs, max_side: int, copies: int | None,
                 in_series: set[str], truth: PoolTruth) -> None:
    """The set's photos that are in no series, each with its copy, then photos of no pair.
    A photo a burst is filmed over is left out: its frames would be crops of it."""
    made = {b[1] for b in POOL_BURSTS[source].values() if b[0] == "made"}
    singles = [(n, w, f) for n, (w, f) in strong_photos(source).items()
               if n not in made and f not in in_series]
    for name, where, file in singles[:copies]:
        _copy_pair(pool, name, load_source(data_file(where, file, dirs), max_side), truth)
        truth.credit(name, where, file)
    for name, (where, file) in STRONG_REAL_DISTRACTORS[source].items():
        if file in in_series:  # one file twice would be an exact pair the truth does not list
            continue
        _samples.save_jpeg(load_source(data_file(where, file, dirs), max_side),
                           pool / f"single_{name}.jpg")
        truth.credit(name, where, file)


def _copy_pair(pool: Path, name: str, img: Image.Image, truth: PoolTruth) -> None:
    original = _samples.save_jpeg(img, pool / f"{name}.jpg")
    copy = _samples.save_jpeg(edits.near_copy(img), pool / f"{name}__copy.jpg")
    truth.copies.append([original.name, copy.name])
    if len(truth.exact) < EXACT_COPIES:  # the same bytes under another name: the `exact` tier
        twin = pool / f"{name}__exact.jpg"
        shutil.copyfile(original, twin)
        truth.copies.extend([other, twin.name] for other in (original.name, copy.name))
        truth.exact.append([original.name, twin.name])


def _burst(dest: Path, series: str, spec: tuple[str, str, float, float, int],
           photos: Mapping[str, tuple[str, str]], dirs: DataDirs, max_side: int) -> list[str]:
    """A series of frames `step` seconds apart, written to pool/ (names returned)."""
    kind, file, first, step, count = spec
    if kind == "made":
        where, name = photos[file]
        video = dest / "videos" / f"{series}.mp4"
        film_pan(load_source(data_file(where, name, dirs), 2 * max_side), video)
    else:
        video = data_file(kind, file, dirs)
    times = [first + k * step for k in range(count)]
    frames = video_frames(video, times)
    return [_samples.save_jpeg(fit(f, max_side), dest / POOL_DIR / f"{series}_{k:02d}.jpg").name
            for k, f in enumerate(frames)]


def film_pan(img: Image.Image, out: Path, size: tuple[int, int] = (768, 480)) -> Path:
    """A clip over a still photo that behaves like a burst of shots: the frame pans and zooms
    slowly, three blobs (birds, balls) cross it at their own speeds and the light drifts, so two
    frames a second apart show the same scene but are not one picture transformed."""
    import av  # PyAV: already a dependency (video indexing); imported here, only when filming

    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(np.asarray(img.resize((16, 16))).tobytes()))
    blobs = [(rng.uniform(0, 1, 2), rng.uniform(-0.25, 0.25, 2), rng.uniform(0.04, 0.09),
              tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(3)]
    n = round(BURST_SECONDS * BURST_FPS)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=BURST_FPS)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            frame = _pan_frame(img, i / n, size, blobs)
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def _pan_frame(img: Image.Image, t: float, size: tuple[int, int],
               blobs: list[tuple[np.ndarray, np.ndarray, float, tuple[int, ...]]]) -> Image.Image:
    """Frame at time t (0..1): a window of 70 % -> 55 % of the photo sliding right and down."""
    w, h = img.size
    frac = 0.70 - 0.15 * t
    cw = min(w, round(h * frac * size[0] / size[1]))
    ch = round(cw * size[1] / size[0])
    left = round((w - cw) * (0.2 + 0.5 * t))
    top = round((h - ch) * (0.3 + 0.3 * t))
    frame = img.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BILINEAR)
    frame = ImageEnhance.Brightness(frame).enhance(1.0 + 0.12 * t)
    draw = ImageDraw.Draw(frame)
    for start, speed, radius, colour in blobs:
        cx, cy = ((start + speed * t * BURST_SECONDS) % 1.0) * size
        r = radius * size[0]
        draw.ellipse((cx - r, cy - r * 0.7, cx + r, cy + r * 0.7), fill=colour)
    return frame


def video_frames(path: Path, times: list[float]) -> list[Image.Image]:
    """The first decoded frame at or after each time (seconds), as RGB images."""
    import av

    wanted = iter(sorted(times))
    target = next(wanted, None)
    frames: list[Image.Image] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if target is None:
                break
            if frame.time is not None and frame.time + 1e-6 >= target:
                frames.append(frame.to_image().convert("RGB"))
                target = next(wanted, None)
    if len(frames) < len(times):
        raise ValueError(f"{path}: only {len(frames)} of the {len(times)} frames wanted exist")
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dest", type=Path, required=True, help="folder to create")
    ap.add_argument("--distractors", type=int, default=DEFAULT_DISTRACTORS,
                    help="synthetic images that belong to no group (default %(default)s)")
    ap.add_argument("--groups", type=int, default=None,
                    help="use only the first N photos of bulk_images/ (default: all)")
    ap.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                    help="long side of every image, in px (default %(default)s)")
    ap.add_argument("--robust", action="store_true",
                    help="build the robustness set (issue #17): other photos, turns, random "
                         "crops, borders, ..., and natural same-scene pairs")
    ap.add_argument("--opencv-data", type=Path, default=None,
                    help="OpenCV's samples/data folder (for --robust), e.g. "
                         "usr/share/doc/opencv-doc/examples/data of the opencv-doc package")
    ap.add_argument("--strong", action="store_true",
                    help="build a strong-edit set (issue #25): crop to 25 %%, inside a web page, "
                         "photo of a screen, stacked edits, 80-px thumbnail, meme, turn + half "
                         "crop, occlusion; --source picks the photos")
    ap.add_argument("--dupes-pool", action="store_true",
                    help="build a near-duplicate pool (issue #25): true copies beside series of "
                         "similar shots, with truth.json; --source picks the photos")
    ap.add_argument("--source", choices=("a", "b"), default="a",
                    help="--strong/--dupes-pool: a = bulk_images/ + scikit-image + Debian "
                         "mate-backgrounds; b = Debian opencv-doc (default %(default)s)")
    ap.add_argument("--mate-data", type=Path, default=MATE_DATA,
                    help="--strong/--dupes-pool: usr/share/backgrounds/mate of the unpacked "
                         "mate-backgrounds package (default %(default)s)")
    ap.add_argument("--force", action="store_true",
                    help="replace --dest if it holds an evaluation set written by this script")
    args = ap.parse_args(argv)
    if args.distractors < 0 or (args.groups is not None and args.groups < 1) or args.max_side < 32:
        ap.error("--distractors must be >= 0, --groups >= 1, --max-side >= 32")
    if sum((args.robust, args.strong, args.dupes_pool)) > 1:
        ap.error("choose one of --robust, --strong, --dupes-pool")
    if args.force and args.dest.exists():
        if not (args.dest / MARKER).is_file():  # never delete a folder this script did not write
            print(f"error: {args.dest} has no {MARKER}: not an evaluation set written by this "
                  "script, so --force will not delete it", file=sys.stderr)
            return 2
        shutil.rmtree(args.dest)
    try:
        print(_run(args))
    except (FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> str:
    """Build what the flags ask for; a one-line summary."""
    dirs = DataDirs(args.opencv_data or OPENCV_DATA, args.mate_data)
    # The strong sets and pools have their own sizes: 768-px originals, 60 distractors.
    side = STRONG_MAX_SIDE if args.max_side == DEFAULT_MAX_SIDE else args.max_side
    if args.dupes_pool:
        info = build_dupes_pool(args.dest, args.source, dirs, max_side=side, copies=args.groups)
        return (f"wrote {info['images']} images to {args.dest / POOL_DIR}: "
                f"{len(info['copies'])} copy pairs, {len(info['similar'])} similar pairs")
    if args.strong:
        n = STRONG_DISTRACTORS if args.distractors == DEFAULT_DISTRACTORS else args.distractors
        written = build_strong(args.dest, args.source, dirs, n, max_side=side, groups=args.groups)
    elif args.robust:
        written = build_robust(args.dest, args.opencv_data, args.distractors,
                               max_side=args.max_side)
    else:
        written = build(args.dest, args.distractors, groups=args.groups, max_side=args.max_side)
    total = sum(len(paths) for paths in written.values())
    return f"wrote {total} images to {args.dest}: {len(written) - 1} groups and distractors"


if __name__ == "__main__":
    sys.exit(main())
