"""A run's log file: `run.log` in the work folder, everything the package logs at INFO and above during the
run (engine batch splits, chain breaks, shards queued for retry, the openai engine's fallbacks, device pins),
with secrets scrubbed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ipt_data.redact import RedactingFilter


@contextlib.contextmanager
def run_log(work_path: Path, secrets: list[str] | tuple[str, ...] = ()) -> Iterator[Path]:
    """Log the package to `<work_path>/run.log` while the block runs, scrubbing `secrets` too."""
    path = Path(work_path) / "run.log"
    handler = logging.FileHandler(path, encoding="utf-8")
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
