"""The console output of every stage goes through `logging` (one logger per module, under
"qmtgan"): progress at INFO on stdout, warnings and errors on stderr. `qmtgan -v` adds DEBUG,
`-q` keeps warnings only. Library callers configure logging as they like; nothing is printed
at INFO until `configure` (or their own handler) says so."""

from __future__ import annotations

import logging
import sys

ROOT = "qmtgan"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def configure(verbosity: int = 0) -> None:
    """-1 quiet, 0 normal, 1 and more verbose. Safe to call again (replaces its handlers)."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS[max(-1, min(1, verbosity))])
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, "_qmtgan", False)]:
        logger.removeHandler(handler)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_BelowWarning())
    out.setFormatter(logging.Formatter("%(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    for handler in (out, err):
        handler._qmtgan = True
        logger.addHandler(handler)


def verbosity() -> int:
    """The verbosity `configure` was given (for worker processes to configure the same)."""
    level = logging.getLogger(ROOT).getEffectiveLevel()
    return {logging.WARNING: -1, logging.INFO: 0}.get(level, 1 if level < logging.INFO else -1)
