"""Turn a transcription job's Parquet output into subtitle and text files.

One file per row and format, at ``DIR/<id>.<ext>``: SubRip (``srt``), WebVTT
(``vtt``), plain text (``txt``) and a JSON close to OpenAI's ``verbose_json``
(``json``). Cues come from the row's ``segments`` (sequence models); else from its
``words`` (CTC models), grouped into subtitle-sized cues; else one cue spans the
whole text. Rows with an error, ids that cannot name a file under ``DIR``
(:func:`speech.files.file_name`: ``..``, absolute, control characters, too long), ids whose
path the file system refuses as too long, and repeated ids are skipped and reported, never
written. Any other failure to write (disk full, read-only, no permission) stops the export
with :class:`ExportError`.
"""

from __future__ import annotations

import errno
import json
import math
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import fsspec
import srt

from speech.dataset import read_output
from speech.files import UnsafeName, file_name
from speech.schema import TRANSCRIPT_SCHEMA

FORMATS = ("srt", "vtt", "txt", "json")

#: Skip reasons, as counted in :class:`ExportSummary`.
TRANSCRIPTION_ERROR = "transcription error"
UNSAFE_ID = "id not usable as a path under DIR"
NAME_TOO_LONG = "path too long for the file system"
DUPLICATE_ID = "duplicate id"

_READ_ROWS = 1024  # rows turned into Python objects at a time


class ExportError(ValueError):
    """The export cannot run at all (no output to read, unknown format)."""


@dataclass(frozen=True)
class CueLimits:
    """How words are grouped into cues when a row has no segments.

    The defaults follow common subtitle guidelines: one line of at most 42 characters,
    on screen for at most 7 s, and a new cue after a pause a viewer would notice.
    """

    max_seconds: float = 7.0  # first word's start to last word's end
    max_chars: int = 42  # words joined by spaces
    max_gap_s: float = 1.0  # a longer pause between words starts a new cue

    def __post_init__(self) -> None:
        if self.max_seconds <= 0 or self.max_chars <= 0 or self.max_gap_s < 0:
            raise ValueError(f"cue limits must be positive: {self}")


@dataclass(frozen=True)
class Cue:
    """One subtitle: seconds on the file's timeline, and one line of text."""

    start: float
    end: float
    text: str


@dataclass
class ExportSummary:
    """What an export did: files written, and the rows skipped, by reason."""

    rows: int = 0
    exported_rows: int = 0
    files: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> ids, in row order

    def describe(self, directory: str, formats: Sequence[str]) -> str:
        """Human-readable lines for the command line."""
        lines = [f"wrote {self.files} files ({self.exported_rows} rows x {', '.join(formats)}) under {directory}"]
        skipped = sum(len(ids) for ids in self.skipped.values())
        lines.append(f"skipped {skipped} of {self.rows} rows" + (":" if skipped else ""))
        for reason, ids in self.skipped.items():
            shown = ", ".join(repr(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
            lines.append(f"  {len(ids)} with {reason}: {shown}")
        return "\n".join(lines)


def export(output: str, directory: str, formats: Sequence[str], limits: CueLimits = CueLimits()) -> ExportSummary:
    """Write ``directory/<id>.<format>`` for every successful row of the job output ``output``.

    Args:
        output: a ``speech transcribe`` output directory (local path or fsspec URL).
        directory: where to write (local path or fsspec URL); created if missing. An id
            with ``/`` becomes subdirectories; existing files of the same name are replaced.
        formats: any of :data:`FORMATS`.
        limits: cue grouping for rows that have words but no segments.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown format(s) {unknown or formats}; choose from {', '.join(FORMATS)}")
    table = read_output(output, TRANSCRIPT_SCHEMA)
    if table.num_rows == 0:
        raise ExportError(f"no transcript rows under {output}; is it the output directory of `speech transcribe`?")
    fs, root = fsspec.core.url_to_fs(directory)
    try:
        if fs.isfile(root):
            raise ExportError(f"cannot export to {directory}: it is a file; give a directory (existing or new)")
        fs.makedirs(root, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot export to {directory}: {err.strerror or err}") from err
    longest = max((f".{fmt}" for fmt in formats), key=len)
    summary = ExportSummary(rows=table.num_rows)
    seen: set[str] = set()
    for row in _rows(table):
        reason = _skip_reason(row, seen, longest)
        if reason is None:
            seen.add(row["id"])
            reason = _write_row(fs, root, row, formats, limits)
        if reason is not None:
            summary.skipped.setdefault(reason, []).append(row["id"])
            continue
        summary.files += len(formats)
        summary.exported_rows += 1
    return summary


def _write_row(fs, root: str, row: dict, formats: Sequence[str], limits: CueLimits) -> str | None:
    """Write one row's files; None, or the skip reason when the file system refuses the path as
    too long (then no directory made for it is left behind). Other errors stop the export."""
    cues = row_cues(row, limits)
    parent = posixpath.dirname(posixpath.join(root, row["id"]))
    made = _missing_parents(fs, parent, root)
    path = parent
    try:
        fs.makedirs(parent, exist_ok=True)
        for fmt in formats:
            path = posixpath.join(root, f"{row['id']}.{fmt}")
            with fs.open(path, "w", encoding="utf-8") as f:
                f.write(_RENDERERS[fmt](row, cues))
    except OSError as err:
        if err.errno != errno.ENAMETOOLONG:
            raise ExportError(f"cannot write {path}: {err.strerror or err}") from err
        for directory in made:  # deepest first; only what this row created, and only if empty
            if fs.exists(directory) and not fs.ls(directory):
                fs.rmdir(directory)
        return NAME_TOO_LONG
    return None


def _missing_parents(fs, directory: str, root: str) -> list[str]:
    """The directories between ``root`` and ``directory`` (included) that do not exist yet, deepest first."""
    missing = []
    while directory != root and len(directory) > len(root):
        try:
            if fs.exists(directory):
                break
        except OSError:  # the name itself may be too long to look up
            pass
        missing.append(directory)
        directory = posixpath.dirname(directory)
    return missing


def render(row: dict, fmt: str, limits: CueLimits = CueLimits()) -> str:
    """One output row (a ``TRANSCRIPT_SCHEMA`` row as a dict) as the text of a ``fmt`` file,
    ``fmt`` one of :data:`FORMATS`; what :func:`export` writes, for callers with a single row
    (the HTTP server's srt/vtt/text/verbose_json answers)."""
    return _RENDERERS[fmt](row, row_cues(row, limits))


def row_cues(row: dict, limits: CueLimits = CueLimits()) -> list[Cue]:
    """The cues of one output row (a ``TRANSCRIPT_SCHEMA`` row as a dict), in time order.

    Times are clipped to ``[0, duration_s]`` so that players and parsers accept them.
    """
    duration = row.get("duration_s")
    if row.get("segments"):
        raw = [Cue(s["start"], s["end"], s["text"]) for s in row["segments"]]
    elif row.get("words"):
        raw = _group_words(row["words"], limits)
    elif (row.get("text") or "").strip():
        raw = [Cue(0.0, duration or 0.0, row["text"])]
    else:
        raw = []
    cues = []
    for cue in raw:
        text = " ".join(cue.text.split())  # one line: cue text must not hold blank lines
        if not text:
            continue
        cues.append(Cue(*_clip(cue.start, cue.end, duration), text))
    return sorted(cues, key=lambda c: (c.start, c.end))


def _clip(start: float, end: float, duration: float | None) -> tuple[float, float]:
    """``start <= end`` inside ``[0, duration]``: sequence models may time past the audio's end."""
    end = max(0.0, end if duration is None else min(end, duration))
    return min(max(0.0, start), end), end


def _rows(table) -> Iterable[dict]:
    for batch in table.to_batches(max_chunksize=_READ_ROWS):
        yield from batch.to_pylist()


def _skip_reason(row: dict, seen: set[str], suffix: str) -> str | None:
    if row.get("error") is not None:
        return TRANSCRIPTION_ERROR
    try:
        file_name(row["id"], suffix)
    except UnsafeName:
        return UNSAFE_ID
    if row["id"] in seen:
        return DUPLICATE_ID
    return None


def _group_words(words: list[dict], limits: CueLimits) -> list[Cue]:
    """Consecutive words -> cues within ``limits``; a word too long for one cue stands alone."""
    cues: list[Cue] = []
    current: list[dict] = []

    def close() -> None:
        if current:
            text = " ".join(w["word"].strip() for w in current)
            cues.append(Cue(current[0]["start"], current[-1]["end"], text))
            current.clear()

    for word in words:
        if current:
            text = " ".join(w["word"].strip() for w in [*current, word])
            if (
                word["end"] - current[0]["start"] > limits.max_seconds
                or len(text) > limits.max_chars
                or word["start"] - current[-1]["end"] > limits.max_gap_s
            ):
                close()
        current.append(word)
    close()
    return cues


def _timestamp(seconds: float) -> str:
    """``HH:MM:SS,mmm`` (milliseconds truncated, so a clipped end never passes the audio's end)."""
    return srt.timedelta_to_srt_timestamp(timedelta(seconds=seconds))


def _render_srt(row: dict, cues: list[Cue]) -> str:
    subtitles = [srt.Subtitle(None, timedelta(seconds=c.start), timedelta(seconds=c.end), c.text) for c in cues]
    return srt.compose(subtitles)


def _render_vtt(row: dict, cues: list[Cue]) -> str:
    blocks = ["WEBVTT\n"]
    for index, cue in enumerate(cues, start=1):
        # WebVTT cue text is HTML-like: &, < and > must be escaped (which also rules out "-->").
        text = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        times = f"{_timestamp(cue.start)} --> {_timestamp(cue.end)}".replace(",", ".")
        blocks.append(f"{index}\n{times}\n{text}\n")
    return "\n".join(blocks)


def _render_txt(row: dict, cues: list[Cue]) -> str:
    text = (row.get("text") or "").strip()
    return f"{text}\n" if text else ""


def _render_json(row: dict, cues: list[Cue]) -> str:
    """OpenAI ``verbose_json``-like: language, duration, text, segments, words.

    Segments are the model's own when it made them (with their log-probability, no-speech
    probability, decoding temperature and compression ratio); otherwise the cues, whose scores are unknown (null). Times
    are clipped to the audio, as in the subtitles.
    """
    if row.get("segments"):
        spans = [_clip(s["start"], s["end"], row.get("duration_s")) for s in row["segments"]]
        segments = [
            {
                "id": i,
                "start": _number(start, 3),
                "end": _number(end, 3),
                "text": s["text"],
                "avg_logprob": _number(s["avg_logprob"], 4),
                "no_speech_prob": _number(s["no_speech_prob"], 4),
                "temperature": _number(s.get("temperature"), 2),
                "compression_ratio": _number(s.get("compression_ratio"), 4),
            }
            for i, (s, (start, end)) in enumerate(zip(row["segments"], spans))
        ]
    else:
        segments = [
            {
                "id": i,
                "start": _number(c.start, 3),
                "end": _number(c.end, 3),
                "text": c.text,
                "avg_logprob": None,
                "no_speech_prob": None,
                "temperature": None,
                "compression_ratio": None,
            }
            for i, c in enumerate(cues)
        ]
    words = []
    for w in row.get("words") or []:
        start, end = _clip(w["start"], w["end"], row.get("duration_s"))
        words.append(
            {"word": w["word"], "start": _number(start, 3), "end": _number(end, 3), "probability": _number(w["confidence"], 4)}
        )
    document = {
        "task": "transcribe",
        "language": row.get("language"),
        "duration": _number(row.get("duration_s"), 3),
        "text": row.get("text") or "",
        "segments": segments,
        "words": words,
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _number(value: float | None, digits: int) -> float | None:
    """Rounded for readability (float32 columns print as -0.30000001192...); NaN and
    infinities, which JSON cannot hold, become null."""
    return round(value, digits) if value is not None and math.isfinite(value) else None


_RENDERERS = {"srt": _render_srt, "vtt": _render_vtt, "txt": _render_txt, "json": _render_json}
