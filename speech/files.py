"""Touching the user's files safely: what may be read, how long a read may take, what may be written.

Reading
    :func:`open_input` opens a local path or fsspec URL for reading. A local path must be a
    regular file: FIFOs, character devices (``/dev/zero``, ``/dev/urandom``), sockets and
    directories are refused with :class:`InputFileError` naming the kind, and the file is
    opened with ``O_NONBLOCK`` and checked again through its descriptor, so a FIFO swapped in
    between the two checks cannot block the open either. Objects on object stores are always
    plain objects. :func:`with_deadline` bounds a read in time: a read that takes longer
    (a stalled network mount, an HTTP server that never answers) raises
    :class:`InputFileError`; the abandoned read finishes (or not) in a daemon thread.

Identifying content
    :func:`fingerprints` gives each input's size and modification time from the file
    system's listing (``os.stat`` locally, the object's metadata on object stores), which is
    what a resumed job compares to tell whether an input changed since its row was written.

Writing
    :func:`file_name` turns a row id into a relative file name, or refuses it with
    :class:`UnsafeName`: the one rule for ``speech synthesize`` (``OUTPUT/audio/<id>.<fmt>``)
    and ``speech export`` (``DIR/<id>.<ext>``).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import BinaryIO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

T = TypeVar("T")

#: Default bound on one file read (seconds); jobs take ``read_timeout_s`` from their options.
READ_TIMEOUT_S = 300.0
#: Longest file name a row id may produce (bytes, every part and suffix included): well inside
#: Linux's PATH_MAX (4096) together with any sensible output directory.
MAX_NAME_BYTES = 1024
#: Longest single path part (bytes, suffix included): NAME_MAX of ext4, XFS, btrfs, tmpfs.
MAX_PART_BYTES = 255
_STAT_THREADS = 32  # concurrent metadata requests to an object store


class InputFileError(ValueError):
    """An input cannot be read: not a regular file, or its read timed out. The message says which."""


class UnsafeName(ValueError):
    """A row id cannot name a file; the message says why."""


#: Errors of the place written to, not of the row being written: a job stops on them (the
#: rerun resumes) instead of giving every remaining row the same error.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_environment_error(err: BaseException) -> bool:
    """Whether ``err`` is an OSError of :data:`ENVIRONMENT_ERRNOS` (disk full, quota, read-only)."""
    return isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def open_input(path: str) -> BinaryIO:
    """``path`` (local path or fsspec URL) opened for binary reading; local paths must be regular files.

    Raises:
        InputFileError: a local path that is a FIFO, device, socket or directory.
        OSError: the file cannot be opened (missing, no permission).
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not is_local(fs):
        return fs.open(fs_path, "rb")
    _check_regular(os.stat(fs_path).st_mode)  # a socket cannot even be opened: name it first
    fd = os.open(fs_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_regular(os.fstat(fd).st_mode)  # the file opened is the file checked
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    """What ``stat`` mode bits ``mode`` describe, in words ("FIFO", "character device", ...)."""
    kinds = [
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "special file")


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise InputFileError(f"not a regular file: {file_kind(mode)}")


def with_deadline(read: Callable[[], T], timeout_s: float | None, what: str) -> T:
    """``read()``, or :class:`InputFileError` if it takes more than ``timeout_s`` seconds (None: no bound).

    The read runs in a daemon thread: Python cannot interrupt a blocked system call, so a read
    that never returns is abandoned there (it holds its file until it does) and the caller goes on.
    """
    if timeout_s is None:
        return read()
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = read()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = err
        finally:
            finished.set()

    threading.Thread(target=run, name="speech-read", daemon=True).start()
    if not finished.wait(timeout_s):
        raise InputFileError(f"reading {what} took longer than read_timeout_s ({timeout_s:g} s)")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def read_bytes(path: str, timeout_s: float | None = READ_TIMEOUT_S) -> bytes:
    """All bytes of ``path`` (regular local file or fsspec URL), read within ``timeout_s`` seconds."""

    def read() -> bytes:
        with open_input(path) as f:
            return f.read()

    return with_deadline(read, timeout_s, path)


# --- identifying content -------------------------------------------------------------------


def fingerprints(paths: Sequence[str], timeout_s: float | None = READ_TIMEOUT_S) -> list[tuple[int | None, int | None]]:
    """``(size in bytes, modification time in ns since the epoch, UTC)`` of each path, None where unknown.

    Local paths: ``os.stat`` (symlinks followed). URLs: the object's metadata (``size``, and
    ``LastModified``/``updated``/``mtime``, whichever the file system gives), fetched
    concurrently, each within ``timeout_s``. A path that cannot be looked up gets ``(None,
    None)``: its row will carry the lookup's error when it is read.
    """
    results: list[tuple[int | None, int | None]] = [(None, None)] * len(paths)
    remote = []
    for index, path in enumerate(paths):
        if "://" not in path:  # a plain local path (most inputs): no file system lookup needed
            results[index] = _local_fingerprint(path)
            continue
        fs, fs_path = fsspec.core.url_to_fs(path)
        if is_local(fs):
            results[index] = _local_fingerprint(fs_path)
        else:
            remote.append(index)
    if remote:
        pool = ThreadPoolExecutor(_STAT_THREADS, thread_name_prefix="speech-stat")
        try:
            futures = {index: pool.submit(_remote_fingerprint, paths[index]) for index in remote}
            for index, future in futures.items():
                try:
                    results[index] = future.result(timeout=timeout_s)
                except FutureTimeout:
                    pass  # unknown; reading the file will time out and say so in its row
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return results


def _local_fingerprint(path: str) -> tuple[int | None, int | None]:
    try:
        info = os.stat(path)
    except OSError:
        return None, None
    return info.st_size, info.st_mtime_ns


def _remote_fingerprint(path: str) -> tuple[int | None, int | None]:
    try:
        fs, fs_path = fsspec.core.url_to_fs(path)
        info = fs.info(fs_path)
    except Exception:  # noqa: BLE001 - any lookup failure means "unknown"; reading the file reports it
        return None, None
    size = info.get("size")
    return (int(size) if size is not None else None), _mtime_ns(info)


def _mtime_ns(info: dict) -> int | None:
    """The modification time in an fsspec ``info`` dict, whatever the file system calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return int(value * 1_000_000_000)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            return int(value.timestamp() * 1_000_000) * 1000
    return None


# --- writing -------------------------------------------------------------------------------


def file_name(row_id: str, suffix: str) -> str:
    """The relative file name ``<id><suffix>`` of a row, or :class:`UnsafeName` saying why not.

    Ids keep their ``/`` subdirectories (``en/001``) but are refused, never rewritten (a
    rewrite could make two rows share a file), when they are empty, absolute, have an empty,
    ``.`` or ``..`` part, a backslash or a control character (newline, tab, NUL, DEL, ...),
    a part over :data:`MAX_PART_BYTES` or a whole name over :data:`MAX_NAME_BYTES` (UTF-8).
    """
    if not row_id:
        raise UnsafeName("id is empty")
    if row_id.startswith("/"):
        raise UnsafeName(f"id {_shown(row_id)} is an absolute path")
    if "\\" in row_id or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in row_id):
        raise UnsafeName(f"id {_shown(row_id)} holds a backslash or a control character")
    parts = row_id.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeName(f"id {_shown(row_id)} has an empty, '.' or '..' part")
    name = f"{row_id}{suffix}"
    longest = max(len(part.encode("utf-8")) for part in name.split("/"))
    if longest > MAX_PART_BYTES or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UnsafeName(
            f"id of {len(row_id)} characters is too long for a file name "
            f"(at most {MAX_PART_BYTES} bytes a part and {MAX_NAME_BYTES} in all)"
        )
    return name


def _shown(row_id: str, limit: int = 60) -> str:
    """An id for a message: quoted, control characters escaped, cut at ``limit`` characters."""
    return repr(row_id if len(row_id) <= limit else row_id[:limit] + "...")
