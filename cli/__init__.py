"""The ``speech`` command line: argument parsing, logging set-up and exit codes.

The top layer: it imports ``speech``, ``jobs``, ``serve`` and ``bench``, and nothing imports it.
Heavy imports (torch, transformers, Ray) happen inside the command handlers so that
``speech --help`` answers at once. Commands live in :mod:`cli.jobs` (the corpus jobs, ``voices``,
``export``), :mod:`cli.tools` (``serve``, ``fixtures``, ``convert``) and :mod:`cli.benchmarks`.

Every failure a user can cause (bad options, inputs or output; a full or read-only disk;
no permission) ends the command with exit status 2 and one line, ``speech: error: ...``;
``-v`` adds the traceback. Anything else is a bug and keeps its traceback (exit 1).

Logging: this project's own lines (the ``speech``, ``jobs``, ``serve``, ``bench`` and ``cli``
loggers) go to stderr as ``speech: ...`` from INFO up; ``-v`` adds DEBUG and the logger names,
``-q`` keeps warnings and errors only. Ray's own loggers stay at WARNING (Ray Data's progress
bars are not log lines and stay).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Sequence

from cli import benchmarks, jobs, tools
from cli.errors import CliError, user_os_error

__all__ = ["CliError", "main", "user_os_error"]

#: The loggers of this project's packages (every module logs to ``logging.getLogger(__name__)``).
_OUR_LOGGERS = ("speech", "jobs", "serve", "bench", "cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        return args.handler(args)
    except CliError as err:
        return _fail(str(err), err, args.verbose)
    except Exception as err:
        message = user_os_error(err)
        if message is None:
            raise
        return _fail(message, err, args.verbose)


def _fail(message: str, err: BaseException, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(err)
    print(f"speech: error: {message}", file=sys.stderr)
    return 2


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
    """Our loggers at INFO (DEBUG with ``verbose``, WARNING with ``quiet``) on one stderr handler;
    Ray's at WARNING. Idempotent: a second call (tests call :func:`main` many times) replaces
    the first's handler."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    for name in _OUR_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        handler = _Stderr()
        handler.setFormatter(_Formatter(names=verbose))
        logger.addHandler(handler)
        logger.setLevel(level)
    # Ray's own INFO chatter (cluster start, dashboard) is not the command's; its warnings are.
    logging.getLogger("ray").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speech",
        description="Corpus-scale speech recognition and synthesis on Ray.",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="debug lines with their logger names; on an error, also its traceback")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="only warnings and errors (default: also this project's progress lines)")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    jobs.add_transcribe(commands)
    jobs.add_embed(commands)
    jobs.add_finetune(commands)
    jobs.add_synthesize(commands)
    jobs.add_voices(commands)
    tools.add_fixtures(commands)
    jobs.add_export(commands)
    tools.add_convert(commands)
    benchmarks.add_bench(commands)
    tools.add_serve(commands)
    return parser
