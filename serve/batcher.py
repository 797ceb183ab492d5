"""A replica's batch queue: one model call at a time, its batch formed the moment the model is free.

Why not Ray Serve's ``@serve.batch``
    In Ray 2.60 (``ray/serve/batching.py``) a background loop forms a batch
    (``wait_for_batch``: the first queued request plus whatever arrives within
    ``batch_wait_timeout_s``) and hands it to a task that then waits for the
    ``max_concurrent_batches`` semaphore; the loop goes straight on to form the next batch.
    While a model call runs, the requests that arrive are therefore cut into several small
    batches, each frozen when it was formed, which then run one after another: with 16
    requests in flight on a CPU, where a call takes seconds, its batches averaged 3.2
    requests of 16. A timeout near 0 makes that worse (batches of one); a long one delays
    every request of an idle replica. Its ``batch_size_fn`` is also one bound where we need
    two (requests and work), and a request that does not fit goes to the back of its queue.

What this queue does
    Requests wait in one queue per replica, in arrival order, whatever they call (file
    transcription, live-session steps, speech pieces) and whichever model they name. When
    the model is free, the next batch is formed at once from what is queued then: the
    oldest request, and after it, in arrival order, the queued requests for the same call
    and model that fit within ``max_batch_size`` requests and ``budget`` units of work
    (audio seconds, characters); a request larger than the whole budget runs alone, one
    that does not fit waits at the head of the queue for the next batch. So an idle replica
    runs a lone request immediately, and everything that arrives while a call runs meets in
    the next call. One call at a time, because a replica's networks share one model thread
    (:class:`serve.replica.ModelThread`) anyway.

    ``batch_wait_timeout_s`` (default 0) lets the oldest request wait that long, counted from
    its arrival, for batch-mates when the model is free and the batch is not full; waiting
    for a busy model counts, so under load it costs nothing. Above 0 it trades latency at
    light load for fuller batches (worth it where a call costs little per extra request).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

#: Batches a replica remembers for :meth:`Batcher.describe` (for operators and tests).
HISTORY = 64


class Batching(BaseModel):
    """The part of a deployment's ``user_config`` that tunes its batch queue (no redeploy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int = Field(16, ge=1, description="requests per model call; max_ongoing_requests should be >= 2x this")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="how long the oldest queued request may wait for batch-mates, counted from its arrival "
                               "(0: a batch starts as soon as the model is free)")

    @property
    def budget(self) -> float:
        """Work per batch, in the deployment's unit (see subclasses)."""
        raise NotImplementedError


#: ``execute(call, model, payloads)`` runs one batch: ``call`` and ``model`` as given to
#: :meth:`Batcher.submit`, one result (or returned exception) per payload, in order.
Execute = Callable[[Any, str, list[Any]], Awaitable[list[Any]]]


@dataclass(eq=False)
class _Waiting:
    call: Hashable  # requests batch together only with the same call and model
    model: str
    payload: Any
    work: float  # in the budget's unit
    arrived: float  # event-loop time
    answer: asyncio.Future


@dataclass(frozen=True)
class BatchRecord:
    """One batch as it was formed."""

    call: str  # the call's name
    model: str  # multiplexed model id
    size: int  # requests in it
    work: float  # their work, in the budget's unit
    queued: int  # requests waiting, of any call and model, just before it was formed (its own included)
    left: int  # requests for the same call and model still waiting after it was formed (held back by the limits)


class Batcher:
    """The batch queue of one replica (see the module docstring); make it in the replica's event loop.

    Args:
        execute: runs one batch (see :data:`Execute`); an exception it raises is every
            request's answer.
        batching: the limits; assign :attr:`batching` to change them (a ``reconfigure``):
            requests already waiting are batched with the new limits.
    """

    def __init__(self, execute: Execute, batching: Batching):
        self.batching = batching
        self._execute = execute
        self._waiting: list[_Waiting] = []  # arrival order
        self._running: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sizes: Counter[tuple[str, int]] = Counter()  # (call name, size) -> batches
        self._recent: deque[BatchRecord] = deque(maxlen=HISTORY)

    async def submit(self, call: Hashable, model: str, payload: Any, work: float) -> Any:
        """Queue one request and return its result (or the exception it failed with, returned).

        Cancelling the caller takes a waiting request out of the queue; a running one's
        result is dropped.
        """
        loop = asyncio.get_running_loop()
        waiting = _Waiting(call, model, payload, work, loop.time(), loop.create_future())
        self._waiting.append(waiting)
        self._start()
        try:
            return await waiting.answer
        except asyncio.CancelledError:
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            raise

    def describe(self) -> dict[str, Any]:
        """Batches run so far by call and size (``{call: {size: count}}``), the last
        :data:`HISTORY` batches as formed, and the requests waiting now."""
        sizes: dict[str, dict[int, int]] = {}
        for (call, size), count in sorted(self._sizes.items()):
            sizes.setdefault(call, {})[size] = count
        return {"batches": sizes, "recent_batches": [asdict(r) for r in self._recent], "waiting": len(self._waiting)}

    def _start(self) -> None:
        """Form and start the next batch if the model is free and something waits (or its wait is over)."""
        if self._running is not None or not self._waiting:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        limits = self.batching
        head = self._waiting[0]
        batch, work, held_back = [head], head.work, False
        for waiting in self._waiting[1:]:
            if len(batch) == limits.max_batch_size:
                break
            if (waiting.call, waiting.model) != (head.call, head.model):
                continue
            if work + waiting.work > limits.budget:
                held_back = True  # a smaller one behind it may still fit
                continue
            batch.append(waiting)
            work += waiting.work
        full = held_back or len(batch) == limits.max_batch_size
        wait = limits.batch_wait_timeout_s - (loop.time() - head.arrived)
        if wait > 0 and not full:
            self._timer = loop.call_later(wait, self._start)
            return
        queued = len(self._waiting)
        taken = {id(w) for w in batch}
        self._waiting = [w for w in self._waiting if id(w) not in taken]
        left = sum((w.call, w.model) == (head.call, head.model) for w in self._waiting)
        name = getattr(head.call, "__name__", str(head.call))
        self._sizes[name, len(batch)] += 1
        self._recent.append(BatchRecord(name, head.model, len(batch), work, queued, left))
        # A fresh context: the batch is no single request's (the first caller's would be inherited).
        self._running = loop.create_task(self._run(batch), context=contextvars.Context())

    async def _run(self, batch: list[_Waiting]) -> None:
        head = batch[0]
        try:
            try:
                results = await self._execute(head.call, head.model, [w.payload for w in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} requests got {len(results)} results")
            except Exception as err:  # logged with its traceback; the batch's requests are answered with it, below
                log.exception("batch of %d for %s failed", len(batch), head.model)
                results = [err] * len(batch)
            for waiting, result in zip(batch, results):
                if not waiting.answer.done():  # done: its caller was cancelled
                    waiting.answer.set_result(result)
        except asyncio.CancelledError:  # the replica is shutting down: no next batch
            self._running = None
            for waiting in batch:
                waiting.answer.cancel()
            raise
        self._running = None
        self._start()  # the model is free: the next batch forms now, from all that waits


__all__ = ["HISTORY", "BatchRecord", "Batcher", "Batching", "Execute"]
