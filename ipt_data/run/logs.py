"""A run's log file: `run.log` in the work folder, everything the package logs at INFO and above during the
run (engine batch splits, chain breaks, shards queued for retry, the openai engine's fallbacks, device pins),
with secrets scrubbed."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from ipt_data.redact import RedactingFilter


class _QuietFileHandler(logging.FileHandler):
    """A file handler that, when a write fails (a full disk), says so once on stderr and then stops writing,
    instead of printing a traceback for every record; the run's own error says what failed."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not getattr(self, "failed", False):
            self.failed = True
            sys.stderr.write(f"ipt-data: warning: cannot write {self.baseFilename}; the run log stops here\n")

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(self, "failed", False):
            super().emit(record)


@contextlib.contextmanager
def run_log(work_path: Path, secrets: list[str] | tuple[str, ...] = ()) -> Iterator[Path]:
    """Log the package to `<work_path>/run.log` while the block runs, scrubbing `secrets` too."""
    path = Path(work_path) / "run.log"
    handler = _QuietFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    logger = logging.getLogger("ipt_data")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
