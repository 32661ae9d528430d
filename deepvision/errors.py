"""The few error types library code raises; only the CLI turns them into exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (docs/reference/exit-codes.md)."""

    OK = 0
    INTERNAL = 1  # a bug: Python's own code for an uncaught exception
    USAGE = 2  # bad option or path (also what Typer/Click use for usage errors)
    PARTIAL = 3  # completed, but some files were skipped or some queries failed
    NO_INDEX = 4  # no index at the given --index-dir/--name
    INCOMPATIBLE = 5  # index built with another model/weights/schema: rebuild it
    NO_WEIGHTS = 6  # model weights cannot be found or loaded
    NO_IMAGES = 7  # the folder holds no image files at all
    LOCKED = 8  # another index/rebuild run holds the index
    MASS_DELETE = 9  # a recorded folder is empty: refused to drop its files from the index
    STORAGE = 10  # the index could not be written: disk full, read-only filesystem, I/O error
    CORRUPT = 11  # the index's files on disk are damaged or unreadable
    CLUSTER = 12  # --ray: the cluster cannot be reached, or it lost work for good


class DeepVisionError(Exception):
    """Base class: a message meant for the user, and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(DeepVisionError):
    exit_code = ExitCode.USAGE


class NotFoundError(UsageError):
    """A thing the user named by id (a duplicate group, an apply journal) is not there: a usage
    error to the CLI, a 404 to the service."""


class PlanChangedError(UsageError):
    """An apply asked to carry out a dry run's plan, and the plan is no longer that one."""


class BackendError(UsageError):
    """A --backend that cannot run this model here (export failed, disagrees with torch)."""


class IndexNotFoundError(DeepVisionError):
    exit_code = ExitCode.NO_INDEX


class IncompatibleIndexError(DeepVisionError):
    exit_code = ExitCode.INCOMPATIBLE


class WeightsUnavailableError(DeepVisionError):
    exit_code = ExitCode.NO_WEIGHTS


class NoImagesError(DeepVisionError):
    exit_code = ExitCode.NO_IMAGES


class IndexLockedError(DeepVisionError):
    exit_code = ExitCode.LOCKED


class MassDeleteError(DeepVisionError):
    exit_code = ExitCode.MASS_DELETE


class StorageError(DeepVisionError):
    exit_code = ExitCode.STORAGE


class CorruptIndexError(DeepVisionError):
    exit_code = ExitCode.CORRUPT


class ClusterError(DeepVisionError):
    """--ray: the cluster cannot be reached, or failed the run (what was committed stays)."""

    exit_code = ExitCode.CLUSTER
