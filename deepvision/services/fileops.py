"""What `dupes apply` does to one file, and how `undo` takes it back.

Every operation is idempotent and can tell from the disk whether it already happened, which is
what lets a rerun or an undo settle a step a kill -9 interrupted: the file is still there as it
was recorded (not done), or it is gone / a link / at its destination (done).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
from pathlib import Path
from urllib.parse import unquote

from deepvision.services.journal import Journal, Step

ACTIONS = ("trash", "move-to", "hardlink", "symlink", "delete")
REMOVING = ("trash", "move-to", "delete")  # the file leaves the index; links stay in it


class StepError(Exception):
    """A step that cannot be carried out or undone; the message says why."""


# ---- checks ----------------------------------------------------------------------------------


def untouched(path: str, size: int, mtime_ns: int) -> bool:
    """A regular file (not a link) with the recorded size and mtime."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns == mtime_ns


def content_hash(path: str) -> str:
    from deepvision.pipeline.hashing import hash_one
    from deepvision.types import FileRecord

    return hash_one(FileRecord(path, 0, 0)).digest


def linked(step: Step, action: str) -> bool:
    """The step's link is in place."""
    try:
        if action == "symlink":
            return os.path.islink(step.path) and os.readlink(step.path) == step.keeper
        return os.path.samefile(step.path, step.keeper) and not os.path.islink(step.path)
    except OSError:
        return False


def same_filesystem(a: str, b: str) -> bool:
    return os.stat(os.path.dirname(a) or ".").st_dev == os.stat(b).st_dev


# ---- moving safely -----------------------------------------------------------------------------


def move(src: str, dest: str) -> None:
    """rename, or across filesystems copy + fsync + rename into place + unlink: at every moment
    at least one whole copy exists (a kill may leave both; the next run sees the source and
    moves it again)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = f"{dest}.dv-partial"
    shutil.copy2(src, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    os.unlink(src)


def _link_tmp(journal: Journal, step: Step) -> str:
    """A name beside the file for the new link (replaced over it atomically); named after the
    journal and step so a rerun or undo can clean one a kill left."""
    folder, name = os.path.split(step.path)
    return os.path.join(folder, f".{name}.dv-{journal.path.stem[6:]}-{step.i}.tmp")


def _restore_copy(src: str, step: Step) -> None:
    """Recreate a byte-identical file from the keeper: copy beside it, then replace."""
    tmp = f"{step.path}.dv-restore"
    shutil.copyfile(src, tmp)
    os.chmod(tmp, stat.S_IMODE(step.mode))
    os.utime(tmp, ns=(step.mtime_ns, step.mtime_ns))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if content_hash(tmp) != step.hash:
        os.unlink(tmp)
        raise StepError(f"cannot restore {step.path}: its keeper {src} changed since")
    os.replace(tmp, step.path)


# ---- trash (freedesktop.org trash through send2trash) -----------------------------------------


def _trash_dirs(path: str) -> list[str]:
    from send2trash import plat_other as t

    mount = os.fsdecode(t.find_mount_point(os.fsencode(path)))
    uid = str(os.getuid())
    return [t.HOMETRASH, os.path.join(mount, ".Trash", uid), os.path.join(mount, f".Trash-{uid}")]


def find_trashed(step: Step) -> str | None:
    """Where send2trash put the file: the trash entry whose info names its path and whose file
    has its size and mtime (send2trash does not say; it names entries `a.jpg`, `a 1.jpg`, ...)."""
    base, ext = os.path.splitext(os.path.basename(step.path))
    for trash in _trash_dirs(step.path):
        for n in range(10_000):
            name = f"{base} {n}{ext}" if n else f"{base}{ext}"
            info = os.path.join(trash, "info", name + ".trashinfo")
            if not os.path.exists(info):
                break
            entry = os.path.join(trash, "files", name)
            if _info_path(info, trash) == step.path and untouched(entry, step.size, step.mtime_ns):
                return entry
    return None


def _info_path(info: str, trash: str) -> str | None:
    try:
        with open(info, encoding="utf-8") as f:
            for line in f:
                if line.startswith("Path="):
                    path = unquote(line[5:].strip())
                    # a volume's trash records paths relative to the volume's top folder
                    top = os.path.dirname(os.path.dirname(trash)) if "/.Trash/" in trash \
                        else os.path.dirname(trash)
                    return path if os.path.isabs(path) else os.path.join(top, path)
    except OSError:
        return None
    return None


# ---- doing -----------------------------------------------------------------------------------


def do(journal: Journal, step: Step) -> str | None:
    """Carry out (or finish) one step; returns where the file went, if anywhere."""
    action = journal.action
    if action == "trash":
        return _trash(step)
    if action == "move-to":
        assert step.dest is not None
        if untouched(step.path, step.size, step.mtime_ns):
            if _is_copy(step.dest, step):  # a kill between the copy and the unlink
                os.unlink(step.path)
            elif os.path.lexists(step.dest):
                raise StepError(f"{step.dest} already exists; not overwriting it")
            else:
                move(step.path, step.dest)
        elif not os.path.lexists(step.dest):
            raise StepError(f"{step.path} is gone, and not at {step.dest}")
        return step.dest
    if step.dest and untouched(step.path, step.size, step.mtime_ns):
        move(step.path, step.dest)  # a non-identical copy waits in the journal's folder
    if action == "delete":
        if step.dest is None and untouched(step.path, step.size, step.mtime_ns):
            os.unlink(step.path)
        return step.dest
    if not linked(step, action):
        _link(journal, step)
    return step.dest


def _trash(step: Step) -> str:
    if untouched(step.path, step.size, step.mtime_ns):
        if sys.platform != "linux":
            raise StepError("--action trash with undo is supported on Linux only; use move-to")
        from send2trash import send2trash

        send2trash(step.path)
    found = find_trashed(step)
    if found is None:
        raise StepError(f"{step.path} is gone, and not in the trash as it was recorded")
    return found


def _link(journal: Journal, step: Step) -> None:
    tmp = _link_tmp(journal, step)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    if journal.action == "symlink":
        os.symlink(step.keeper, tmp)
    else:
        os.link(step.keeper, tmp)
    os.replace(tmp, step.path)


# ---- undoing ---------------------------------------------------------------------------------


def undo(journal: Journal, step: Step) -> bool:
    """Put the step's file back as it was; False when it was never touched."""
    action = journal.action
    leftovers = [_link_tmp(journal, step), *([f"{step.dest}.dv-partial"] if step.dest else [])]
    for leftover in leftovers:  # a link or a copy a kill left half made
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    if action in ("hardlink", "symlink") and linked(step, action):
        if step.dest is not None:
            return _back(step.dest, step)
        _restore_copy(step.keeper, step)
        return True
    if untouched(step.path, step.size, step.mtime_ns):
        _settle_untouched(action, step)
        return False  # never touched (or already put back)
    if action == "trash":
        return _untrash(journal, step)
    if step.dest is not None:  # move-to, or a non-identical copy kept in the journal's folder
        return _back(step.dest, step)
    if not os.path.lexists(step.path):  # an identical copy that was deleted
        _restore_copy(step.keeper, step)
        return True
    raise StepError(f"cannot undo {action} of {step.path}: it changed since apply")


def _is_copy(path: str, step: Step) -> bool:
    """`path` holds the step's file: its size, mtime (copy2 keeps it) and content."""
    return untouched(path, step.size, step.mtime_ns) and content_hash(path) == step.hash


def _settle_untouched(action: str, step: Step) -> None:
    """What a kill can leave beside a file that is still in place: a finished copy of a
    cross-filesystem move (removed: the original is here), a trash entry's info file without
    its file (removed: it names a file that never went)."""
    if action == "move-to" and step.dest and _is_copy(step.dest, step):
        os.unlink(step.dest)
    if action == "trash":
        for trash in _trash_dirs(step.path):
            info = os.path.join(trash, "info")
            for name in os.listdir(info) if os.path.isdir(info) else []:
                entry = os.path.join(trash, "files", name.removesuffix(".trashinfo"))
                if name.startswith(os.path.splitext(os.path.basename(step.path))[0]) and \
                        not os.path.lexists(entry) and \
                        _info_path(os.path.join(info, name), trash) == step.path:
                    os.unlink(os.path.join(info, name))


def _back(source: str, step: Step) -> bool:
    if not os.path.lexists(source):
        raise StepError(f"cannot restore {step.path}: {source} is gone")
    if os.path.lexists(step.path):
        if not (os.path.islink(step.path) or _same(step.path, step.keeper)):
            raise StepError(f"cannot restore {step.path}: a different file is there now")
        os.unlink(step.path)  # the link apply made
    move(source, step.path)
    return True


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _untrash(journal: Journal, step: Step) -> bool:
    entry = journal.dests.get(step.i) or find_trashed(step)
    if entry is None or not os.path.lexists(entry):
        raise StepError(f"cannot restore {step.path}: it is no longer in the trash")
    move(entry, step.path)
    name = os.path.basename(entry)
    info = Path(entry).parent.parent / "info" / f"{name}.trashinfo"
    info.unlink(missing_ok=True)
    return True
