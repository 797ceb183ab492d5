"""`speech export` (speech.export): subtitles, text and JSON from a transcription output.

Result datasets are written with the project's own schema (speech.schema), so most tests
need no model; the last one runs the real job on samples/ with the tiny CTC checkpoint.
Files are checked with maintained parsers: `srt` for SubRip and `webvtt-py` for WebVTT.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf
import srt
import webvtt

from cli import main
from speech.export import DUPLICATE_ID, NAME_TOO_LONG, TRANSCRIPTION_ERROR, UNSAFE_ID, CueLimits, ExportError, export
from speech.schema import Segment, TranscriptRow, Word, transcripts_table

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _words(spec: list[tuple[str, float, float]]) -> list[Word]:
    return [Word(word, start, end, 0.9) for word, start, end in spec]


SEGMENT_ROW = TranscriptRow(
    id="en/001",
    path="en/001.flac",
    duration_s=6.5,
    text=" The quick brown fox. Jumps over the lazy dog.",
    segments=[
        Segment(0.0, 2.4, " The quick brown fox.", -0.25, 0.01),
        # Whisper's last timestamp may pass the end of the audio: clipped to 6.5 s.
        Segment(2.4, 7.0, " Jumps over the lazy dog.", -0.4, 0.02, temperature=0.2, compression_ratio=1.25),
    ],
    words=_words([("The", 0.1, 0.3), ("quick", 0.3, 0.6)]),
    language="en",
    backend="whisper",
)
# CTC: words only, laid out so that each cue limit ends one cue: 42 characters, a 2 s
# pause, 7 s on screen.
WORD_ROW = TranscriptRow(
    id="ko/deep/nested/002",
    path="ko/002.flac",
    duration_s=15.0,
    text="alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima",
    words=_words(
        [
            ("alpha", 0.2, 0.6), ("bravo", 0.7, 1.1), ("charlie", 1.2, 1.8), ("delta", 1.9, 2.3),
            ("echo", 2.4, 2.8), ("foxtrot", 2.9, 3.5), ("golf", 3.6, 3.9), ("hotel", 4.0, 4.4),
            ("india", 4.5, 4.9), ("juliet", 7.0, 7.5), ("kilo", 7.6, 10.9), ("lima", 11.0, 14.8),
        ]
    ),
    language="ko",
    backend="ctc",
)
TEXT_ROW = TranscriptRow(id="zh/003", path="zh/003.flac", duration_s=2.78, text="a <b> & c --> d", backend="ctc")
SILENT_ROW = TranscriptRow(id="silence", path="silence.wav", duration_s=3.0, text="", words=[], backend="ctc")
FAILED_ROW = TranscriptRow(id="broken", path="broken.wav", error="cannot decode audio: not a sound file")
EVIL_ROWS = [
    TranscriptRow(id=bad, path="x.wav", duration_s=1.0, text="pwned")
    for bad in ("../../evil", "/abs/evil", "a/../../evil", "a//b", "a\\..\\evil", "x" * 300, "new\nline")
]
GOOD_IDS = ["en/001", "ko/deep/nested/002", "zh/003", "silence"]


@pytest.fixture()
def result_dir(tmp_path) -> Path:
    """A job output split over two Parquet files, as Ray Data writes it."""
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(transcripts_table([SEGMENT_ROW, WORD_ROW, FAILED_ROW]), out / "part-0.parquet")
    pq.write_table(transcripts_table([TEXT_ROW, SILENT_ROW, *EVIL_ROWS]), out / "part-1.parquet")
    return out


def _vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _parse(directory: Path, row_id: str) -> dict[str, list[tuple[float, float, str]]]:
    """Cues of one row's SRT and VTT files as (start s, end s, text), via the parsers."""
    subs = list(srt.parse((directory / f"{row_id}.srt").read_text(encoding="utf-8")))
    vtt = webvtt.read(str(directory / f"{row_id}.vtt"))
    return {
        "srt": [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs],
        "vtt": [(_vtt_seconds(c.start), _vtt_seconds(c.end), html.unescape(c.text)) for c in vtt.captions],
    }


def _assert_well_timed(cues: list[tuple[float, float, str]], duration: float) -> None:
    starts = [start for start, _, _ in cues]
    assert starts == sorted(starts), f"cues out of order: {cues}"
    for start, end, _ in cues:
        assert 0.0 <= start <= end <= duration, f"cue {start}-{end} outside 0-{duration} s"


def test_writes_every_format_for_every_good_row(result_dir, tmp_path):
    target = tmp_path / "subs"
    summary = export(str(result_dir), str(target), ["srt", "vtt", "txt", "json"])
    assert summary.rows == 12
    assert summary.exported_rows == 4
    assert summary.files == 16
    assert summary.skipped == {TRANSCRIPTION_ERROR: ["broken"], UNSAFE_ID: [r.id for r in EVIL_ROWS]}
    written = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert written == {f"{i}.{ext}" for i in GOOD_IDS for ext in ("srt", "vtt", "txt", "json")}
    # Nothing escaped the target directory.
    outside = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert outside == {f"subs/{w}" for w in written} | {"out/part-0.parquet", "out/part-1.parquet"}


def test_segments_become_cues(result_dir, tmp_path):
    export(str(result_dir), str(tmp_path), ["srt", "vtt"])
    for cues in _parse(tmp_path, "en/001").values():
        assert cues == [(0.0, 2.4, "The quick brown fox."), (2.4, 6.5, "Jumps over the lazy dog.")]


def test_words_are_grouped_into_subtitle_sized_cues(result_dir, tmp_path):
    limits = CueLimits()
    export(str(result_dir), str(tmp_path), ["srt", "vtt"], limits)
    for cues in _parse(tmp_path, "ko/deep/nested/002").values():
        _assert_well_timed(cues, WORD_ROW.duration_s)
        assert " ".join(text for _, _, text in cues) == WORD_ROW.text  # every word, once, in order
        for start, end, text in cues:
            assert end - start <= limits.max_seconds and len(text) <= limits.max_chars
        assert [text for _, _, text in cues] == [
            "alpha bravo charlie delta echo foxtrot",  # + " golf" would make 43 characters
            "golf hotel india",  # then a 2.1 s pause
            "juliet kilo",  # + "lima" would stay on screen 7.8 s
            "lima",
        ]


def test_text_only_row_is_one_escaped_cue(result_dir, tmp_path):
    export(str(result_dir), str(tmp_path), ["srt", "vtt"])
    for cues in _parse(tmp_path, "zh/003").values():
        assert cues == [(0.0, 2.78, "a <b> & c --> d")]
    assert "a &lt;b&gt; &amp; c --&gt; d" in (tmp_path / "zh/003.vtt").read_text()


def test_silent_row_gives_empty_but_valid_files(result_dir, tmp_path):
    export(str(result_dir), str(tmp_path), ["srt", "vtt", "txt", "json"])
    assert _parse(tmp_path, "silence") == {"srt": [], "vtt": []}
    assert (tmp_path / "silence.txt").read_text() == ""
    assert json.loads((tmp_path / "silence.json").read_text())["segments"] == []


def test_json_is_close_to_openai_verbose_json(result_dir, tmp_path):
    export(str(result_dir), str(tmp_path), ["json", "txt"])

    def load(row_id: str) -> dict:
        def refuse(constant: str):
            raise AssertionError(f"JSON holds {constant}")

        return json.loads((tmp_path / f"{row_id}.json").read_text(encoding="utf-8"), parse_constant=refuse)

    whisper = load("en/001")
    assert set(whisper) == {"task", "language", "duration", "text", "segments", "words"}
    assert (whisper["task"], whisper["language"], whisper["duration"]) == ("transcribe", "en", 6.5)
    assert whisper["text"] == SEGMENT_ROW.text
    assert whisper["segments"][1] == {
        "id": 1, "start": 2.4, "end": 6.5, "text": " Jumps over the lazy dog.", "avg_logprob": -0.4, "no_speech_prob": 0.02,
        "temperature": 0.2, "compression_ratio": 1.25,
    }  # the end clipped to the audio, as in the subtitles
    assert whisper["words"][0] == {"word": "The", "start": 0.1, "end": 0.3, "probability": 0.9}

    ctc = load("ko/deep/nested/002")
    assert [s["id"] for s in ctc["segments"]] == [0, 1, 2, 3]
    assert all(s["avg_logprob"] is None and s["no_speech_prob"] is None and s["temperature"] is None for s in ctc["segments"])
    assert len(ctc["words"]) == 12
    assert (tmp_path / "ko/deep/nested/002.txt").read_text() == WORD_ROW.text + "\n"


def test_duplicate_ids_are_skipped_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = TranscriptRow(id="a", path="a.wav", duration_s=1.0, text="first")
    second = TranscriptRow(id="a", path="b.wav", duration_s=1.0, text="second")
    pq.write_table(transcripts_table([first, second]), out / "part-0.parquet")
    summary = export(str(out), str(tmp_path / "subs"), ["txt"])
    assert summary.skipped == {DUPLICATE_ID: ["a"]}
    assert (tmp_path / "subs" / "a.txt").read_text() == "first\n"


def test_command_line_reports_written_and_skipped(result_dir, tmp_path, capsys):
    assert main(["export", str(result_dir), "--format", "srt,vtt", "-o", str(tmp_path / "subs")]) == 0
    printed = capsys.readouterr().out
    assert "wrote 8 files (4 rows x srt, vtt)" in printed
    assert "skipped 8 of 12 rows" in printed
    assert f"1 with {TRANSCRIPTION_ERROR}: 'broken'" in printed
    assert f"7 with {UNSAFE_ID}: '../../evil'" in printed


def test_command_line_refuses_bad_requests(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--format", "srt", "-o", str(tmp_path / "subs")]) == 2
    assert "no transcript rows under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path), "--format", "srt,docx", "-o", str(tmp_path / "subs")])
    assert "unknown format 'srt,docx'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown format"):
        export(str(tmp_path), str(tmp_path / "subs"), ["ass"])


def test_write_failures_skip_the_row_or_stop_in_one_line(tmp_path, capsys):
    """A path the file system finds too long skips its row (and leaves no directory behind);
    a file as DIR, or a full disk (a real ENOSPC from /dev/full), stop with exit 2 and one line."""
    out = tmp_path / "out"
    out.mkdir()
    long_ids = ["z" * 240, "deep/" + "y" * 240]  # each part fits a file name; the whole path will not
    rows = [TranscriptRow(id=i, path="x.wav", duration_s=1.0, text="hi") for i in ["ok", *long_ids, "ok2"]]
    pq.write_table(transcripts_table(rows), out / "part-0.parquet")
    deep = tmp_path.joinpath(*["d" * 200] * ((3900 - len(str(tmp_path))) // 201))  # ~3.9 KB of PATH_MAX's 4096
    deep.mkdir(parents=True)
    summary = export(str(out), str(deep), ["srt", "txt"])
    assert summary.skipped == {NAME_TOO_LONG: long_ids}
    assert summary.exported_rows == 2 and sorted(p.name for p in deep.iterdir()) == ["ok.srt", "ok.txt", "ok2.srt", "ok2.txt"]

    taken = tmp_path / "taken.txt"
    taken.write_text("a file")
    assert main(["export", str(out), "--format", "txt", "-o", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err == f"speech: error: cannot export to {taken}: it is a file; give a directory (existing or new)\n"
    full = tmp_path / "full"
    full.mkdir()
    (full / "ok.txt").symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    assert main(["export", str(out), "--format", "txt", "-o", str(full)]) == 2
    err = capsys.readouterr().err
    assert err == f"speech: error: cannot write {full}/ok.txt: No space left on device\n"


def test_exports_a_real_transcription_run(checkpoints, ray_local, tmp_path, capsys):
    from jobs import transcribe
    from speech.options import TranscribeOptions

    options = TranscribeOptions(
        inputs=[str(SAMPLES / "manifest.jsonl")],
        output=str(tmp_path / "out"),
        model=str(checkpoints["ctc-xlsr"]),
        cpus_per_actor=0.5,
    )
    summary = transcribe.run(options)
    assert summary.rows == summary.ok == 10

    target = tmp_path / "subs"
    assert main(["export", options.output, "--format", "srt,vtt", "-o", str(target)]) == 0
    assert "wrote 20 files (10 rows x srt, vtt)" in capsys.readouterr().out
    manifest = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines() if line.strip()]
    cues = 0
    for entry in manifest:
        duration = sf.info(str(SAMPLES / entry["path"])).duration
        parsed = _parse(target, entry["id"])
        assert parsed["srt"] == parsed["vtt"], entry["id"]
        _assert_well_timed(parsed["srt"], duration)
        cues += len(parsed["srt"])
    assert cues >= len(manifest), "the fixture model emits words for every clip; timing checks need cues"
