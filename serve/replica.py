"""What the ASR and TTS model replicas share: their set-up, budgeted dynamic batching, the model cache.

Set-up
    :class:`ModelReplica` is what a model deployment's replica holds besides its own
    model class: the served models' sources and option overrides, the device, the model
    thread, the batch queue and the model cache below, with the calls on them that the
    Transcriber and the Synthesizer make alike.

Batching
    :class:`serve.batcher.Batcher`: one queue per replica, a batch formed when the model is
    free from what waits then, bounded by ``max_batch_size`` requests and by a budget of
    work (audio seconds for ASR, text characters for TTS); its docstring says why it is not
    Ray Serve's ``@serve.batch``.

Model cache
    Serve model multiplexing (``serve.multiplexed``): the request's model id picks the
    model, a replica keeps at most ``max_models`` of them and unloads the least recently
    used.

Held audio
    :class:`HoldLimit` bounds the work a replica holds at once (the Transcriber: seconds of
    decoded audio, from decoding to the answer), so concurrent uploads cannot add up to more
    memory than configured: a request over the limit waits for others to finish, it does not
    fail. A request larger than the whole limit waits until nothing else is held.

Model thread
    Networks run (and load) in one dedicated thread per replica, off the event loop so the
    replica keeps taking requests meanwhile. One thread because torch's intra-op thread
    count is a per-thread setting (a pool of threads would compute with varying counts, so
    with varying float rounding), and because model calls should not compete for the
    replica's CPUs: the batch queue is what makes them big.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from ray import serve
from ray.serve import Deployment

from serve.batcher import Batcher, Batching

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M")
RowsT = TypeVar("RowsT", bound=BaseModel)
RunT = TypeVar("RunT", bound=BaseModel)


@dataclass(frozen=True)
class Rejected:
    """A replica's answer to a request that is wrong in itself (the gateway makes it a 400).

    Returned rather than raised: a client's mistake is an answer, not a replica failure to
    log with a traceback.
    """

    param: str  # the request field at fault: "file", "language", "voice", "input"
    message: str  # for the client
    code: str = "invalid_value"


class HoldLimit:
    """At most ``capacity`` units (e.g. audio seconds) held at once by one replica's requests.

    ``async with limit.hold(amount) as held:`` waits until ``amount`` fits (or nothing else is
    held), and gives it back on exit; ``await held.resize(new)`` corrects the amount once the
    real figure is known (it never waits: the work is already in memory).
    """

    def __init__(self, capacity: float):
        self.capacity = capacity
        self.held = 0.0
        self._changed: asyncio.Condition | None = None  # made in the replica's event loop

    @contextlib.asynccontextmanager
    async def hold(self, amount: float) -> AsyncIterator[Held]:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.held == 0 or self.held + amount <= self.capacity)
            self.held += amount
        held = Held(self, amount)
        try:
            yield held
        finally:
            await held.resize(0.0)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed


class Held:
    """One request's share of a :class:`HoldLimit`."""

    def __init__(self, limit: HoldLimit, amount: float):
        self._limit, self.amount = limit, amount

    async def resize(self, amount: float) -> None:
        changed = self._limit._condition()
        async with changed:
            self._limit.held += amount - self.amount
            self.amount = amount
            changed.notify_all()


class ModelThread:
    """The one thread a replica's networks run in, with ``threads`` torch intra-op threads
    (None: the replica's CPUs rounded up, as the jobs do)."""

    def __init__(self, threads: int | None):
        count = threads if threads is not None else _replica_cpus()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model", initializer=_set_torch_threads,
                                            initargs=(count,))

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))


class ModelCache(Generic[T]):
    """Models of one replica by model id, loaded on first use, least recently used unloaded.

    ``load(model_id)`` builds a model (in the model thread). :meth:`loaded` reports the
    models still alive in memory, which is what unloading is about.
    """

    def __init__(self, load: Callable[[str], T], max_models: int, thread: ModelThread):
        self._live: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

        async def load_model(model_id: str) -> T:
            model = await thread.run(load, model_id)
            self._live[model_id] = model
            return model

        # A plain function (not a bound method): Serve keeps its LRU state on the function.
        self.get: Callable[[str], Awaitable[T]] = serve.multiplexed(max_num_models_per_replica=max_models)(load_model)

    def loaded(self) -> list[str]:
        """Ids of the models held in memory (after a collection, so unloaded ones are gone)."""
        gc.collect()
        return sorted(self._live.keys())


def model_deployment(name: str, batching: type[Batching]) -> Callable[[type], Deployment]:
    """``@serve.deployment`` of a model replica class: Serve's defaults for it, which a Serve
    config's ``deployments`` entry named ``name`` overrides.

    One CPU per replica (its model thread); room for one full batch running and the next one
    filling (``max_ongoing_requests``); ``batching``'s defaults as the ``user_config``.
    """
    defaults = batching()
    return serve.deployment(
        name=name,
        ray_actor_options={"num_cpus": 1},
        max_ongoing_requests=2 * defaults.max_batch_size,
        user_config=defaults.model_dump(),
    )


class ModelReplica(Generic[M]):
    """The set-up a model deployment's replica shares with the others, for models of type ``M``.

    Args:
        models: served model name -> hub id or checkpoint directory; the first is the default.
        options: the job options every model runs with (the app's ``asr_options`` or
            ``tts_options``); their ``torch_threads`` sizes the model thread.
        max_models: models held per replica; the least recently used is unloaded.
        batching: the deployment's ``user_config`` class; its defaults start the budget.
        load: model id -> model, run in the model thread on first use of the id. It may
            read this object's fields (it is first called after construction).
    """

    def __init__(self, models: dict[str, str], options: dict[str, Any], max_models: int,
                 batching: type[Batching], load: Callable[[str], M]):
        self.sources = dict(models)  # served model name -> hub id or checkpoint directory
        self.overrides = dict(options)  # job option name -> value
        self.device = replica_device()
        self.thread = ModelThread(self.overrides.get("torch_threads"))
        self.batcher = Batcher(self._run_batch, batching())
        self.models: ModelCache[M] = ModelCache(load, max_models, self.thread)
        self._batching = batching
        self._started = time.time()

    async def load_default(self) -> None:
        """Load the default model; the deployment awaits this in ``__init__``, so the replica is
        ready when Serve says so and a loading failure shows at deploy time, not on a request."""
        await self.models.get(next(iter(self.sources)))

    async def model(self) -> M:
        """The model of the request's multiplexed model id."""
        return await self.models.get(serve.get_multiplexed_model_id())

    async def batched(self, call: Callable[[M, list[T]], list[R]], payload: T, work: float) -> tuple[R, int]:
        """``call(model, [payload, ...])`` for this request and the others that share its batch
        (the model of the request's multiplexed model id); ``work`` is what it costs of the
        batch budget. Returns the result and the batch's size; raises what this request failed with."""
        result = await self.batcher.submit(call, serve.get_multiplexed_model_id(), payload, work)
        if isinstance(result, Exception):
            raise result
        return result

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ``user_config`` to the batch queue (requests already waiting included),
        without restarting the replica."""
        self.batcher.batching = self._batching.model_validate(user_config)

    async def _run_batch(self, call: Callable[[M, list[T]], list[R]], model_id: str,
                         payloads: list[T]) -> list[tuple[R, int] | Exception]:
        """``call(model, payloads)`` in the model thread for one batch; each result comes with
        the batch's size, or is the exception that payload failed with.

        One poisonous request must not fail its batch-mates: after a failed batch every
        payload is retried alone and only the ones that fail again get their exception
        (returned, not raised, so the deployment answers each request on its own).
        """
        fn = functools.partial(call, await self.models.get(model_id))
        size = len(payloads)
        try:
            return [(result, size) for result in await self.thread.run(fn, payloads)]
        except Exception as err:  # noqa: BLE001 - retried one by one below; failures are returned
            if len(payloads) == 1:
                return [err]
            log.warning("batch of %d failed (%s: %s); retrying one by one", len(payloads), type(err).__name__, err)
        results: list[tuple[R, int] | Exception] = []
        for payload in payloads:
            try:
                results.append(((await self.thread.run(fn, [payload]))[0], size))
            except Exception as err:  # noqa: BLE001 - this request's own failure, answered to it
                results.append(err)
        return results

    def describe(self) -> dict[str, Any]:
        """Replica facts for operators and tests: when it started, its batching and the batches
        it ran (:meth:`serve.batcher.Batcher.describe`), its models."""
        return {
            "started": self._started,
            "batching": self.batcher.batching.model_dump(),
            **self.batcher.describe(),
            "loaded_models": self.models.loaded(),
            "device": self.device,
        }


def replica_device() -> str:
    """``"cuda"`` when Ray gave this replica a GPU (``ray_actor_options.num_gpus``), else ``"cpu"``."""
    import ray

    return "cuda" if ray.get_gpu_ids() else "cpu"


def _replica_cpus() -> int:
    import ray

    return max(1, math.ceil(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)))


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def served_options(section: str, overrides: dict[str, Any], rows: type[RowsT], run: type[RunT],
                   refused: dict[str, str], **fixed: Any) -> tuple[RowsT, RunT]:
    """A served model's options from the app's ``asr_options``/``tts_options`` (``section``):
    the fields of ``rows`` (what the model's answers depend on, as the job's rows do) and of
    ``run`` (how a model instance runs: batching, threads), with ``fixed`` (the model, the task)
    over them. ``refused``: fields of ``rows`` a Serve config cannot set -> why.

    Raises ``ValueError`` naming a field a server cannot set, ``pydantic.ValidationError``
    naming a bad value.
    """
    allowed = (set(rows.model_fields) | set(run.model_fields)) - set(refused)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        why = "; ".join(f"{name}: {refused[name]}" for name in unknown if name in refused)
        raise ValueError(f"{section}: {', '.join(unknown)} cannot be set for serving{f' ({why})' if why else ''}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    values = {**overrides, **fixed}
    return (rows.model_validate({k: v for k, v in values.items() if k in rows.model_fields}),
            run.model_validate({k: v for k, v in values.items() if k in run.model_fields}))
