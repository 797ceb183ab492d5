"""Connecting to Ray: an existing cluster when given one, else a local Ray of our own."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray


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
    # "local" always starts a Ray of our own: a bare ray.init() would silently join any
    # cluster someone started on this machine with `ray start`, and run there.
    ray.init(
        address=address or "local",
        include_dashboard=False if address is None else None,
        logging_level=logging.WARNING,
    )
    try:
        yield
    finally:
        ray.shutdown()
