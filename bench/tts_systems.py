"""The systems of ``speech bench tts``: one function each, every one run in a fresh subprocess.

Every system reads the same text corpus (JSONL), builds the same
:class:`~speech.options.SynthesizeOptions` from the job (same checkpoint, sampling, seeds and
torch threads), prepares each row with the project's one front end
(:func:`speech.tts.frontend.prepare_row`) and loads the backend through the one loader
(:func:`speech.tts.load_model`). Each returns its figures as a dict: ``rows``, ``pieces``,
``audio_s`` (seconds of audio produced, pauses between a row's pieces included), ``wall_s``,
``startup_s`` and ``samples`` (id -> samples of the row's audio, for the equality check).

:func:`bench.harness.run_system` starts ``python -m bench.tts_systems`` for one
system and measures the peak memory of its process tree, as for the ASR benchmark.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import BenchError


@dataclass(frozen=True)
class TtsJob:
    """What one system run gets (JSON-serialized to the subprocess)."""

    system: str  # a key of SYSTEMS
    corpus: str  # JSONL text corpus ('id', 'text' per line)
    threads: int  # torch intra-op threads, the same for every system
    work_dir: str  # scratch space of this run (outputs, logs)
    options: dict = field(default_factory=dict)  # SynthesizeOptions fields shared by every system (model, sampling, ...)


def _options(job: TtsJob):
    from speech.options import SynthesizeOptions

    return SynthesizeOptions(
        input=job.corpus, output=str(Path(job.work_dir) / "output"), overwrite=True, torch_threads=job.threads,
        **job.options,
    )


# ---------------------------------------------------------------- the systems (run in the child)


def ours(job: TtsJob) -> dict:
    """``speech synthesize`` (``jobs.synthesize.run``) on a local Ray started here, on all CPUs.

    One model actor with ``torch_threads = threads`` (the job's defaults otherwise: rows sorted
    by length, 16 rows per model call, ``batch_size`` pieces per batched decode); Ray's start
    counts in ``wall_s`` and is ``startup_s``.
    """
    import logging

    import pyarrow.compute as pc
    import ray

    from jobs import synthesize

    started = time.perf_counter()
    options = _options(job)
    # "local": a Ray of our own even when `ray start` left a cluster on this machine.
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        ray_started = time.perf_counter()
        synthesize.run(options)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - started
    table = synthesize.read_output(options.output, columns=["id", "pieces", "num_samples", "duration_s", "error"])
    failed = table.filter(pc.is_valid(table["error"]))
    if failed.num_rows:
        first = failed.slice(0, 1).to_pylist()[0]
        raise BenchError(f"ours: {failed.num_rows} rows failed; row {first['id']!r}: {first['error']}")
    rows = table.to_pylist()
    return {
        "rows": len(rows),
        "pieces": sum(r["pieces"] for r in rows),
        "audio_s": sum(r["duration_s"] for r in rows),
        "wall_s": wall,
        "startup_s": ray_started - started,
        "samples": {r["id"]: r["num_samples"] for r in rows},
    }


def loop(job: TtsJob) -> dict:
    """The same backend class loaded once in this process, one utterance per model call.

    Rows in corpus order; each row's pieces synthesized one call each, joined with the job's
    pause, encoded and written exactly as the job writes them (``OUTPUT/audio/<id>.<fmt>``
    plus one Parquet file of ``SYNTHESIS_SCHEMA`` rows with the audio bytes embedded), so
    both systems do the same I/O. ``model_s`` is the time inside the model calls.
    """
    import fsspec
    import pyarrow.parquet as pq

    from jobs.synthesize import AUDIO_DIR, audio_name
    from speech.audio import encode_audio
    from speech.schema import SynthesisRow, synthesis_table
    from speech.tts.frontend import join_pieces

    started = time.perf_counter()
    options, front_end, model = _load(job)
    loaded = time.perf_counter()
    rows, model_s = [], 0.0
    for row, utterances in _prepared(options, front_end):
        t = time.perf_counter()
        parts = [model.synthesize([utterance])[0] for utterance in utterances]
        model_s += time.perf_counter() - t
        samples = join_pieces(parts, pause_s=options.sentence_pause_s, sample_rate=model.sample_rate)
        data = encode_audio(samples, model.sample_rate, options.format)
        path = f"{options.output}/{AUDIO_DIR}/{audio_name(row['id'], options.format)}"
        with fsspec.open(path, "wb", auto_mkdir=True) as f:
            f.write(data)
        rows.append(SynthesisRow(
            id=row["id"], text=row["text"], voice=utterances[0].voice, seed=row["seed"], language=row["language"],
            pieces=len(utterances), model=options.model, backend=model.backend, error=None,
            audio={"bytes": data if options.embed_audio else None, "path": path}, sample_rate=model.sample_rate,
            num_samples=len(samples), duration_s=len(samples) / model.sample_rate,
        ))
    pq.write_table(synthesis_table(rows), f"{options.output}/loop.parquet")
    return {
        "rows": len(rows),
        "pieces": sum(r.pieces for r in rows),
        "audio_s": sum(r.duration_s for r in rows),
        "wall_s": time.perf_counter() - started,
        "startup_s": loaded - started,
        "model_s": model_s,
        "samples": {r.id: r.num_samples for r in rows},
    }


def ceiling(job: TtsJob) -> dict:
    """The backend's model calls alone: every piece of the corpus in one ``synthesize`` call.

    Pieces are prepared and sorted by cost (as the job sorts them) before the clock starts;
    the backend batches where it can (ChatTTS: decoder + Vocos in ``batch_size`` groups).
    ``wall_s`` is that call only: no Ray, no text front end, no encoding, no I/O. The
    waveforms are joined per row afterwards, untimed, only to report the same lengths.
    """
    from speech.tts.frontend import join_pieces

    options, front_end, model = _load(job)
    prepared = list(_prepared(options, front_end))
    flat = [(i, k, u) for i, (_, utterances) in enumerate(prepared) for k, u in enumerate(utterances)]
    flat.sort(key=lambda item: (item[2].cost, item[0], item[1]))
    t = time.perf_counter()
    waveforms = model.synthesize([u for _, _, u in flat])
    wall = time.perf_counter() - t
    parts: list[list] = [[None] * len(utterances) for _, utterances in prepared]
    for (i, k, _), waveform in zip(flat, waveforms):
        parts[i][k] = waveform
    samples = {row["id"]: len(join_pieces(p, pause_s=options.sentence_pause_s, sample_rate=model.sample_rate))
               for (row, _), p in zip(prepared, parts)}
    return {
        "rows": len(prepared),
        "pieces": len(flat),
        "audio_s": sum(samples.values()) / model.sample_rate,
        "wall_s": wall,
        "startup_s": 0.0,
        "samples": samples,
    }


SYSTEMS: dict[str, Callable[[TtsJob], dict]] = {"ours": ours, "loop": loop, "ceiling": ceiling}


# ---------------------------------------------------------------- helpers of the systems


def _load(job: TtsJob):
    """``(options, front end, model)``, with the job's torch threads set first."""
    import torch

    from speech.tts import load_front_end, load_model

    torch.set_num_threads(job.threads)
    options = _options(job)
    return options, load_front_end(options.tts), load_model(options.tts, "cpu", options.run)


def _prepared(options, front_end):
    """``(corpus row, utterances)`` per row in corpus order, with the job's defaults per row.

    The benchmark corpus is generated to be sayable: a row the front end refuses is a bug
    of the benchmark and stops it, naming the row.
    """
    from speech.text import TextError
    from speech.text.corpus import read_corpus
    from speech.tts.frontend import prepare_row

    for row in read_corpus(options.input).to_pylist():
        row["seed"] = options.seed if row["seed"] is None else int(row["seed"])
        row["language"] = row["language"] or options.language
        try:
            utterances = prepare_row(
                front_end, row["text"], voice=row["voice"] or options.voice, language=row["language"],
                seed=row["seed"], max_text_chars=options.max_text_chars,
                speed=options.speed if row["speed"] is None else row["speed"], normalize=options.normalize,
                unknown_chars=options.unknown_chars,
            ).utterances
        except TextError as err:
            raise BenchError(f"corpus row {row['id']!r} cannot be synthesized: {err}") from err
        yield row, utterances


def main(argv: list[str]) -> int:
    """Child entry point: ``python -m bench.tts_systems JOB.json RESULT.json``."""
    job = TtsJob(**json.loads(Path(argv[0]).read_text()))
    figures = SYSTEMS[job.system](job)
    Path(argv[1]).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
