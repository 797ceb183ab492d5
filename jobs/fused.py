"""The fused stage: preparation inside the model actor's process, for small clusters.

On a machine with few CPUs per model replica (a laptop, a 2-core VM), a separate prepare
actor is one more Python process that imports the front end's libraries at start-up and takes
CPU from the model while it runs, for work that costs ~0.3% of a CPU model's (decode,
resample, features: docs/benchmarks.md). There the job runs one actor stage instead:
:class:`FusedUnits` holds the task's front end (a :class:`jobs.prepare.PrepareUnits`) and its
model stage, and prepares the next window of files in a thread while the model runs on the
current one, so the pipeline is probe/sort -> fused -> write.

:func:`choose` decides between this and the separate stage (``prepare`` option: ``auto``,
``separate`` or ``fused``); the separate stage stays where it pays: GPU model actors (the CPU
work would stall the GPU's feeding thread) and clusters with CPUs to spare per model replica.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from jobs.prepare import PrepareUnits
from jobs.units import Unit
from speech.asr import ModelKind
from speech.options import AudioJobOptions

log = logging.getLogger(__name__)

#: ``prepare: auto`` fuses when the model actors use no GPU and the cluster has fewer CPUs
#: than this per model replica (the pool's maximum). Below it, the model's threads take most
#: cores and a prepare actor competes with them; at or above it, a separate CPU stage runs on
#: cores the model does not use.
FUSE_BELOW_CPUS_PER_REPLICA = 4

#: Windows of ``prepare_window`` files per fused call: one call prepares window k+1 while the
#: model runs window k, so only a call's first window is not overlapped. A crashed actor's
#: call is redone whole, so calls are kept to a few windows.
WINDOWS_PER_CALL = 4


def choose(options: AudioJobOptions, cluster_cpus: float) -> bool:
    """Whether to fuse preparation into the model actors, logged in one INFO line.

    ``auto`` fuses CPU model actors on a cluster with few CPUs per replica, unless the separate
    stage was sized by hand (``prepare_actors`` or ``cpus_per_prepare`` given).

    ``cluster_cpus``: the CPUs of the Ray cluster the job runs on (``ray.cluster_resources``).
    """
    replicas = options.pool.max
    if options.prepare != "auto":
        fused = options.prepare == "fused"
        log.info("prepare: %s (set by the prepare option)", "fused into the model actors" if fused else "separate actors")
        return fused
    given = options.separate_stage_given
    if given:  # sized by hand for the separate stage: fusing would silently drop them
        log.info("prepare: separate actors (auto: %s given; prepare: fused to change)", ", ".join(given))
        return False
    if options.gpus_per_actor > 0:
        log.info("prepare: separate actors (auto: the model actors use GPUs; prepare: fused to change)")
        return False
    per_replica = cluster_cpus / replicas
    fused = per_replica < FUSE_BELOW_CPUS_PER_REPLICA
    log.info(
        "prepare: %s (auto: %g cluster CPUs for %d CPU model replica%s, %s %d per replica; prepare: %s to change)",
        "fused into the model actors" if fused else "separate actors", cluster_cpus, replicas,
        "" if replicas == 1 else "s", "under" if fused else "at least", FUSE_BELOW_CPUS_PER_REPLICA,
        "separate" if fused else "fused",
    )
    return fused


def rows_per_call(options: AudioJobOptions, rows: int) -> int:
    """Input rows per fused call for a job of ``rows`` inputs: whole windows (cut where the
    separate stage cuts them), up to :data:`WINDOWS_PER_CALL`, and fewer when that leaves
    some of the pool's actors without a call."""
    windows = math.ceil(rows / options.prepare_window)
    return options.prepare_window * max(1, min(WINDOWS_PER_CALL, windows // options.pool.max))


class FusedUnits:
    """Ray Data callable: sorted input rows -> output rows, prepared and recognized in one actor.

    ``front_end`` and ``model_stage``: the task's (see :class:`jobs.task.Task`). Each call takes up
    to :func:`rows_per_call` rows, cuts them into windows of ``prepare_window`` rows (as the
    separate prepare stage does, so both paths plan the same batches) and returns the rows of
    the task's model stage.
    """

    def __init__(self, options: AudioJobOptions, kind: ModelKind, front_end, model_stage: type):
        self.window = options.prepare_window
        self.model = model_stage(options, kind)  # first: it sets the torch threads of this process
        self.prepare = PrepareUnits(options, kind, front_end)
        # One thread: decode and features are ~0.3% of a CPU model's work, so one thread keeps
        # ahead of it; at a lower priority, so that the model's torch threads keep the cores
        # they were sized for (when the model waits for a window, the thread runs at full speed).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="prepare", initializer=_lower_priority)

    def __call__(self, batch: pa.Table) -> pa.Table:
        windows = [batch.slice(i, self.window) for i in range(0, batch.num_rows, self.window)]
        return self.model.table(self._units(windows))

    def _units(self, windows: list[pa.Table]) -> Iterator[Unit]:
        """The units of ``windows`` in order, window k+1 prepared in the thread while the caller
        runs the model on window k's units (at most one window waits ahead: bounded memory)."""
        ahead: Future | None = None
        for k in range(len(windows)):
            units = ahead.result() if ahead is not None else self.prepare.units(windows[k])
            ahead = self._thread.submit(self.prepare.units, windows[k + 1]) if k + 1 < len(windows) else None
            yield from units
        # Every submitted window was consumed above, so nothing is left running here.


#: Niceness added to the prepare thread (Linux applies it to the thread alone).
PREPARE_NICENESS = 10


def _lower_priority() -> None:
    """Make the calling thread yield the CPU to the model's threads (Linux; elsewhere a no-op,
    since other systems would apply it to the whole process)."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + PREPARE_NICENESS)
