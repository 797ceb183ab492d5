"""Live transcription's model work for many streams at once: VAD frames, CTC steps, turn decodes.

A live stream (:class:`speech.asr.live.LiveTranscription`) keeps its own state and asks for
work in :class:`StreamWork` items; :class:`StreamingModel` does the work of many streams'
items together, one batch per kind of work:

* **VAD**: the next whole 32 ms frames of each stream through Silero, one batched step per
  frame, each stream's recurrent state carried in its item (:class:`speech.asr.vad.VadCarry`);
* **CTC steps**: a window of an open turn - up to ``ctc_context_s`` of audio whose frames were
  emitted before, the new audio, and the last ``ctc_lookahead_s`` - through the network in
  length-bucketed batches. Only the frames not emitted before and not in the lookahead are
  returned, so a step costs the window, never the whole turn;
* **turn decodes**: whole turns through the recognizer's own ``transcribe`` with the front
  end's windows, exactly the offline path (Whisper partials and finals, CTC finals).

Nothing is remembered between calls: what a step needs comes with its item, so any replica
can take any stream's next step. No Ray here; the Serve deployment batches the items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from speech.asr.base import FrontEnd, Recognizer
from speech.asr.vad import VAD_SAMPLE_RATE, SileroVad, VadCarry
from speech.options import StreamOptions


@dataclass(frozen=True)
class VadStep:
    """A stream's next whole VAD frames."""

    audio: np.ndarray  # float32 [k * 512] at 16 kHz
    carry: VadCarry  # what the stream's previous frames left


@dataclass(frozen=True)
class CtcStep:
    """One incremental step over an open (or just closed) turn of a CTC model.

    ``audio`` is everything known of the turn from sample ``offset`` on; it must start at or
    before the window the step needs (the ``keep_from`` of the previous step's result).
    """

    audio: np.ndarray  # float32 [n] at the model's rate
    offset: int  # turn sample where ``audio`` starts
    emitted: np.ndarray  # int64 [frames]: the turn's greedy path emitted so far
    final: bool  # the turn is closed: emit every remaining frame, hold none back


@dataclass(frozen=True)
class TurnDecode:
    """A whole turn (or the open turn so far) to recognize as the offline path does."""

    audio: np.ndarray  # float32 [n] at the model's rate, from the turn's first sample
    language: str | None = None  # Whisper: None detects it; CTC models ignore it


@dataclass(frozen=True)
class StreamWork:
    """What one stream asks of the model in one step; any part may be absent."""

    vad: VadStep | None = None
    ctc: tuple[CtcStep, ...] = ()
    turns: tuple[TurnDecode, ...] = ()

    def audio_seconds(self, sample_rate: int) -> float:
        """Seconds of audio the networks run on for this item (what a batch budget counts)."""
        seconds = 0.0 if self.vad is None else len(self.vad.audio) / VAD_SAMPLE_RATE
        samples = sum(len(step.audio) for step in self.ctc) + sum(len(turn.audio) for turn in self.turns)
        return seconds + samples / sample_rate


@dataclass(frozen=True)
class CtcResult:
    ids: np.ndarray  # int64 [new frames]: the greedy ids of the frames this step emitted
    text: str  # the text of the turn's whole path so far (emitted + ids)
    keep_from: int  # turn sample where the next step's window starts: earlier audio is not read again


@dataclass(frozen=True)
class StreamOutput:
    """The answer to one :class:`StreamWork`, part for part."""

    probs: np.ndarray | None = None  # float32 [frames]: speech probability of each VAD frame
    carry: VadCarry | None = None  # the stream's carry after those frames
    ctc: tuple[CtcResult, ...] = ()
    texts: tuple[str, ...] = ()  # per TurnDecode
    batch_size: int = field(default=1, compare=False)  # streams whose work shared this model call


class StreamingModel:
    """Does the model work of many live streams, batched (see the module docstring).

    Args:
        front_end, recognizer: one served model's two halves, as the batch job loads them.
        vad: the Silero detector that scores the streams' frames.
        options: the CTC window sizes (``ctc_context_s``, ``ctc_lookahead_s``).
    """

    def __init__(self, front_end: FrontEnd, recognizer: Recognizer, vad: SileroVad, options: StreamOptions):
        self.front_end = front_end
        self.recognizer = recognizer
        self.vad = vad
        self.options = options

    @property
    def sample_rate(self) -> int:
        return self.front_end.sample_rate

    def run(self, works: Sequence[StreamWork]) -> list[StreamOutput]:
        """One output per work item, in order."""
        vad = [i for i, w in enumerate(works) if w.vad is not None]
        probs, carries = self.vad.stream_probabilities([works[i].vad.audio for i in vad], [works[i].vad.carry for i in vad])
        scored = dict(zip(vad, zip(probs, carries)))

        steps = [step for w in works for step in w.ctc]
        ctc = iter(self._ctc_steps(steps) if steps else [])
        turns = [turn for w in works for turn in w.turns]
        texts = iter(self._decode(turns) if turns else [])

        outputs = []
        for i, work in enumerate(works):
            prob, carry = scored.get(i, (None, None))
            outputs.append(StreamOutput(
                probs=prob, carry=carry,
                ctc=tuple(next(ctc) for _ in work.ctc),
                texts=tuple(next(texts) for _ in work.turns),
            ))
        return outputs

    def _decode(self, turns: list[TurnDecode]) -> list[str]:
        utterances = [self.front_end.windows(turn.audio) for turn in turns]
        return [t.text for t in self.recognizer.transcribe(utterances, [turn.language for turn in turns])]

    def _ctc_steps(self, steps: list[CtcStep]) -> list[CtcResult]:
        """Run each step's window and keep its new frames (see the module docstring).

        A window starts ``ctc_context_s`` of frames before the first frame to emit, on a frame
        boundary, so its frames fall on the turn's frame grid: frame ``j`` of a window starting
        at frame ``first`` is the turn's frame ``first + j``.
        """
        recognizer = self.recognizer  # a CtcRecognizer: greedy_ids, frames, text, ratio
        ratio = recognizer.ratio
        context = round(self.options.ctc_context_s * self.sample_rate / ratio)  # frames
        lookahead = round(self.options.ctc_lookahead_s * self.sample_rate)  # samples
        plans = []
        for step in steps:
            done = len(step.emitted)
            first = max(0, done - context)
            start = first * ratio
            if start < step.offset:
                raise ValueError(f"a CTC step's audio starts at turn sample {step.offset}, after its window's start {start}")
            end = step.offset + len(step.audio)
            last = recognizer.frames(end if step.final else end - lookahead)
            plans.append((done, first, last, step.audio[start - step.offset :]))
        runs = [i for i, (done, _, last, _) in enumerate(plans) if last > done]
        outputs = dict(zip(runs, recognizer.greedy_ids([self.front_end.features(plans[i][3]) for i in runs])))
        results = []
        for i, (step, (done, first, last, _)) in enumerate(zip(steps, plans)):
            new = outputs[i][done - first : last - first] if i in outputs else np.zeros(0, np.int64)
            path = np.concatenate([step.emitted.astype(np.int64), new])
            keep_from = max(0, len(path) - context) * ratio
            results.append(CtcResult(new, recognizer.text(path), keep_from))
        return results
