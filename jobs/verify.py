"""Round-trip verification of a synthesis output: transcribe the written audio, score it.

The synthesis job runs this after it has written its rows (``verify_with``): a manifest of the
rows with audio goes through the transcription job into ``OUTPUT/_verify``; each Parquet file
of the output is then rewritten in place with ``asr_text`` and ``cer`` (character error rate,
0 = identical), and rows above ``max_cer`` get an ``error``. The work directory is removed at
the end, and by the next run if this one was killed.
"""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import output as output_files
from jobs.output import VERIFY_DIR, parquet_files, replace_table
from speech.options import SynthesizeOptions
from speech.schema import SYNTHESIS_SCHEMA


def round_trip(options: SynthesizeOptions) -> tuple[float | None, int]:
    """Transcribe the written audio with ``options.verify_with`` and add ``asr_text``/``cer``.

    Runs the transcription job on a manifest of the rows that have audio, joins its
    transcripts by id, and rewrites each Parquet file of the output in place. Rows whose
    CER is above ``max_cer`` (or whose transcription failed) get an ``error``.
    Returns ``(mean CER over transcribed rows, rows rejected)``.
    """
    from jobs import transcribe
    from speech.options import TranscribeOptions
    from speech.text.score import character_error_rate

    root = options.output.rstrip("/")
    work = f"{root}/{VERIFY_DIR}"
    table = output_files.read_output(options.output, SYNTHESIS_SCHEMA, columns=["id", "text", "audio", "asr_text", "error"])
    # Rows verified by an earlier run of a resumed job keep their scores.
    ok = table.filter(pc.and_(pc.is_null(table["error"]), pc.is_null(table["asr_text"])))
    if ok.num_rows == 0:
        return None, 0
    manifest = f"{work}/manifest.jsonl"
    with fsspec.open(manifest, "w", auto_mkdir=True) as f:
        for row in ok.select(["id", "audio"]).to_pylist():
            f.write(json.dumps({"id": row["id"], "path": row["audio"]["path"]}) + "\n")
    asr = transcribe.run(
        TranscribeOptions(
            inputs=[manifest],
            output=f"{work}/asr",
            model=options.verify_with,
            overwrite=True,
            cpus_per_actor=options.cpus_per_actor,
            gpus_per_actor=options.gpus_per_actor,
        )
    )
    transcripts = {
        r["id"]: r for r in transcribe.read_output(asr.output, columns=["id", "text", "error"]).to_pylist()
    }
    scores: list[float] = []
    rejected = 0
    fs, fs_root = fsspec.core.url_to_fs(options.output)
    for file in parquet_files(fs, fs_root.rstrip("/")):
        rows = pq.read_table(file, filesystem=fs).to_pylist()
        for row in rows:
            if row["error"] is not None or row["asr_text"] is not None:
                continue
            transcript = transcripts.get(row["id"])
            if transcript is None or transcript["error"] is not None:
                reason = "no transcript" if transcript is None else transcript["error"]
                row["error"] = f"round-trip transcription failed: {reason}"
                rejected += 1
                continue
            row["asr_text"] = transcript["text"]
            row["cer"] = character_error_rate(row["text"], transcript["text"])
            scores.append(row["cer"])
            if options.max_cer is not None and row["cer"] > options.max_cer:
                row["error"] = f"round-trip CER {row['cer']:.3f} is above max_cer {options.max_cer}"
                rejected += 1
        replace_table(fs, file, pa.Table.from_pylist(rows, schema=SYNTHESIS_SCHEMA))
    fs.rm(f"{fs_root.rstrip('/')}/{VERIFY_DIR}", recursive=True)
    return (float(np.mean(scores)) if scores else None), rejected


def remove_leftovers(output: str) -> None:
    """Drop the work directory of a verification that was killed (only in this tool's outputs)."""
    fs, root = fsspec.core.url_to_fs(output)
    root = root.rstrip("/")
    if fs.exists(f"{root}/{output_files.JOB_FILE}") and fs.exists(f"{root}/{VERIFY_DIR}"):
        fs.rm(f"{root}/{VERIFY_DIR}", recursive=True)
