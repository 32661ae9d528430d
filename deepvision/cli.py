"""Typer CLI: options -> request objects (keyword arguments) -> a service; errors -> exit codes.

The command functions are option declarations (Typer reads their signatures); each builds its
request with keyword arguments and hands it to a service. The options several commands share,
and the checks and output they all use, are in cli_common.py; the `dupes` group is cli_dupes.py.
Heavy libraries (torch, faiss) are imported inside the services, so `--help` is instant. Only
the CLI (these three modules) exits the process.
"""

# Long module: Typer reads each command's signature, so a command is its long list of option
# declarations; what several commands share is in cli_common.py, the dupes group in
# cli_dupes.py, and the work in the services. What remains is one declaration per command.

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deepvision import __version__
from deepvision.cli_common import (
    MODEL_HELP,
    AsJson,
    Backend,
    BackendChoice,
    BatchSize,
    CommitEvery,
    Compile,
    Decoder,
    DecoderChoice,
    Device,
    Exclude,
    FilterOptions,
    Flip,
    FollowLinks,
    Format,
    Frame,
    Hidden,
    HtmlFile,
    Include,
    IndexDir,
    IndexType,
    LocalFeaturesOpt,
    MaxFrames,
    MaxMemory,
    MaxMP,
    ModelOpt,
    Name,
    OutputFormat,
    Pooling,
    Quiet,
    Ray,
    Scales,
    Threads,
    VideoInterval,
    VideoTimeout,
    Wait,
    Weights,
    Workers,
    checked_folders,
    checked_model,
    checked_weights,
    descriptor_from,
    embed_options,
    emit,
    exit_on_errors,
    gallery,
    index_store,
    memory_budget,
    ray_address,
    shared_options,
    video_options,
)
from deepvision.cli_dupes import DEFAULT_DUPE_THRESHOLD, dupes_app
from deepvision.errors import ExitCode, UsageError
from deepvision.extras import install_hint
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


class SortChoice(str, Enum):
    score = "score"
    date = "date"



def _sync(req: Any, rep: ConsoleReporter, as_json: bool) -> None:
    """Run `index`/`rebuild` and report: failures, the summary line, JSON, the exit code."""
    from deepvision.output.render import index_summary_json, index_summary_text
    from deepvision.services.sync import run_index

    with exit_on_errors(rep):
        summary = run_index(req, rep)
    rep.failures(summary.failures)
    rep.info(index_summary_text(summary))
    if as_json:
        typer.echo(index_summary_json(summary))
    if summary.failures:
        raise typer.Exit(int(ExitCode.PARTIAL))


# ---- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    """The options `index` and `rebuild` share, declared once (cli_common.shared_options)."""

    index_dir: IndexDir = Path("indexes")
    name: Name = "default"
    weights: Weights = None
    device: Device = "auto"
    batch_size: BatchSize = 0
    workers: Workers = -1
    max_megapixels: MaxMP = DEFAULT_MAX_MEGAPIXELS
    include: Include = field(default_factory=list)
    exclude: Exclude = field(default_factory=list)
    hidden: Hidden = False
    follow_links: FollowLinks = True
    commit_every: CommitEvery = 1000
    wait: Wait = False
    index_type: IndexType = None
    max_memory: MaxMemory = None
    pooling: Pooling = None
    flip: Flip = None
    scales: Scales = None
    frame: Frame = None
    compile: Compile = False
    decoder: Decoder = DecoderChoice.auto
    video_interval: VideoInterval = 5.0
    max_frames_per_video: MaxFrames = 200
    video_timeout: VideoTimeout = 300.0
    backend: Backend = BackendChoice.auto
    threads: Threads = 0
    ray: Ray = None
    local_features: LocalFeaturesOpt = True
    quiet: Quiet = False
    as_json: AsJson = False


def _sync_request(opts: SyncOptions, **own: Any) -> Any:
    """The IndexRequest of `index`/`rebuild`: `own` holds the command's own parts (roots,
    store, model, ...), checked by the caller first; then the shared options, in the order
    `index` always checked them."""
    from deepvision.pipeline.discover import Filters
    from deepvision.services.sync import IndexRequest

    return IndexRequest(
        **own, weights=checked_weights(opts.weights),
        embed=embed_options(device=opts.device, batch_size=opts.batch_size,
                            workers=opts.workers, max_megapixels=opts.max_megapixels,
                            decoder=opts.decoder, backend=opts.backend, threads=opts.threads,
                            compile=opts.compile),
        filters=Filters(tuple(opts.include), tuple(opts.exclude), opts.hidden,
                        opts.follow_links),
        commit_every=opts.commit_every, wait=opts.wait, index_type=opts.index_type,
        max_memory=memory_budget(opts.index_type, opts.max_memory),
        descriptor=descriptor_from(opts.pooling, opts.flip, opts.scales, opts.frame,
                                   own["model"]),
        video=video_options(opts.video_interval, opts.max_frames_per_video,
                            opts.video_timeout),
        ray=ray_address(opts.ray), local_features=opts.local_features)


@app.command(cls=Command, short_help="Add new and changed files to the index, drop deleted ones.")
@shared_options(SyncOptions, model="weights", retry_failed="commit_every",
                allow_mass_delete="index_type")
def index(
    dirs: Annotated[list[Path], typer.Argument(
        metavar="DIR", help="Folders to index (recursively).", show_default=False)],
    model: ModelOpt = "auto",
    retry_failed: Annotated[bool, typer.Option(
        help="Retry files that failed before even if unchanged.")] = False,
    allow_mass_delete: Annotated[bool, typer.Option(
        "--allow-mass-delete", help="Drop the files of a folder that is now empty from the "
        "index (refused by default: an unmounted disk looks empty).")] = False,
    *, opts: SyncOptions,
) -> None:
    """Add new and changed images and videos under DIR to the index; drop deleted ones."""
    rep = ConsoleReporter(quiet=opts.quiet or opts.as_json)
    with exit_on_errors(rep):
        req = _sync_request(
            opts, roots=checked_folders(dirs), store=index_store(opts.index_dir, opts.name),
            model=checked_model(model), retry_failed=retry_failed,
            allow_mass_delete=allow_mass_delete)
        rep.info(f"index {req.store.dir}: {', '.join(map(str, dirs))}")
    _sync(req, rep, opts.as_json)


@app.command(cls=Command, short_help="Re-embed everything into a fresh index, then swap it in.")
@shared_options(SyncOptions, model="weights", from_vectors="pooling")
def rebuild(
    dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="DIR", help="Folders to index; default: the ones the index was built from.",
        show_default=False)] = None,
    model: Annotated[str, typer.Option(metavar="NAME",
        help=MODEL_HELP + " Default: the index's own model "
                                       "(auto for a new or unreadable index).")] = "auto",
    from_vectors: Annotated[bool, typer.Option(
        "--from-vectors", help="Rebuild only the FAISS structure from the stored vectors (no "
        "model, no decoding), e.g. with another --index-type.")] = False,
    *, opts: SyncOptions,
) -> None:
    """Re-extract everything into a fresh index, then swap it in atomically. Unreadable index
    files are moved aside into broken-<time>/ first (never deleted)."""
    rep = ConsoleReporter(quiet=opts.quiet or opts.as_json)
    with exit_on_errors(rep):
        store = index_store(opts.index_dir, opts.name)
        budget = memory_budget(opts.index_type, opts.max_memory)  # checked before anything
        if from_vectors:
            _restructure(store, opts.index_type, budget, opts.wait, rep, opts.as_json)
            return
        req = _sync_request(opts, roots=checked_folders(dirs or []), store=store,
                            model=checked_model(model), retry_failed=True, rebuild=True)
        rep.info(f"rebuild {store.dir}: {', '.join(map(str, dirs or [])) or 'recorded folders'}")
    _sync(req, rep, opts.as_json)


def _restructure(store: Any, index_type: str | None, budget: int | None, wait: bool,
                 rep: ConsoleReporter, as_json: bool) -> None:
    from deepvision.output.render import restructure_json, restructure_text
    from deepvision.services.sync import restructure

    done = restructure(store, index_type, budget, wait)
    rep.info(restructure_text(done))
    if as_json:
        typer.echo(restructure_json(done))


@app.command(cls=Command, short_help="The most similar indexed images and videos for each query.")
@shared_options(FilterOptions, last=("sort", "quiet"))
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
    sort: Annotated[SortChoice, typer.Option(
        "--sort", help="score: most similar first; date: the --top-k most similar, oldest "
        "capture time first.")] = SortChoice.score,
    quiet: Quiet = False,
    *,
    opts: FilterOptions,
) -> None:
    """Print the most similar indexed images and videos (with the time of the best frame)
    for every query image or video and every --text."""
    from deepvision.output import render
    from deepvision.services.search import RankOptions, SearchRequest, run_search

    rep = ConsoleReporter(quiet=quiet)
    with exit_on_errors(rep):
        paths = paths or []
        if not paths and not text:
            raise UsageError("give query images (PATHS) or a text query (--text \"...\")")
        for p in paths:
            if not p.exists() and not p.is_symlink():
                raise UsageError(f"{p} does not exist (check the path)")
        if any(not t.strip() for t in text):
            raise UsageError("--text is empty; give the words to search for")
        req = SearchRequest(
            queries=tuple(paths), texts=tuple(text), store=index_store(index_dir, name),
            rank=RankOptions(top_k=top_k, min_score=min_score, nprobe=nprobe,
                             ef_search=ef_search, qe=qe, all_frames=all_frames,
                             turns=turns, zoom=zoom, verify=verify,
                             verify_top=verify_top, sort=sort.value,
                             filter=opts.filter()),
            weights=checked_weights(weights),
            embed=embed_options(device=device, batch_size=batch_size, workers=workers,
                                 max_megapixels=max_megapixels, decoder=decoder,
                                 backend=backend, threads=threads),
            video=video_options(video_interval, max_frames_per_video, video_timeout))
        result = run_search(req, rep)
    emit(result, output, html, rep, {"json": render.search_json, "csv": render.search_csv,
                                      "table": render.print_search_table,
                                      "html": gallery(render.search_html)})
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
    with exit_on_errors(rep):
        data = describe(index_store(index_dir, name), with_failures=failed)
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
    dupes_threshold: Annotated[float, typer.Option(
        "--dupes-threshold", min=-1.0, max=1.0, metavar="SCORE",
        help="The review page's groups (/review): as `dupes --threshold`.")
    ] = DEFAULT_DUPE_THRESHOLD,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No access log.")] = False,
) -> None:
    """Serve an index over HTTP: a JSON API and a search page, model and index loaded once."""
    rep = ConsoleReporter(quiet=quiet)
    with exit_on_errors(rep):
        try:
            from deepvision.server.app import ServeConfig
            from deepvision.server.run import ServeRequest, is_loopback
            from deepvision.server.run import serve as run_server
        except ImportError as exc:
            raise UsageError(f"the search service needs its extra ({exc.name} is missing): "
                             f"{install_hint('serve')}") from None
        checked_folders(allow_path)
        embed = embed_options(device=device, batch_size=batch_size, workers=workers,
                               max_megapixels=max_megapixels, decoder=decoder,
                               backend=backend, threads=threads)
        config = ServeConfig(
            host=host, port=port, token=token,
            allow_paths=tuple(Path(os.path.realpath(p)) for p in allow_path), cors=tuple(cors),
            max_upload_bytes=int(max_upload_mb * (1 << 20)), loopback=is_loopback(host))
        run_server(ServeRequest(store=index_store(index_dir, name), config=config, embed=embed,
                                weights=checked_weights(weights), no_token=no_token,
                                access_log=not quiet, verify=verify,
                                dupes_threshold=dupes_threshold), rep)


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
    with exit_on_errors(rep):
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
            source=where, model=checked_model(model), weights=checked_weights(weights),
            embed=embed_options(device=device, batch_size=batch_size, workers=workers,
                                 max_megapixels=max_megapixels, decoder=decoder,
                                 backend=backend, threads=threads),
            ks=parse_ks(ks),
            descriptor=descriptor_from(pooling, flip, scales, frame, model),
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


app.add_typer(dupes_app, name="dupes")  # a group of its own (cli_dupes.py), listed last


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

