"""Logging of the ``speech`` command.

This project's own lines (every module logs to ``logging.getLogger(__name__)`` under the
``speech``, ``jobs``, ``serve``, ``bench`` and ``cli`` packages) go to stderr as ``speech: ...``:
from INFO up by default, DEBUG with ``-v`` (with the logger's name), WARNING with ``-q``.
Ray's own INFO lines (local cluster start) are not the command's: the job's Ray session starts
Ray with its logging at WARNING (``jobs.runtime.ray_session``); Ray Data's progress lines have
loggers of their own and stay.
"""

from __future__ import annotations

import logging
import sys

#: The loggers of this project's packages.
_OUR_LOGGERS = ("speech", "jobs", "serve", "bench", "cli")


class _Stderr(logging.StreamHandler):
    """A handler writing to the ``sys.stderr`` of the moment (a test's capture, say), not to
    the one current when it was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


class _Formatter(logging.Formatter):
    """``speech: message`` for INFO and DEBUG, ``speech: warning: message`` above; with
    ``names``, the logger's name too (``speech: [jobs.transcribe] message``)."""

    def __init__(self, names: bool) -> None:
        super().__init__()
        self.names = names

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        name = f"[{record.name}] " if self.names else ""
        text = f"speech: {level}{name}{record.getMessage()}"
        if record.exc_info and self.names:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Our loggers at INFO (DEBUG with ``verbose``, WARNING with ``quiet``) on one stderr handler.
    Idempotent: a second call (tests call :func:`cli.main` many times) replaces the first's handler."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    for name in _OUR_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        handler = _Stderr()
        handler.setFormatter(_Formatter(names=verbose))
        logger.addHandler(handler)
        logger.setLevel(level)
