"""A live audio stream as turns and text: the state machine behind a realtime transcription session.

:class:`LiveTranscription` takes a stream's audio at the model's rate as it arrives
(:meth:`~LiveTranscription.append`), cuts it into **turns** and turns those into text. It asks
for the model work it needs as :class:`~speech.asr.streaming.StreamWork` items
(:meth:`~LiveTranscription.next_work`) and reads the answers
(:meth:`~LiveTranscription.apply`), which yield :data:`Event` values. It does no I/O and runs
no model: the caller sends each item wherever the model is (a Serve replica, or a local
:class:`~speech.asr.streaming.StreamingModel` as :func:`speech.asr.live_local.transcribe_live` does), one at a time,
so a stream never has two steps in flight and a slow model makes steps larger, not late.

Turns
    With turn detection (server VAD), a turn starts where Silero's speech probability reaches
    ``threshold``, ``prefix_padding_ms`` earlier, and ends once the probability has stayed
    below ``threshold - 0.15`` for ``silence_duration_ms``, that silence included (the
    semantics and defaults of OpenAI's ``server_vad``). The model sees a turn's audio only
    after the VAD has scored it. Without turn detection, a turn is what is appended between
    two :meth:`~LiveTranscription.commit` calls. Either way a turn reaching ``max_turn_s`` is
    closed there and the next one starts at once.

Text
    CTC models: incremental steps over the open turn (:mod:`speech.asr.streaming`) give
    append-only partial text; the completed text comes from one pass over the whole turn
    (``final_pass``, the offline transcript of the turn's audio) or is the streamed frames'
    text. Whisper: the open turn is re-decoded at most once per ``partial_interval_s`` of new
    audio, and the words two consecutive decodes agree on are released as partial text (the
    LocalAgreement policy of Macháček et al., 2023, "Turning Whisper into Real-Time
    Transcription System"); the closed turn is decoded once more for the completed text, the
    offline transcript of its audio. Partial text is a preview: the completed text may differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from speech.asr.live_events import (
    MIN_COMMIT_S,
    Committed,
    Completed,
    Delta,
    Event,
    Failed,
    LiveError,
    SpeechStarted,
    SpeechStopped,
    TurnDetection,
)
from speech.asr.live_turns import Turn, agree, release
from speech.asr.streaming import CtcStep, StreamOutput, StreamWork, TurnDecode, VadStep
from speech.asr.vad import FRAME_SAMPLES, VAD_SAMPLE_RATE, VadCarry
from speech.audio import StreamResampler
from speech.options import StreamOptions

Kind = Literal["ctc", "ctc-final", "partial", "final"]


@dataclass
class _Plan:
    """The work item in flight: what it asked for, to apply (or roll back) its answer."""

    epoch: int
    vad_audio: np.ndarray | None
    vad_first: int  # index of its first VAD frame in the stream
    decodes: list[tuple[Kind, Turn]]  # CtcSteps then TurnDecodes, in the item's order


class LiveTranscription:
    """One live stream of one model (see the module docstring).

    Args:
        backend: ``"ctc"`` or ``"whisper"``, the served model's.
        sample_rate: the model's rate (Hz); :meth:`append` takes audio at this rate.
        options: window sizes, partial cadence, turn and session limits.
        turn_detection: server VAD settings; None: turns end at :meth:`commit` only.
        language: Whisper's decoding language; None detects it per turn.
        start_s: where this stream starts in a longer session (seconds): event times and
            ``max_session_s`` count from the session's start.
    """

    def __init__(self, backend: str, sample_rate: int, options: StreamOptions, *,
                 turn_detection: TurnDetection | None = None, language: str | None = None, start_s: float = 0.0):
        if backend not in ("ctc", "whisper"):
            raise ValueError(f"backend must be 'ctc' or 'whisper', got {backend!r}")
        self.backend, self.rate, self.options = backend, int(sample_rate), options
        self.turn_detection, self.language, self.start_s = turn_detection, language, start_s
        self._max_turn = round(options.max_turn_s * self.rate)
        self._audio = np.zeros(0, np.float32)  # stream samples base .. end
        self._base = self._end = 0
        self._floor = 0  # no turn may start before this stream sample (the last turn's end)
        self._open: Turn | None = None
        self._closed: list[Turn] = []  # awaiting their completed text
        self._next_id = 0
        self._inflight: _Plan | None = None
        self._epoch = 0  # bumped by clear(): answers to older steps are stale
        # Server VAD: the stream at 16 kHz from stream sample `_vad_origin` on (clear() restarts
        # it), its frames sent and scored so far, and the hysteresis state.
        self._vad_resampler = StreamResampler(self.rate, VAD_SAMPLE_RATE)
        self._vad_origin = 0
        self._vad_pending = np.zeros(0, np.float32)
        self._vad_frames = 0  # frames sent for scoring (pending ones start after them)
        self._scored = 0  # frames whose probabilities were applied
        self._carry = VadCarry.start()
        self._in_speech = False
        self._quiet_since: int | None = None  # stream sample where the current quiet began

    # -- input ---------------------------------------------------------------------------

    def append(self, samples: np.ndarray) -> list[Event]:
        """Add mono float32 samples at the model's rate; may close a turn at ``max_turn_s``.

        Raises:
            LiveError: the session's audio would exceed ``max_session_s`` (nothing is added).
        """
        samples = np.asarray(samples, np.float32)
        self.check_room(len(samples) / self.rate)
        if not len(samples):
            return []
        start = self._end
        self._audio = np.concatenate([self._audio, samples])
        self._end += len(samples)
        if self.turn_detection is not None:
            self._vad_pending = np.concatenate([self._vad_pending, self._vad_resampler.push(samples)])
            return []
        events: list[Event] = []
        if self._open is None:
            self._open = self._new_turn(start)
        while self._open is not None and self._end - self._open.start >= self._max_turn:
            cut = self._open.start + self._max_turn
            events += self._close(self._open, cut)
            if cut < self._end:
                self._open = self._new_turn(cut)
        return events

    @property
    def stream_s(self) -> float:
        """Seconds of the session so far: ``start_s`` plus this stream's audio."""
        return self.start_s + self._end / self.rate

    def check_room(self, seconds: float) -> None:
        """Raise :class:`LiveError` if ``seconds`` more audio would pass ``max_session_s``."""
        if self.stream_s + seconds > self.options.max_session_s:
            raise LiveError("session_audio_limit", f"this session has streamed {self.stream_s:.1f} s of audio; the "
                            f"server takes at most {self.options.max_session_s:g} s per session")

    def commit(self) -> list[Event]:
        """Close the open turn at the end of the audio appended so far (a client's commit).

        Raises:
            LiveError: no turn is open, or it has less than :data:`MIN_COMMIT_S` of audio.
        """
        turn = self._open
        if turn is None:
            why = "server VAD found no speech since the last turn" if self.turn_detection else "no audio since the last commit"
            raise LiveError("input_audio_buffer_commit_empty", f"the input audio buffer is empty ({why})")
        if self._end - turn.start < MIN_COMMIT_S * self.rate:
            raise LiveError("input_audio_buffer_commit_empty", f"buffer too small: {1000 * (self._end - turn.start) / self.rate:.0f} ms "
                            f"of audio, a commit needs at least {1000 * MIN_COMMIT_S:.0f} ms")
        self._in_speech, self._quiet_since = False, None
        return self._close(turn, self._end, stopped=False)

    def clear(self) -> None:
        """Drop the audio not committed yet (the open turn, without text) and restart the VAD."""
        self._epoch += 1
        self._open = None
        self._floor = self._end
        self._in_speech, self._quiet_since = False, None
        self._carry = VadCarry.start()
        self._vad_resampler.flush()
        self._vad_pending = np.zeros(0, np.float32)
        self._vad_origin, self._vad_frames, self._scored = self._end, 0, 0
        self._trim()

    def finish(self) -> list[Event]:
        """At the end of the stream: commit the open turn if it has enough audio to."""
        if self._open is None or self._end - self._open.start < MIN_COMMIT_S * self.rate:
            return []
        return self.commit()

    @property
    def busy(self) -> bool:
        """A turn is open, a closed one awaits its text, or a step is in flight."""
        return self._open is not None or bool(self._closed) or self._inflight is not None

    # -- model work ----------------------------------------------------------------------------

    def next_work(self) -> StreamWork | None:
        """The model work due now, or None (nothing to do until more audio, or a step is in flight)."""
        if self._inflight is not None:
            return None
        plan = _Plan(self._epoch, None, self._vad_frames, [])
        vad = None
        whole = len(self._vad_pending) // FRAME_SAMPLES * FRAME_SAMPLES
        if self.turn_detection is not None and whole:
            plan.vad_audio, self._vad_pending = self._vad_pending[:whole], self._vad_pending[whole:]
            self._vad_frames += whole // FRAME_SAMPLES
            vad = VadStep(plan.vad_audio, self._carry)
        ctc: list[CtcStep] = []
        turns: list[TurnDecode] = []
        for turn in [t for t in self._closed if not t.final_asked]:
            turn.final_asked = True
            if self.backend == "ctc" and not self.options.final_pass:
                ctc.append(self._ctc_step(turn, turn.end - turn.start, final=True))
                plan.decodes.append(("ctc-final", turn))
            else:
                turns.append(TurnDecode(self._slice(turn.start, turn.end), self.language))
                plan.decodes.append(("final", turn))
        if self._open is not None:
            turn, known = self._open, self._known_end() - self._open.start
            # A CTC step is worth its cost once ctc_step_s more audio can be emitted (audio with
            # ctc_lookahead_s after it); a turn's first step runs as soon as any can, for an early
            # first partial.
            emittable = known - round(self.options.ctc_lookahead_s * self.rate)
            due = self.options.ctc_step_s * self.rate if turn.stepped_to else 1
            if self.backend == "ctc" and emittable - turn.stepped_to >= due:
                turn.stepped_to = emittable
                ctc.append(self._ctc_step(turn, known, final=False))
                plan.decodes.append(("ctc", turn))
            interval = self.options.partial_interval_s
            if self.backend == "whisper" and interval is not None and known - turn.stepped_to >= interval * self.rate:
                turn.stepped_to = known
                turns.append(TurnDecode(self._slice(turn.start, turn.start + known), self.language))
                plan.decodes.append(("partial", turn))
        if vad is None and not plan.decodes:
            return None
        self._inflight = plan
        return StreamWork(vad, tuple(ctc), tuple(turns))

    def apply(self, output: StreamOutput) -> list[Event]:
        """Read the answer to the item :meth:`next_work` returned last; the events it brings."""
        plan, self._inflight = self._inflight, None
        if plan is None:
            raise RuntimeError("apply() without a step in flight")
        events: list[Event] = []
        ctc, texts = iter(output.ctc), iter(output.texts)
        # Decodes first: they were planned on the turns as they stood before this step's VAD frames.
        for kind, turn in plan.decodes:
            if kind in ("ctc", "ctc-final"):
                result = next(ctc)
                turn.path = np.concatenate([turn.path, result.ids])
                turn.keep_from = result.keep_from
                if self._alive(turn):
                    events += release(turn, result.text)
                if kind == "ctc-final":
                    events.append(self._complete(turn, result.text))
            elif kind == "partial":
                text = next(texts)
                if self._alive(turn):
                    events += agree(turn, text)
            else:
                events.append(self._complete(turn, next(texts)))
        if plan.vad_audio is not None and plan.epoch == self._epoch:
            self._carry = output.carry
            events += self._detect(output.probs, plan.vad_first)
        self._trim()
        return events

    def abandon(self) -> list[Event]:
        """Forget the step in flight after its model call failed.

        Its VAD frames are asked for again and its partial steps retried with the next audio;
        the turns whose completed text it was to bring are dropped, each with a :class:`Failed`.
        """
        plan, self._inflight = self._inflight, None
        if plan is None:
            return []
        if plan.vad_audio is not None and plan.epoch == self._epoch:
            self._vad_pending = np.concatenate([plan.vad_audio, self._vad_pending])
            self._vad_frames = plan.vad_first
        events: list[Event] = []
        for kind, turn in plan.decodes:
            if kind in ("final", "ctc-final"):
                self._closed.remove(turn)
                events.append(Failed(turn.id))
            else:
                turn.stepped_to = 0
        self._trim()
        return events

    # -- turns -------------------------------------------------------------------------------

    def _new_turn(self, start: int) -> Turn:
        self._next_id += 1
        return Turn(self._next_id - 1, start)

    def _close(self, turn: Turn, end: int, *, stopped: bool = True) -> list[Event]:
        turn.end = end
        self._floor = end
        self._closed.append(turn)
        if turn is self._open:
            self._open = None
        events: list[Event] = [SpeechStopped(turn.id, self._seconds(end))] if stopped and self.turn_detection else []
        return [*events, Committed(turn.id)]

    def _alive(self, turn: Turn) -> bool:
        return turn is self._open or turn in self._closed

    def _complete(self, turn: Turn, text: str) -> Completed:
        self._closed.remove(turn)
        return Completed(turn.id, text, (turn.end - turn.start) / self.rate)

    def _detect(self, probs: np.ndarray, first: int) -> list[Event]:
        """Server VAD: turn starts and ends from the probabilities of frames ``first``..."""
        detection = self.turn_detection
        prefix = round(detection.prefix_padding_ms * self.rate / 1000)
        quiet_needed = round(detection.silence_duration_ms * self.rate / 1000)
        quiet_below = max(detection.threshold - 0.15, 0.01)  # Silero's own exit threshold
        events: list[Event] = []
        for k, p in enumerate(probs):
            start, end = self._stream_sample(first + k), self._stream_sample(first + k + 1)
            self._scored = first + k + 1
            if end <= self._floor:
                continue  # audio a client's commit already closed
            if not self._in_speech:
                if p >= detection.threshold:
                    self._in_speech, self._quiet_since = True, None
                    self._open = self._new_turn(max(self._floor, start - prefix))
                    events.append(SpeechStarted(self._open.id, self._seconds(self._open.start)))
                continue
            if p >= detection.threshold:
                self._quiet_since = None
            elif p < quiet_below:
                self._quiet_since = start if self._quiet_since is None else self._quiet_since
                if end - self._quiet_since >= quiet_needed:
                    self._in_speech, self._quiet_since = False, None
                    events += self._close(self._open, end)
                    continue
            if end - self._open.start >= self._max_turn:
                cut = self._open.start + self._max_turn
                events += self._close(self._open, cut)
                self._open = self._new_turn(cut)
                events.append(SpeechStarted(self._open.id, self._seconds(cut)))
        return events

    def _known_end(self) -> int:
        """Stream sample up to which the open turn's audio may be decoded: with server VAD,
        what the VAD has scored (so a decode never runs past the turn's end)."""
        if self.turn_detection is None:
            return self._end
        return min(self._end, self._stream_sample(self._scored))

    def _seconds(self, sample: int) -> float:
        """Stream sample -> seconds since the session's start."""
        return self.start_s + sample / self.rate

    def _stream_sample(self, frame: int) -> int:
        """First stream sample (model rate) of VAD frame ``frame``."""
        return self._vad_origin + round(frame * FRAME_SAMPLES * self.rate / VAD_SAMPLE_RATE)

    # -- audio -------------------------------------------------------------------------------

    def _ctc_step(self, turn: Turn, known: int, *, final: bool) -> CtcStep:
        return CtcStep(self._slice(turn.start + turn.keep_from, turn.start + known), turn.keep_from, turn.path, final)

    def _slice(self, start: int, end: int) -> np.ndarray:
        if start < self._base:
            raise RuntimeError(f"stream samples from {start} were dropped (the buffer starts at {self._base})")
        return self._audio[start - self._base : end - self._base]

    def _trim(self) -> None:
        """Drop audio no turn, present or future, will read again."""
        needed = [self._end]
        for turn in [t for t in [self._open, *self._closed] if t is not None]:
            incremental = self.backend == "ctc" and not self.options.final_pass
            needed.append(turn.start + (turn.keep_from if incremental else 0))
        if self.turn_detection is not None and not self._in_speech:
            prefix = round(self.turn_detection.prefix_padding_ms * self.rate / 1000)
            # A turn starting in a frame not scored yet reaches back prefix_padding_ms before it.
            needed.append(max(self._floor, self._stream_sample(self._scored) - prefix))
        keep = max(self._base, min(needed))
        self._audio, self._base = self._audio[keep - self._base :], keep


__all__ = [
    "MIN_COMMIT_S",
    "Committed",
    "Completed",
    "Delta",
    "Event",
    "Failed",
    "LiveError",
    "LiveTranscription",
    "SpeechStarted",
    "SpeechStopped",
    "TurnDetection",
]
