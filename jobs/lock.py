"""One job at a time per output directory: a lease file, ``OUTPUT/_lock.json``.

A job takes the lease before it reads what earlier runs wrote and holds it until its summary
is written. The file names its owner (host, pid, run id, when it started) and a heartbeat
that a daemon thread refreshes every :data:`HEARTBEAT_S` seconds. A second job into the same
output finds the file and stops with :class:`~jobs.output.OutputError` naming the owner.

A lease is *stale*, and is taken over with a warning, when its heartbeat is older than
:data:`STALE_S` seconds, or when its owner ran on this host and that process is gone (a
``kill -9``, an OOM kill, a crashed machine that came back).

Atomicity: on a local file system the lease is created with ``O_CREAT | O_EXCL`` and a stale
one is first renamed aside, so of two jobs starting at once exactly one gets it. Object stores
offer no such create through fsspec: there the lease is written and read back, and the job
goes on only if it reads its own run id (best effort: two jobs starting within the same
moment may both pass).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import fsspec

from speech.files import is_local

log = logging.getLogger(__name__)

LOCK_FILE = "_lock.json"
HEARTBEAT_S = 10.0  # how often the owner refreshes its heartbeat
STALE_S = 120.0  # a heartbeat older than this means the owner is gone


class LockHeld(Exception):
    """Another live job holds the output; the message names it."""


@dataclass(frozen=True)
class Owner:
    """What the lease file says about the job holding it."""

    host: str
    pid: int
    run_id: str
    started: float  # seconds since the epoch
    heartbeat: float  # seconds since the epoch

    def describe(self, now: float) -> str:
        since = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"host {self.host}, pid {self.pid}, since {since}, last heartbeat {now - self.heartbeat:.0f} s ago"

    def is_stale(self, now: float) -> bool:
        if now - self.heartbeat > STALE_S:
            return True
        return self.host == socket.gethostname() and not _alive(self.pid)


class Lease:
    """The lease on one output directory, held by this process from :meth:`acquire` to :meth:`release`."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str):
        self.fs = fs
        self.path = f"{root.rstrip('/')}/{LOCK_FILE}"
        now = time.time()
        self.owner = Owner(socket.gethostname(), os.getpid(), uuid.uuid4().hex, now, now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        """Take the lease (taking over a stale one) and start the heartbeat; :class:`LockHeld` if it is taken."""
        for _ in range(3):  # a lease that vanishes under us (its owner finished) is tried again
            if self._create() if is_local(self.fs) else self._create_best_effort():
                self._thread = threading.Thread(target=self._beat, name="speech-lease", daemon=True)
                self._thread.start()
                return self
        raise LockHeld(f"could not take {self.path}: it changed hands three times; try again")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            current = self._read()
            if current is not None and current.run_id == self.owner.run_id:
                self.fs.rm(self.path)

    # -- taking it --

    def _create(self) -> bool:
        """Local: exclusive create; True when the lease is ours, False to try again."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._take_over_if_stale(local=True)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self.owner), f)
        return True

    def _create_best_effort(self) -> bool:
        """Object stores: write the lease unless a live one is there, then read it back."""
        if self.fs.exists(self.path) and not self._take_over_if_stale(local=False):
            return False
        self._write(self.owner)
        current = self._read()
        if current is None or current.run_id != self.owner.run_id:
            raise LockHeld(self._held_message(current))
        return True

    def _take_over_if_stale(self, *, local: bool) -> bool:
        """Raise :class:`LockHeld` if the current lease is live; else clear it (True when the
        caller may write its own, False to start over because the file changed meanwhile)."""
        current = self._read()
        if current is None:
            return False  # gone between our attempt and this read: try again
        now = time.time()
        if not current.is_stale(now):
            raise LockHeld(self._held_message(current))
        log.warning("taking over the stale lock %s of a job that is gone (%s)", self.path, current.describe(now))
        if not local:
            return True
        aside = f"{self.path}.stale-{self.owner.run_id}"
        try:
            os.rename(self.path, aside)  # atomic: of two jobs taking over, one moves it
        except FileNotFoundError:
            return False
        moved = _parse(aside)
        if moved is not None and moved.run_id != current.run_id:
            # Another job took over and wrote its own lease between our read and our rename:
            # put its lease back, unless a third one was created meanwhile.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.remove(aside)
            raise LockHeld(self._held_message(moved))
        os.remove(aside)
        return False  # now create ours exclusively

    def _held_message(self, owner: Owner | None) -> str:
        who = owner.describe(time.time()) if owner is not None else "unknown owner"
        return f"in use by another job ({who}; lock file {self.path})"

    # -- the heartbeat --

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            current = self._read()
            if current is None or current.run_id != self.owner.run_id:
                log.error("lost the lock %s to %s; another job may write the same output",
                          self.path, current.describe(time.time()) if current else "nobody")
                return
            try:
                self._write(Owner(**{**asdict(self.owner), "heartbeat": time.time()}))
            except OSError as err:  # a full disk must not kill the job; the lease just ages
                log.warning("cannot refresh the lock %s: %s", self.path, err)

    def _write(self, owner: Owner) -> None:
        text = json.dumps(asdict(owner))
        if is_local(self.fs):  # readers never see a half-written lease
            temp = f"{self.path}.{self.owner.run_id}.tmp"
            with open(temp, "w") as f:
                f.write(text)
            os.replace(temp, self.path)
        else:
            self.fs.pipe_file(self.path, text.encode())

    def _read(self) -> Owner | None:
        if is_local(self.fs):
            return _parse(self.path)
        try:
            return _owner(self.fs.cat_file(self.path), self.fs.info(self.path).get("mtime"))
        except FileNotFoundError:
            return None


def _parse(path: str) -> Owner | None:
    """The owner in a local lease file; None if there is no such file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return _owner(data, mtime)


def _owner(data: bytes, mtime: float | None) -> Owner:
    try:
        return Owner(**json.loads(data))
    except (ValueError, TypeError):
        # Created but not yet written (or written by something else): judge it by its age.
        stamp = float(mtime) if isinstance(mtime, (int, float)) else time.time()
        return Owner(host="?", pid=0, run_id="?", started=stamp, heartbeat=stamp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
