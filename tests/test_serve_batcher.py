"""serve/batcher.py: a batch forms when the model frees, from everything waiting then.

Deterministic: the batch function below finishes a batch only when the test says so, and the
test only lets the event loop run (no clock), so which requests meet in which batch is exact.
(The same queue under real Serve and a real tiny model: tests/test_serve.py.)
"""

from __future__ import annotations

import asyncio

import pytest

from serve.batcher import Batcher, Batching


class Limits(Batching):
    max_work: float = 100.0

    @property
    def budget(self) -> float:
        return self.max_work


class Model:
    """Runs batches one at a time as the batcher hands them over; each finishes when :meth:`finish` allows."""

    def __init__(self):
        self.batches: list[tuple[str, str, list]] = []  # (call, model, payloads) in the order they started
        self._finish: asyncio.Queue[None] = asyncio.Queue()

    async def execute(self, call, model: str, payloads: list) -> list:
        self.batches.append((call, model, list(payloads)))
        await self._finish.get()
        if "poison" in payloads:
            raise ValueError("poisoned batch")
        return [f"{call}:{p}" for p in payloads]

    def finish(self) -> None:
        self._finish.put_nowait(None)


async def settle() -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_a_lone_request_on_an_idle_replica_runs_at_once():
    async def scenario():
        model = Model()
        batcher = Batcher(model.execute, Limits())
        answer = asyncio.ensure_future(batcher.submit("asr", "m", "a", 1.0))
        await settle()
        assert model.batches == [("asr", "m", ["a"])]  # started without any time passing
        model.finish()
        assert await answer == "asr:a"
        assert batcher.describe()["batches"] == {"asr": {1: 1}}

    run(scenario())


def test_requests_that_arrive_while_a_batch_runs_make_the_next_batch_together():
    async def scenario():
        model = Model()
        batcher = Batcher(model.execute, Limits())

        def submit(call: str, model_id: str, payload: str) -> asyncio.Future:
            return asyncio.ensure_future(batcher.submit(call, model_id, payload, 1.0))

        first = submit("asr", "m1", "a")
        await settle()
        # While "a" runs: four more for m1, one for m2, one live-session step for m1.
        later = [submit("asr", "m1", "b"), submit("asr", "m2", "x"), submit("asr", "m1", "c"),
                 submit("stream", "m1", "s"), submit("asr", "m1", "d"), submit("asr", "m1", "e")]
        await settle()
        assert model.batches == [("asr", "m1", ["a"])]  # nothing formed while the model was busy
        model.finish()
        await settle()
        # The oldest waiting request leads; every waiting one for the same call and model joins it.
        assert model.batches[1] == ("asr", "m1", ["b", "c", "d", "e"])
        model.finish()
        await settle()
        assert model.batches[2] == ("asr", "m2", ["x"])
        model.finish()
        await settle()
        assert model.batches[3] == ("stream", "m1", ["s"])
        model.finish()
        answers = await asyncio.gather(first, *later)
        assert answers == ["asr:a", "asr:b", "asr:x", "asr:c", "stream:s", "asr:d", "asr:e"]
        recent = batcher.describe()["recent_batches"]
        assert [(r["size"], r["queued"], r["left"]) for r in recent] == [(1, 1, 0), (4, 6, 0), (1, 2, 0), (1, 1, 0)]

    run(scenario())


def test_a_batch_holds_at_most_max_batch_size_requests_and_the_work_budget():
    async def scenario():
        model = Model()
        batcher = Batcher(model.execute, Limits(max_batch_size=3, max_work=10.0))
        answers = [asyncio.ensure_future(batcher.submit("asr", "m", "busy", 1.0))]
        await settle()
        # Waiting (work in brackets): a[4] b[4] c[4] d[1] e[1] f[30] g[1]
        for name, work in [("a", 4), ("b", 4), ("c", 4), ("d", 1), ("e", 1), ("f", 30), ("g", 1)]:
            answers.append(asyncio.ensure_future(batcher.submit("asr", "m", name, float(work))))
        await settle()
        for _ in range(5):
            model.finish()
            await settle()
        await asyncio.gather(*answers)
        sizes = [payloads for _, _, payloads in model.batches]
        # c does not fit a+b's 10 units but d does (a smaller one behind may fill the budget);
        # c then leads the next batch; f, over the whole budget, runs alone.
        assert sizes == [["busy"], ["a", "b", "d"], ["c", "e", "g"], ["f"]]
        assert [r["left"] for r in batcher.describe()["recent_batches"]] == [0, 4, 1, 0]

    run(scenario())


def test_new_limits_apply_to_requests_already_waiting():
    async def scenario():
        model = Model()
        batcher = Batcher(model.execute, Limits())
        answers = [asyncio.ensure_future(batcher.submit("asr", "m", p, 1.0)) for p in "abcd"]
        await settle()
        batcher.batching = Limits(max_batch_size=2)  # a reconfigure while b, c, d wait
        for _ in range(3):
            model.finish()
            await settle()
        await asyncio.gather(*answers)
        assert [payloads for _, _, payloads in model.batches] == [["a"], ["b", "c"], ["d"]]

    run(scenario())


def test_a_cancelled_request_leaves_the_queue_and_a_failed_batch_answers_each_caller():
    async def scenario():
        model = Model()
        batcher = Batcher(model.execute, Limits())
        busy = asyncio.ensure_future(batcher.submit("asr", "m", "busy", 1.0))
        await settle()
        gone = asyncio.ensure_future(batcher.submit("asr", "m", "gone", 1.0))
        poisoned = [asyncio.ensure_future(batcher.submit("asr", "m", p, 1.0)) for p in ("poison", "ok")]
        await settle()
        gone.cancel()
        await settle()
        assert batcher.describe()["waiting"] == 2
        model.finish()
        await settle()
        model.finish()
        await settle()
        assert [payloads for _, _, payloads in model.batches] == [["busy"], ["poison", "ok"]]
        failures = await asyncio.gather(*poisoned)
        assert all(isinstance(f, ValueError) for f in failures)  # returned to each caller, not raised
        # The queue keeps serving after a failed batch.
        after = asyncio.ensure_future(batcher.submit("asr", "m", "after", 1.0))
        await settle()
        model.finish()
        assert await after == "asr:after" and await busy == "asr:busy"

    run(scenario())


@pytest.mark.parametrize(("wait_s", "expected"), [(0.0, [["a"], ["b"]]), (0.05, [["a", "b"]])])
def test_batch_wait_timeout_lets_an_idle_model_wait_for_batch_mates(wait_s, expected):
    async def scenario():
        model = Model()
        batcher = Batcher(model.execute, Limits(batch_wait_timeout_s=wait_s))
        answers = [asyncio.ensure_future(batcher.submit("asr", "m", p, 1.0)) for p in "ab"]
        finished = 0
        while not all(a.done() for a in answers):
            if len(model.batches) > finished:  # let each batch finish once it started
                model.finish()
                finished += 1
            await asyncio.sleep(0.01)
        assert [payloads for _, _, payloads in model.batches] == expected

    run(scenario())
