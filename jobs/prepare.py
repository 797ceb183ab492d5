"""The prepare stage of the audio corpus spine: sorted input rows -> packed units.

Decode, resample, extract features, chunk long files, and pack a window's utterances into
units (jobs/units.py) with their model batches planned. It runs in CPU actors of its own
(jobs/transcribe.py) or in a thread of the model actors (jobs/fused.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from jobs.units import Item, Unit, units_table
from speech.asr import FrontEnd, ModelKind, load_front_end
from speech.audio import AudioDecodeError, decode
from speech.options import AudioJobOptions


class PrepareUnits:
    """Ray Data callable: a window of sorted input rows -> packed units (rows of
    :data:`jobs.units.UNIT_SCHEMA`, one per unit).

    ``kind``: the model's, as the driver detected it; ``front_end``: the task's
    ``(options, kind) -> FrontEnd`` (see :class:`jobs.task.Task`).
    """

    def __init__(self, options: AudioJobOptions, kind: ModelKind, front_end=None):
        self.front_end: FrontEnd = (front_end or transcribe_front_end)(options, kind)
        self.budget = int(options.budget_s(kind.backend) * self.front_end.sample_rate)
        self.max_seconds = options.max_duration_s
        self.timeout_s = options.read_timeout_s

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for unit in self.units(batch):
            yield units_table([unit])

    def units(self, batch: pa.Table) -> list[Unit]:
        """The window ``batch`` (sorted input rows) decoded, featurized and packed into units."""
        return self._pack([self._prepare(row) for row in batch.to_pylist()])

    def _prepare(self, row: dict) -> Item:
        item = Item(**{name: row[name] for name in ("id", "path", "reference", "language", "input_size", "input_mtime",
                                                     "error")})
        if item.error is None:
            try:
                audio = decode(item.path, self.front_end.sample_rate, max_seconds=self.max_seconds,
                               timeout_s=self.timeout_s)
                item.duration_s = len(audio) / self.front_end.sample_rate
                item.windows = self.front_end.windows(audio)
            except Exception as err:  # noqa: BLE001 - one bad file must not fail its window
                item.error = describe(err)
        return item

    def _pack(self, items: list[Item]) -> list[Unit]:
        failed = [i for i in items if i.error is not None]
        speechless = [i for i in items if i.error is None and not i.windows]  # VAD found no speech
        chunked = [i for i in items if len(i.windows) > 1]
        single = [i for i in items if len(i.windows) == 1]
        # Files of one window: a unit per model batch.
        units = [
            Unit([single[u] for u, _ in batch], [[(j, 0) for j in range(len(batch))]])
            for batch in self.front_end.plan([i.windows for i in single], self.budget)
        ]
        # A chunked file is one unit holding its chunks' batches, so its chunks are stitched
        # where they are computed, with no shuffle.
        units += [Unit([item], self.front_end.plan([item.windows], self.budget)) for item in chunked]
        if failed or speechless:
            # Error rows and speechless files cost nothing to carry; they ride along to the
            # writer (the recognizer gives a file without windows an empty transcript).
            units.append(Unit(failed + speechless))
        return units


def describe(err: BaseException) -> str:
    """A one-line reason for a row's ``error``."""
    if isinstance(err, AudioDecodeError):
        return str(err)
    if isinstance(err, FileNotFoundError):
        return f"file not found: {err.filename or err}"
    return f"{type(err).__name__}: {err}"


def transcribe_front_end(options: AudioJobOptions, kind: ModelKind) -> FrontEnd:
    """The front end of ``speech transcribe`` (the default of :class:`PrepareUnits`)."""
    return load_front_end(options.model, options.asr, kind)
