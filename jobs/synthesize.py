"""The dataset synthesis job: text corpus -> front end -> TTS model actors -> audio + Parquet.

Stages (each a Ray Data operator, streaming; the driver only reads the text table):

1. **sort** rows by text length (with the id as tie-break, so reruns batch identically)
   and materialize that small table, so the actor stages do not starve the sort's tasks.
2. **front end** (CPU actors holding the backend's text front end): check the id and the
   text, resolve the voice, split at sentence boundaries, encode each piece (tokens,
   phonemes). A bad row gets its ``error`` here and flows on.
3. **synthesize** (model actors, one replica each): all pieces of a call, bucketed by
   length by the backend where it batches, then joined back per row with short pauses.
4. **write** (CPU tasks): encode FLAC/WAV, write ``OUTPUT/audio/<id>.<fmt>`` through fsspec,
   and emit rows with ``SYNTHESIS_SCHEMA``; Ray Data writes them as Parquet under OUTPUT.
5. optionally **verify** (:mod:`jobs.verify`): transcribe the written audio with the
   transcription job and add ``asr_text``/``cer`` (rows above ``max_cer`` get an error),
   then ``_summary.json``.

Every input row reaches the output exactly once, with its audio or its error.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import soundfile as sf

from jobs import output as output_files
from jobs import verify
from jobs.output import AUDIO_DIR, count_rows, open_output, write_summary
from speech.audio import encode_audio
from speech.files import UnsafeName, file_name, is_environment_error
from speech.options import SynthesizeOptions
from speech.schema import SYNTHESIS_SCHEMA, SynthesisRow, synthesis_table
from speech.text import TextError
from speech.text.corpus import read_corpus
from speech.tts import Utterance, check_options, load_front_end, load_model
from speech.tts.frontend import deal_voices, join_pieces, prepare_row

log = logging.getLogger(__name__)


# Columns between the stages (besides the corpus columns).
_UTTERANCES = "utterances"  # the row's encoded pieces (UTTERANCE_TYPE) from the front end
_SAMPLES = "samples"  # float32 waveform bytes from the model
_SAMPLE_RATE = "sample_rate"
#: One speech.tts.Utterance as a column value. Its ``inputs`` are token ids (``tokens``) or a
#: string of symbols (``symbols``: phonemes, normalized text), as the backend's front end encodes.
UTTERANCE_TYPE = pa.struct([
    pa.field("text", pa.string()), pa.field("tokens", pa.list_(pa.int64())), pa.field("symbols", pa.string()),
    pa.field("cost", pa.int64()), pa.field("voice", pa.string()), pa.field("seed", pa.int64()),
    pa.field("speed", pa.float64()),
])
#: What the front end stage adds to ``id`` and ``text``, with types; the model stage passes it on.
_PREPARED = {"voice": pa.string(), "seed": pa.int64(), "language": pa.string(), "speed": pa.float64(),
             "text_normalized": pa.string(), "unknown_chars": pa.string(), _UTTERANCES: pa.list_(UTTERANCE_TYPE),
             "error": pa.string()}
_PASSED = ("id", "text", "voice", "seed", "language", "speed", "text_normalized", "unknown_chars")


def audio_name(row_id: str, fmt: str) -> str:
    """The relative file name of a row's audio, ``<id>.<fmt>``, or ``TextError`` if the id
    cannot name a file (:func:`speech.files.file_name`: nothing that escapes OUTPUT/audio, no
    control characters, no over-long names), checked before any directory is made."""
    try:
        return file_name(row_id, f".{fmt}")
    except UnsafeName as err:
        raise TextError(f"id cannot be used as a file name: {err}") from None


def utterance_values(utterances: list[Utterance]) -> list[dict]:
    """``utterances`` as values of an ``UTTERANCE_TYPE`` list column."""
    values = []
    for u in utterances:
        tokens = None if isinstance(u.inputs, str) else [int(t) for t in u.inputs]
        values.append({"text": u.text, "tokens": tokens, "symbols": u.inputs if tokens is None else None,
                       "cost": u.cost, "voice": u.voice, "seed": u.seed, "speed": u.speed})
    return values


def read_utterances(values: list[dict]) -> list[Utterance]:
    """The utterances of one ``UTTERANCE_TYPE`` list value (as ``to_pylist`` gives it)."""
    return [Utterance(text=v["text"], inputs=v["symbols"] if v["tokens"] is None else v["tokens"], cost=v["cost"],
                      voice=v["voice"], seed=v["seed"], speed=v["speed"]) for v in values]


class PrepareRows:
    """Ray Data callable holding the text front end: corpus rows -> rows with encoded pieces."""

    def __init__(self, options: SynthesizeOptions):
        self.options = options
        self.front_end = load_front_end(options.tts)

    def __call__(self, batch: pa.Table) -> pa.Table:
        options = self.options
        columns: dict[str, list] = {name: [] for name in _PREPARED}
        for row in batch.to_pylist():
            seed = options.seed if row["seed"] is None else int(row["seed"])
            language = row["language"] or options.language
            voice = row["voice"] or options.voice
            speed = options.speed if row["speed"] is None else row["speed"]
            utterances = error = spoken = None
            unknown = ""
            try:
                audio_name(row["id"], options.format)
                prepared = prepare_row(
                    self.front_end, row["text"], voice=voice, language=language, seed=seed,
                    max_text_chars=options.max_text_chars, speed=speed, normalize=options.normalize,
                    unknown_chars=options.unknown_chars,
                )
            except TextError as err:
                error, spoken, unknown = str(err), err.spoken, err.unknown
            else:
                utterances = utterance_values(prepared.utterances)
                spoken, unknown, voice = prepared.spoken, prepared.unknown, prepared.utterances[0].voice
            for name, value in (("voice", voice), ("seed", seed), ("language", language), ("speed", speed),
                                ("text_normalized", spoken), ("unknown_chars", unknown or None), (_UTTERANCES, utterances),
                                ("error", error)):
                columns[name].append(value)
        return pa.table({"id": batch["id"], "text": batch["text"],
                         **{name: pa.array(values, _PREPARED[name]) for name, values in columns.items()}})


class SynthesizeRows:
    """Ray Data callable holding one TTS model replica: rows with pieces -> rows with waveforms."""

    def __init__(self, options: SynthesizeOptions):
        import torch

        torch.set_num_threads(options.torch_threads or max(1, math.ceil(options.cpus_per_actor)))
        self.options = options
        self.model = load_model(options.tts, "cuda" if options.gpus_per_actor > 0 else "cpu", options.run)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = {i: read_utterances(r[_UTTERANCES]) for i, r in enumerate(rows) if r["error"] is None}
        results = self._synthesize(todo)
        samples, counts = [], []
        for i, row in enumerate(rows):
            result = results.get(i)
            if isinstance(result, str):
                row["error"] = result
            samples.append(result.tobytes() if isinstance(result, np.ndarray) else None)
            counts.append(len(todo[i]) if i in todo else None)
        return pa.table(
            {
                **{name: batch[name] for name in _PASSED},
                _SAMPLES: pa.array(samples, pa.binary()),
                _SAMPLE_RATE: pa.array([self.model.sample_rate] * len(rows), pa.int32()),
                "pieces": pa.array(counts, pa.int32()),
                "error": pa.array([r["error"] for r in rows], pa.string()),
            }
        )

    def _synthesize(self, todo: dict[int, list]) -> dict[int, np.ndarray | str]:
        """Row index -> joined waveform, or the error message of a row whose synthesis failed."""
        flat = [(i, k, u) for i, utterances in todo.items() for k, u in enumerate(utterances)]
        # Similar lengths side by side, so backends that batch pad little.
        flat.sort(key=lambda item: (item[2].cost, item[0], item[1]))
        try:
            waveforms = self.model.synthesize([u for _, _, u in flat])
        except Exception as err:  # noqa: BLE001 - a poison row must not fail its batch-mates
            log.warning("synthesis of %d pieces failed (%s); retrying row by row", len(flat), _describe(err))
            return {i: self._one_row(utterances) for i, utterances in todo.items()}
        per_row: dict[int, list] = {i: [None] * len(utterances) for i, utterances in todo.items()}
        for (i, k, _), waveform in zip(flat, waveforms):
            per_row[i][k] = waveform
        return {i: self._join(parts) for i, parts in per_row.items()}

    def _one_row(self, utterances: list) -> np.ndarray | str:
        try:
            return self._join(self.model.synthesize(utterances))
        except Exception as err:  # noqa: BLE001 - recorded in the row's error
            return f"model failed: {_describe(err)}"

    def _join(self, parts: list[np.ndarray]) -> np.ndarray:
        """Pieces of one row in reading order, with ``sentence_pause_s`` of silence between them."""
        return join_pieces(parts, pause_s=self.options.sentence_pause_s, sample_rate=self.model.sample_rate)


def write_audio(batch: pa.Table, *, options: SynthesizeOptions, model: str, backend: str) -> pa.Table:
    """Encode and write each row's audio file; returns rows with exactly ``SYNTHESIS_SCHEMA``."""
    root = options.output.rstrip("/")
    rows = []
    for row in batch.to_pylist():
        out = SynthesisRow(
            id=row["id"],
            text=row["text"],
            text_normalized=row["text_normalized"],
            voice=row["voice"],
            seed=row["seed"],
            language=row["language"],
            pieces=row["pieces"],
            speed=row["speed"],
            unknown_chars=row["unknown_chars"],
            model=model,
            backend=backend,
            error=row["error"],
        )
        if row["error"] is None:
            samples = np.frombuffer(row[_SAMPLES], np.float32)
            rate = int(row[_SAMPLE_RATE])
            try:
                data = encode_audio(samples, rate, options.format)
                path = f"{root}/{AUDIO_DIR}/{audio_name(row['id'], options.format)}"
                with fsspec.open(path, "wb", auto_mkdir=True) as f:
                    f.write(data)
            except (OSError, RuntimeError, sf.LibsndfileError) as err:
                if is_environment_error(err):
                    raise  # a full or read-only disk is no fault of the row: stop; a rerun redoes it
                out.error = f"cannot write audio: {_describe(err)}"
            else:
                out.audio = {"bytes": data if options.embed_audio else None, "path": path}
                out.sample_rate = rate
                out.num_samples = len(samples)
                out.duration_s = len(samples) / rate
        rows.append(out)
    return synthesis_table(rows)


@dataclass(frozen=True)
class Summary:
    """Figures of one run, as written to ``OUTPUT/_summary.json``."""

    rows: int
    ok: int
    errors: int
    changed_inputs: int  # this run: rows redone because their text changed in the input
    removed_inputs: int  # this run: rows (and audio files) dropped because their id left the input
    audio_seconds: float  # audio generated for the rows without error
    wall_seconds: float  # pipeline time, from reading the input to the summary (Ray start excluded)
    real_time_factor: float  # wall_seconds / audio_seconds: below 1 is faster than real time
    model: str
    backend: str
    output: str
    # Letters/digits the model cannot say: {"policy": error|drop|spell, "rows": rows that had
    # any, "characters": {character: rows}} (most frequent first).
    unknown_chars: dict | None = None
    verified_with: str | None = None
    mean_cer: float | None = None  # over rows that were transcribed
    rejected: int | None = None  # rows whose CER is above max_cer


def run(options: SynthesizeOptions) -> Summary:
    """Run the job on a Ray that is already initialized; returns the summary."""
    started = time.perf_counter()
    backend = check_options(options.tts)  # fail fast, before any actor starts
    corpus = with_voices(read_corpus(options.input, timeout_s=options.read_timeout_s), options)
    # Same rules as the transcription job: a rerun into OUTPUT resumes (rows already
    # written are skipped) unless the job differs; --overwrite starts afresh.
    with open_output(options.output, job=_job(options, backend), overwrite=options.overwrite, inputs=[options.input],
                     schema=SYNTHESIS_SCHEMA, columns=("id", "text"), defaults=options.result_defaults()) as output:
        verify.remove_leftovers(options.output)
        removed, changed = _stale_rows(corpus, output.done)
        output.drop([*removed, *changed])
        _remove_audio(options, removed)
        done = pa.array(sorted(output.done_ids), pa.string())
        todo = corpus.filter(pc.invert(pc.is_in(corpus["id"], value_set=done)))
        log.info("synthesizing %d rows with %s (%s); %d already done; %d redone because their text changed, "
                 "%d dropped because they left the input", todo.num_rows, options.model, backend,
                 corpus.num_rows - todo.num_rows, len(changed), len(removed))
        if todo.num_rows:
            _pipeline(options, backend, todo).write_parquet(options.output, schema=SYNTHESIS_SCHEMA)
        verification = verify.round_trip(options) if options.verify_with else None
        return summarize(options, backend, time.perf_counter() - started, verification,
                         changed=len(changed), removed=len(removed))


def _stale_rows(corpus: pa.Table, done: pa.Table) -> tuple[list[str], list[str]]:
    """``(removed, changed)``: ids of written rows no longer in ``corpus``, and of those whose text differs."""
    texts = dict(zip(corpus["id"].to_pylist(), corpus["text"].to_pylist()))
    written = dict(zip(done["id"].to_pylist(), done["text"].to_pylist()))
    removed = [i for i in written if i not in texts]
    changed = [i for i, text in written.items() if i in texts and texts[i] != text]
    return removed, changed


def _remove_audio(options: SynthesizeOptions, ids: list[str]) -> None:
    """Delete the audio files of rows dropped from the output (a changed row's file is rewritten)."""
    fs, root = fsspec.core.url_to_fs(options.output)
    for row_id in ids:
        try:
            path = f"{root.rstrip('/')}/{AUDIO_DIR}/{audio_name(row_id, options.format)}"
        except TextError:
            continue  # such a row never had audio
        if fs.exists(path):
            fs.rm(path)


def with_voices(corpus: pa.Table, options: SynthesizeOptions) -> pa.Table:
    """``corpus`` with ``options.voices`` dealt to the rows that name no voice (see
    :func:`speech.tts.frontend.deal_voices`); unchanged without ``voices``. Dealt over the
    whole corpus in its order, so a resumed run deals every row the same voice."""
    if not options.voices:
        return corpus
    dealt = pa.array(deal_voices(corpus.num_rows, options.voices, options.seed), pa.string())
    return corpus.set_column(corpus.schema.get_field_index("voice"), "voice", pc.coalesce(corpus["voice"], dealt))


def _job(options: SynthesizeOptions, backend: str) -> dict:
    """What decides the rows' content (the options' rows part, with the backend detected); a
    resumed run must agree with the earlier ones on it."""
    return {"job": "synthesize", **options.result_options(), "backend": backend}


def _pipeline(options: SynthesizeOptions, backend: str, todo: pa.Table) -> ray.data.Dataset:
    chars = pc.utf8_length(pc.fill_null(todo["text"], ""))
    ordered = ray.data.from_arrow(todo.append_column("_chars", chars)).sort(["_chars", "id"]).materialize()
    pool = options.pool
    return (
        ordered.map_batches(
            PrepareRows,
            fn_constructor_args=(options,),
            batch_size=options.rows_per_call,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=options.front_end_actors),
            num_cpus=options.cpus_per_front_end,
        )
        .map_batches(
            SynthesizeRows,
            fn_constructor_args=(options,),
            batch_size=options.rows_per_call,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=pool.min, max_size=pool.max),
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor,
        )
        .map_batches(
            write_audio,
            fn_kwargs={"options": options, "model": options.model, "backend": backend},
            batch_format="pyarrow",
            num_cpus=0.25,
        )
    )


def summarize(
    options: SynthesizeOptions, backend: str, wall_seconds: float, verification: tuple[float | None, int] | None,
    *, changed: int = 0, removed: int = 0,
) -> Summary:
    """Read the written output back and write ``_summary.json`` beside it (``changed`` and
    ``removed``: this run's counts of redone and dropped rows)."""
    counts = count_rows(options.output, SYNTHESIS_SCHEMA, ["duration_s"])
    audio = counts.sums["duration_s"]
    summary = Summary(
        rows=counts.rows,
        ok=counts.ok,
        errors=counts.errors,
        changed_inputs=changed,
        removed_inputs=removed,
        audio_seconds=round(audio, 3),
        wall_seconds=round(wall_seconds, 3),
        real_time_factor=round(wall_seconds / audio, 4) if audio > 0 else 0.0,
        model=options.model,
        backend=backend,
        output=options.output,
        unknown_chars=_unknown_chars(options),
        verified_with=options.verify_with,
        mean_cer=None if verification is None or verification[0] is None else round(verification[0], 4),
        rejected=None if verification is None else verification[1],
    )
    return write_summary(options.output, summary)


def _unknown_chars(options: SynthesizeOptions) -> dict:
    """The ``unknown_chars`` figures of the summary, from the rows written."""
    per_row = [chars for chars in read_output(options.output, columns=["unknown_chars"])["unknown_chars"].to_pylist() if chars]
    counts: dict[str, int] = {}
    for chars in per_row:
        for char in chars:
            counts[char] = counts.get(char, 0) + 1
    ranked = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return {"policy": options.unknown_chars, "rows": len(per_row), "characters": ranked}


def read_output(output: str, columns: list[str] | None = None) -> pa.Table:
    """A synthesis output directory (every run into it) as one table."""
    return output_files.read_output(output, SYNTHESIS_SCHEMA, columns)


def _describe(err: BaseException) -> str:
    return str(err) if isinstance(err, TextError) else f"{type(err).__name__}: {err}"
