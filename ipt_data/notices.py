"""Warnings a person running the CLI must see, not only find later in `run.log`: code logs them as usual, with
`extra=NOTICE`; `to_stderr()` (the CLI) prints those records as `ipt-data: warning: ...`, and no others."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

NOTICE = {"notice": True}


class _Notices(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.addFilter(lambda record: getattr(record, "notice", False))

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"ipt-data: warning: {record.getMessage()}\n")


@contextlib.contextmanager
def to_stderr() -> Iterator[None]:
    """While the block runs, notices from `ipt_data` loggers are printed to stderr."""
    handler, logger = _Notices(), logging.getLogger("ipt_data")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
