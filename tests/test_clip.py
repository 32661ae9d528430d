"""CLIP-family models through open_clip, and search by text.

No CLIP weights can be had here, so:
- the registry rows are checked against open_clip's own definitions (architecture, embedding
  size, the tag's preprocessing), and both decode roads against open_clip's own transform,
  pixel for pixel;
- the whole CLI runs on a tiny open_clip architecture (tests/clip_helpers.py) with a random
  state dict passed by --weights: index, search --text, mixed text + image, JSON (schema),
  CSV, HTML, info, incremental runs, dupes, eval;
- the ranking runs on a planted stub (each text maps to a known image's vector, at another
  length; images at varying lengths) against a numpy brute-force oracle;
- the errors: --text without a text encoder, CLIP weights missing offline, --pooling gem.
Whether text search finds the right photos with real weights is not measured here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from clip_helpers import DIM, MODEL, save_random_weights, tiny_spec
from conftest import run_cli
from imagefactory import make_photo_like, photo_like_image
from PIL import Image
from schema_helpers import strict

from deepvision.errors import ExitCode, UsageError
from deepvision.models import registry as models
from deepvision.models.descriptor import parse_descriptor

open_clip = pytest.importorskip("open_clip")
jsonschema = pytest.importorskip("jsonschema")

ROWS = {name: (dim, arch, tag) for name, dim, arch, tag, _ in models.CLIP_MODELS}


def schema(name: str) -> dict:
    return strict(name)  # every field deepvision writes is documented


# --------------------------------------------------------------------------- the registry rows


def test_the_issue_asks_for_these_rows_and_auto_never_picks_them():
    assert {"clip-vit-b-32", "clip-vit-b-16", "clip-vit-l-14", "siglip-vit-b-16"} <= set(ROWS)
    assert set(models.text_models()) == set(ROWS)
    assert not models.REGISTRY["resnet50"].has_text
    assert not models.REGISTRY["efficientnet-lite0"].has_text
    spec, _, _ = models.resolve(models.AUTO, None)  # offline: no ResNet50 weights here
    assert spec.name == "efficientnet-lite0"


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_matches_open_clips_definition(name):
    """Embedding size from the architecture config; the tag is one open_clip publishes; the
    preprocessing is the tag's own (mean/std/interpolation/resize mode) at the tower's size."""
    dim, arch, tag = ROWS[name]
    config = open_clip.get_model_config(arch)
    assert config is not None and config["embed_dim"] == dim
    published = open_clip.get_pretrained_cfg(arch, tag)
    assert published, (arch, tag)
    pre = models.get_spec(name).preprocess()
    assert pre.crop == pre.resize == config["vision_cfg"]["image_size"]
    assert pre.mean == tuple(published["mean"]) and pre.std == tuple(published["std"])
    assert pre.interpolation == published["interpolation"]
    assert pre.resize_mode == published["resize_mode"]


def test_tag_preprocessing_differs_where_open_clip_says_so():
    """Not one recipe for all: LAION's ViT-L-14 uses mean 0.5, SigLIP squashes."""
    b32 = models.get_spec("clip-vit-b-32").preprocess()
    l14 = models.get_spec("clip-vit-l-14").preprocess()
    sig = models.get_spec("siglip-vit-b-16").preprocess()
    assert b32.mean != l14.mean and l14.mean == (0.5, 0.5, 0.5)
    assert (b32.resize_mode, sig.resize_mode) == ("shortest", "squash")


def test_tiny_preprocessing_is_what_open_clip_records_on_the_built_model(tmp_path):
    from deepvision.models.openclip import from_open_clip
    from deepvision.models.weights import user_file

    spec = tiny_spec()
    trunk = spec.build(user_file(save_random_weights(tmp_path / "w.pt")))
    assert from_open_clip(trunk.clip.visual.preprocess_cfg) == spec.preprocess()


def _reference(name: str, image: Image.Image):
    """open_clip's own eval transform for the row's architecture and tag."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    _, arch, tag = ROWS[name]
    published = open_clip.get_pretrained_cfg(arch, tag)
    fields = {k: published[k] for k in ("mean", "std", "interpolation", "resize_mode")}
    cfg = PreprocessCfg(size=open_clip.get_model_config(arch)["vision_cfg"]["image_size"],
                        **fields)
    return image_transform_v2(cfg, is_train=False)(image)


@pytest.mark.parametrize("name", ["clip-vit-b-32", "clip-vit-l-14", "siglip-vit-b-16"])
@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_both_decode_roads_deliver_open_clips_pixels(tmp_path, name, decoder):
    """Files through the Embedder (Pillow road, or the device road on the CPU) with a network
    step that hands back the normalised input: what the model would see equals open_clip's
    transform of the same image (a landscape, a portrait, one big JPEG in draft mode)."""
    import torch

    from deepvision.models.weights import Weights
    from deepvision.pipeline.embedder import Embedder, EmbedOptions
    from deepvision.pipeline.gpudecode import make_decoder
    from deepvision.pipeline.transforms import pixel_stats

    spec = models.get_spec(name)
    pre = spec.preprocess()
    model = models.LoadedModel(spec, Weights(tmp_path, "sha256:none", "none"), pre,
                               torch.nn.Identity())
    mean, std = pixel_stats(pre)

    def inputs(_model, pixels, _device):
        return ((pixels.float() - mean) / std).flatten(1).numpy()

    files = [make_photo_like(tmp_path / "wide.jpg", 1, size=(400, 260), quality=95),
             make_photo_like(tmp_path / "tall.png", 2, size=(180, 300)),
             make_photo_like(tmp_path / "big.jpg", 3, size=(2400, 1600), quality=95)]
    device = torch.device("cpu")
    road = None if decoder == "pil" else make_decoder(decoder, device)
    embedder = Embedder(model, device, EmbedOptions(device="cpu", workers=0), road, inputs)
    got = {}
    for batch in embedder.embed_files([str(f) for f in files]):
        assert not batch.failures
        got.update({files[i]: v for i, v in zip(batch.items, batch.vectors, strict=True)})
    assert len(got) == 3
    for path, seen in got.items():
        with Image.open(path) as im:
            want = _reference(name, im.convert("RGB")).flatten().numpy()
        cos = float(seen @ want / np.linalg.norm(seen) / np.linalg.norm(want))
        assert cos >= 0.999 and np.abs(seen - want).mean() <= 0.03, (path.name, cos)


# --------------------------------------------------------------------------- the CLI, tiny model


@pytest.fixture
def tiny_clip(monkeypatch) -> str:
    """The tiny open_clip row, registered for this test only."""
    monkeypatch.setitem(models.REGISTRY, MODEL, tiny_spec())
    return MODEL


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return save_random_weights(tmp_path_factory.mktemp("clipw") / "tiny-clip.pt")


@pytest.fixture
def clip_index(cli, tiny_clip, weights, tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "photos"
    for i in range(6):
        make_photo_like(folder / f"img_{i}.{'jpg' if i % 2 else 'png'}", seed=40 + i,
                        size=(120, 90))
    idx = tmp_path / "idx"
    run = cli("index", folder, "--index-dir", idx, "--model", tiny_clip, "--weights", weights,
              "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["added"] == 6
    return folder, idx


def test_index_records_the_text_encoder(cli, clip_index):
    _, idx = clip_index
    manifest = json.loads((idx / "default" / "manifest.json").read_text())
    assert manifest["model"] == MODEL and manifest["dim"] == DIM
    assert manifest["text_encoder"] is True
    run = cli("info", "--index-dir", idx, "--json")
    assert run.exit_code == 0, run.stderr
    jsonschema.validate(run.json(), schema("info"))
    assert run.json()["text_encoder"] is True


def test_search_text_json_one_block_per_text_in_order(cli, clip_index):
    folder, idx = clip_index
    run = cli("search", "--text", "a red bicycle", "--text", "two dogs", "--index-dir", idx,
              "-k", "4", "--format", "json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    jsonschema.validate(doc, schema("search"))
    assert [(q["query"], q["kind"]) for q in doc["queries"]] == [
        ("a red bicycle", "text"), ("two dogs", "text")]
    for q in doc["queries"]:
        assert q["error"] is None and len(q["matches"]) == 4
        scores = [m["score"] for m in q["matches"]]
        assert scores == sorted(scores, reverse=True)
        assert all(Path(m["path"]).parent == folder for m in q["matches"])
    # Different texts embed differently (the text tower ran, not a constant).
    assert doc["queries"][0]["matches"] != doc["queries"][1]["matches"]


def test_text_scores_are_the_cosines_of_the_models_own_embeddings(cli, clip_index, weights):
    """The scores of `search --text` against open_clip's encode_text/encode_image computed
    here, directly, on open_clip's own transform of each file: the CLI ranks by cosine."""
    import torch
    from clip_helpers import ARCH

    folder, idx = clip_index
    net, _, transform = open_clip.create_model_and_transforms(ARCH)
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    tokenizer = open_clip.get_tokenizer(ARCH)
    files = sorted(folder.iterdir())
    with torch.inference_mode():
        images = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        img = torch.nn.functional.normalize(net.encode_image(images), dim=1).numpy()
        txt = torch.nn.functional.normalize(net.encode_text(tokenizer(["a red bicycle"])),
                                            dim=1).numpy()[0]
    want = dict(zip(map(str, files), (img @ txt).tolist(), strict=True))
    run = cli("search", "--text", "a red bicycle", "--index-dir", idx, "-k", "6",
              "--format", "json")
    got = {m["path"]: m["score"] for m in run.json()["queries"][0]["matches"]}
    assert got.keys() == want.keys()
    assert max(abs(got[p] - want[p]) for p in got) <= 2e-3, (got, want)
    ranked = [m["score"] for m in run.json()["queries"][0]["matches"]]
    assert ranked == sorted(ranked, reverse=True)


def test_mixed_text_and_image_queries_in_one_call(cli, clip_index):
    folder, idx = clip_index
    query = folder / "img_3.jpg"
    run = cli("search", query, "--text", "a lighthouse", "--index-dir", idx, "-k", "3",
              "--format", "json")
    assert run.exit_code == 0, run.stderr
    doc = run.json()
    jsonschema.validate(doc, schema("search"))
    image, text = doc["queries"]
    assert (image["kind"], image["query"]) == ("image", str(query))
    assert image["matches"][0]["path"] == str(query) and image["matches"][0]["score"] > 0.999
    assert (text["kind"], text["query"]) == ("text", "a lighthouse")
    assert len(text["matches"]) == 3


def test_csv_and_table_and_html_name_text_queries(cli, clip_index, tmp_path):
    folder, idx = clip_index
    run = cli("search", folder / "img_0.png", "--text", 'a "quoted", comma', "--index-dir", idx,
              "-k", "2", "--format", "csv")
    assert run.exit_code == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout)))
    assert rows[0] == ["query", "rank", "path", "score", "error", "kind", "timestamp",
                       "query_timestamp"]
    assert [r[5] for r in rows[1:]] == ["image", "image", "text", "text"]
    assert {r[6] for r in rows[1:]} == {""}  # photos only: no video times
    assert rows[3][0] == 'a "quoted", comma' and rows[3][1] == "1"

    table = cli("search", "--text", "a red bicycle", "--index-dir", idx, "-k", "2")
    assert table.exit_code == 0 and "text 'a red bicycle'" in table.stdout

    page = tmp_path / "report.html"
    run = cli("search", "--text", "<b>a cat</b>", folder / "img_1.jpg", "--index-dir", idx,
              "-k", "2", "--html", page)
    assert run.exit_code == 0, run.stderr
    html = page.read_text()
    assert "text &#x27;&lt;b&gt;a cat&lt;/b&gt;&#x27;" in html and "<b>a cat" not in html
    assert html.count('<figure class="query"') == 1  # the image query only; a text has no tile


def test_incremental_dupes_and_eval_work_on_a_clip_index(cli, clip_index, weights, tmp_path):
    folder, idx = clip_index
    again = cli("index", folder, "--index-dir", idx, "--workers", "0", "--json")
    assert again.exit_code == 0, again.stderr
    assert (again.json()["unchanged"], again.json()["embedded"]) == (6, 0)
    (folder / "img_0.png").unlink()
    make_photo_like(folder / "new.jpg", seed=99, size=(120, 90))
    changed = cli("index", folder, "--index-dir", idx, "--workers", "0", "--json").json()
    assert (changed["added"], changed["removed"], changed["embedded"]) == (1, 1, 1)
    dupes = cli("dupes", "--index-dir", idx, "--threshold", "0.5", "--format", "json")
    assert dupes.exit_code == 0, dupes.stderr

    evalset = tmp_path / "set"
    for g in range(2):
        (evalset / f"g{g}").mkdir(parents=True)
        for j in range(2):
            photo_like_image(10 * g + j).save(evalset / f"g{g}" / f"{j}.png")
    run = cli("eval", evalset, "--model", MODEL, "--weights", weights, "--workers", "0",
              "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["model"] == MODEL


# --------------------------------------------------------------------------- errors


def test_text_on_an_index_without_a_text_encoder_names_the_models_and_the_rebuild(
        cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    assert cli("index", photos, "--index-dir", idx, "--model", "tiny", "--workers", "0",
               ).exit_code == 0
    run = cli("search", "--text", "a red bicycle", "--index-dir", idx)
    assert run.exit_code == ExitCode.USAGE
    for name in ROWS:
        assert name in run.stderr
    assert "rebuild" in run.stderr and "--model clip-vit-b-32" in run.stderr
    assert "no text encoder" in run.stderr


def test_search_needs_images_or_text_and_text_is_not_empty(cli, clip_index):
    _, idx = clip_index
    assert cli("search", "--index-dir", idx).exit_code == ExitCode.USAGE
    run = cli("search", "--text", "  ", "--index-dir", idx)
    assert run.exit_code == ExitCode.USAGE and "empty" in run.stderr


def test_clip_without_weights_offline_is_exit_6_with_the_way_to_fetch_them(
        photos, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # nothing cached
    run = run_cli("index", photos, "--index-dir", tmp_path / "idx", "--model", "clip-vit-b-32",
                  "--workers", "0")
    assert run.exit_code == ExitCode.NO_WEIGHTS, run.stderr
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in run.stderr
    assert "--weights FILE" in run.stderr and "hf download" in run.stderr
    assert not (tmp_path / "idx" / "default" / "manifest.json").exists()


def test_weights_for_another_architecture_are_refused_with_exit_6(cli, tiny_clip, photos,
                                                                   tmp_path):
    wrong = tmp_path / "wrong.pt"
    import torch

    torch.save({"proj.weight": torch.zeros(3, 3)}, wrong)
    run = cli("index", photos, "--index-dir", tmp_path / "idx", "--model", tiny_clip,
              "--weights", wrong, "--workers", "0")
    assert run.exit_code == ExitCode.NO_WEIGHTS
    assert "cannot load weights" in run.stderr


@pytest.mark.parametrize("option", [("--pooling", "gem"), ("--scales", "1,0.7")])
def test_pooling_and_scales_do_not_apply_to_clip(cli, photos, tmp_path, option):
    run = cli("index", photos, "--index-dir", tmp_path / "idx", "--model", "clip-vit-b-32",
              *option)
    assert run.exit_code == ExitCode.USAGE and "one embedding per image" in run.stderr
    with pytest.raises(UsageError):  # also where a service builds the model itself
        models.check_descriptor(models.get_spec("clip-vit-b-16"), parse_descriptor("gem"))
    clip = models.get_spec("clip-vit-b-16")  # options left out: the model's own default
    models.check_descriptor(clip, parse_descriptor(flip=True,
                                                   base=models.default_descriptor(clip)))
    assert models.default_descriptor(clip).pooling == "avg"  # #17's default is not for CLIP


def test_old_manifest_without_the_field_reads_as_no_text_encoder(tmp_path):
    from deepvision.errors import CorruptIndexError
    from deepvision.store.manifest import Manifest, parse_manifest

    made = Manifest("n", "efficientnet-lite0", "sha256:0", "o", "/w", 1280, "catalog-x.sqlite")
    data = json.loads(made.to_json())
    del data["text_encoder"]
    assert parse_manifest(json.dumps(data), tmp_path, "rebuild").text_encoder is False
    data["text_encoder"] = "yes"
    with pytest.raises(CorruptIndexError):
        parse_manifest(json.dumps(data), tmp_path, "rebuild")


def test_launcher_runs_the_real_cli_with_the_tiny_row(tmp_path, weights, photos):
    """tests/clip_helpers.py as a program: what the serve tests start."""
    import subprocess
    import sys

    from clip_helpers import HERE

    proc = subprocess.run([sys.executable, str(HERE / "clip_helpers.py"), "index", photos,
                           "--index-dir", tmp_path / "idx", "--model", MODEL, "--weights",
                           weights, "--workers", "0", "-q"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
