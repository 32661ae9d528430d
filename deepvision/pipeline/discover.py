"""Walk folders and list candidate image files (path, size, mtime). No PIL, no torch.

Only regular files are candidates: a FIFO would block the first read forever and a link to
/dev/zero never ends, so anything else is reported as `special-file` and never opened."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deepvision.types import Failure, FileRecord, Reason

# Formats Pillow decodes here (HEIC/HEIF through pillow-heif, AVIF natively since Pillow 11.3).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif",
     ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
# Image formats people keep beside their photos that we cannot decode: report them instead of
# silently ignoring them, so nobody wonders why their RAW files never show up in results.
UNSUPPORTED_EXTENSIONS = frozenset(
    {".svg", ".svgz", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf", ".srw",
     ".pef", ".xcf", ".jxl", ".jp2", ".psb", ".exr", ".hdr"}
)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
# ISO-BMFF brands of still images (HEIC, AVIF): an `ftyp` box alone does not make a video.
IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
                          b"msf1", b"avif", b"avis"})
SNIFF_BYTES = 16


@dataclass(slots=True)
class Discovery:
    files: list[FileRecord] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    ignored: int = 0  # files that are not images at all (README.txt, .csv, ...)


@dataclass(frozen=True, slots=True)
class Filters:
    include: tuple[str, ...] = ()  # globs on the path relative to the root; empty = all images
    exclude: tuple[str, ...] = ()
    hidden: bool = False  # index dot-files and dot-folders too
    follow_links: bool = True  # descend into symlinked folders (which may lie outside the root)

    def wants(self, rel: str) -> bool:
        if self.include and not any(fnmatch.fnmatch(rel, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatch(rel, g) for g in self.exclude)


def extension_kind(name: str) -> str | None:
    """'image', 'video', 'unsupported' or None (not an image file at all), case-insensitively."""
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if is_video_name(name):
        return "video"
    if ext in UNSUPPORTED_EXTENSIONS:
        return "unsupported"
    return None


def media_kind(path: str) -> str | None:
    """extension_kind, and for a name that says nothing, a video by its first bytes (.3gp,
    .qt, a copy without its extension; a sniff costs one 16-byte read)."""
    kind = extension_kind(path)
    return "video" if kind is None and looks_like_video(path) else kind


def discover(roots: Iterable[Path], filters: Filters = Filters()) -> Discovery:
    """Every candidate image below `roots` (files may also be given directly), sorted by path."""
    result = Discovery()
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        top = os.path.abspath(root)
        if os.path.isdir(top):
            _walk(top, top, filters, seen_dirs, result)
        else:
            _consider_file(top, os.path.basename(top), filters, result, direct=True)
    result.files.sort(key=lambda r: r.path)
    return result


def _walk(top: str, folder: str, filters: Filters, seen: set[tuple[int, int]],
          out: Discovery) -> None:
    try:
        st = os.stat(folder)
    except OSError as exc:
        out.failures.append(Failure(folder, Reason.IO_ERROR,
                                    f"cannot read folder: {exc.strerror}"))
        return
    # Symlinked folders are followed (unless --no-follow-links), each real folder only once:
    # this stops symlink loops and keeps a folder linked twice from being indexed twice.
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    try:
        entries = sorted(_scan(folder), key=lambda e: e.name)
    except PermissionError:
        out.failures.append(Failure(folder, Reason.PERMISSION_DENIED,
                                    "cannot list folder: permission denied (check its mode)"))
        return
    except OSError as exc:
        out.failures.append(Failure(folder, Reason.IO_ERROR,
                                    f"cannot list folder: {exc.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith(".") and not filters.hidden:
            continue
        if _is_dir(entry, filters.follow_links):
            _walk(top, entry.path, filters, seen, out)
        elif not _is_dir(entry, True):  # a linked folder we do not follow is not a file either
            rel = os.path.relpath(entry.path, top)
            _consider_file(entry.path, rel, filters, out, direct=False)


def _scan(folder: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        yield from it


def _is_dir(entry: os.DirEntry[str], follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False


def _consider_file(path: str, rel: str, filters: Filters, out: Discovery, direct: bool) -> None:
    kind = media_kind(path)
    if kind is None and not direct:
        out.ignored += 1
        return
    if not direct and not filters.wants(rel):
        return
    failure = _name_problem(path)
    st = None
    if failure is None:
        st, failure = _stat_regular(path)
    if failure is None and kind == "unsupported":
        ext = os.path.splitext(path)[1].lower()
        failure = Failure(path, Reason.UNSUPPORTED_FORMAT,
                          f"{ext} files are not supported; convert to JPEG/PNG/WebP")
    if failure is not None:
        out.failures.append(failure)
    elif st is not None:
        out.files.append(FileRecord(path, st.st_size, st.st_mtime_ns))


def _name_problem(path: str) -> Failure | None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8: cannot be stored or printed as text
        return Failure(path, Reason.BAD_FILENAME, "file name is not valid UTF-8; rename the file")
    return None


def _stat_regular(path: str) -> tuple[os.stat_result | None, Failure | None]:
    """The file's stat (following symlinks: a link to a photo is indexed under the link's
    name), or why it is no candidate: gone, a broken link, or not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return None, Failure(path, Reason.BROKEN_SYMLINK, "symlink points to a missing file")
        return None, Failure(path, Reason.VANISHED, "file disappeared while scanning")
    except OSError as exc:  # ELOOP and friends
        return None, Failure(path, Reason.BROKEN_SYMLINK, f"cannot follow: {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return None, special_file_failure(path, st.st_mode)
    return st, None


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def sniff_video(head: bytes) -> bool:
    """Whether a file's first bytes are an MP4/MOV/M4V, Matroska/WebM or AVI container."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12] not in IMAGE_BRANDS
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # old QuickTime
        return True
    return head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def looks_like_video(path: str) -> bool:
    """By name first (an image's name is trusted, as for any image); a file whose name says
    nothing (no or an unknown extension) by its first bytes. Reads only regular files."""
    kind = extension_kind(path)
    if kind is not None:
        return kind == "video"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return False
        try:
            return sniff_video(f.read(SNIFF_BYTES))
        except OSError:
            return False


def special_file_failure(path: str, mode: int) -> Failure:
    what = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    via = " (through a symlink)" if os.path.islink(path) else ""
    return Failure(path, Reason.SPECIAL_FILE,
                   f"{what}{via}, not an image file: skipped without reading it")
