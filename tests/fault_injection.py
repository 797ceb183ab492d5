"""Fault injection for the reliability tests: model stages that fail on purpose.

Production code has no hook for this: a job's model stage is the :class:`jobs.task.Task`'s
``model_stage``, and :func:`faulty_task` returns the task with that stage replaced by a
subclass that kills its actor process or raises for chosen input ids. Ray's workers cannot
import this test module, so it is registered with cloudpickle to travel by value.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import ray.cloudpickle

from jobs.task import Task

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class InjectedFault(RuntimeError):
    """Raised in place of a model failure for a poisoned id."""


def faulty_task(task: Task, *, crash_on_id: str | None = None, crash_marker: str | None = None,
                poison_ids: Sequence[str] = ()) -> Task:
    """``task`` whose model actors fail on purpose.

    ``crash_on_id``: the actor process dies (``os._exit``) the first time a model call holds this
    id; "first" is kept by the file ``crash_marker``, created just before dying, so the actor
    Ray restarts gets through the retried call. ``poison_ids``: model calls holding one of them
    raise :class:`InjectedFault` (the batch call, and the retry of the poisoned item alone).
    """
    poisoned = frozenset(poison_ids)

    class Faulty(task.model_stage):
        def _recognize(self, unit):
            if crash_on_id is not None and crash_on_id in {i.id for i in unit.items if i.error is None}:
                _crash_once(Path(crash_marker))
            return super()._recognize(unit)

        def _infer(self, items, batches):
            hit = sorted(poisoned & {i.id for i in items})
            if hit:
                raise InjectedFault(f"injected model failure for {', '.join(hit)}")
            return super()._infer(items, batches)

    Faulty.__name__ = Faulty.__qualname__ = f"Faulty{task.model_stage.__name__}"
    return dataclasses.replace(task, model_stage=Faulty)


def _crash_once(marker: Path) -> None:
    if not marker.exists():
        marker.touch()
        os._exit(17)
