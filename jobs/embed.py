"""The corpus embedding job: the transcription job's spine with an embedder in the model actors.

Inputs, probing, duration sorting, prepare units (decode, features, chunking of long files),
per-row errors, resume and the summary are those of jobs/transcribe.py; this module supplies
the :class:`~jobs.task.Task`: a model stage holding a :class:`speech.asr.embed.Embedder`, and
rows of :func:`speech.schema.embedding_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from jobs import output as output_files
from jobs import transcribe
from jobs.output import count_rows, write_summary
from jobs.task import Task
from jobs.transcribe import Plan, RecognizeUnits
from speech.asr import FrontEnd, ModelError, ModelKind
from speech.asr.base import Batches
from speech.asr.embed import Embedder, inspect_model, load_embed_front_end
from speech.options import EmbedOptions
from speech.schema import EmbeddingRow, embedding_schema, embeddings_table


class EmbedUnits(RecognizeUnits):
    """Ray Data callable holding one embedder: packed units -> embedding rows."""

    def _load(self, options: EmbedOptions, kind: ModelKind, device: str) -> Embedder:
        embedder = Embedder(
            options.model,
            layer=options.layer,
            pooling=options.pooling,
            device=device,
            dtype=options.dtype,
            batch_seconds=options.budget_s("embed"),
            strict_padding=options.strict_padding,
        )
        self.schema = _schema(options)
        return embedder

    def _infer(self, items: list, batches: Batches) -> list:
        return self.recognizer.embed([i.windows for i in items], batches)

    def _row(self, item, result) -> EmbeddingRow:
        embedder: Embedder = self.recognizer
        row = EmbeddingRow(
            id=item.id,
            path=item.path,
            input_size=item.input_size,
            input_mtime=item.input_mtime,
            duration_s=item.duration_s,
            model=self.options.model,
            layer=embedder.layer,
            frame_rate_hz=embedder.info.frame_rate_hz,
            error=item.error,
        )
        if isinstance(result, str):  # the model failed on this item
            row.error = result
        elif result is not None:
            row.embedding = result.vectors
        return row

    def _table(self, rows: list[EmbeddingRow]) -> pa.Table:
        return embeddings_table(rows, self.schema)


@dataclass(frozen=True)
class Summary(output_files.Summary):
    """Figures of one embedding run (:class:`jobs.output.Summary`'s, then these)."""

    layer: int | str  # as asked: an index (negative from the end) or "all"
    pooling: str
    hidden_size: int


def _detect(options: EmbedOptions) -> ModelKind:
    model = inspect_model(options.model)
    try:
        model.resolve_layer(options.layer)
    except ValueError as err:
        raise ModelError(f"model {options.model!r}: {err}") from err
    return ModelKind(Embedder.backend, "transformers")


def _front_end(options: EmbedOptions, kind: ModelKind) -> FrontEnd:
    return load_embed_front_end(options.model, options.embedding)  # one kind: the CTC front end


def _schema(options: EmbedOptions) -> pa.Schema:
    hidden = inspect_model(options.model).hidden_size
    return embedding_schema(hidden, pooling=options.pooling, all_layers=options.layer == "all")


def summarize(options: EmbedOptions, kind: ModelKind, wall_seconds: float, *, changed: int = 0,
              removed: int = 0) -> Summary:
    """Read the whole output back (all runs) and write ``_summary.json`` beside it; ``changed``
    and ``removed`` are this run's counts of redone and dropped rows."""
    counts = count_rows(options.output, _schema(options), ["duration_s"])
    summary = Summary.of(
        counts,
        model=options.model,
        output=options.output,
        wall_seconds=wall_seconds,
        changed=changed,
        removed=removed,
        layer=options.layer,
        pooling=options.pooling,
        hidden_size=inspect_model(options.model).hidden_size,
    )
    return write_summary(options.output, summary)


EMBED = Task(
    "embed", detect=_detect, front_end=_front_end, model_stage=EmbedUnits, schema=_schema,
    summarize=summarize,
)


def check(options: EmbedOptions) -> Plan:
    """Everything that can fail before any Ray work (see :func:`jobs.transcribe.check`)."""
    return transcribe.check(options, EMBED)


def run(options: EmbedOptions, plan: Plan | None = None) -> Summary:
    """Run the embedding job on a Ray that is already initialized; returns the summary."""
    return transcribe.run(options, plan, EMBED)


def read_output(options: EmbedOptions, columns: list[str] | None = None) -> pa.Table:
    """The output directory of a job run with ``options`` (every run into it) as one table."""
    return output_files.read_output(options.output, _schema(options), columns)
