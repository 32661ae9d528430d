"""Write the sample data shipped with deepvision: real photos and edited copies of a few of them.

    python scripts/make_samples.py

bulk_images/     photos to index: real photographs (and a few large, clearly different regions of
                 them) taken from files bundled inside the wheels of scikit-image, scikit-learn and
                 matplotlib, downscaled to at most 1024 px, JPEG quality 90, plus LICENSES.md.
that_one_image/  edited copies of some of those photos (crop, small low-quality JPEG, brighter,
                 mirrored, zoomed), each one of which a search should trace back to its original.

Only files that ship inside the installed packages are read, never their download-on-demand data
(pooch), so this runs offline. The output is deterministic; re-running overwrites it.

The test suite imports this file too (tests/test_real_weights.py): `write_bulk`, `EDITS` and
`write_edits` are the reusable parts.
"""

import importlib.util
import io
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

REPO_ROOT = Path(__file__).resolve().parent.parent
BULK_DIR = REPO_ROOT / "bulk_images"
EDITED_DIR = REPO_ROOT / "that_one_image"
LICENSE_FILE = "LICENSES.md"

JPEG_QUALITY = 90
MAX_SIDE = 1024  # keeps bulk_images/ at a few MB, still far above the 224 px model input

# Where each package keeps its bundled sample files, relative to the package folder.
DATA_FOLDERS = {
    "skimage": "data",
    "sklearn": "datasets/images",
    "matplotlib": "mpl-data/sample_data",
}
PIP_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}

Box = tuple[int, int, int, int]  # (left, top, right, bottom) in the original file's pixels


@dataclass(frozen=True)
class Photo:
    name: str  # output file stem: descriptive, unique
    package: str  # key of DATA_FOLDERS
    file: str  # file name inside the package's data folder
    origin: str  # how the package itself exposes the file
    credit: str  # photographer / original source
    licence: str
    box: Box | None = None  # a region of a larger photo; None = the whole photo


# Photos split into regions (see `region`): the regions do not overlap, so no shipped photo is
# a crop of another one, which a reverse image search would rightly call the same picture.
_ASTRONAUT = Photo(
    "astronaut", "skimage", "astronaut.png", "skimage.data.astronaut()",
    "NASA (portrait of astronaut Eileen Collins), NASA Great Images database, "
    "https://flic.kr/p/r9qvLn",
    "Public domain (NASA; no known copyright restrictions)",
)
_CHINA = Photo(
    "china", "sklearn", "china.jpg", "sklearn.datasets.load_sample_image('china.jpg')",
    "Daniel Büchele (Flickr user danielbuechele), "
    "https://www.flickr.com/photos/danielbuechele/6061409035/",
    "CC BY 2.0, https://creativecommons.org/licenses/by/2.0/ (cropped and re-encoded)",
)
_HOPPER = Photo(
    "grace_hopper", "matplotlib", "grace_hopper.jpg",
    "matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
    "Official U.S. Navy portrait of Commodore Grace M. Hopper (1984); "
    "added to matplotlib as a public-domain image (matplotlib PR #1599)",
    "Public domain (work of the U.S. federal government)",
)
_CAMERA = Photo(
    "camera", "skimage", "camera.png", "skimage.data.camera()",
    "Lav Varshney", "CC0 1.0 (public domain dedication)",
)


def region(photo: Photo, name: str, box: Box) -> Photo:
    return replace(photo, name=name, box=box)


# Every entry is a real photograph whose licence allows redistribution, as documented by the
# package it comes from. Left out on purpose: drawings and synthetic images (logo, colour wheel,
# horse silhouette, Shepp-Logan phantom, chessboards, text, binary blobs), the scanned page,
# images whose licence the package does not document (moon; the Middlebury stereo motorcycle,
# whose right view is a near-duplicate of the left anyway), images too small to be useful
# (microaneurysms, the 25 px LFW faces), and photos an edited copy of another one would be
# mistaken for by EfficientNet-Lite0: gravel (a small low-quality copy of it matches grass
# best), a close-up of the retina's optic disc (crops of the whole retina match it best), and
# halves of hubble_deep_field, which look alike. Regions (box) are used only where they show
# something clearly different from the rest of the photo.
PHOTOS: tuple[Photo, ...] = (
    region(_ASTRONAUT, "astronaut_eileen_collins", (0, 0, 345, 512)),
    region(_ASTRONAUT, "space_shuttle_model", (345, 0, 512, 290)),
    region(_ASTRONAUT, "space_helmet", (345, 290, 512, 512)),
    Photo("brick_wall", "skimage", "brick.png", "skimage.data.brick()",
          "CC0Textures 'Bricks25' (perspective-corrected by scikit-image)",
          "CC0 1.0 (public domain dedication)"),
    region(_CAMERA, "cameraman", (0, 0, 340, 512)),
    region(_CAMERA, "campus_skyline", (340, 0, 512, 300)),
    Photo("chelsea_cat", "skimage", "chelsea.png", "skimage.data.chelsea()",
          "Stefan van der Walt", "CC0 1.0 (public domain dedication)"),
    Photo("clock_motion_blur", "skimage", "clock_motion.png", "skimage.data.clock()",
          "Stefan van der Walt", "Public domain (released by the photographer)"),
    Photo("coffee_cup", "skimage", "coffee.png", "skimage.data.coffee()",
          "Rachel Michetti, courtesy of Pikolo Espresso Bar", "CC0 1.0 (public domain dedication)"),
    Photo("greek_coins", "skimage", "coins.png", "skimage.data.coins()",
          "Brooklyn Museum Collection, "
          "https://www.brooklynmuseum.org/opencollection/archives/image/51611",
          "No known copyright restrictions"),
    Photo("grass", "skimage", "grass.png", "skimage.data.grass()",
          "DeviantArt user linolafett, 'Grass-01'", "CC0 1.0 (public domain dedication)"),
    Photo("hubble_deep_field", "skimage", "hubble_deep_field.jpg",
          "skimage.data.hubble_deep_field()",
          "NASA, Hubble eXtreme Deep Field (HubbleSite news release 2012-37)",
          "Public domain (NASA)"),
    Photo("colon_tissue_ihc", "skimage", "ihc.png", "skimage.data.immunohistochemistry()",
          "Center for Microscopy And Molecular Imaging (CMMI)",
          "No known copyright restrictions"),
    Photo("cell_phase_image", "skimage", "cell.png", "skimage.data.cell()",
          "Paul Müller et al., quantitative phase image (Optics Express 26(8), 2018)",
          "CC0 1.0 (public domain dedication)"),
    Photo("retina_fundus", "skimage", "retina.jpg", "skimage.data.retina()",
          "Mikael Häggström, Wikimedia Commons 'Fundus photograph of normal left eye.jpg'",
          "CC0 1.0 (public domain dedication)"),
    Photo("rocket_launch", "skimage", "rocket.jpg", "skimage.data.rocket()",
          "SpaceX, launch of DSCOVR on Falcon 9 (2015), "
          "https://www.flickr.com/photos/spacexphotos/16511594820/",
          "Public domain (released by SpaceX in 2015; see scikit-image issue #5095)"),
    region(_CHINA, "summer_palace_pagoda", (0, 0, 400, 427)),
    region(_CHINA, "summer_palace_lakeside", (400, 0, 640, 427)),
    Photo("dahlia_flower", "sklearn", "flower.jpg",
          "sklearn.datasets.load_sample_image('flower.jpg')",
          "Flickr user vultilion, https://www.flickr.com/photos/vultilion/6056698931/",
          "CC BY 2.0, https://creativecommons.org/licenses/by/2.0/ (re-encoded)"),
    region(_HOPPER, "grace_hopper_portrait", (0, 0, 512, 360)),
    region(_HOPPER, "grace_hopper_uniform", (0, 360, 512, 600)),
)


def data_file(package: str, file: str) -> Path:
    """Path of a sample file bundled in an installed package.

    find_spec locates the package without importing it (sklearn and matplotlib are slow to
    import), and reading the bundled file directly can never trigger a download.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed: pip install {PIP_NAMES[package]}")
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FOLDERS[package] / file
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the installed {PIP_NAMES[package]}")
    return path


def load_photo(photo: Photo, max_side: int = MAX_SIDE) -> Image.Image:
    """The photo (or its region) as an L or RGB image whose long side is at most max_side."""
    with Image.open(data_file(photo.package, photo.file)) as im:
        img = im.convert("L" if im.mode in ("L", "I;16", "I") else "RGB")
    if photo.box is not None:
        img = img.crop(photo.box)
    scale = max_side / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def save_jpeg(img: Image.Image, path: Path) -> Path:
    # An image that is already the result of a JPEG encode (the low-quality edit) keeps its
    # quantisation tables, so the file on disk really is the quality-30 JPEG and not a re-encode
    # at quality 90. Everything else is written at JPEG_QUALITY. No EXIF or ICC is written.
    quality: int | str = "keep" if getattr(img, "format", None) == "JPEG" else JPEG_QUALITY
    img.save(path, "JPEG", quality=quality, optimize=True)
    return path


def write_bulk(dest: Path, max_side: int = MAX_SIDE) -> list[Path]:
    """Write every photo in PHOTOS to dest as <name>.jpg; return the paths in PHOTOS order."""
    dest.mkdir(parents=True, exist_ok=True)
    return [save_jpeg(load_photo(p, max_side), dest / f"{p.name}.jpg") for p in PHOTOS]


# ---- edits: each a different, typical way a copy of a photo drifts from its original --------


def crop_centre_70(img: Image.Image) -> Image.Image:
    """Keep the central 70 % of the width and of the height."""
    w, h = img.size
    cw, ch = round(w * 0.7), round(h * 0.7)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def third_size_q30(img: Image.Image) -> Image.Image:
    """One third of the size, then a JPEG round trip at quality 30 (a messenger-app thumbnail)."""
    small = img.resize((max(1, round(img.width / 3)), max(1, round(img.height / 3))),
                       Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=30)
    buf.seek(0)
    out = Image.open(buf)
    out.load()  # decoded now, so the buffer may go; format stays "JPEG" for save_jpeg
    return out


def brighten_40(img: Image.Image) -> Image.Image:
    """40 % brighter (highlights clip, as with an over-exposed re-shoot or a filter)."""
    return ImageEnhance.Brightness(img).enhance(1.4)


def flip_horizontal(img: Image.Image) -> Image.Image:
    """Mirrored left to right."""
    return ImageOps.mirror(img)


def zoom_60(img: Image.Image) -> Image.Image:
    """An off-centre 60 % crop (upper left of centre) scaled back up to the original size."""
    w, h = img.size
    box = (round(w * 0.15), round(h * 0.1), round(w * 0.75), round(h * 0.7))
    return img.crop(box).resize((w, h), Image.Resampling.BICUBIC)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop70": crop_centre_70,
    "third_q30": third_size_q30,
    "bright140": brighten_40,
    "hflip": flip_horizontal,
    "zoom60": zoom_60,
}

# The edited copies shipped in that_one_image/: one edit each, on different photos.
THAT_ONE_IMAGE: tuple[tuple[str, str], ...] = (
    ("chelsea_cat", "crop70"),
    ("coffee_cup", "third_q30"),
    ("rocket_launch", "bright140"),
    ("grace_hopper_portrait", "hflip"),
    ("summer_palace_pagoda", "zoom60"),
)


def edited_name(source: Path, edit: str) -> str:
    """chelsea_cat.jpg + crop70 -> chelsea_cat__crop70.jpg: the source is readable in the name."""
    return f"{source.stem}__{edit}.jpg"


def write_edits(sources: Iterable[Path], dest: Path,
                edits: Mapping[str, Callable[[Image.Image], Image.Image]] = EDITS) -> list[Path]:
    """Apply every edit to every source, writing dest/<stem>__<edit>.jpg."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        with Image.open(source) as im:
            im.load()
            for edit, fn in edits.items():
                written.append(save_jpeg(fn(im), dest / edited_name(source, edit)))
    return written


# ---- licences ------------------------------------------------------------------------------


def licenses_markdown() -> str:
    intro = f"""# Sample photos: sources and licences

Written by `scripts/make_samples.py` (do not edit by hand; re-run the script).

Every photo comes from a sample file bundled in a Python package; author and licence are as that
package documents them. All were converted to JPEG (quality {JPEG_QUALITY}) and downscaled to at
most {MAX_SIDE} px on the long side. A region is the (left, top, right, bottom) box of the
original, in its pixels. The CC BY 2.0 photos are credited here as that licence requires, with
the changes made to them.
"""
    lines = [
        intro,
        "| File | From | Author / source | Licence |",
        "| --- | --- | --- | --- |",
    ]
    for p in PHOTOS:
        where = f", region {p.box}" if p.box else ""
        lines.append(f"| `{p.name}.jpg` | `{p.origin}`{where} | {p.credit} | {p.licence} |")
    lines += [
        "",
        "## that_one_image/",
        "",
        "Edited copies of photos above, to try a search with: each should find its source here at",
        "rank 1. They carry the licence of their source.",
        "",
    ]
    for stem, edit in THAT_ONE_IMAGE:
        doc = (EDITS[edit].__doc__ or edit).strip().rstrip(".")
        lines.append(f"- `{stem}__{edit}.jpg`: {doc[0].lower() + doc[1:]}.")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    # Start from empty folders, so a photo dropped from PHOTOS does not linger as a stale file.
    for folder in (BULK_DIR, EDITED_DIR):
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()
    bulk = write_bulk(BULK_DIR)
    (BULK_DIR / LICENSE_FILE).write_text(licenses_markdown(), encoding="utf-8")
    by_stem = {p.stem: p for p in bulk}
    edited = [path for stem, edit in THAT_ONE_IMAGE
              for path in write_edits([by_stem[stem]], EDITED_DIR, {edit: EDITS[edit]})]
    size = sum(p.stat().st_size for p in bulk + edited)
    print(f"wrote {len(bulk)} photos to {BULK_DIR.name}/ and {len(edited)} edited copies to "
          f"{EDITED_DIR.name}/ ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
