"""Errors a user can cause, as the one line the command ends with (exit status 2)."""

from __future__ import annotations

import errno
import logging
import os
import sys


class CliError(Exception):
    """A problem that stops a command before it runs; printed as one line."""


#: OSErrors that come from the user's machine (where they asked us to write), not from a bug.
_USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG})


def user_os_error(err: BaseException) -> str | None:
    """A one-line message if ``err`` is, or wraps, an OSError of :data:`_USER_ERRNOS`; else None.

    Follows ``__cause__``, ``__context__`` and ``cause`` (how Ray hands over an exception raised
    in a worker), so a full disk met by a Ray Data writer reads the same as one met here.
    """
    pending, seen = [err], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _USER_ERRNOS:
            name = current.filename
            # Ray Data's wrapped errors carry a paragraph where the file name goes: only a path is shown.
            where = f": {name}" if isinstance(name, str) and "\n" not in name and len(name) < 512 else ""
            hint = ("; free some space and rerun the same command: it resumes where it stopped"
                    if current.errno in (errno.ENOSPC, errno.EDQUOT) else "")
            return f"{os.strerror(current.errno)}{where}{hint}"
        pending.extend(e for e in (current.__cause__, current.__context__, getattr(current, "cause", None))
                       if isinstance(e, BaseException))
    return None


class _QuietUserErrors(logging.Filter):
    """Drops Ray's ERROR records about an exception that :func:`user_os_error` turns into the
    command's one line (Ray Data logs a full disk as an internal error, with two tracebacks,
    before it raises). The records' exception is theirs, or the one being handled as they are
    logged; ``-v`` keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not (record.levelno >= logging.ERROR and err is not None and user_os_error(err) is not None)


def quiet_ray_user_errors(quiet: bool) -> None:
    """Put :class:`_QuietUserErrors` on Ray's log handlers (``quiet``), or take it off (``-v``)."""
    import ray.data  # noqa: F401 - configures Ray Data's log handlers, which get the filter

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, _QuietUserErrors)]:
                handler.removeFilter(old)
            if quiet:
                handler.addFilter(_QuietUserErrors())
