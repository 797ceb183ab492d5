"""Connecting to Ray: an existing cluster when given one, else a local Ray of our own."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray

#: When set (by a benchmark: bench/systems.py), every model actor appends the Unix time of its
#: first model call to this file, one line per actor: the job's first model call is the earliest.
FIRST_CALL_FILE_ENV = "SPEECH_FIRST_CALL_FILE"


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Use ``address`` (or ``RAY_ADDRESS``) if set, else start a local Ray for the job.

    A Ray that is already initialized in this process (tests, notebooks) is used as
    it is and left running.
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        start_local_ray()
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def start_local_ray() -> None:
    """Start a local Ray of this process's own for a batch job.

    ``address="local"`` always starts one: a bare ``ray.init()`` would silently join any
    cluster someone started on this machine with ``ray start``, and run there. No dashboard.
    Workers run at the driver's priority: Ray starts them at nice 15 (``worker_niceness``) to
    keep its own daemons responsive on shared nodes, but in a job's own Ray the workers are
    the job, and at nice 15 the model actor yields its cores to every other process.
    """
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
             _system_config={"worker_niceness": 0})


def record_first_call() -> None:
    """Append ``time.time()`` to ``$SPEECH_FIRST_CALL_FILE`` if it is set (see FIRST_CALL_FILE_ENV).

    One short ``O_APPEND`` write per actor, so lines from concurrent actors never interleave.
    """
    path = os.environ.get(FIRST_CALL_FILE_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.6f}\n")
