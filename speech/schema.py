"""Column definitions: the one place the project's tables are described.

``INPUT_SCHEMA`` is what input resolution produces (one row per audio file);
``TRANSCRIPT_SCHEMA`` is what the transcription job writes, whatever the backend.
``SYNTHESIS_SCHEMA`` is what the synthesis job writes: a Hugging Face audio dataset.
:func:`embedding_schema` is what the embedding job writes (its vector size depends on the model).
Row dataclasses mirror the schemas so Python code never builds dicts by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

#: When a file was last modified: nanoseconds since the epoch, UTC.
MTIME_TYPE = pa.timestamp("ns", tz="UTC")

INPUT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable, unique per corpus
        pa.field("path", pa.string(), nullable=False),  # local path or fsspec URL
        pa.field("reference", pa.string()),  # reference transcript, if the manifest has one
        pa.field("language", pa.string()),  # language code, if known
        # What identifies the file's content when the inputs were listed (null: unknown, e.g.
        # missing); a resumed job redoes a row whose input no longer matches.
        pa.field("input_size", pa.int64()),  # bytes
        pa.field("input_mtime", MTIME_TYPE),
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
        pa.field("input_size", pa.int64()),  # the input's size in bytes when it was listed
        pa.field("input_mtime", MTIME_TYPE),  # and its modification time (see INPUT_SCHEMA)
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
        # What ran the network: transformers (PyTorch), onnxruntime (an exported ONNX model),
        # ctranslate2 (a CTranslate2 model.bin)
        pa.field("engine", pa.string()),
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
    input_size: int | None = None
    input_mtime: datetime | None = None  # UTC
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




# --- speech embeddings ---------------------------------------------------------------------


def embedding_schema(hidden_size: int, *, pooling: str, all_layers: bool) -> pa.Schema:
    """What ``speech embed`` writes: one row per input file, whatever the options.

    ``embedding`` is float32 vectors of ``hidden_size``; its nesting follows the options:

    - ``pooling="mean"``, one layer: ``fixed_size_list<float32>[hidden]``, one vector;
    - ``pooling="none"``, one layer: ``list<fixed_size_list<float32>[hidden]>``, one vector a frame;
    - every layer (``all_layers``): one more ``list`` outside, indexed by layer (0..num_hidden_layers).

    One row per file (rather than one per layer) keeps ``id`` unique, so resume and the
    summary treat every job alike, and a whole column converts to one numpy array of shape
    ``[files, layers, hidden]`` without copying row by row.
    """
    vector = pa.list_(pa.float32(), hidden_size)
    embedding = vector if pooling == "mean" else pa.list_(vector)
    if all_layers:
        embedding = pa.list_(embedding)
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("input_size", pa.int64()),  # the input's size and modification time when listed
            pa.field("input_mtime", MTIME_TYPE),  # (see INPUT_SCHEMA): a resume redoes changed inputs
            pa.field("duration_s", pa.float64()),  # decoded audio length, seconds
            pa.field("model", pa.string()),  # model id or path as given by the user
            pa.field("layer", pa.int32()),  # hidden-state index; null: every layer, in embedding's outer list
            pa.field("embedding", embedding),  # null when the row failed
            pa.field("frame_rate_hz", pa.float64()),  # the model's output frames per second of audio
            pa.field("error", pa.string()),  # null on success; the reason otherwise
        ]
    )


@dataclass
class EmbeddingRow:
    """One output row of ``embedding_schema``; ``embedding`` is a float32 array shaped as the
    column nests (``[hidden]``, ``[frames, hidden]``, ``[layers, hidden]`` or ``[layers, frames, hidden]``)."""

    id: str
    path: str
    input_size: int | None = None
    input_mtime: datetime | None = None
    duration_s: float | None = None
    model: str | None = None
    layer: int | None = None
    embedding: np.ndarray | None = None
    frame_rate_hz: float | None = None
    error: str | None = None


def embeddings_table(rows: Sequence[EmbeddingRow], schema: pa.Schema) -> pa.Table:
    """Rows -> a table with exactly ``schema`` (from :func:`embedding_schema`); vectors are
    copied once into Arrow buffers, never element by element."""
    columns = {
        name: pa.array([getattr(row, name) for row in rows], schema.field(name).type)
        for name in schema.names
        if name != "embedding"
    }
    columns["embedding"] = _nested_array([row.embedding for row in rows], schema.field("embedding").type)
    return pa.table(columns, schema=schema)


def _nested_array(items: Sequence[np.ndarray | None], type_: pa.DataType) -> pa.Array:
    """Arrays (or None for a null) -> one Arrow array of ``type_`` (lists of fixed-size float32 lists)."""
    mask = pa.array([item is None for item in items], pa.bool_())
    present = [item for item in items if item is not None]
    if pa.types.is_fixed_size_list(type_):
        flat = np.zeros((len(items), type_.list_size), np.float32)  # null rows: zeros under the mask
        for row, item in enumerate(items):
            if item is not None:
                flat[row] = item
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), type=type_, mask=mask)
    lengths = [0 if item is None else len(item) for item in items]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    child_type = type_.value_type
    if pa.types.is_fixed_size_list(child_type):  # rows of vectors: one block copy
        flat = np.concatenate([np.asarray(item, np.float32).reshape(-1) for item in present] or [np.zeros(0, np.float32)])
        child = pa.FixedSizeListArray.from_arrays(pa.array(flat), type=child_type)
    else:
        child = _nested_array([part for item in present for part in item], child_type)
    return pa.ListArray.from_arrays(offsets, child, type=type_, mask=mask)


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
        # What was spoken: numbers, dates, symbols written out, unknown characters handled
        # (--unknown-chars); null when the row failed before that.
        pa.field("text_normalized", pa.string()),
        pa.field("audio", AUDIO_TYPE),  # null when the row failed
        pa.field("sample_rate", pa.int32()),  # Hz
        pa.field("num_samples", pa.int64()),  # exact length of the decoded audio
        pa.field("duration_s", pa.float64()),  # num_samples / sample_rate
        pa.field("voice", pa.string()),  # resolved voice (name, kokoro blend, speaker index or "seed:N")
        pa.field("seed", pa.int64()),
        pa.field("language", pa.string()),
        pa.field("pieces", pa.int32()),  # sentence pieces synthesized and joined
        pa.field("speed", pa.float64()),  # speaking rate (null: the model's own)
        # Letters/digits the model cannot say, each once: refused (the row's error), dropped
        # or spelled by --unknown-chars; null when there were none.
        pa.field("unknown_chars", pa.string()),
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
    text_normalized: str | None = None
    audio: dict | None = None  # {"bytes": ..., "path": ...}
    sample_rate: int | None = None
    num_samples: int | None = None
    duration_s: float | None = None
    voice: str | None = None
    seed: int | None = None
    language: str | None = None
    pieces: int | None = None
    speed: float | None = None
    unknown_chars: str | None = None
    model: str | None = None
    backend: str | None = None
    asr_text: str | None = None
    cer: float | None = None
    error: str | None = None


def synthesis_table(rows: Iterable[SynthesisRow]) -> pa.Table:
    """Rows -> a table with exactly ``SYNTHESIS_SCHEMA`` (metadata included)."""
    return pa.Table.from_pylist([asdict(row) for row in rows], schema=SYNTHESIS_SCHEMA)
