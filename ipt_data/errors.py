"""The errors ipt_data raises on purpose: one root, `IptDataError`, and a subclass per kind of problem a user
can fix, each also inheriting the matching built-in (so `except ValueError` keeps working).

The CLI prints an `IptDataError` as one line and exits with code 2; anything else is a bug and shows
its traceback.
"""

from __future__ import annotations

import errno


class IptDataError(Exception):
    """Root of every error ipt_data raises on purpose."""


class ConfigError(IptDataError, ValueError):
    """An option has a value it cannot take, or options contradict each other."""


class InputError(IptDataError, ValueError):
    """The input corpus (or the general data) cannot be read as asked."""


class InputNotFoundError(InputError, FileNotFoundError):
    """The input names a file, folder or dataset that is not there."""


class ModelUnavailableError(IptDataError, OSError):
    """The synthesizer (or its tokenizer) cannot be loaded."""


class MissingExtraError(IptDataError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""

    def __init__(self, what: str, package: str, extra: str):
        super().__init__(f"{what} needs the {package!r} package: pip install 'ipt-data[{extra}]'")


class OutputExistsError(IptDataError, FileExistsError):
    """The destination holds data that is not ours to replace (pass --overwrite to replace it)."""


class OutputUnwritableError(IptDataError, PermissionError):
    """The destination refuses writes (permissions, a Hub token without write access)."""


class EngineUnavailableError(IptDataError, ConnectionError):
    """The engine does not answer, or fails on too many prompts: the run stops, nothing is published."""


class RunStoppedError(IptDataError, InterruptedError):
    """The run was stopped (an error elsewhere, Ctrl-C) while this work was under way; it wrote nothing."""


class WorkDirMismatchError(ConfigError):
    """The work folder holds shards made with other parameters."""


class DiskFullError(IptDataError, OSError):
    """A disk ipt_data writes to (the output, the work folder, a temporary folder) is full or over quota: free
    space and run the same command again (it goes on from what is done)."""


class RunLockedError(IptDataError, RuntimeError):
    """Another run holds the work folder (or publishes to the same output) right now."""


def storage_error(exc: OSError) -> IptDataError | None:
    """The one-line error for a write that failed because of the storage (full, over quota, read-only, not
    permitted), naming the file; None for any other `OSError`."""
    if isinstance(exc, IptDataError):
        return exc
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"no space left on the disk{where}: {exc.strerror or exc}. Free space and run the same command again: "
            "it goes on from what is done (the shards made, the files already published)"
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputUnwritableError(f"cannot write{where}: {exc.strerror or exc}")
    return None


class DestinationUnavailableError(IptDataError, ConnectionError):
    """The destination (the Hub, a bucket) cannot be reached or keeps failing after retries, or refuses the
    request: nothing is published, what was sent is kept, and the same command resumes."""
