"""Live transcription in the library (speech.asr.live, speech.asr.streaming): no Ray, tiny real models.

Streams are driven in this process with :func:`speech.asr.live_local.transcribe_live` (the model work
done by a local StreamingModel, the same class the Serve replicas run) or step by step.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from conftest import SAMPLES

from speech.asr import load_front_end, load_recognizer
from speech.asr.live import (
    Committed,
    Completed,
    Delta,
    Failed,
    LiveError,
    LiveTranscription,
    SpeechStarted,
    SpeechStopped,
    TurnDetection,
)
from speech.asr.live_local import transcribe_live
from speech.asr.streaming import StreamingModel, StreamOutput
from speech.asr.vad import SileroVad, VadCarry, speech_spans
from speech.audio import AudioDecodeError, StreamResampler, decode, pcm16_samples, prepare_samples
from speech.options import StreamOptions, TranscribeOptions

RATE = 16_000
CLIP = decode(str(SAMPLES / "en" / "002.flac"), RATE)  # 3.7 s
OTHER = decode(str(SAMPLES / "en" / "003.flac"), RATE)  # 3.0 s


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def ctc(checkpoints, vad):
    """``(front end, recognizer, vad)`` of the tiny XLSR-style CTC checkpoint."""
    options = TranscribeOptions(inputs=["unused"], output="unused", model=str(checkpoints["ctc-xlsr"]))
    return load_front_end(options.model, options.asr), load_recognizer(options.model, options.asr, "cpu", run=options.run), vad


def offline(parts, audio: np.ndarray) -> str:
    front_end, recognizer, _ = parts
    return recognizer.transcribe([front_end.windows(audio)])[0].text


class Recording(StreamingModel):
    """A StreamingModel that keeps every work item and answer (to check what steps cost and emit)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls: list[tuple] = []

    def run(self, works):
        outputs = super().run(works)
        self.calls += list(zip(works, outputs))
        return outputs


def texts(events, kind) -> list[str]:
    return [e.text for e in events if isinstance(e, kind)]


# --- audio ---------------------------------------------------------------------------------


def test_stream_resampler_equals_resampling_the_whole_stream():
    audio = prepare_samples(CLIP, RATE, 24_000)
    resampler = StreamResampler(24_000, RATE)
    for _ in range(2):  # a flush starts a new stream
        pieces = [resampler.push(audio[i : i + 2400]) for i in range(0, len(audio), 2400)]
        streamed = np.concatenate([*pieces, resampler.flush()])
        assert np.array_equal(streamed, prepare_samples(audio, 24_000, RATE))
    assert StreamResampler(RATE, RATE).push(CLIP) is not None and StreamResampler(RATE, RATE).flush().size == 0


def test_pcm16_samples_read_as_a_16_bit_file_does():
    pcm = (np.arange(-1000, 1000, 7) * 30).astype("<i2")
    wav = io.BytesIO()
    sf.write(wav, pcm, 24_000, format="WAV", subtype="PCM_16")
    assert np.array_equal(pcm16_samples(pcm.tobytes()), decode(wav.getvalue(), 24_000))
    with pytest.raises(AudioDecodeError, match="3 bytes"):
        pcm16_samples(b"abc")


def test_vad_streams_scored_piece_by_piece_match_the_whole_file(vad):
    streams = [CLIP[: len(CLIP) // 512 * 512], OTHER[: len(OTHER) // 512 * 512]]
    whole = vad.probabilities(streams)
    carries = [VadCarry.start(), VadCarry.start()]
    pieces: list[list[np.ndarray]] = [[], []]
    for start in range(0, max(map(len, streams)), 3 * 512):  # 3 frames a step; the shorter stream ends first
        probs, carries = vad.stream_probabilities([s[start : start + 3 * 512] for s in streams], carries)
        for piece, p in zip(pieces, probs):
            piece.append(p)
    for piece, expected in zip(pieces, whole):
        np.testing.assert_allclose(np.concatenate(piece), expected, atol=1e-4)
    with pytest.raises(ValueError, match="whole number"):
        vad.stream_probabilities([np.zeros(100, np.float32)], [VadCarry.start()])


# --- CTC -----------------------------------------------------------------------------------


def test_ctc_completed_text_is_the_offline_transcript_of_the_turn(ctc):
    model = StreamingModel(*ctc, StreamOptions())
    events = transcribe_live(model, "ctc", CLIP, StreamOptions(), chunk_s=0.2)
    assert [type(e) for e in events if not isinstance(e, Delta)] == [Committed, Completed]
    assert texts(events, Completed) == [offline(ctc, CLIP)]
    assert texts(events, Delta)  # partial text came while the audio streamed


def test_ctc_steps_emit_every_frame_once_within_a_bounded_window(ctc):
    options = StreamOptions(final_pass=False)
    model = Recording(*ctc, options)
    audio = np.concatenate([CLIP, OTHER])  # 6.7 s, one turn
    events = transcribe_live(model, "ctc", audio, options, chunk_s=0.2)
    recognizer = ctc[1]
    steps = [(step, result) for work, output in model.calls for step, result in zip(work.ctc, output.ctc)]
    assert sum(len(result.ids) for _, result in steps) == recognizer.frames(len(audio))
    assert [step.final for step, _ in steps].count(True) == 1
    # Each window: the context, the new audio (one 200 ms chunk at most past a step) and the lookahead.
    bound = (options.ctc_context_s + options.ctc_step_s + 0.2 + options.ctc_lookahead_s) * RATE + recognizer.ratio
    context = round(options.ctc_context_s * RATE / recognizer.ratio)  # frames
    windows = [step.offset + len(step.audio) - max(0, len(step.emitted) - context) * recognizer.ratio for step, _ in steps]
    assert max(windows) <= bound, (max(windows), bound)
    # Without a final pass, the completed text is the streamed text, and the deltas add up to it.
    (completed,) = texts(events, Completed)
    assert "".join(texts(events, Delta)) == completed


def test_ctc_one_step_over_the_whole_turn_is_the_offline_path(ctc):
    options = StreamOptions(final_pass=False, ctc_context_s=10)
    model = StreamingModel(*ctc, options)
    events = transcribe_live(model, "ctc", CLIP, options, chunk_s=10)  # one append, then the final step
    assert texts(events, Completed) == [offline(ctc, CLIP)]


# --- turns ---------------------------------------------------------------------------------


def test_server_vad_cuts_turns_around_the_speech(ctc):
    silence = np.zeros(RATE, np.float32)
    audio = np.concatenate([silence, CLIP, silence, OTHER, silence])
    model = StreamingModel(*ctc, StreamOptions())
    events = transcribe_live(model, "ctc", audio, StreamOptions(), chunk_s=0.3, turn_detection=TurnDetection())
    kinds = [type(e) for e in events if not isinstance(e, Delta)]
    assert kinds == [SpeechStarted, SpeechStopped, Committed, Completed] * 2
    spans = speech_spans(audio, RATE, pad_s=0.0)
    starts = [e.start_s for e in events if isinstance(e, SpeechStarted)]
    stops = [e.end_s for e in events if isinstance(e, SpeechStopped)]
    assert len(spans) == 2
    for span, start, stop, done in zip(spans, starts, stops, [e for e in events if isinstance(e, Completed)]):
        # 300 ms of padding before the first speech frame; 500 ms of quiet after the last one
        # (Silero's offline spans and the stream's frames may differ by a 32 ms frame or two).
        assert start == pytest.approx(span.start / RATE - 0.3, abs=0.064)
        assert stop == pytest.approx(span.end / RATE + 0.5, abs=0.1)
        assert done.audio_s == pytest.approx(stop - start)
        # The turn's text is the offline transcript of exactly the turn's audio.
        assert done.text == offline(ctc, audio[round(start * RATE) : round(stop * RATE)])


def test_a_turn_reaching_max_turn_s_is_closed_there(ctc):
    options = StreamOptions(max_turn_s=1.0)
    events = transcribe_live(StreamingModel(*ctc, options), "ctc", CLIP, options, chunk_s=0.25)
    lengths = [e.audio_s for e in events if isinstance(e, Completed)]
    assert lengths == pytest.approx([1.0, 1.0, 1.0, len(CLIP) / RATE - 3.0])


def test_clear_drops_the_open_turn(ctc):
    options = StreamOptions()
    model = StreamingModel(*ctc, options)
    live = LiveTranscription("ctc", RATE, options)
    live.append(OTHER)
    live.clear()
    assert not live.busy
    live.append(CLIP)
    events = live.commit()
    while (work := live.next_work()) is not None:
        events += live.apply(model.run([work])[0])
    assert [e.audio_s for e in events if isinstance(e, Completed)] == [len(CLIP) / RATE]
    assert texts(events, Completed) == [offline(ctc, CLIP)]


def test_commits_and_limits_are_refused_with_a_code():
    live = LiveTranscription("ctc", RATE, StreamOptions(max_turn_s=2, max_session_s=2))
    with pytest.raises(LiveError) as empty:
        live.commit()
    assert empty.value.code == "input_audio_buffer_commit_empty"
    live.append(np.zeros(RATE // 20, np.float32))  # 50 ms
    with pytest.raises(LiveError, match="at least 100 ms"):
        live.commit()
    with pytest.raises(LiveError) as limit:
        live.append(np.zeros(2 * RATE, np.float32))
    assert limit.value.code == "session_audio_limit" and live.stream_s == pytest.approx(0.05)
    with pytest.raises(ValueError, match="max_turn_s"):
        StreamOptions(max_turn_s=10, max_session_s=5)


def test_a_failed_step_fails_its_turns_and_keeps_the_stream_going(ctc):
    options = StreamOptions()
    model = StreamingModel(*ctc, options)
    live = LiveTranscription("ctc", RATE, options, turn_detection=TurnDetection())
    live.append(np.concatenate([CLIP, np.zeros(RATE, np.float32)]))
    events = []
    while (work := live.next_work()) is not None:
        if work.turns:  # the final decode of the turn: its model call fails
            events += live.abandon()
        else:
            events += live.apply(model.run([work])[0])
    assert [type(e) for e in events if not isinstance(e, Delta)] == [SpeechStarted, SpeechStopped, Committed, Failed]
    assert not live.busy
    live.append(OTHER)  # the stream goes on
    assert live.next_work() is not None


# --- Whisper -------------------------------------------------------------------------------


def test_whisper_partials_release_the_words_two_decodes_agree_on():
    live = LiveTranscription("whisper", RATE, StreamOptions(partial_interval_s=0.5))
    answers = ["a b c", "a b d e", "a b d e f", "a x"]
    released = []
    for answer in answers:
        live.append(np.zeros(RATE // 2, np.float32))
        work = live.next_work()
        assert len(work.turns) == 1 and len(work.turns[0].audio) == live.stream_s * RATE
        released += texts(live.apply(StreamOutput(texts=(answer,))), Delta)
    assert released == ["a b", " d e"]  # "a x" disagrees with what was released: nothing more
    live.commit()
    final = live.next_work()
    assert len(final.turns[0].audio) == 2 * RATE
    assert texts(live.apply(StreamOutput(texts=("a b d e f g",))), Completed) == ["a b d e f g"]


def test_whisper_completed_text_is_the_offline_transcript(checkpoints, vad):
    options = TranscribeOptions(inputs=["unused"], output="unused", model=str(checkpoints["whisper"]), max_new_tokens=8)
    front_end, recognizer = load_front_end(options.model, options.asr), load_recognizer(options.model, options.asr, "cpu", run=options.run)
    options = StreamOptions(partial_interval_s=None)  # partials: the test above and tests/test_live.py
    model = StreamingModel(front_end, recognizer, vad, options)
    events = transcribe_live(model, "whisper", CLIP, options, language="en")
    expected = recognizer.transcribe([front_end.windows(CLIP)], ["en"])[0].text
    assert texts(events, Completed) == [expected]
