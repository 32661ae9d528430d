"""Typer CLI: options -> request objects (keyword arguments) -> a service; errors -> exit codes.

The command functions are option declarations (Typer reads their signatures); each builds its
request with keyword arguments and hands it to a service. Heavy libraries (torch, faiss) are
imported inside the services, so `--help` is instant. Only this module exits the process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deepvision import __version__
from deepvision.errors import DeepVisionError, ExitCode, UsageError
from deepvision.extras import install_hint
from deepvision.models.registry import AUTO, MODEL_CHOICES, get_spec
from deepvision.output.console import ConsoleReporter, exact_stdout, write_out
from deepvision.output.helpformat import Command, Group
from deepvision.pipeline.decode import DEFAULT_MAX_MEGAPIXELS

app = typer.Typer(
    name="deepvision",
    help="Reverse image search: index folders of images, then find the most similar ones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # Click's plain help: rich's boxed three-column layout cuts option names and words
    # ("--allow-mass-de…") in an 80-column terminal and shows type placeholders (<bool>).
    rich_markup_mode=None,
    cls=Group,
)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


OutputFormat = Annotated[Format, typer.Option("--format", metavar="[table|json|csv]",
    help="table, json or csv.")]
HtmlFile = Annotated[Optional[Path], typer.Option(
    "--html", metavar="FILE",
    help="Also write an HTML gallery to FILE (its thumbnails go to a folder named after it).")]


MODEL_HELP = f"Backbone: {', '.join(MODEL_CHOICES)}."

# ---- shared options --------------------------------------------------------------------------

IndexDir = Annotated[Path, typer.Option(
    "--index-dir", envvar="DEEPVISION_INDEX_DIR",
    metavar="DIR", help="Folder that holds the indexes (one sub-folder per --name).")]
Name = Annotated[str, typer.Option("--name", metavar="NAME", help="Index name inside --index-dir.")]
Weights = Annotated[Optional[Path], typer.Option(
    "--weights", metavar="FILE",
    help="Model weights file (a state dict), e.g. resnet50-11ad3fa6.pth.")]
Device = Annotated[str, typer.Option("--device", metavar="DEVICE",
    help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", min=0, metavar="N",
    help="Images per batch; 0: 32 on the CPU, on CUDA sized from free "
    "GPU memory (16-512).")]
Workers = Annotated[int, typer.Option(
    "--workers", min=-1, metavar="N",
    help="Decode worker processes; -1: one per core (at most 8 on the "
    "CPU, 16 with CUDA, leaving one core to feed the GPU), 0: none.")]
MaxMP = Annotated[float, typer.Option(
    "--max-megapixels", min=0.01, metavar="MP",
    help="Skip images larger than this (decompression bombs).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (cron).")]
IndexType = Annotated[Optional[str], typer.Option(
    "--index-type", metavar="TYPE",
    help="FAISS structure: auto, flat, ivf, ivfpq, ivfpq-ondisk (lists in a "
    "memory-mapped file, for collections beyond RAM) or hnsw (default: the index's own; auto "
    "for a new one).", show_default=False)]


class DecoderChoice(str, Enum):
    auto = "auto"
    pil = "pil"
    torchvision = "torchvision"
    nvimgcodec = "nvimgcodec"


Decoder = Annotated[DecoderChoice, typer.Option(
    "--decoder", metavar="[auto|pil|torchvision|nvimgcodec]",
    help="JPEG decoding. auto: on CUDA nvimgcodec (NVIDIA nvImageCodec, if "
    "installed) else torchvision (nvJPEG), on the CPU pil (Pillow in the --workers processes). "
    "Other formats, and JPEGs a GPU decoder rejects, are always decoded by Pillow.")]
class BackendChoice(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


Backend = Annotated[BackendChoice, typer.Option(
    "--backend", metavar="[auto|torch|onnxruntime|openvino]",
    help="What runs the network. auto: torch on CUDA/MPS; on the CPU the fastest "
    "installed one for this model, measured once by a run of 500+ images and remembered. "
    "onnxruntime / openvino (the onnx / openvino extras; CPU only) run a network exported "
    "from the same weights, cached under ~/.cache/deepvision/export; vectors agree with "
    "torch (cosine >= 0.999), so any backend searches any index.")]
Threads = Annotated[int, typer.Option(
    "--threads", min=0, metavar="N",
    help="Threads for the onnxruntime/openvino network (0: as many as "
    "torch uses).")]
Ray = Annotated[Optional[str], typer.Option(
    "--ray", metavar="[ADDRESS]", show_default=False,
    help="Embed on a Ray cluster (the ray extra): HOST:PORT or ray://HOST:10001 of a running "
    "cluster; `local` starts one on this machine; alone: RAY_ADDRESS. This machine still "
    "plans and commits; the files must be at the same path on every node.")]
Compile = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the network: faster on big GPU runs, costs a one-off "
    "compile (see bench/RESULTS.md).")]
Pooling = Annotated[Optional[str], typer.Option(
    "--pooling", metavar="[avg|gem]",
    help="Feature pooling: avg or gem (default avg; an existing index keeps its "
    "own).", show_default=False)]
Flip = Annotated[Optional[bool], typer.Option(
    "--flip/--no-flip", help="Also embed the mirror image (flip-invariant descriptor).",
    show_default=False)]
Scales = Annotated[Optional[str], typer.Option(
    "--scales", metavar="SCALES",
    help="Image scales whose descriptors are summed, e.g. 1,0.707 (default 1).",
    show_default=False)]
Frame = Annotated[Optional[str], typer.Option(
    "--frame", metavar="[full|crop]",
    help="What the network sees: full (the whole picture, resized to its square) "
    "or crop (the centre square only); default full, an existing index keeps its own.",
    show_default=False)]
MaxMemory = Annotated[Optional[str], typer.Option(
    "--max-memory", metavar="SIZE",
    help="Memory budget for the FAISS structure, e.g. 8G (default: half the "
    "RAM); `auto` switches to compressed types to stay within it.", show_default=False)]
LocalFeaturesOpt = Annotated[bool, typer.Option(
    "--local-features/--no-local-features", help="Also keep each new picture's local features "
    "(<= 16 KB) for verification (search --verify, dupes' copy/similar tiers); without them a "
    "search computes them from the files when it needs them.")]


VideoInterval = Annotated[float, typer.Option(
    "--video-interval", min=0.01, metavar="SECONDS",
    help="Videos: keep at least one frame every this many "
    "seconds (besides one at every scene change).")]
MaxFrames = Annotated[int, typer.Option(
    "--max-frames-per-video", min=1, metavar="N",
    help="Videos: at most this many frames each, spread over "
    "the whole video when it is long.")]
VideoTimeout = Annotated[float, typer.Option(
    "--video-timeout", min=0.1, metavar="SECONDS",
    help="Videos: give up on a file after this many seconds of "
    "decoding (reported as `timeout`).")]


def _video(interval: float, max_frames: int, timeout: float) -> Any:
    from deepvision.pipeline.video import VideoOptions

    return VideoOptions(interval=interval, max_frames=max_frames, timeout=timeout)


Include = Annotated[list[str], typer.Option(
    "--include", metavar="GLOB",
    help="Only paths (relative to DIR) matching this glob; repeatable.")]
Exclude = Annotated[list[str], typer.Option(
    "--exclude", metavar="GLOB",
    help="Skip paths (relative to DIR) matching this glob; repeatable.")]
Hidden = Annotated[bool, typer.Option("--hidden", help="Also index dot-files and dot-folders.")]
FollowLinks = Annotated[bool, typer.Option(
    "--follow-links/--no-follow-links", help="Descend into symlinked folders, also ones that "
    "point outside DIR (each real folder is indexed once).")]
CommitEvery = Annotated[int, typer.Option(
    "--commit-every", min=1, metavar="N",
    help="Commit to disk every N embedded images (crash safety).")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait for another run on this index.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
ModelOpt = Annotated[str, typer.Option("--model", metavar="NAME",
    help=MODEL_HELP + " An existing index keeps "
                                       "its own.")]


After = Annotated[Optional[str], typer.Option(
    "--after", metavar="DATE", help="Only files taken on or after DATE (2024, 2024-05, "
    "2024-05-01 or 2024-05-01T13:45), by the EXIF capture time, else the video's creation "
    "time, else the file's mtime; times are the local time of the photo.", show_default=False)]
Before = Annotated[Optional[str], typer.Option(
    "--before", metavar="DATE", help="Only files taken up to the end of DATE (--before 2024-05 "
    "takes in all of May).", show_default=False)]
Camera = Annotated[Optional[str], typer.Option(
    "--camera", metavar="TEXT", help="Only files whose camera make or model contains this text "
    "(case-insensitive), e.g. 'pixel 7' or canon.", show_default=False)]
FolderFilter = Annotated[list[str], typer.Option(
    "--folder", metavar="PATH", help="Only files inside this folder (and its sub-folders); "
    "repeatable: inside any of them.")]


class KindChoice(str, Enum):
    image = "image"
    video = "video"


Kind = Annotated[Optional[KindChoice], typer.Option(
    "--kind", help="Only images or only videos.", show_default=False)]
MinWidth = Annotated[Optional[int], typer.Option(
    "--min-width", min=1, metavar="PX", help="Only files at least this many pixels wide (as "
    "shown, after the EXIF orientation).", show_default=False)]
MinHeight = Annotated[Optional[int], typer.Option(
    "--min-height", min=1, metavar="PX", help="Only files at least this many pixels high.",
    show_default=False)]
Near = Annotated[Optional[str], typer.Option(
    "--near", metavar="LAT,LON", help="Only files whose GPS position is within --radius of "
    "this place, e.g. 48.8584,2.2945.", show_default=False)]
Radius = Annotated[Optional[float], typer.Option(
    "--radius", metavar="KM", help="Kilometres around --near (default 10).",
    show_default=False)]


def _filter(*, after: str | None, before: str | None, camera: str | None, folder: list[str],
            kind: KindChoice | None, min_width: int | None, min_height: int | None,
            near: str | None, radius: float | None) -> Any:
    """The Filter the filter flags ask for, checked before any heavy work."""
    from deepvision.filters import build_filter

    return build_filter(after=after, before=before, camera=camera, folders=folder,
                        kind=kind.value if kind else None, min_width=min_width,
                        min_height=min_height, near=near, radius_km=radius)


class SortChoice(str, Enum):
    score = "score"
    date = "date"


# ---- building requests -------------------------------------------------------------------------


@contextmanager
def _errors(rep: ConsoleReporter) -> Iterator[None]:
    """A DeepVisionError becomes its message on stderr and its documented exit code."""
    try:
        yield
    except DeepVisionError as exc:
        rep.error(str(exc))
        raise typer.Exit(int(exc.exit_code)) from None


def _store(index_dir: Path, name: str) -> Any:
    from deepvision.store.indexstore import IndexStore

    return IndexStore(index_dir, name)  # validates the name (one plain folder name)


def _embed_options(*, device: str, batch_size: int, workers: int, max_megapixels: float,
                   decoder: DecoderChoice, backend: BackendChoice, threads: int,
                   compile: bool = False) -> Any:
    """EmbedOptions from the shared options; a decoder or backend that cannot work here fails
    now, before any folder is scanned or model loaded."""
    from deepvision.pipeline.backends import backend_problem
    from deepvision.pipeline.embedder import EmbedOptions
    from deepvision.pipeline.gpudecode import decoder_available

    problem = decoder_available(decoder.value) or backend_problem(backend.value)
    if problem:
        raise UsageError(problem)
    return EmbedOptions(device=device, batch_size=batch_size, workers=workers,
                        max_megapixels=max_megapixels, compile=compile, decoder=decoder.value,
                        backend=backend.value, threads=threads)


def _ray_address(value: str | None) -> str | None:
    """--ray's address, checked before any work (a folder name taken for one, an unset
    RAY_ADDRESS); None: no --ray."""
    if value is None:
        return None
    from deepvision.services.distributed.cluster import import_ray, resolve_address

    import_ray()
    return resolve_address(value or None)


def _descriptor(pooling: str | None, flip: bool | None, scales: str | None,
                frame: str | None = None, model: str = AUTO) -> Any:
    """The descriptor options, or None when none was given (an index keeps its own); each one
    left out is the model's default's (registry.default_descriptor); checked against a named
    model (a CLIP model takes no --pooling/--scales)."""
    from deepvision.models.descriptor import parse_descriptor
    from deepvision.models.registry import check_descriptor, default_descriptor

    if pooling is None and flip is None and scales is None and frame is None:
        return None
    base = default_descriptor(get_spec(model)) if model != AUTO else None
    descriptor = parse_descriptor(pooling, flip, scales, frame, base=base)
    if model != AUTO:
        check_descriptor(get_spec(model), descriptor)
    return descriptor


def _max_memory(index_type: str | None, max_memory: str | None) -> int | None:
    """Validate --index-type (before any heavy work) and turn --max-memory into bytes."""
    from deepvision.store.faiss_index import parse_size, plan_index

    if index_type is not None:
        plan_index(index_type, 0, 1)
    return parse_size(max_memory) if max_memory else None


def _folders(paths: list[Path]) -> tuple[Path, ...]:
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p} does not exist (check the path)")
        if not p.is_dir():
            raise UsageError(f"{p} is not a folder; pass the folder that holds the images")
    return tuple(paths)


def _weights(weights: Path | None) -> Path | None:
    if weights is not None and not weights.is_file():
        raise UsageError(f"--weights {weights}: no such file")
    return weights


def _model(model: str) -> str:
    if model != AUTO:
        get_spec(model)  # unknown names fail here, before any heavy work
    return model


def _emit(result: Any, output: Format, html: Path | None, rep: ConsoleReporter,
          renderers: dict[str, Callable[..., Any]]) -> None:
    """Results on stdout in the chosen format, plus the HTML gallery when asked for.
    renderers: json, csv (-> text), table (prints), html (writes a file)."""
    exact = exact_stdout()  # a file or pipe gets names as they are, a terminal escaped ones
    if output is Format.json:
        write_out(renderers["json"](result) + "\n")
    elif output is Format.csv:
        write_out(renderers["csv"](result, exact))
    else:
        renderers["table"](result, exact)
    if html is not None:
        try:
            renderers["html"](result, html)
        except OSError as exc:  # a full disk, a read-only folder: the user's to fix
            rep.error(f"cannot write the HTML report {html}: {exc.strerror}")
            raise typer.Exit(int(ExitCode.STORAGE)) from None
        rep.info(f"HTML report: {html}")


def _gallery(render: Callable[[Any, Path, Any], None]) -> Callable[[Any, Path], None]:
    """An HTML renderer (output.render) given its pictures from the files
    (services.thumbnails), imported only when --html asks for a gallery."""
    def write(result: Any, out: Path) -> None:
        from deepvision.services.thumbnails import FileThumbnails

        render(result, out, FileThumbnails())

    return write


def _sync(req: Any, rep: ConsoleReporter, as_json: bool) -> None:
    """Run `index`/`rebuild` and report: failures, the summary line, JSON, the exit code."""
    from deepvision.output.render import index_summary_json, index_summary_text
    from deepvision.services.sync import run_index

    with _errors(rep):
        summary = run_index(req, rep)
    rep.failures(summary.failures)
    rep.info(index_summary_text(summary))
    if as_json:
        typer.echo(index_summary_json(summary))
    if summary.failures:
        raise typer.Exit(int(ExitCode.PARTIAL))


# ---- commands ----------------------------------------------------------------------------------


@app.command(cls=Command, short_help="Add new and changed files to the index, drop deleted ones.")
def index(
    dirs: Annotated[list[Path], typer.Argument(
        metavar="DIR", help="Folders to index (recursively).", show_default=False)],
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    model: ModelOpt = "auto",
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    include: Include = [],  # noqa: B006 (Typer reads the default; never mutated)
    exclude: Exclude = [],  # noqa: B006
    hidden: Hidden = False,
    follow_links: FollowLinks = True,
    retry_failed: Annotated[bool, typer.Option(
        help="Retry files that failed before even if unchanged.")] = False,
    commit_every: CommitEvery = 1000,
    wait: Wait = False,
    allow_mass_delete: Annotated[bool, typer.Option(
        "--allow-mass-delete", help="Drop the files of a folder that is now empty from the "
        "index (refused by default: an unmounted disk looks empty).")] = False,
    index_type: IndexType = None,
    max_memory: MaxMemory = None,
    pooling: Pooling = None,
    flip: Flip = None,
    scales: Scales = None,
    frame: Frame = None,
    compile: Compile = False,
    decoder: Decoder = DecoderChoice.auto,
    video_interval: VideoInterval = 5.0,
    max_frames_per_video: MaxFrames = 200,
    video_timeout: VideoTimeout = 300.0,
    backend: Backend = BackendChoice.auto,
    threads: Threads = 0,
    ray: Ray = None,
    local_features: LocalFeaturesOpt = True,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Add new and changed images and videos under DIR to the index; drop deleted ones."""
    from deepvision.pipeline.discover import Filters
    from deepvision.services.sync import IndexRequest

    rep = ConsoleReporter(quiet=quiet or as_json)
    with _errors(rep):
        req = IndexRequest(
            roots=_folders(dirs), store=_store(index_dir, name), model=_model(model),
            weights=_weights(weights),
            embed=_embed_options(device=device, batch_size=batch_size, workers=workers,
                                 max_megapixels=max_megapixels, decoder=decoder,
                                 backend=backend, threads=threads,
                                 compile=compile),
            filters=Filters(tuple(include), tuple(exclude), hidden, follow_links),
            retry_failed=retry_failed, commit_every=commit_every, wait=wait,
            index_type=index_type, max_memory=_max_memory(index_type, max_memory),
            descriptor=_descriptor(pooling, flip, scales, frame, model),
            allow_mass_delete=allow_mass_delete,
            video=_video(video_interval, max_frames_per_video, video_timeout),
            ray=_ray_address(ray), local_features=local_features)
        rep.info(f"index {req.store.dir}: {', '.join(map(str, dirs))}")
    _sync(req, rep, as_json)


@app.command(cls=Command, short_help="Re-embed everything into a fresh index, then swap it in.")
def rebuild(
    dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="DIR", help="Folders to index; default: the ones the index was built from.",
        show_default=False)] = None,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    model: Annotated[str, typer.Option(metavar="NAME",
        help=MODEL_HELP + " Default: the index's own model "
                                       "(auto for a new or unreadable index).")] = "auto",
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    include: Include = [],  # noqa: B006
    exclude: Exclude = [],  # noqa: B006
    hidden: Hidden = False,
    follow_links: FollowLinks = True,
    commit_every: CommitEvery = 1000,
    wait: Wait = False,
    index_type: IndexType = None,
    max_memory: MaxMemory = None,
    from_vectors: Annotated[bool, typer.Option(
        "--from-vectors", help="Rebuild only the FAISS structure from the stored vectors (no "
        "model, no decoding), e.g. with another --index-type.")] = False,
    pooling: Pooling = None,
    flip: Flip = None,
    scales: Scales = None,
    frame: Frame = None,
    compile: Compile = False,
    decoder: Decoder = DecoderChoice.auto,
    video_interval: VideoInterval = 5.0,
    max_frames_per_video: MaxFrames = 200,
    video_timeout: VideoTimeout = 300.0,
    backend: Backend = BackendChoice.auto,
    threads: Threads = 0,
    ray: Ray = None,
    local_features: LocalFeaturesOpt = True,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Re-extract everything into a fresh index, then swap it in atomically. Unreadable index
    files are moved aside into broken-<time>/ first (never deleted)."""
    from deepvision.pipeline.discover import Filters
    from deepvision.services.sync import IndexRequest

    rep = ConsoleReporter(quiet=quiet or as_json)
    with _errors(rep):
        store = _store(index_dir, name)
        budget = _max_memory(index_type, max_memory)
        if from_vectors:
            _restructure(store, index_type, budget, wait, rep, as_json)
            return
        req = IndexRequest(
            roots=_folders(dirs or []), store=store, model=_model(model),
            weights=_weights(weights),
            embed=_embed_options(device=device, batch_size=batch_size, workers=workers,
                                 max_megapixels=max_megapixels, decoder=decoder,
                                 backend=backend, threads=threads,
                                 compile=compile),
            filters=Filters(tuple(include), tuple(exclude), hidden, follow_links),
            retry_failed=True, commit_every=commit_every, wait=wait, index_type=index_type,
            max_memory=budget, descriptor=_descriptor(pooling, flip, scales, frame, model),
            rebuild=True, video=_video(video_interval, max_frames_per_video, video_timeout),
            ray=_ray_address(ray), local_features=local_features)
        rep.info(f"rebuild {store.dir}: {', '.join(map(str, dirs or [])) or 'recorded folders'}")
    _sync(req, rep, as_json)


def _restructure(store: Any, index_type: str | None, budget: int | None, wait: bool,
                 rep: ConsoleReporter, as_json: bool) -> None:
    from deepvision.output.render import restructure_json, restructure_text
    from deepvision.services.sync import restructure

    done = restructure(store, index_type, budget, wait)
    rep.info(restructure_text(done))
    if as_json:
        typer.echo(restructure_json(done))


@app.command(cls=Command, short_help="The most similar indexed images and videos for each query.")
def search(
    paths: Annotated[Optional[list[Path]], typer.Argument(
        metavar="PATH",
        help="Query image(s) or video(s), or folder(s) of them.", show_default=False)] = None,
    text: Annotated[list[str], typer.Option(
        "--text", "-t", metavar="TEXT",
        help="A text query, e.g. \"a red bicycle\" (repeatable; needs an index "
        "built with a CLIP model, see --model).")] = [],  # noqa: B006
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, metavar="K",
        help="Matches per query.")] = 10,
    min_score: Annotated[Optional[float], typer.Option(
        min=-1.0, max=1.0, metavar="SCORE",
        help="Only matches with cosine similarity >= this.")] = None,
    output: OutputFormat = Format.table,
    html: HtmlFile = None,
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    decoder: Decoder = DecoderChoice.auto,
    backend: Backend = BackendChoice.auto,
    threads: Threads = 0,
    nprobe: Annotated[Optional[int], typer.Option(
        min=1, metavar="N",
        help="IVF lists to scan (more: better recall, slower); default set with the "
        "index.", show_default=False)] = None,
    ef_search: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", help="HNSW search breadth (default 128).", show_default=False)] = None,
    qe: Annotated[int, typer.Option(
        "--qe", min=0, metavar="N",
        help="Query expansion: add the N nearest indexed images to each query "
        "before ranking (scores are then similarities to the expanded query; 0: off).")] = 0,
    all_frames: Annotated[bool, typer.Option(
        "--all-frames", help="List every matching video frame as its own match, instead of "
        "one row per file (a video's best frame).")] = False,
    video_interval: VideoInterval = 5.0,
    max_frames_per_video: MaxFrames = 200,
    video_timeout: VideoTimeout = 300.0,
    turns: Annotated[Optional[bool], typer.Option(
        "--turns/--no-turns", help="Also search with each query turned by 90, 180 and 270° "
        "(finds copies turned sideways; 4x the query's network time); a match's score is its "
        "best turn's. Default: as the index records (on for new indexes).",
        show_default=False)] = None,
    zoom: Annotated[Optional[bool], typer.Option(
        "--zoom/--no-zoom", help="Also search with the centre 75 % of each query enlarged "
        "(finds a photo inside a screenshot or a wide frame; one more network pass), for a "
        "query whose short side is at least the model's input (224 px for the EfficientNets; a "
        "smaller one has no detail to zoom into). Default: as the index records (on for "
        "new indexes).",
        show_default=False)] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check the first --verify-top candidates with local "
        "features (the same picture, whatever was done to it: cropped, covered, inside a page, "
        "a thumbnail); verified matches rank first and show where they match.")] = True,
    verify_top: Annotated[int, typer.Option(
        "--verify-top", min=1, max=1000, metavar="N",
        help="How many candidates of the vector search --verify checks (more: finds copies "
        "the vectors rank lower, slower).")] = 30,
    after: After = None,
    before: Before = None,
    camera: Camera = None,
    folder: FolderFilter = [],  # noqa: B006
    kind: Kind = None,
    min_width: MinWidth = None,
    min_height: MinHeight = None,
    near: Near = None,
    radius: Radius = None,
    sort: Annotated[SortChoice, typer.Option(
        "--sort", help="score: most similar first; date: the --top-k most similar, oldest "
        "capture time first.")] = SortChoice.score,
    quiet: Quiet = False,
) -> None:
    """Print the most similar indexed images and videos (with the time of the best frame)
    for every query image or video and every --text."""
    from deepvision.output import render
    from deepvision.services.search import RankOptions, SearchRequest, run_search

    rep = ConsoleReporter(quiet=quiet)
    with _errors(rep):
        paths = paths or []
        if not paths and not text:
            raise UsageError("give query images (PATHS) or a text query (--text \"...\")")
        for p in paths:
            if not p.exists() and not p.is_symlink():
                raise UsageError(f"{p} does not exist (check the path)")
        if any(not t.strip() for t in text):
            raise UsageError("--text is empty; give the words to search for")
        req = SearchRequest(
            queries=tuple(paths), texts=tuple(text), store=_store(index_dir, name),
            rank=RankOptions(top_k=top_k, min_score=min_score, nprobe=nprobe,
                             ef_search=ef_search, qe=qe, all_frames=all_frames,
                             turns=turns, zoom=zoom, verify=verify,
                             verify_top=verify_top, sort=sort.value,
                             filter=_filter(after=after, before=before, camera=camera,
                                            folder=folder, kind=kind, min_width=min_width,
                                            min_height=min_height, near=near, radius=radius)),
            weights=_weights(weights),
            embed=_embed_options(device=device, batch_size=batch_size, workers=workers,
                                 max_megapixels=max_megapixels, decoder=decoder,
                                 backend=backend, threads=threads),
            video=_video(video_interval, max_frames_per_video, video_timeout))
        result = run_search(req, rep)
    _emit(result, output, html, rep, {"json": render.search_json, "csv": render.search_csv,
                                      "table": render.print_search_table,
                                      "html": _gallery(render.search_html)})
    if result.failed:
        if len(result.queries) == 1:
            rep.error(f"cannot read query {result.queries[0].query}: {result.queries[0].error}")
        raise typer.Exit(int(ExitCode.PARTIAL))


@app.command(cls=Command, short_help="What an index holds: files, model, structure, failures.")
def info(
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    failed: Annotated[bool, typer.Option("--failed", help="List the files that failed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What an index holds: files, model, weights, dimension, size, times, failures."""
    from deepvision.output.render import info_json, info_text
    from deepvision.services.info import describe

    rep = ConsoleReporter()
    with _errors(rep):
        data = describe(_store(index_dir, name), with_failures=failed)
    write_out((info_json(data) if as_json else info_text(data, exact_stdout())) + "\n")


@app.command(cls=Command, short_help="Serve an index over HTTP: a JSON API and a search page.")
def serve(
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    host: Annotated[str, typer.Option(
        metavar="HOST",
        help="Address to listen on; anything but loopback needs --token (or --no-token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, metavar="PORT",
        help="Port (0: any free one).")] = 8000,
    token: Annotated[Optional[str], typer.Option(
        envvar="DEEPVISION_TOKEN", metavar="TOKEN",
        help="Require `Authorization: Bearer TOKEN` (the page: "
        "open it once with ?token=TOKEN).", show_default=False)] = None,
    no_token: Annotated[bool, typer.Option(
        "--no-token", help="Serve a non-loopback --host without a token, on purpose.")] = False,
    allow_path: Annotated[list[Path], typer.Option(
        "--allow-path", metavar="DIR",
        help="Folder whose files GET /api/search?path= may read; repeatable "
        "(default: none).")] = [],  # noqa: B006
    cors: Annotated[list[str], typer.Option(
        "--cors", metavar="ORIGIN",
        help="Allow this browser origin to call the API; repeatable.")] = [],  # noqa: B006
    max_upload_mb: Annotated[float, typer.Option(
        min=0.01, metavar="MB", help="Largest upload accepted (413 above).")] = 50.0,
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    decoder: Decoder = DecoderChoice.auto,
    backend: Backend = BackendChoice.auto,
    threads: Threads = 0,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Check each query's first 30 candidates with local "
        "features, as `search --verify` does (verified matches first, with their boxes).")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No access log.")] = False,
) -> None:
    """Serve an index over HTTP: a JSON API and a search page, model and index loaded once."""
    rep = ConsoleReporter(quiet=quiet)
    with _errors(rep):
        try:
            from deepvision.server.app import ServeConfig
            from deepvision.server.run import ServeRequest, is_loopback
            from deepvision.server.run import serve as run_server
        except ImportError as exc:
            raise UsageError(f"the search service needs its extra ({exc.name} is missing): "
                             f"{install_hint('serve')}") from None
        _folders(allow_path)
        embed = _embed_options(device=device, batch_size=batch_size, workers=workers,
                               max_megapixels=max_megapixels, decoder=decoder,
                               backend=backend, threads=threads)
        config = ServeConfig(
            host=host, port=port, token=token,
            allow_paths=tuple(Path(os.path.realpath(p)) for p in allow_path), cors=tuple(cors),
            max_upload_bytes=int(max_upload_mb * (1 << 20)), loopback=is_loopback(host))
        run_server(ServeRequest(store=_store(index_dir, name), config=config, embed=embed,
                                weights=_weights(weights), no_token=no_token,
                                access_log=not quiet, verify=verify), rep)


class EditSet(str, Enum):  # edits.EDIT_SETS's keys; an Enum, so Typer validates up front
    robust = "robust"
    strong = "strong"
    all = "all"


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


@app.command("eval", cls=Command, short_help="Retrieval quality on a labelled set or your photos.")
def eval_(
    source: Annotated[Optional[Path], typer.Argument(
        metavar="SOURCE",
        help="Folder with one sub-folder per group (images directly inside it or in "
        "distractors/ belong to no group), or a CSV file with the columns path,group. "
        "Leave out with --synthetic.", show_default=False)] = None,
    synthetic: Annotated[Optional[Path], typer.Option(
        "--synthetic", metavar="DIR",
        help="Your own photos: sample --sample of them, make edited copies "
        "(turns, crops, small JPEGs, borders, ...), report recall per edit and a suggested "
        "`dupes --threshold` for --target-precision.", show_default=False)] = None,
    sample: Annotated[int, typer.Option(
        min=1, metavar="N", help="--synthetic: photos that get edited copies.")] = 40,
    distractors: Annotated[int, typer.Option(
        min=0, metavar="N", help="--synthetic: other photos of the folder in the database.")] = 300,
    target_precision: Annotated[float, typer.Option(
        min=0.5, max=0.9999, metavar="P",
        help="--synthetic: precision the suggested threshold keeps.")] = 0.99,
    seed: Annotated[int, typer.Option(metavar="N",
        help="--synthetic: which photos are sampled.")] = 0,
    edit_set: Annotated[EditSet, typer.Option(
        "--edits", help="--synthetic: which copies each photo gets: robust (turns, crops, small "
        "JPEGs, borders, ...), strong (a 25 % crop, inside a web page, a photo of a screen, "
        "occlusion, an 80-px thumbnail, stacked edits, ...) or all.")] = (
        EditSet.robust),
    keep_copies: Annotated[Optional[Path], typer.Option(
        "--keep-copies", metavar="DIR",
        help="--synthetic: write the edited copies to this new folder and "
        "keep them (default: a temporary folder, deleted).", show_default=False)] = None,
    protocol: Annotated[str, typer.Option(
        metavar="[all|originals]",
        help="all: every grouped image searches all others; originals: each edited copy "
        "searches only the originals (<x>__original.*), natural pairs and distractors.")] = "all",
    turns: Annotated[Optional[bool], typer.Option(
        "--turns/--no-turns", help="Query-time turns (default: as `search` on a new index).",
        show_default=False)] = None,
    zoom: Annotated[Optional[bool], typer.Option(
        "--zoom/--no-zoom", help="Query-time zoom, as `search --zoom` (default: as `search` "
        "on a new index).",
        show_default=False)] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Re-rank each query's first --verify-top candidates "
        "with local features, as `search` does (costs the features of every image once).")
    ] = True,
    verify_top: Annotated[int, typer.Option(
        "--verify-top", min=1, max=1000, metavar="N",
        help="Candidates --verify checks per query.")] = 30,
    frame: Frame = None,
    model: Annotated[str, typer.Option(metavar="NAME", help=MODEL_HELP)] = "auto",
    weights: Weights = None,
    device: Device = "auto",
    batch_size: BatchSize = 0,
    workers: Workers = -1,
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS,
    decoder: Decoder = DecoderChoice.auto,
    backend: Backend = BackendChoice.auto,
    threads: Threads = 0,
    output: Annotated[EvalFormat, typer.Option("--format", metavar="[table|json]",
        help="table or json.")] = (
        EvalFormat.table),
    ks: Annotated[str, typer.Option(
        "--ks", metavar="KS",
        help="Cut-offs k for recall@k and precision@k, comma-separated.")] = "1,5,10",
    pooling: Pooling = None,
    flip: Flip = None,
    scales: Scales = None,
    whiten: Annotated[int, typer.Option(
        min=0, metavar="N",
        help="Experiment: PCA-whiten to N dims learned from the set (0: off).")] = 0,
    qe: Annotated[int, typer.Option(
        min=0, metavar="N",
        help="Experiment: alpha query expansion with N neighbours (0: off).")] = 0,
    quiet: Quiet = False,
) -> None:
    """Retrieval quality on a labelled set: mAP, recall@k, precision@k. Writes no index.
    With --synthetic DIR: on edited copies of your own photos, plus a dupes threshold."""
    from deepvision.output.eval_report import eval_json, print_eval_table
    from deepvision.services.evaluate import EvalRequest, parse_ks, run_eval
    from deepvision.services.synthetic import SyntheticRequest, run_synthetic

    rep = ConsoleReporter(quiet=quiet)
    with _errors(rep):
        if (source is None) == (synthetic is None):
            raise UsageError("pass an evaluation set (SOURCE) or --synthetic DIR, not both")
        where = source if source is not None else synthetic
        if where is None or not where.exists():
            raise UsageError(f"{where} does not exist (check the path)")
        if keep_copies is not None and keep_copies.exists():
            raise UsageError(f"--keep-copies {keep_copies} exists; name a new folder")
        if edit_set is not EditSet.robust and synthetic is None:
            raise UsageError("--edits chooses the copies of --synthetic; an evaluation set "
                             "(SOURCE) brings its own")
        req = EvalRequest(
            source=where, model=_model(model), weights=_weights(weights),
            embed=_embed_options(device=device, batch_size=batch_size, workers=workers,
                                 max_megapixels=max_megapixels, decoder=decoder,
                                 backend=backend, threads=threads),
            ks=parse_ks(ks),
            descriptor=_descriptor(pooling, flip, scales, frame, model),
            whiten=whiten, qe=qe, protocol=protocol, turns=turns, zoom=zoom,
            verify_top=verify_top if verify else 0)
        calibration = None
        if synthetic is not None:
            done = run_synthetic(SyntheticRequest(
                synthetic, req, sample=sample, distractors=distractors, seed=seed,
                target_precision=target_precision, keep=keep_copies,
                edits=edit_set.value), rep)
            result, calibration = done.eval, done.calibration
        else:
            result = run_eval(req, rep)
    rep.failures(result.failures)
    if output is EvalFormat.json:
        typer.echo(eval_json(result, calibration))
    else:
        print_eval_table(result, calibration=calibration)
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


def _add_groups() -> None:
    """`dupes` is a group of its own (cli_dupes.py); added last, as it takes the shared
    options defined above."""
    from deepvision.cli_dupes import dupes_app

    app.add_typer(dupes_app, name="dupes")


_add_groups()


def main() -> None:
    try:
        app(args=_bare_ray(sys.argv[1:]))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _bare_ray(argv: list[str]) -> list[str]:
    """`--ray` alone (last, or followed by another option) means RAY_ADDRESS: Click has no
    option with an optional value, so the empty address is filled in here."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("")
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
