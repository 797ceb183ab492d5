"""Column definitions: the one place the project's tables are described.

``INPUT_SCHEMA`` is what input resolution produces (one row per audio file);
``TRANSCRIPT_SCHEMA`` is what the transcription job writes, whatever the backend.
``SYNTHESIS_SCHEMA`` is what the synthesis job writes: a Hugging Face audio dataset.
Row dataclasses mirror the schemas so Python code never builds dicts by hand.
"""

from __future__ import annotations

import json
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
        pa.field("avg_logprob", pa.float32()),  # mean token log-probability of its window
        pa.field("no_speech_prob", pa.float32()),
        pa.field("temperature", pa.float32()),  # at which its window was decoded (0: greedy or beam search)
        pa.field("compression_ratio", pa.float32()),  # gzip ratio of its window's text; high: a loop
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
        pa.field("backend", pa.string()),  # model family: "whisper" or "ctc"
        pa.field("engine", pa.string()),  # runtime: "transformers" or "ctranslate2"
        # Seconds of audio the model computed on for this row, including its share of
        # batch padding and chunk overlap; duration_s / computed_s is padding efficiency.
        pa.field("computed_s", pa.float64()),
        # Whisper: true when a window still failed the compression-ratio or log-probability
        # threshold at the last temperature (its best attempt is in the text); see its segments.
        pa.field("thresholds_failed", pa.bool_()),
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
    temperature: float | None = None
    compression_ratio: float | None = None


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
    engine: str | None = None
    computed_s: float | None = None
    thresholds_failed: bool | None = None
    error: str | None = None


def transcripts_table(rows: Iterable[TranscriptRow]) -> pa.Table:
    """Rows -> a table with exactly ``TRANSCRIPT_SCHEMA``."""
    return pa.Table.from_pylist([asdict(row) for row in rows], schema=TRANSCRIPT_SCHEMA)



# --- speech synthesis ----------------------------------------------------------------------

#: How ``datasets.Audio`` stores audio in Parquet: the encoded file's bytes and its path.
AUDIO_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# The ``huggingface`` schema metadata that makes ``datasets`` decode ``audio`` as Audio. No
# sampling rate is given: each file decodes at its own rate (``sample_rate`` column).
_HF_FEATURES = {"info": {"features": {"audio": {"_type": "Audio"}}}}

SYNTHESIS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string()),  # the row's text as given
        pa.field("audio", AUDIO_TYPE),  # null when the row failed
        pa.field("sample_rate", pa.int32()),  # Hz
        pa.field("num_samples", pa.int64()),  # exact length of the decoded audio
        pa.field("duration_s", pa.float64()),  # num_samples / sample_rate
        pa.field("voice", pa.string()),  # resolved voice (name, speaker index or "seed:N")
        pa.field("seed", pa.int64()),
        pa.field("language", pa.string()),
        pa.field("pieces", pa.int32()),  # sentence pieces synthesized and joined
        pa.field("model", pa.string()),
        pa.field("backend", pa.string()),
        pa.field("asr_text", pa.string()),  # round-trip transcript (--verify-with)
        pa.field("cer", pa.float64()),  # character error rate of asr_text against text
        pa.field("error", pa.string()),  # null on success; the reason otherwise
    ],
    metadata={"huggingface": json.dumps(_HF_FEATURES)},
)


@dataclass
class SynthesisRow:
    """One output row; field names and meanings are those of ``SYNTHESIS_SCHEMA``."""

    id: str
    text: str | None = None
    audio: dict | None = None  # {"bytes": ..., "path": ...}
    sample_rate: int | None = None
    num_samples: int | None = None
    duration_s: float | None = None
    voice: str | None = None
    seed: int | None = None
    language: str | None = None
    pieces: int | None = None
    model: str | None = None
    backend: str | None = None
    asr_text: str | None = None
    cer: float | None = None
    error: str | None = None


def synthesis_table(rows: Iterable[SynthesisRow]) -> pa.Table:
    """Rows -> a table with exactly ``SYNTHESIS_SCHEMA`` (metadata included)."""
    return pa.Table.from_pylist([asdict(row) for row in rows], schema=SYNTHESIS_SCHEMA)
