"""What the commands share: their common options, the checks that turn options into the parts
of a request (before any heavy work), and the way results and errors leave a command.

cli.py and cli_dupes.py (the `dupes` group) both import this module; it imports neither.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deepvision.errors import DeepVisionError, ExitCode, UsageError
from deepvision.models.registry import AUTO, MODEL_CHOICES, get_spec
from deepvision.output.console import ConsoleReporter, exact_stdout, write_out


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


def video_options(interval: float, max_frames: int, timeout: float) -> Any:
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


@dataclasses.dataclass
class FilterOptions:
    """The filter flags `search` and `dupes` share, declared once (shared_options)."""

    after: After = None
    before: Before = None
    camera: Camera = None
    folder: FolderFilter = dataclasses.field(default_factory=list)
    kind: Kind = None
    min_width: MinWidth = None
    min_height: MinHeight = None
    near: Near = None
    radius: Radius = None

    def filter(self) -> Any:
        """The Filter they ask for, checked before any heavy work."""
        from deepvision.filters import build_filter

        return build_filter(after=self.after, before=self.before, camera=self.camera,
                            folders=self.folder, kind=self.kind.value if self.kind else None,
                            min_width=self.min_width, min_height=self.min_height,
                            near=self.near, radius_km=self.radius)


# ---- building requests -------------------------------------------------------------------------


@contextmanager
def exit_on_errors(rep: ConsoleReporter) -> Iterator[None]:
    """A DeepVisionError becomes its message on stderr and its documented exit code."""
    try:
        yield
    except DeepVisionError as exc:
        rep.error(str(exc))
        raise typer.Exit(int(exc.exit_code)) from None


def index_store(index_dir: Path, name: str) -> Any:
    from deepvision.store.indexstore import IndexStore

    return IndexStore(index_dir, name)  # validates the name (one plain folder name)


def embed_options(*, device: str, batch_size: int, workers: int, max_megapixels: float,
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


def ray_address(value: str | None) -> str | None:
    """--ray's address, checked before any work (a folder name taken for one, an unset
    RAY_ADDRESS); None: no --ray."""
    if value is None:
        return None
    from deepvision.services.distributed.cluster import import_ray, resolve_address

    import_ray()
    return resolve_address(value or None)


def descriptor_from(pooling: str | None, flip: bool | None, scales: str | None,
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


def memory_budget(index_type: str | None, max_memory: str | None) -> int | None:
    """Validate --index-type (before any heavy work) and turn --max-memory into bytes."""
    from deepvision.store.faiss_index import parse_size, plan_index

    if index_type is not None:
        plan_index(index_type, 0, 1)
    return parse_size(max_memory) if max_memory else None


def checked_folders(paths: list[Path]) -> tuple[Path, ...]:
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p} does not exist (check the path)")
        if not p.is_dir():
            raise UsageError(f"{p} is not a folder; pass the folder that holds the images")
    return tuple(paths)


def checked_weights(weights: Path | None) -> Path | None:
    if weights is not None and not weights.is_file():
        raise UsageError(f"--weights {weights}: no such file")
    return weights


def checked_model(model: str) -> str:
    if model != AUTO:
        get_spec(model)  # unknown names fail here, before any heavy work
    return model


def emit(result: Any, output: Format, html: Path | None, rep: ConsoleReporter,
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


def gallery(render: Callable[[Any, Path, Any], None]) -> Callable[[Any, Path], None]:
    """An HTML renderer (output.render) given its pictures from the files
    (services.thumbnails), imported only when --html asks for a gallery."""
    def write(result: Any, out: Path) -> None:
        from deepvision.services.thumbnails import FileThumbnails

        render(result, out, FileThumbnails())

    return write


# ---- one option set for several commands --------------------------------------------------------


def shared_options(options: type[Any], *, last: tuple[str, ...] = (),
                   **before: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Declare a dataclass's fields once as options of every command decorated with it.

    Typer reads a command's signature: here its own parameters plus each field of `options`
    (its type an Annotated option, its default the option's), and the command's `opts`
    parameter receives those fields as one `options` record. `before` puts an own parameter
    before the named field and `last` lists those that come after all the fields (so --help
    keeps the order the options always had); the others come first."""
    hints = typing.get_type_hints(options, include_extras=True)
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                default=_default(f)) for f in dataclasses.fields(options)]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name != "opts"]
        named = {p.name for p in own}
        unknown = ((set(before) | set(last)) - named) | (set(before.values()) - set(hints))
        if unknown:  # a misspelt name would silently drop an option
            raise TypeError(f"shared_options on {command.__name__}: no {sorted(unknown)}")
        params = [p for p in own if p.name not in before and p.name not in last]
        for field in shared:
            params += [p for p in own if before.get(p.name) == field.name]
            params.append(field)
        params += [p for p in own if p.name in last]

        @functools.wraps(command)
        def run(**values: Any) -> None:
            command(**{k: v for k, v in values.items() if k not in hints},
                    opts=options(**{k: v for k, v in values.items() if k in hints}))

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return run

    return decorate


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:  # a list option: [] as Typer's default
        return field.default_factory()
    return field.default
