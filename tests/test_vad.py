"""Silero VAD (speech.asr.vad) on the espeak-ng samples: spans, rates, packing, bad input.

Ground truth: the sample clips are clean synthetic speech with near-silent lead-in and
tail, so a clip's true speech span is where its amplitude exceeds 1% of its peak (stable
to +-5 ms between 0.3% and 3%). Test audio concatenates clips with known silences, so
every true span is known in samples of the composed audio.
"""

from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speech.asr.vad import SileroVad, SpeechSpan, pack_spans, speech_spans
from speech.audio import AudioDecodeError, decode

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TOLERANCE_S = 0.3


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def _clip(clip_id: str, rate: int) -> np.ndarray:
    return decode(str(SAMPLES / f"{clip_id}.flac"), rate)


def _true_span(clip: np.ndarray) -> tuple[int, int]:
    """Samples where the clean clip's amplitude exceeds 1% of its peak: first, last + 1."""
    loud = np.flatnonzero(np.abs(clip) > 0.01 * np.abs(clip).max())
    return int(loud[0]), int(loud[-1]) + 1


def _compose(parts: list[float | str], rate: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Silences (seconds) and clip ids in order -> audio and the true spans in its samples."""
    pieces, truth, cursor = [], [], 0
    for part in parts:
        piece = np.zeros(round(part * rate), np.float32) if isinstance(part, float) else _clip(part, rate)
        if isinstance(part, str):
            start, end = _true_span(piece)
            truth.append((cursor + start, cursor + end))
        pieces.append(piece)
        cursor += len(piece)
    return np.concatenate(pieces), truth


def _assert_matches(found: list[SpeechSpan], truth: list[tuple[int, int]], rate: int) -> list[float]:
    """Each true span is covered by the found spans near it, ends within TOLERANCE_S;
    no found span lies in silence. Returns the errors in seconds."""
    errors = []
    for start, end in truth:
        near = [s for s in found if s.end > start - rate // 2 and s.start < end + rate // 2]
        assert near, f"no span found for true speech {start / rate:.3f}-{end / rate:.3f} s"
        errors += [abs(near[0].start - start) / rate, abs(near[-1].end - end) / rate]
        assert errors[-2] <= TOLERANCE_S, f"start {near[0].start / rate:.3f} s vs true {start / rate:.3f} s"
        assert errors[-1] <= TOLERANCE_S, f"end {near[-1].end / rate:.3f} s vs true {end / rate:.3f} s"
    for span in found:
        assert any(span.end > s and span.start < e for s, e in truth), f"span in silence: {span}"
    return errors


# --- speech spans ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        [1.0, "en/001", 2.0, "ko/001", 1.5],
        ["zh/002", 1.2, "en/002", 0.8, "ko/003", 3.0, "zh/001"],  # speech at both edges
    ],
)
def test_finds_known_speech_spans(vad, parts):
    audio, truth = _compose(parts, 16_000)
    found = speech_spans(audio, 16_000, vad=vad)
    _assert_matches(found, truth, 16_000)
    assert all(0 <= s.start < s.end <= len(audio) for s in found)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found)), "spans must be ordered, not overlapping"


def test_default_detector_matches_an_explicit_one(vad):
    audio, _ = _compose([0.5, "en/003", 0.5], 16_000)
    assert speech_spans(audio, 16_000) == speech_spans(audio, 16_000, vad=vad)


def test_eight_khz_stereo_sample_after_decoding(vad, tmp_path):
    # samples/misc/stereo_8k.wav: 8 kHz, 2 channels. Decoding downmixes; the spans come
    # back in 8 kHz samples.
    clip = decode(str(SAMPLES / "misc" / "stereo_8k.wav"), 8_000)
    silence = np.zeros(8_000, np.float32)
    audio = np.concatenate([silence, clip, silence, silence])
    start, end = _true_span(clip)
    found = speech_spans(audio, 8_000, vad=vad)
    _assert_matches(found, [(8_000 + start, 8_000 + end)], 8_000)


def test_six_channel_48khz_file_after_decoding(vad, tmp_path):
    audio, truth = _compose([1.0, "ko/002", 1.5, "en/001", 1.0], 48_000)
    # Speech on the front channels only, as in a 5.1 mix; the rest carry silence.
    channels = np.zeros((len(audio), 6), np.float32)
    channels[:, :3] = audio[:, None]
    path = tmp_path / "surround.wav"
    sf.write(path, channels, 48_000, subtype="PCM_16")
    mono = decode(str(path), 48_000)
    assert len(mono) == len(audio)
    _assert_matches(speech_spans(mono, 48_000, vad=vad), truth, 48_000)


def test_rates_agree_on_the_same_speech(vad):
    spans_s = []
    for rate in (8_000, 16_000, 44_100):
        audio, _ = _compose([1.0, "en/002", 1.0], rate)
        spans_s.append([(s.start / rate, s.end / rate) for s in speech_spans(audio, rate, vad=vad)])
    for other in spans_s[::2]:
        assert len(other) == len(spans_s[1])
        assert np.allclose(other, spans_s[1], atol=0.1), spans_s


@pytest.mark.parametrize("kind", ["digital silence", "faint noise", "music"])
def test_no_speech_gives_no_spans(vad, kind):
    rate = 16_000
    t = np.arange(8 * rate) / rate
    if kind == "digital silence":
        audio = np.zeros_like(t)
    elif kind == "faint noise":
        audio = np.random.default_rng(0).standard_normal(len(t)) * 1e-3  # -60 dBFS
    else:
        # Eight plucked notes with five harmonics each: tonal, rhythmic, not speech.
        audio = np.zeros_like(t)
        for k, freq in enumerate([261.6, 329.6, 392.0, 523.3, 440.0, 349.2, 293.7, 392.0]):
            note = (t >= k) & (t < k + 1)
            for h in range(1, 6):
                audio[note] += 0.3 / h * np.exp(-3 * (t[note] - k)) * np.sin(2 * np.pi * freq * h * t[note])
        audio *= 0.5 / np.abs(audio).max()
    assert speech_spans(audio.astype(np.float32), rate, vad=vad) == []


def test_long_span_is_cut_at_its_pause(vad):
    rate = 16_000
    audio, truth = _compose([0.5, "en/001", 0.5, "ko/001", 0.5], rate)
    whole = speech_spans(audio, rate, vad=vad, min_silence_s=1.5)
    assert len(whole) == 1, "with a long min_silence_s the pause stays inside one span"
    cut = speech_spans(audio, rate, vad=vad, min_silence_s=1.5, max_span_s=5.0)
    assert len(cut) == 2
    # The cut falls in the silence between the clips, not inside either clip's speech.
    assert truth[0][1] <= cut[0].end <= truth[1][0] + int(0.1 * rate)
    assert all(s.length <= 5.0 * rate for s in cut)


def test_batch_matches_one_at_a_time(vad):
    audios = [_compose(parts, 16_000)[0] for parts in ([0.3, "zh/003", 0.7], [1.0, "ko/002", 2.5, "en/003", 0.2], [0.1])]
    batched = vad.speech_spans_batch(audios, 16_000)
    single = [speech_spans(a, 16_000, vad=vad) for a in audios]
    assert [len(b) for b in batched] == [len(s) for s in single] == [1, 2, 0]
    for b_spans, s_spans in zip(batched, single):
        for b, s in zip(b_spans, s_spans):
            # Batched and single passes may differ in the last float bits: at most a frame.
            assert abs(b.start - s.start) <= 512 and abs(b.end - s.end) <= 512


def test_detector_survives_pickling(vad):
    audio, _truth = _compose([0.5, "en/001", 0.5], 16_000)
    copy = pickle.loads(pickle.dumps(vad))
    assert copy is not vad
    assert speech_spans(audio, 16_000, vad=copy) == speech_spans(audio, 16_000, vad=vad)


def test_keeps_the_callers_torch_threads(vad):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        SileroVad()
        speech_spans(np.zeros(16_000, np.float32), 16_000, vad=vad)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_loading_keeps_the_callers_torch_threads():
    # `import silero_vad` sets torch's thread count to 1 for the whole process; only a
    # fresh interpreter shows whether the first load gives the caller its setting back.
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from speech.asr.vad import SileroVad\n"
        "SileroVad(); print(torch.get_num_threads())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["2"]


@pytest.mark.parametrize(
    ("audio", "rate", "error", "message"),
    [
        (np.zeros(0, np.float32), 16_000, AudioDecodeError, "no samples"),
        (np.zeros((2, 16_000), np.float32), 16_000, AudioDecodeError, "shape"),
        (np.full(16_000, np.nan, np.float32), 16_000, AudioDecodeError, "NaN"),
        (np.zeros(16_000, np.int16), 16_000, ValueError, "float"),
        ([0.0] * 16_000, 16_000, ValueError, "float numpy array"),
        (np.zeros(16_000, np.float32), 0, ValueError, "sample_rate"),
    ],
)
def test_bad_input_is_refused_clearly(vad, audio, rate, error, message):
    with pytest.raises(error, match=message):
        speech_spans(audio, rate, vad=vad)


def test_bad_parameters_are_refused(vad):
    audio = np.zeros(16_000, np.float32)
    with pytest.raises(ValueError, match="threshold"):
        speech_spans(audio, 16_000, threshold=1.5, vad=vad)
    with pytest.raises(ValueError, match="max_span_s"):
        speech_spans(audio, 16_000, max_span_s=0.2, vad=vad)
    with pytest.raises(TypeError, match="list of waveforms"):
        vad.speech_spans_batch(audio, 16_000)


# --- packing -----------------------------------------------------------------------------


def test_pack_groups_consecutive_spans_greedily():
    spans = [SpeechSpan(0, 10), SpeechSpan(15, 25), SpeechSpan(28, 40), SpeechSpan(45, 50), SpeechSpan(90, 95)]
    assert pack_spans(spans, 30) == [
        [SpeechSpan(0, 10), SpeechSpan(15, 25)],  # 0..25 fits; adding 28..40 would reach 40
        [SpeechSpan(28, 40), SpeechSpan(45, 50)],
        [SpeechSpan(90, 95)],
    ]
    assert pack_spans([], 30) == []


def test_pack_splits_long_spans_into_equal_pieces():
    groups = pack_spans([SpeechSpan(5, 7), SpeechSpan(10, 80), SpeechSpan(81, 84)], 30)
    assert groups == [
        [SpeechSpan(5, 7), SpeechSpan(10, 33)],  # 70 samples in 3 pieces of 23-24, not 30 + 30 + 10
        [SpeechSpan(33, 56)],
        [SpeechSpan(56, 80), SpeechSpan(81, 84)],
    ]
    for group in groups:
        assert group[-1].end - group[0].start <= 30


def test_pack_refuses_bad_input():
    with pytest.raises(ValueError, match="positive"):
        pack_spans([SpeechSpan(0, 1)], 0)
    with pytest.raises(ValueError, match="overlap"):
        pack_spans([SpeechSpan(0, 10), SpeechSpan(5, 20)], 30)
    with pytest.raises(ValueError, match="start < end"):
        SpeechSpan(5, 5)


def test_packed_windows_map_back_to_the_original_timeline(vad):
    rate = 16_000
    parts = [0.7, "en/001", 1.1, "ko/001", 0.9, "zh/002", 1.3, "en/002", 0.6, "ko/003", 2.0, "zh/003", 0.5]
    audio, truth = _compose(parts, rate)
    max_samples = 8 * rate
    groups = pack_spans(speech_spans(audio, rate, vad=vad), max_samples)
    assert 1 < len(groups) < len(truth), "the test needs windows holding several spans"
    mapped = []
    for group in groups:
        offset = group[0].start
        window = audio[offset : group[-1].end]
        assert len(window) <= max_samples
        # Detect again inside the window alone, then add the window's offset: the spans
        # must land on the speech of the original file.
        mapped += [SpeechSpan(s.start + offset, s.end + offset) for s in speech_spans(window, rate, vad=vad)]
    _assert_matches(mapped, truth, rate)
