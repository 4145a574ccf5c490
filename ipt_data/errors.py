"""The errors ipt_data raises on purpose: one root, `IptDataError`, and a subclass per kind of problem a user
can fix, each also inheriting the matching built-in (so `except ValueError` keeps working).

The CLI prints an `IptDataError` as one line and exits with code 2; anything else is a bug and shows
its traceback.
"""

from __future__ import annotations


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
