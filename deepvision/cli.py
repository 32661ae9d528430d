"""Typer CLI. Validates options, calls the services, maps DeepVisionError to exit codes.

Heavy libraries (torch, faiss) are imported inside the services, so `--help` is instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deepvision import __version__
from deepvision.decode import DEFAULT_MAX_MEGAPIXELS
from deepvision.dupes import DEFAULT_THRESHOLD as DEFAULT_DUPE_THRESHOLD
from deepvision.errors import DeepVisionError, ExitCode, UsageError
from deepvision.index import parse_size, plan_index
from deepvision.models import AUTO, MODEL_CHOICES, get_spec, parse_descriptor
from deepvision.render import Reporter

app = typer.Typer(
    name="deepvision",
    help="Reverse image search: index folders of images, then find the most similar ones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


OutputFormat = Annotated[Format, typer.Option("--format", help="table, json or csv.")]
HtmlFile = Annotated[Optional[Path], typer.Option(
    "--html", help="Also write an HTML gallery here (thumbnails go to <name>_files/ beside it).")]


MODEL_HELP = f"Backbone: {', '.join(MODEL_CHOICES)}."

# ---- shared options --------------------------------------------------------------------------

IndexDir = Annotated[Path, typer.Option(
    "--index-dir", envvar="DEEPVISION_INDEX_DIR",
    help="Folder that holds the indexes (one sub-folder per --name).")]
Name = Annotated[str, typer.Option("--name", help="Index name inside --index-dir.")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", help="Model weights file (a state dict), e.g. resnet50-11ad3fa6.pth.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", min=0, help="Images per batch; 0: 32 on the CPU, on CUDA sized from free "
    "GPU memory (16-512).")]
Workers = Annotated[int, typer.Option(
    "--workers", min=-1, help="Decode worker processes; -1: one per core (at most 8 on the "
    "CPU, 16 with CUDA, leaving one core to feed the GPU), 0: none.")]
MaxMP = Annotated[float, typer.Option(
    "--max-megapixels", min=0.01, help="Skip images larger than this (decompression bombs).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (cron).")]
IndexType = Annotated[Optional[str], typer.Option(
    "--index-type", help="FAISS structure: auto, flat, ivf, ivfpq or hnsw (default: the index's "
    "own; auto for a new one).", show_default=False)]


class DecoderChoice(str, Enum):
    auto = "auto"
    pil = "pil"
    torchvision = "torchvision"
    nvimgcodec = "nvimgcodec"


Decoder = Annotated[DecoderChoice, typer.Option(
    "--decoder", help="JPEG decoding. auto: on CUDA nvimgcodec (NVIDIA nvImageCodec, if "
    "installed) else torchvision (nvJPEG), on the CPU pil (Pillow in the --workers processes). "
    "Other formats, and JPEGs a GPU decoder rejects, are always decoded by Pillow.")]
Compile = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the network: faster on big GPU runs, costs a one-off "
    "compile (see bench/RESULTS.md).")]
Pooling = Annotated[Optional[str], typer.Option(
    "--pooling", help="Feature pooling: avg or gem (default avg; an existing index keeps its "
    "own).", show_default=False)]
Flip = Annotated[Optional[bool], typer.Option(
    "--flip/--no-flip", help="Also embed the mirror image (flip-invariant descriptor).",
    show_default=False)]
Scales = Annotated[Optional[str], typer.Option(
    "--scales", help="Image scales whose descriptors are summed, e.g. 1,0.707 (default 1).",
    show_default=False)]
MaxMemory = Annotated[Optional[str], typer.Option(
    "--max-memory", help="Memory budget for the FAISS structure, e.g. 8G (default: half the "
    "RAM); `auto` switches to compressed types to stay within it.", show_default=False)]


def _fail(rep: Reporter, exc: DeepVisionError) -> typer.Exit:
    rep.error(str(exc))
    return typer.Exit(int(exc.exit_code))


def _embed_options(device: str, batch_size: int, workers: int, max_mp: float,
                   decoder: DecoderChoice, compile: bool = False):
    """EmbedOptions from the shared options; a decoder that cannot work here fails now,
    before any folder is scanned or model loaded."""
    from deepvision.devicedecode import decoder_available
    from deepvision.embed import EmbedOptions

    problem = decoder_available(decoder.value)
    if problem:
        raise UsageError(problem)
    return EmbedOptions(device=device, batch_size=batch_size, workers=workers,
                        max_megapixels=max_mp, compile=compile, decoder=decoder.value)


def _emit(result: Any, output: Format, html: Path | None, rep: Reporter,
          as_json: Callable[[Any], str], as_csv: Callable[[Any], str],
          table: Callable[[Any], None], gallery: Callable[[Any, Path], None]) -> None:
    """Results on stdout in the chosen format, plus the HTML gallery when asked for."""
    if output is Format.json:
        typer.echo(as_json(result))
    elif output is Format.csv:
        typer.echo(as_csv(result), nl=False)
    else:
        table(result)
    if html is not None:
        gallery(result, html)
        rep.info(f"HTML report: {html}")


def _structure_options(index_type: str | None, max_memory: str | None) -> int | None:
    """Validate --index-type (before any heavy work) and turn --max-memory into bytes."""
    if index_type is not None:
        plan_index(index_type, 0, 1)
    return parse_size(max_memory) if max_memory else None


def _check_folders(paths: list[Path]) -> None:
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p} does not exist (check the path)")
        if not p.is_dir():
            raise UsageError(f"{p} is not a folder; pass the folder that holds the images")


def _check_weights(weights: Path | None) -> None:
    if weights is not None and not weights.is_file():
        raise UsageError(f"--weights {weights}: no such file")


# ---- commands --------------------------------------------------------------------------------


def _index_command(rebuild: bool, dirs: list[Path], index_dir: Path, name: str, model: str,
                   weights: Path | None, device: str, batch_size: int, workers: int,
                   max_megapixels: float, include: list[str], exclude: list[str], hidden: bool,
                   retry_failed: bool, commit_every: int, wait: bool, quiet: bool,
                   as_json: bool, index_type: str | None = None,
                   max_memory: str | None = None, pooling: str | None = None,
                   flip: bool | None = None, scales: str | None = None,
                   compile: bool = False, decoder: DecoderChoice = DecoderChoice.auto) -> None:
    from deepvision.discover import Filters
    from deepvision.indexer import IndexRequest, run_index
    from deepvision.render import index_summary_json, index_summary_text, print_failures
    from deepvision.storage import Location

    rep = Reporter(quiet=quiet or as_json)
    try:
        _check_folders(dirs)
        _check_weights(weights)
        if model != AUTO:
            get_spec(model)  # unknown names fail here, before any heavy work
        budget = _structure_options(index_type, max_memory)
        asked = pooling is not None or flip is not None or scales is not None
        descriptor = parse_descriptor(pooling or "avg", bool(flip), scales) if asked else None
        loc = Location(index_dir, name)
        rep.info(f"{'rebuild' if rebuild else 'index'} {loc.dir}: "
                 f"{', '.join(map(str, dirs)) or 'recorded folders'}")
        req = IndexRequest(
            roots=tuple(dirs), location=loc, model=model, weights=weights,
            embed=_embed_options(device, batch_size, workers, max_megapixels, decoder, compile),
            filters=Filters(tuple(include), tuple(exclude), hidden),
            retry_failed=retry_failed, commit_every=commit_every, wait=wait,
            index_type=index_type, max_memory=budget, descriptor=descriptor)
        summary = run_index(req, rep, rebuild=rebuild)
    except DeepVisionError as exc:
        raise _fail(rep, exc) from None
    print_failures(rep, summary.failures)
    rep.info(index_summary_text(summary))
    if as_json:
        typer.echo(index_summary_json(summary))
    if summary.failures:
        raise typer.Exit(int(ExitCode.PARTIAL))


@app.command()
def index(
    dirs: Annotated[list[Path], typer.Argument(
        help="Folders to index (recursively).", show_default=False)],
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    model: Annotated[str, typer.Option(
        help=MODEL_HELP + " An existing index keeps its own.")] = "auto",
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    include: Annotated[list[str], typer.Option(
        help="Only paths (relative to DIR) matching this glob; repeatable.")] = [],  # noqa: B006
    exclude: Annotated[list[str], typer.Option(
        help="Skip paths (relative to DIR) matching this glob; repeatable.")] = [],  # noqa: B006
    hidden: Annotated[bool, typer.Option(help="Also index dot-files and dot-folders.")] = False,
    retry_failed: Annotated[bool, typer.Option(
        help="Retry files that failed before even if unchanged.")] = False,
    commit_every: Annotated[int, typer.Option(
        min=1, help="Commit to disk every N embedded images (crash safety).")] = 1000,
    wait: Annotated[bool, typer.Option(help="Wait for another run on this index.")] = False,
    index_type: IndexType = None,
    max_memory: MaxMemory = None,
    pooling: Pooling = None,
    flip: Flip = None,
    scales: Scales = None,
    compile: Compile = False,
    decoder: Decoder = DecoderChoice.auto,
    quiet: Quiet = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Add new and changed images under DIR to the index; drop deleted ones."""
    _index_command(False, dirs, index_dir, name, model, weights, device, batch_size,
                   workers, max_megapixels, include, exclude, hidden, retry_failed,
                   commit_every, wait, quiet, as_json, index_type, max_memory, pooling, flip,
                   scales, compile, decoder)


@app.command()
def rebuild(
    dirs: Annotated[Optional[list[Path]], typer.Argument(
        help="Folders to index; default: the ones the index was built from.",
        show_default=False)] = None,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "auto",
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    include: Annotated[list[str], typer.Option(help="Only paths matching this glob.")] = [],  # noqa: B006
    exclude: Annotated[list[str], typer.Option(help="Skip paths matching this glob.")] = [],  # noqa: B006
    hidden: Annotated[bool, typer.Option(help="Also index dot-files and dot-folders.")] = False,
    commit_every: Annotated[int, typer.Option(min=1, help="Commit every N images.")] = 1000,
    wait: Annotated[bool, typer.Option(help="Wait for another run on this index.")] = False,
    index_type: IndexType = None,
    max_memory: MaxMemory = None,
    from_vectors: Annotated[bool, typer.Option(
        "--from-vectors", help="Rebuild only the FAISS structure from the stored vectors (no "
        "model, no decoding), e.g. with another --index-type.")] = False,
    pooling: Pooling = None,
    flip: Flip = None,
    scales: Scales = None,
    compile: Compile = False,
    decoder: Decoder = DecoderChoice.auto,
    quiet: Quiet = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Re-extract everything into a fresh index, then swap it in atomically."""
    if from_vectors:
        _restructure(index_dir, name, index_type, max_memory, wait, quiet, as_json)
        return
    _index_command(True, dirs or [], index_dir, name, model, weights, device, batch_size,
                   workers, max_megapixels, include, exclude, hidden, True, commit_every, wait,
                   quiet, as_json, index_type, max_memory, pooling, flip, scales, compile,
                   decoder)


def _restructure(index_dir: Path, name: str, index_type: str | None, max_memory: str | None,
                 wait: bool, quiet: bool, as_json: bool) -> None:
    from dataclasses import asdict

    from deepvision.indexer import restructure
    from deepvision.storage import Location

    rep = Reporter(quiet=quiet or as_json)
    try:
        budget = _structure_options(index_type, max_memory)
        done = restructure(Location(index_dir, name), index_type, budget, wait)
    except DeepVisionError as exc:
        raise _fail(rep, exc) from None
    rep.info(f"rebuilt {done.index_type} structure ({done.index_factory}) over {done.vectors} "
             f"stored vectors in {done.seconds:.1f} s, without the model")
    if as_json:
        typer.echo(json.dumps(asdict(done), indent=2))


@app.command()
def search(
    paths: Annotated[list[Path], typer.Argument(
        help="Query image(s) or folder(s) of query images.", show_default=False)],
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Matches per query.")] = 10,
    min_score: Annotated[Optional[float], typer.Option(
        min=-1.0, max=1.0, help="Only matches with cosine similarity >= this.")] = None,
    output: OutputFormat = Format.table,
    html: HtmlFile = None,
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    decoder: Decoder = DecoderChoice.auto,
    nprobe: Annotated[Optional[int], typer.Option(
        min=1, help="IVF lists to scan (more: better recall, slower); default set with the "
        "index.", show_default=False)] = None,
    ef_search: Annotated[Optional[int], typer.Option(
        min=1, help="HNSW search breadth (default 128).", show_default=False)] = None,
    qe: Annotated[int, typer.Option(
        "--qe", min=0, help="Query expansion: add the N nearest indexed images to each query "
        "before ranking (scores are then similarities to the expanded query; 0: off).")] = 0,
    quiet: Quiet = False,
) -> None:
    """Print the most similar indexed images for every query image."""
    from deepvision.render import print_search_table, search_csv, search_html, search_json
    from deepvision.search import SearchRequest, run_search
    from deepvision.storage import Location

    rep = Reporter(quiet=quiet)
    try:
        for p in paths:
            if not p.exists() and not p.is_symlink():
                raise UsageError(f"{p} does not exist (check the path)")
        _check_weights(weights)
        req = SearchRequest(tuple(paths), Location(index_dir, name), top_k, min_score, weights,
                            _embed_options(device, batch_size, workers, max_megapixels,
                                           decoder),
                            nprobe, ef_search, qe)
        result = run_search(req, rep)
    except DeepVisionError as exc:
        raise _fail(rep, exc) from None
    _emit(result, output, html, rep, search_json, search_csv, print_search_table, search_html)
    if result.failed:
        if len(result.queries) == 1:
            rep.error(f"cannot read query {result.queries[0].query}: {result.queries[0].error}")
        raise typer.Exit(int(ExitCode.PARTIAL))


@app.command()
def dupes(
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    threshold: Annotated[float, typer.Option(
        min=-1.0, max=1.0, help="Cosine similarity above which two images are near-duplicates "
        "(default measured for efficientnet-lite0; see README).")] = DEFAULT_DUPE_THRESHOLD,
    output: OutputFormat = Format.table,
    html: HtmlFile = None,
    quiet: Quiet = False,
) -> None:
    """Groups of near-duplicate images inside an index, largest first."""
    from deepvision.dupes import find_dupes
    from deepvision.render import dupes_csv, dupes_html, dupes_json, print_dupes_table
    from deepvision.storage import Location

    rep = Reporter(quiet=quiet)
    try:
        result = find_dupes(Location(index_dir, name), threshold)
    except DeepVisionError as exc:
        raise _fail(rep, exc) from None
    _emit(result, output, html, rep, dupes_json, dupes_csv, print_dupes_table, dupes_html)


@app.command()
def info(
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    failed: Annotated[bool, typer.Option("--failed", help="List the files that failed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What an index holds: files, model, weights, dimension, size, times, failures."""
    from deepvision.storage import Location, describe

    rep = Reporter()
    try:
        data = describe(Location(index_dir, name), with_failures=failed)
    except DeepVisionError as exc:
        raise _fail(rep, exc) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = "\n".join([""] + [f"{'':>18}{v}" for v in value]) if value else "-"
        if key != "failures":
            typer.echo(f"{key:>16}: {value}")
    for f in data.get("failures", []):
        typer.echo(f"  {f['path']}: {f['reason']}: {f['message']}")


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


@app.command("eval")
def eval_(
    source: Annotated[Path, typer.Argument(
        help="Folder with one sub-folder per group (images directly inside it or in "
        "distractors/ belong to no group), or a CSV file with the columns path,group.",
        show_default=False)],
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "auto",
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    decoder: Decoder = DecoderChoice.auto,
    output: Annotated[EvalFormat, typer.Option("--format", help="table or json.")] = (
        EvalFormat.table),
    ks: Annotated[str, typer.Option(
        "--ks", help="Cut-offs k for recall@k and precision@k, comma-separated.")] = "1,5,10",
    pooling: Pooling = None,
    flip: Flip = None,
    scales: Scales = None,
    whiten: Annotated[int, typer.Option(
        min=0, help="Experiment: PCA-whiten to N dims learned from the set (0: off).")] = 0,
    qe: Annotated[int, typer.Option(
        min=0, help="Experiment: alpha query expansion with N neighbours (0: off).")] = 0,
    quiet: Quiet = False,
) -> None:
    """Retrieval quality on a labelled set: mAP, recall@k, precision@k. Writes no index."""
    from deepvision.evaluate import EvalRequest, eval_json, parse_ks, print_eval_table, run_eval
    from deepvision.render import print_failures

    rep = Reporter(quiet=quiet)
    try:
        if not source.exists():
            raise UsageError(f"{source} does not exist (check the path)")
        _check_weights(weights)
        if model != AUTO:
            get_spec(model)  # unknown names fail here, before any heavy work
        req = EvalRequest(source, model, weights,
                          _embed_options(device, batch_size, workers, max_megapixels, decoder),
                          parse_ks(ks), parse_descriptor(pooling or "avg", bool(flip), scales),
                          whiten, qe)
        result = run_eval(req, rep)
    except DeepVisionError as exc:
        raise _fail(rep, exc) from None
    print_failures(rep, result.failures)
    if output is EvalFormat.json:
        typer.echo(eval_json(result))
    else:
        print_eval_table(result)
    if result.failures:
        raise typer.Exit(int(ExitCode.PARTIAL))


def _version(show: bool) -> None:
    if show:
        typer.echo(f"deepvision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Reverse image search: index folders of images, then find the most similar ones."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
