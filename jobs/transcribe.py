"""The corpus transcription job: inputs -> probe -> sort -> prepare -> recognize -> Parquet.

Stages (each a Ray Data operator, streaming, except that small corpora are probed and
sorted in the driver):

1. **probe** (driver threads up to ``_DRIVER_PROBE_ROWS`` inputs, else CPU tasks): read
   each file's header for its duration; unreadable files get an ``error`` here and flow on.
2. **sort** by duration, globally, so that neighbours have similar lengths.
3. **prepare** (CPU actors holding the front end, jobs/prepare.py): decode, resample, extract
   features, chunk long files, and pack the window's utterances into *units* (jobs/units.py,
   Arrow columns) with their model batches planned (padded audio within the batch budget).
   Padding itself happens only in the model actor. On small clusters this stage runs in a
   thread of the model actors instead (jobs/fused.py), and stages 3 and 4 are one.
4. **recognize** (model actors, one model replica each, GPU when configured): run
   the network on one unit per call, batch by batch as planned, and emit one row per input.
5. **write** Parquet under OUTPUT, then summarize it into ``_summary.json``.

Every input row reaches the output exactly once, with its transcript or its error.
Other jobs run on the same spine with their own model stage and rows (a
:class:`jobs.task.Task`, e.g. ``speech embed`` in jobs/embed.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray

from jobs import fused
from jobs import output as output_files
from jobs.output import Output, count_rows, open_output, write_summary
from jobs.prepare import PrepareUnits, describe, transcribe_front_end
from jobs.runtime import record_first_call
from jobs.task import Task
from jobs.units import Item, Unit, read_units
from speech.asr import ModelKind, detect_model, load_recognizer
from speech.asr.base import Batches
from speech.audio import AudioDecodeError, AudioTooLong, probe
from speech.inputs import resolve_inputs
from speech.options import AudioJobOptions, TranscribeOptions
from speech.schema import TRANSCRIPT_SCHEMA, TranscriptRow, transcripts_table

log = logging.getLogger(__name__)

_PROBE_BLOCK_ROWS = 256  # input rows per probe task
# Up to this many inputs are probed by threads in the driver and sorted in memory: header
# reads are I/O and take well under a second for thousands of files, where a Ray Data probe
# and distributed sort costs ~12 s of task start-up and shuffle. Bigger corpora use Ray Data.
_DRIVER_PROBE_ROWS = 4096
_DRIVER_PROBE_THREADS = 16


def probe_batch(batch: pa.Table, max_duration_s: float | None = None, timeout_s: float | None = None) -> pa.Table:
    """Add ``duration_s`` (seconds, 0 when unknown) and ``error`` from file headers, each
    read within ``timeout_s`` seconds."""
    durations, errors = [], []
    for path in batch["path"].to_pylist():
        try:
            duration = probe(path, timeout_s).duration_s
        except (AudioDecodeError, OSError) as err:
            durations.append(0.0)
            errors.append(describe(err))
            continue
        # A header without a length (a FLAC stream) sorts first; decoding bounds it.
        durations.append(duration or 0.0)
        too_long = max_duration_s is not None and duration is not None and duration > max_duration_s
        errors.append(str(AudioTooLong(duration, max_duration_s)) if too_long else None)
    return batch.append_column("duration_s", pa.array(durations, pa.float64())).append_column(
        "error", pa.array(errors, pa.string())
    )


class RecognizeUnits:
    """Ray Data callable holding one model replica: packed units -> transcript rows.

    ``kind``: the model's, as the driver detected it (the actor loads that backend directly).
    """

    def __init__(self, options: TranscribeOptions, kind: ModelKind):
        import torch

        torch.set_num_threads(options.threads)
        device = "cuda" if options.gpus_per_actor > 0 else "cpu"
        self.options = options
        self.recognizer = self._load(options, kind, device)
        self.sample_rate = self.recognizer.sample_rate
        self._called = False

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.table(read_units(batch))

    def table(self, units: Iterable[Unit]) -> pa.Table:
        """One output row per item of ``units``, in order; a failed model call gives error rows.
        ``units`` may be a lazy iterator (the fused stage, jobs/fused.py, prepares them meanwhile)."""
        return self._table([row for unit in units for row in self._recognize(unit)])

    # What a subclass (another task on this spine) replaces: the model, its call, the rows.

    def _load(self, options: TranscribeOptions, kind: ModelKind, device: str):
        return load_recognizer(options.model, options.asr, device, kind, options.run)

    def _table(self, rows: list[TranscriptRow]) -> pa.Table:
        return transcripts_table(rows)

    def _recognize(self, unit: Unit) -> list[TranscriptRow]:
        items = unit.items
        todo = [item for item in items if item.error is None]
        results: dict[str, object] = {}
        if todo and not self._called:
            self._called = True
            record_first_call()
        try:
            results.update(zip((i.id for i in todo), self._infer(todo, unit.batches_of(todo))))
        except Exception as err:  # noqa: BLE001 - a poison item must not fail its batch-mates
            log.warning("batch of %d failed (%s); retrying item by item", len(todo), describe(err))
            for item in todo:
                try:
                    results[item.id] = self._infer([item], unit.batches_of([item]))[0]
                except Exception as item_err:  # noqa: BLE001 - recorded in the row's error
                    results[item.id] = f"model failed: {describe(item_err)}"
        return [self._row(item, results.get(item.id)) for item in items]

    def _infer(self, items: list[Item], batches: Batches) -> list:
        return self.recognizer.transcribe([i.windows for i in items], [i.language for i in items], batches=batches)

    def _row(self, item: Item, result) -> TranscriptRow:
        row = TranscriptRow(
            id=item.id,
            path=item.path,
            input_size=item.input_size,
            input_mtime=item.input_mtime,
            duration_s=item.duration_s,
            reference=item.reference,
            language=item.language or self.options.language,
            model=self.options.model,
            backend=self.recognizer.backend,
            engine=self.recognizer.engine,
            error=item.error,
        )
        if isinstance(result, str):
            row.error = result
        elif result is not None:
            row.text = result.text
            row.confidence = result.confidence
            row.words = result.words
            row.segments = result.segments
            row.language = result.language or row.language
            row.language_probability = result.language_probability
            row.computed_s = result.computed_samples / self.sample_rate
            row.thresholds_failed = result.thresholds_failed
        return row


@dataclass(frozen=True)
class Summary(output_files.Summary):
    """Figures of one transcription run (:class:`jobs.output.Summary`'s, then these)."""

    computed_seconds: float  # audio the model ran on, incl. padding and chunk overlap
    padding_efficiency: float  # audio_seconds / computed_seconds
    backend: str  # model family: "ctc" or "whisper"
    engine: str  # runtime: "transformers" or "ctranslate2"


@dataclass(frozen=True)
class Plan:
    """What the job will do, checked before Ray starts. Holds the output's lease: use it as a
    context manager (``run`` does) so the lease is released however the run ends."""

    kind: ModelKind  # backend and engine
    inputs: pa.Table  # speech.schema.INPUT_SCHEMA, every input of the job
    output: Output  # with the rows earlier runs already wrote
    changed: tuple[str, ...] = ()  # ids whose rows are redone: their input changed since
    removed: tuple[str, ...] = ()  # ids whose rows are dropped: no longer among the inputs

    @property
    def todo(self) -> pa.Table:
        """The inputs that still need a row in the output."""
        done = self.output.done_ids - set(self.changed)
        if not done:
            return self.inputs
        return self.inputs.filter(pc.invert(pc.is_in(self.inputs["id"], value_set=pa.array(sorted(done), pa.string()))))

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.output.release()


def check(options: AudioJobOptions, task: Task | None = None) -> Plan:
    """Everything that can fail before any Ray work: model kind, inputs, output location.

    Takes the output's lease. ``task``: what the job computes (default :data:`TRANSCRIBE`).
    Raises ModelError, InputError or OutputError with a one-line reason.
    """
    task = task or TRANSCRIBE
    kind = task.detect(options)  # the model, and options it cannot honour
    inputs = resolve_inputs(options.inputs, timeout_s=options.read_timeout_s)
    job = {"job": task.name, "backend": kind.backend, "engine": kind.engine, **options.result_options()}
    output = open_output(options.output, job=job, overwrite=options.overwrite,
                         inputs=[*options.inputs, *inputs["path"].to_pylist()],
                         schema=task.schema(options), columns=_INPUT_KEY, defaults=options.result_defaults())
    removed, changed = stale_rows(inputs, output.done)
    return Plan(kind, inputs, output, changed=tuple(changed), removed=tuple(removed))


#: What identifies a row's input (columns of every task's rows): a resumed run redoes a row
#: when one of these changed.
_INPUT_KEY = ("id", "path", "input_size", "input_mtime")


def stale_rows(inputs: pa.Table, done: pa.Table) -> tuple[list[str], list[str]]:
    """``(removed, changed)``: ids of written rows whose id is no longer among ``inputs``, and of
    those whose input's path, size or modification time differs from when the row was written."""
    def keys(table: pa.Table) -> dict[str, tuple]:
        columns = table.select(list(_INPUT_KEY))
        columns = columns.set_column(3, "input_mtime", pc.cast(columns["input_mtime"], pa.int64()))
        return {row[0]: row[1:] for row in zip(*(columns[name].to_pylist() for name in _INPUT_KEY))}

    current, written = keys(inputs), keys(done)
    removed = [i for i in written if i not in current]
    changed = [i for i, key in written.items() if i in current and current[i] != key]
    return removed, changed


def run(options: AudioJobOptions, plan: Plan | None = None, task: Task | None = None):
    """Run the job (``task``, default :data:`TRANSCRIBE`) on a Ray that is already
    initialized; returns the task's summary."""
    started = time.perf_counter()
    task = task or TRANSCRIBE
    with plan or check(options, task) as plan:
        dropped = plan.output.drop([*plan.removed, *plan.changed])
        todo = plan.todo
        log.info(
            "%s: %d inputs with %s (%s); %d already done; %d redone because their input changed, "
            "%d dropped because their input is gone (%d rows removed)",
            task.name, todo.num_rows, options.model, plan.kind.backend, plan.inputs.num_rows - todo.num_rows,
            len(plan.changed), len(plan.removed), dropped,
        )
        if todo.num_rows:
            _pipeline(options, plan.kind, todo, task).write_parquet(options.output, schema=task.schema(options))
        return task.summarize(options, plan.kind, time.perf_counter() - started,
                              changed=len(plan.changed), removed=len(plan.removed))


def _sorted_inputs(options: AudioJobOptions, todo: pa.Table, block_rows: int) -> ray.data.Dataset:
    """The inputs with ``duration_s`` and header ``error`` added, sorted by duration; probed in
    the driver, blocks of ``block_rows`` (a multiple of ``prepare_window``) rows."""
    if todo.num_rows <= _DRIVER_PROBE_ROWS:
        probe_rows = functools.partial(probe_batch, max_duration_s=options.max_duration_s,
                                       timeout_s=options.read_timeout_s)
        pieces = [todo.slice(i, 16) for i in range(0, todo.num_rows, 16)]
        with ThreadPoolExecutor(_DRIVER_PROBE_THREADS) as threads:
            ordered = pa.concat_tables(threads.map(probe_rows, pieces)).sort_by("duration_s")
        # A block per call of the first actor stage, so every actor of its pool gets work.
        return ray.data.from_arrow([ordered.slice(i, block_rows) for i in range(0, ordered.num_rows, block_rows)])
    # Sorting is a barrier anyway; materializing its small output (paths and durations,
    # in the object store) before the actor stages start keeps their reserved CPUs from
    # starving the sort's tasks on small machines.
    blocks = [todo.slice(i, _PROBE_BLOCK_ROWS) for i in range(0, todo.num_rows, _PROBE_BLOCK_ROWS)]
    return (
        ray.data.from_arrow(blocks)
        .map_batches(
            probe_batch, fn_kwargs={"max_duration_s": options.max_duration_s, "timeout_s": options.read_timeout_s},
            batch_format="pyarrow", num_cpus=0.25
        )
        .sort("duration_s")
        .materialize()
    )


def _pipeline(options: AudioJobOptions, kind: ModelKind, todo: pa.Table, task: Task | None = None) -> ray.data.Dataset:
    task = task or TRANSCRIBE
    pool = options.pool
    model_actors = dict(
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=pool.min, max_size=pool.max),
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor,
        resources=options.resources_per_actor or None,
    )
    if fused.choose(options, ray.cluster_resources().get("CPU", 0.0)):
        rows = fused.rows_per_call(options, todo.num_rows)
        dataset = _sorted_inputs(options, todo, rows).map_batches(
            fused.FusedUnits, fn_constructor_args=(options, kind, task.front_end, task.model_stage),
            batch_size=rows, **model_actors,
        )
    else:
        dataset = _sorted_inputs(options, todo, options.prepare_window).map_batches(
            PrepareUnits,
            fn_constructor_args=(options, kind, task.front_end),
            batch_size=options.prepare_window,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=options.prepare_actors),
            num_cpus=options.cpus_per_prepare,
        ).map_batches(task.model_stage, fn_constructor_args=(options, kind), batch_size=1, **model_actors)
    # Ray Data's default budget is a share of the whole object store (GiBs), so a CPU model
    # would let preparation decode the entire corpus ahead of it: memory would grow with the
    # corpus. A budget sized in batches backpressures preparation and keeps memory flat.
    # The dataset's context is its own copy; the process-wide DataContext stays untouched.
    limits = dataset.context.execution_options.resource_limits
    dataset.context.execution_options.resource_limits = limits.copy(object_store_memory=options.object_store_bytes(kind.backend))
    return dataset


def summarize(options: TranscribeOptions, kind: ModelKind, wall_seconds: float, *, changed: int = 0,
              removed: int = 0) -> Summary:
    """Read the whole output back (all runs) and write ``_summary.json`` beside it; ``changed``
    and ``removed`` are this run's counts of redone and dropped rows."""
    counts = count_rows(options.output, TRANSCRIPT_SCHEMA, ["duration_s", "computed_s"])
    audio, computed = counts.sums["duration_s"], counts.sums["computed_s"]
    summary = Summary.of(
        counts,
        model=options.model,
        output=options.output,
        wall_seconds=wall_seconds,
        changed=changed,
        removed=removed,
        computed_seconds=round(computed, 3),
        padding_efficiency=round(audio / computed, 4) if computed > 0 else 0.0,
        backend=kind.backend,
        engine=kind.engine,
    )
    return write_summary(options.output, summary)


def _detect(options: TranscribeOptions) -> ModelKind:
    return detect_model(options.model, options.asr, options.run.device)


def _schema(options: TranscribeOptions) -> pa.Schema:
    return TRANSCRIPT_SCHEMA


TRANSCRIBE = Task(
    "transcribe", detect=_detect, front_end=transcribe_front_end, model_stage=RecognizeUnits, schema=_schema,
    summarize=summarize,
)


def read_output(output: str, columns: list[str] | None = None) -> pa.Table:
    """A transcription output directory (every run into it) as one table."""
    return output_files.read_output(output, TRANSCRIPT_SCHEMA, columns)

