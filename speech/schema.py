"""Column definitions: the one place the project's tables are described.

``INPUT_SCHEMA`` is what input resolution produces (one row per audio file);
``TRANSCRIPT_SCHEMA`` is what the transcription job writes, whatever the backend.
Row dataclasses mirror the schemas so Python code never builds dicts by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import pyarrow as pa

INPUT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable, unique per corpus
        pa.field("path", pa.string(), nullable=False),  # local path or fsspec URL
        pa.field("reference", pa.string()),  # reference transcript, if the manifest has one
        pa.field("language", pa.string()),  # language code, if known
    ]
)

WORD_TYPE = pa.struct(
    [
        pa.field("word", pa.string()),
        pa.field("start", pa.float64()),  # seconds from the start of the file
        pa.field("end", pa.float64()),  # seconds
        pa.field("confidence", pa.float32()),  # in [0, 1]
    ]
)

SEGMENT_TYPE = pa.struct(
    [
        pa.field("start", pa.float64()),  # seconds
        pa.field("end", pa.float64()),  # seconds
        pa.field("text", pa.string()),
        pa.field("avg_logprob", pa.float32()),
        pa.field("no_speech_prob", pa.float32()),
    ]
)

TRANSCRIPT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64()),  # decoded audio length, seconds
        pa.field("text", pa.string()),
        pa.field("confidence", pa.float32()),  # mean posterior of emitted tokens, [0, 1]
        pa.field("words", pa.list_(WORD_TYPE)),
        pa.field("segments", pa.list_(SEGMENT_TYPE)),  # sequence models only
        pa.field("language", pa.string()),
        pa.field("language_probability", pa.float32()),  # when the language was detected
        pa.field("reference", pa.string()),
        pa.field("model", pa.string()),  # model id or path as given by the user
        pa.field("backend", pa.string()),
        # Seconds of audio the model computed on for this row, including its share of
        # batch padding and chunk overlap; duration_s / computed_s is padding efficiency.
        pa.field("computed_s", pa.float64()),
        pa.field("error", pa.string()),  # null on success; the reason otherwise
    ]
)


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float


@dataclass
class TranscriptRow:
    """One output row; field names and meanings are those of ``TRANSCRIPT_SCHEMA``."""

    id: str
    path: str
    duration_s: float | None = None
    text: str | None = None
    confidence: float | None = None
    words: list[Word] | None = None
    segments: list[Segment] | None = None
    language: str | None = None
    language_probability: float | None = None
    reference: str | None = None
    model: str | None = None
    backend: str | None = None
    computed_s: float | None = None
    error: str | None = None


def transcripts_table(rows: Iterable[TranscriptRow]) -> pa.Table:
    """Rows -> a table with exactly ``TRANSCRIPT_SCHEMA``."""
    return pa.Table.from_pylist([asdict(row) for row in rows], schema=TRANSCRIPT_SCHEMA)

