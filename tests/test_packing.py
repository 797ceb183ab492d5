"""Whisper short-clip packing: the layout and features (pure), and the plumbing with the tiny
random-weight Whisper (transformers engine). The real whisper-base check (WER packed vs
unpacked) is in tests/test_real_whisper.py.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from conftest import SAMPLES
from transformers import WhisperFeatureExtractor

from cli import main as cli_main
from jobs.transcribe import PrepareUnits, RecognizeUnits, probe_batch
from speech.asr import detect_model
from speech.asr.packing import Placement, can_share, gap_samples, lay_out, owner, pack_features
from speech.asr.whisper import WhisperFrontEnd, WhisperRecognizer
from speech.audio import decode
from speech.inputs import resolve_inputs
from speech.options import DecodingOptions, TranscribeOptions
from speech.schema import TRANSCRIPT_SCHEMA

RATE = 16_000
WINDOW = 30 * RATE
GAP = gap_samples(RATE)
HOP = 160

# ---------------------------------------------------------------- layout


def test_lay_out_keeps_order_gaps_alignment_and_capacity():
    lengths = [3 * RATE + 17, 4 * RATE, 5 * RATE + 1, 7 * RATE, 8 * RATE, 12 * RATE, 29 * RATE]
    windows = lay_out(lengths, WINDOW, GAP, align=2 * HOP)
    placed = [p for window in windows for p in window]
    assert [p.item for p in placed] == list(range(len(lengths)))  # each file once, in order
    assert [p.length for p in placed] == lengths
    for window in windows:
        assert window[0].offset == 0 and window[-1].end <= WINDOW
        for before, after in itertools.pairwise(window):
            assert after.offset - before.end >= GAP and after.offset % (2 * HOP) == 0
    # Next fit: 3, 4, 5 and 7 s with their gaps end at 22 s, so 8 s more opens a window.
    assert [[p.item for p in w] for w in windows] == [[0, 1, 2, 3], [4, 5], [6]]


def test_lay_out_refuses_what_cannot_be_placed():
    with pytest.raises(ValueError, match="file 1: length 480001"):
        lay_out([RATE, WINDOW + 1], WINDOW, GAP)
    with pytest.raises(ValueError, match="must be positive"):
        lay_out([RATE], WINDOW, 0)
    assert can_share(WINDOW - GAP - 1, WINDOW, GAP) and not can_share(WINDOW - GAP, WINDOW, GAP)


def test_owner_and_file_time():
    placements = [Placement(0, 0, 2 * RATE), Placement(1, 3 * RATE, 2 * RATE)]
    assert [owner(t, placements, RATE) for t in (0.5, 1.99, 2.4, 2.6, 3.2, 9.0)] == [0, 0, 0, 1, 1, 1]
    assert owner(2.5, placements, RATE) == 0  # a tie in the middle of a gap: the earlier file
    second = placements[1]
    assert [second.file_seconds(t, RATE) for t in (2.0, 3.5, 4.25, 7.0)] == [0.0, 0.5, 1.25, 2.0]  # clipped to the file


# ---------------------------------------------------------------- features


@pytest.fixture(scope="module")
def extractor() -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor()  # Whisper's 80-bin log-mel, 30 s windows


def _tone(seconds: float, hz: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.02, len(t))
    return (0.3 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(3 * t)) + noise).astype(np.float32)


def test_packed_features_are_the_log_mel_of_the_concatenated_audio(extractor):
    files = [_tone(2.3, 440, 0), _tone(4.1, 700, 1), _tone(3.0, 300, 2)]
    placements = lay_out([len(f) for f in files], WINDOW, GAP, align=2 * HOP)
    assert len(placements) == 1
    placements = placements[0]
    alone = [extractor(f, sampling_rate=RATE, return_tensors="np").input_features[0] for f in files]
    packed = pack_features(alone, placements, HOP)
    audio = np.zeros(WINDOW, np.float32)
    for f, p in zip(files, placements):
        audio[p.offset : p.end] = f
    truth = extractor(audio, sampling_rate=RATE, return_tensors="np").input_features[0]
    assert packed.shape == truth.shape == (80, 3000)
    # Every frame equal except the STFT frames at the start of a file after the first: its own
    # window reflects its first samples where the concatenation has silence before them.
    edges = {p.offset // HOP + d for p in placements[1:] for d in (-1, 0, 1)}
    inner = [f for f in range(3000) if f not in edges]
    np.testing.assert_allclose(packed[:, inner], truth[:, inner], atol=1e-4)
    assert np.abs(packed - truth).max() < 1.0  # the edge frames are near too


def test_pack_features_checks_its_inputs(extractor):
    one = extractor(_tone(1.0, 440, 0), sampling_rate=RATE, return_tensors="np").input_features[0]
    with pytest.raises(ValueError, match="not multiples of the hop"):
        pack_features([one, one], [Placement(0, 0, RATE), Placement(1, 2 * RATE + 1, RATE)], HOP)
    with pytest.raises(ValueError, match="1 feature arrays for 2 placements"):
        pack_features([one], [Placement(0, 0, RATE), Placement(1, 2 * RATE, RATE)], HOP)


# ---------------------------------------------------------------- the tiny Whisper, transformers engine


@pytest.fixture(scope="module")
def model(checkpoints) -> str:
    return str(checkpoints["whisper"])


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, str, np.ndarray]]:
    """``(id, language, audio)`` of the sample corpus (2-4 s each), in duration order."""
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    clips = [(r["id"], r["language"], decode(str(SAMPLES / r["path"]), RATE)) for r in rows]
    return sorted(clips, key=lambda c: len(c[2]))


#: Greedy, no silence rule: a random decoder's windows would otherwise often be dropped.
DECODING = DecodingOptions(temperature=0.0, no_speech_threshold=None)


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.usefixtures("one_torch_thread")
def test_packed_text_is_the_windows_text_split_by_time(model, samples):
    """Packed per language; the files' texts together are exactly the packed window's text,
    each file's times inside its own audio, and each window counted once in the compute."""
    front_end = WhisperFrontEnd(model)
    english = [(i, audio) for i, language, audio in samples if language == "en"]
    utterances = [front_end.windows(audio) for _, audio in english]
    languages = ["en"] * len(english)
    kwargs = dict(batch_seconds=60, max_new_tokens=40, timestamps="word", decoding=DECODING)
    packed = WhisperRecognizer(model, pack=True, **kwargs).transcribe(utterances, languages)
    # The same window, decoded as one utterance by the unpacked recognizer.
    placements = lay_out([u[0].num_samples for u in utterances], WINDOW, GAP, align=2 * HOP)
    assert [len(w) for w in placements] == [len(english)]  # all fit in one window
    features = pack_features([u[0].features for u in utterances], placements[0], HOP)
    from speech.asr.base import Window

    whole = WhisperRecognizer(model, **kwargs).transcribe([[Window(features, placements[0][-1].end)]], ["en"])[0]
    assert whole.text and _squeezed("".join(t.text for t in packed)) == _squeezed(whole.text)
    assert [w.word for t in packed for w in t.words] == [w.word for w in whole.words]
    for transcript, (_, audio) in zip(packed, english):
        duration = len(audio) / RATE
        times = [x for s in transcript.segments for x in (s.start, s.end)] + [x for w in transcript.words for x in (w.start, w.end)]
        assert all(0 <= x <= duration + 5e-4 for x in times), (times, duration)  # times are rounded to 1 ms
        assert transcript.language == "en" and transcript.language_probability is None
    assert sum(t.computed_samples for t in packed) == pytest.approx(WINDOW, abs=len(packed))


@pytest.mark.usefixtures("one_torch_thread")
def test_languages_are_detected_per_file_and_never_share_a_window(model, samples):
    front_end = WhisperFrontEnd(model)
    utterances = [front_end.windows(audio) for _, _, audio in samples]
    kwargs = dict(batch_seconds=240, max_new_tokens=8, timestamps="none", decoding=DECODING)
    packed = WhisperRecognizer(model, pack=True, **kwargs).transcribe(utterances)
    unpacked = WhisperRecognizer(model, **kwargs).transcribe(utterances)
    # Detection ran on each file's own window, before packing: the same as unpacked.
    assert [t.language for t in packed] == [t.language for t in unpacked]
    assert [t.language_probability for t in packed] == pytest.approx([t.language_probability for t in unpacked], rel=1e-4)
    assert len({t.language for t in packed}) > 1  # the fixture's detection depends on the audio
    # Windows by language: each language's files' computed shares sum to whole windows.
    computed: dict[str, int] = {}
    for t in packed:
        computed[t.language] = computed.get(t.language, 0) + t.computed_samples
        assert len(t.segments) <= 1  # timestamps "none": one segment per file, as unpacked
    assert all(abs(c / WINDOW - round(c / WINDOW)) < 1e-3 for c in computed.values()), computed
    assert sum(computed.values()) < sum(t.computed_samples for t in unpacked)


def test_job_rows_with_packing_have_the_unpacked_shape(model, samples, tmp_path):
    """The job's own stages in this process: units hold enough files to pack, every input row
    (a broken file too) comes out once, in the transcript schema."""
    (tmp_path / "broken.flac").write_text("not audio\n")
    sf.write(tmp_path / "long.wav", np.tile(samples[-1][2], 12)[: 40 * RATE], RATE)  # chunked: never packed
    inputs = [str(SAMPLES / "manifest.jsonl"), str(tmp_path)]
    options = TranscribeOptions(inputs=inputs, output=str(tmp_path / "out"), model=model, pack=True, batch_seconds=60,
                                max_new_tokens=8, temperature=0.0, cpus_per_actor=0.5)
    kind = detect_model(options.model, options)
    table = probe_batch(resolve_inputs(options.inputs)).sort_by("duration_s")
    units = list(PrepareUnits(options, kind)(table))
    # 10 short files at ~4 s of cost each fit two 30 s windows' budget in one unit.
    assert max(len(u["items"][0]) for u in units) >= 5
    rows = pa.concat_tables([RecognizeUnits(options, kind)(unit) for unit in units])
    assert rows.schema.equals(TRANSCRIPT_SCHEMA)
    assert sorted(rows["id"].to_pylist()) == sorted(table["id"].to_pylist())
    by_id = {r["id"]: r for r in rows.to_pylist()}
    assert "cannot read audio header" in by_id["broken.flac"]["error"]
    assert by_id["long.wav"]["computed_s"] == 60.0
    short = [r for r in by_id.values() if r["error"] is None and r["id"] != "long.wav"]
    assert len(short) == 10 and sum(r["computed_s"] for r in short) < 10 * 30 / 2
    for r in short:
        assert all(0 <= s["start"] <= s["end"] <= r["duration_s"] + 1e-3 for s in r["segments"])


def test_pack_is_refused_for_ctc_models(checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["transcribe", str(SAMPLES), "-o", str(out), "--model", str(checkpoints["ctc-xlsr"]), "--pack"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "packing is for Whisper" in err
    assert not out.exists()
