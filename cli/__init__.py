"""The ``speech`` command line: argument parsing, logging set-up and exit codes.

The top layer: it imports ``speech``, ``jobs``, ``serve`` and ``bench``, and nothing imports it.
Heavy imports (torch, transformers, Ray) happen inside the command handlers so that
``speech --help`` answers at once. Commands live in :mod:`cli.jobs` (the corpus jobs, ``voices``,
``export``), :mod:`cli.tools` (``serve``, ``fixtures``, ``convert``) and :mod:`cli.benchmarks`.

Every failure a user can cause (bad options, inputs or output; a full or read-only disk;
no permission) ends the command with exit status 2 and one line, ``speech: error: ...``;
``-v`` adds the traceback. Anything else is a bug and keeps its traceback (exit 1).

Logging (:mod:`cli.logs`): this project's own lines go to stderr as ``speech: ...`` from INFO
up; ``-v`` adds DEBUG and the logger names, ``-q`` keeps warnings and errors only.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from cli import benchmarks, jobs, tools
from cli.errors import CliError, user_os_error
from cli.flags import CommandParser
from cli.logs import configure_logging

__all__ = ["CliError", "main", "user_os_error"]


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
    # CommandParser: a job command's flags are generated from its options when it is used.
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND", parser_class=CommandParser)
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
