"""Voice activity detection with Silero VAD: where in a waveform someone speaks.

Long-form recognition cuts the speech out of a file and packs it into model-sized
windows (the WhisperX approach), so the model never sees long silences or music,
where sequence models hallucinate text:

* :func:`speech_spans` finds the speech regions of one waveform, in samples of the
  caller's rate (the caller's timeline);
* :func:`pack_spans` groups consecutive regions into windows of at most N samples,
  splitting regions longer than a window;
* :meth:`SileroVad.stream_probabilities` scores the next frames of many live streams at
  once, each stream's recurrent state carried by the caller (:class:`VadCarry`).

The model is the trained Silero VAD that ships inside the ``silero-vad`` wheel (its
TorchScript file, run with the installed torch), so this works offline. It scores
32 ms frames of 16 kHz audio; other rates are resampled with the project's one
resampler, :func:`speech.audio.prepare_samples`.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from speech.audio import prepare_samples
from speech.batching import pad, plan_batches

#: The rate the model runs at, Hz.
VAD_SAMPLE_RATE = 16_000
#: Samples per model step at 16 kHz (32 ms), fixed by the model.
FRAME_SAMPLES = 512
#: Samples of the previous step the 16 kHz model reads before each frame.
_CONTEXT_SAMPLES = 64
_STATE_SHAPE = (2, 128)  # the model's recurrent state per stream
#: Speech regions shorter than this (seconds) are dropped as clicks and breaths.
MIN_SPEECH_S = 0.25
#: Padded 16 kHz samples per batched pass over several files (~32 min of audio,
#: 123 MB of float32): bounds memory when many files are scored together.
_BATCH_SAMPLES = 64 * 30 * VAD_SAMPLE_RATE


@dataclass(frozen=True)
class SpeechSpan:
    """One region of speech, in samples of the audio it was found in."""

    start: int  # first sample of speech
    end: int  # one past the last sample (exclusive)

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a speech span needs 0 <= start < end, got start={self.start}, end={self.end}")

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class VadCarry:
    """What one stream's next frames need of its past: Silero's recurrent state and the last
    samples it read. The model keeps these inside itself for one stream; carried explicitly,
    many streams share a batched step and any process can score a stream's next frames."""

    state: np.ndarray  # float32 [2, 128]
    context: np.ndarray  # float32 [64]: the previous frame's last samples

    @classmethod
    def start(cls) -> VadCarry:
        """The carry of a stream that has not begun: silence before it, as the model's reset."""
        return cls(np.zeros(_STATE_SHAPE, np.float32), np.zeros(_CONTEXT_SAMPLES, np.float32))


class SileroVad:
    """The Silero VAD model of the ``silero-vad`` package, loaded once per instance.

    Build one where the work runs (a Ray actor's ``__init__``, a Serve replica) and
    reuse it: loading takes ~0.4 s. The model is recurrent and keeps its state
    between frames, so one instance scores one batch at a time (a lock serializes
    concurrent callers).
    """

    def __init__(self) -> None:
        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad
        except ImportError as err:
            raise ImportError("voice activity detection needs the silero-vad package: pip install silero-vad") from err
        finally:
            # `import silero_vad` sets torch's process-wide thread count to 1; give the
            # caller (e.g. a model actor that chose its threads) its setting back.
            torch.set_num_threads(threads)
        with warnings.catch_warnings():
            # torch 2.14 deprecates torch.jit.load, and silero-vad 6.2 locates its file with a
            # deprecated importlib call: nothing a user of this module can act on.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message="path is deprecated", category=DeprecationWarning)
            self._model = load_silero_vad(onnx=False)  # the TorchScript file inside the wheel
        self._lock = threading.Lock()

    def __reduce__(self):
        # Sent to another process (e.g. as a Ray actor's constructor argument), the
        # detector is rebuilt there from the installed wheel rather than pickled.
        return (SileroVad, ())

    def probabilities(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Speech probability of every 32 ms frame of each waveform.

        Args:
            audios: mono float32 waveforms at 16 kHz (:data:`VAD_SAMPLE_RATE`), shape ``[n]``.

        Returns:
            One float32 array of shape ``[ceil(n / 512)]`` per waveform, values in [0, 1];
            frame ``i`` covers samples ``512 * i .. 512 * (i + 1)``.

        Several waveforms are scored together, one model step for all of them, which
        costs about as much as scoring one: batch the files of a window of work
        (measured on 2 busy cores: one 76 s file 23x real time, eight at once 174x).
        A long file is not cut into pieces scored side by side: the model's recurrent
        state remembers for seconds, and pieces moved span edges by up to 64 ms.
        """
        lengths = [len(a) for a in audios]
        result: list[np.ndarray] = [np.empty(0, np.float32)] * len(audios)
        with self._lock, _single_thread():
            for batch in plan_batches(lengths, _BATCH_SAMPLES):
                scores = self._score([audios[i] for i in batch])
                for row, i in enumerate(batch):
                    result[i] = scores[row, : math.ceil(lengths[i] / FRAME_SAMPLES)]
        return result

    def speech_spans_batch(
        self,
        audios: Sequence[np.ndarray],
        sample_rate: int,
        *,
        threshold: float = 0.5,
        min_silence_s: float = 0.3,
        pad_s: float = 0.1,
        max_span_s: float | None = None,
    ) -> list[list[SpeechSpan]]:
        """The speech regions of each waveform; see the module function :func:`speech_spans`.

        All waveforms share ``sample_rate`` and are scored in one batched pass.
        """
        if isinstance(audios, np.ndarray):
            raise TypeError("speech_spans_batch takes a list of waveforms; use speech_spans() for one")
        _check_parameters(threshold, min_silence_s, pad_s, max_span_s)
        resampled = [_to_vad_rate(audio, sample_rate, index) for index, audio in enumerate(audios)]
        from silero_vad import get_speech_timestamps_from_probs

        spans = []
        for audio, audio_16k, probs in zip(audios, resampled, self.probabilities(resampled)):
            regions = get_speech_timestamps_from_probs(
                probs.tolist(),
                sampling_rate=VAD_SAMPLE_RATE,
                threshold=threshold,
                min_speech_duration_ms=MIN_SPEECH_S * 1000,
                max_speech_duration_s=math.inf if max_span_s is None else max_span_s,
                min_silence_duration_ms=min_silence_s * 1000,
                speech_pad_ms=pad_s * 1000,
                audio_length_samples=len(audio_16k),
            )
            _close_final_span(regions, probs, threshold, pad_s, len(audio_16k))
            spans.append(_to_source_rate(regions, sample_rate, len(audio)))
        return spans

    @torch.inference_mode()
    def stream_probabilities(
        self, audios: Sequence[np.ndarray], carries: Sequence[VadCarry]
    ) -> tuple[list[np.ndarray], list[VadCarry]]:
        """Speech probability of the next frames of several live streams, one batched step per frame.

        Args:
            audios: per stream, its next whole frames: float32 16 kHz samples, a multiple of
                :data:`FRAME_SAMPLES` long (possibly 0).
            carries: per stream, the carry its previous frames left (:meth:`VadCarry.start`
                for a new stream).

        Returns:
            Per stream, float32 ``[len(audio) // 512]`` probabilities, and its new carry.
            A stream scored piece by piece gets the probabilities :meth:`probabilities`
            gives the whole stream (to float rounding: batch-mates differ).
        """
        for index, audio in enumerate(audios):
            if len(audio) % FRAME_SAMPLES:
                raise ValueError(f"stream {index}: {len(audio)} samples is not a whole number of {FRAME_SAMPLES}-sample frames")
        counts = [len(a) // FRAME_SAMPLES for a in audios]
        state = torch.from_numpy(np.stack([c.state for c in carries], axis=1)) if carries else None  # [2, B, 128]
        context = torch.from_numpy(np.stack([c.context for c in carries])) if carries else None  # [B, 64]
        probs = [np.zeros(n, np.float32) for n in counts]
        with self._lock, _single_thread():
            for step in range(max(counts, default=0)):
                rows = [i for i, n in enumerate(counts) if n > step]
                frame = torch.from_numpy(np.stack([audios[i][step * FRAME_SAMPLES : (step + 1) * FRAME_SAMPLES] for i in rows]))
                inputs = torch.cat([context[rows], frame], dim=1)
                # The 16 kHz network under the TorchScript wrapper (silero-vad 6.2, pinned): the
                # wrapper's forward(x, sr) runs exactly this with the state kept on itself.
                out, new_state = self._model._model(inputs, state[:, rows])
                state[:, rows] = new_state
                context[rows] = inputs[:, -_CONTEXT_SAMPLES:]
                for row, i in enumerate(rows):
                    probs[i][step] = float(out[row, 0])
        carried = [VadCarry(state[:, i].numpy().copy(), context[i].numpy().copy()) for i in range(len(carries))]
        return probs, carried

    @torch.inference_mode()
    def _score(self, audios: list[np.ndarray]) -> np.ndarray:
        """float32 ``[batch, frames]`` probabilities; frames past a row's end are junk."""
        padded, _ = pad(audios)
        frames = math.ceil(padded.shape[1] / FRAME_SAMPLES)
        x = torch.nn.functional.pad(torch.from_numpy(padded), (0, frames * FRAME_SAMPLES - padded.shape[1]))
        self._model.reset_states()  # each batch starts from silence, with no memory of the last
        steps = [self._model(x[:, i : i + FRAME_SAMPLES], VAD_SAMPLE_RATE) for i in range(0, x.shape[1], FRAME_SAMPLES)]
        return torch.cat(steps, dim=1).numpy()  # each step: [batch, 1]


@functools.cache
def default_vad() -> SileroVad:
    """This process's shared detector, loaded on first use.

    A cached loader is safe here, unlike a model cache filled at import time: nothing
    loads until a call needs it, so the driver ships no model to Ray workers; every
    worker process that calls it loads its own copy from the installed wheel (no
    network, ~0.4 s, 2 MB); and the instance serializes its callers with a lock.
    """
    return SileroVad()


def speech_spans(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold: float = 0.5,
    min_silence_s: float = 0.3,
    pad_s: float = 0.1,
    max_span_s: float | None = None,
    vad: SileroVad | None = None,
) -> list[SpeechSpan]:
    """Where ``audio`` contains speech.

    Args:
        audio: mono float waveform ``[num_samples]`` in [-1, 1], at ``sample_rate`` Hz.
        sample_rate: Hz; other rates than 16 kHz are resampled for the model only.
        threshold: frame speech probability at or above which speech starts; it ends
            below ``threshold - 0.15``.
        min_silence_s: pauses shorter than this (seconds) stay inside one span.
        pad_s: seconds of context kept on each side of a span (shared evenly when two
            spans are closer than ``2 * pad_s``); clipped to the audio.
        max_span_s: if given, spans longer than this are cut, at their longest pause
            when they have one.
        vad: the detector to use; by default this process's :func:`default_vad`.

    Returns:
        Ordered, non-overlapping spans in samples of ``audio`` (the original timeline).
        Silence, noise and music give an empty list.

    Raises:
        speech.audio.AudioDecodeError: empty, multi-dimensional or non-finite audio.
        ValueError: a non-float waveform or an out-of-range parameter.
    """
    detector = vad if vad is not None else default_vad()
    return detector.speech_spans_batch(
        [audio], sample_rate, threshold=threshold, min_silence_s=min_silence_s, pad_s=pad_s, max_span_s=max_span_s
    )[0]


def pack_spans(spans: Sequence[SpeechSpan], max_samples: int) -> list[list[SpeechSpan]]:
    """Group consecutive spans into windows of at most ``max_samples``.

    A group's window is ``first.start .. last.end`` (the pauses between its spans
    included), so the window's audio is one slice of the original and every time
    inside it maps back by adding ``first.start``. Groups are filled greedily in
    order. A span longer than ``max_samples`` is cut into the fewest equal pieces that
    fit, each a group of its own.

    Args:
        spans: ordered, non-overlapping spans, as :func:`speech_spans` returns them.
        max_samples: window length, in the spans' samples (e.g. 30 s * rate).

    Returns:
        Groups in order; together they cover exactly the samples of ``spans``.
    """
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    for before, after in itertools.pairwise(spans):
        if after.start < before.end:
            raise ValueError(f"spans must be ordered and not overlap: {before} is followed by {after}")
    groups: list[list[SpeechSpan]] = []
    current: list[SpeechSpan] = []
    for piece in (p for span in spans for p in _split(span, max_samples)):
        if current and piece.end - current[0].start > max_samples:
            groups.append(current)
            current = []
        current.append(piece)
    if current:
        groups.append(current)
    return groups


def _split(span: SpeechSpan, max_samples: int) -> list[SpeechSpan]:
    """``span`` in the fewest equal pieces of at most ``max_samples``."""
    count = math.ceil(span.length / max_samples)
    bounds = [span.start + span.length * k // count for k in range(count + 1)]
    return [SpeechSpan(a, b) for a, b in itertools.pairwise(bounds)]


def _to_vad_rate(audio: np.ndarray, sample_rate: int, index: int) -> np.ndarray:
    if not isinstance(audio, np.ndarray) or not np.issubdtype(audio.dtype, np.floating):
        kind = audio.dtype if isinstance(audio, np.ndarray) else type(audio).__name__
        raise ValueError(f"waveform {index}: expected a float numpy array with values in [-1, 1], got {kind}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return prepare_samples(audio, int(sample_rate), VAD_SAMPLE_RATE)


def _close_final_span(regions: list[dict], probs: np.ndarray, threshold: float, pad_s: float, num_samples: int) -> None:
    """End a span still open at the end of the file where its speech stopped.

    Silero ends a span only after ``min_silence_s`` of quiet, so a file that stops in a
    shorter pause (e.g. a clip's own 0.3 s tail) gets a span running to its last sample.
    Like any other span, it should end at its last speech frame (probability at or
    above Silero's exit threshold) plus the padding.
    """
    if not regions or regions[-1]["end"] < num_samples:
        return
    speech = np.flatnonzero(probs >= max(threshold - 0.15, 0.01))  # silero's default exit threshold
    if speech.size:
        end = (int(speech[-1]) + 1) * FRAME_SAMPLES + round(pad_s * VAD_SAMPLE_RATE)
        regions[-1]["end"] = max(regions[-1]["start"] + 1, min(end, num_samples))


def _to_source_rate(regions: list[dict], sample_rate: int, num_samples: int) -> list[SpeechSpan]:
    """16 kHz ``{"start", "end"}`` sample dicts -> spans in samples of the caller's audio."""
    scale = sample_rate / VAD_SAMPLE_RATE
    spans = []
    for region in regions:
        start = math.floor(region["start"] * scale)
        end = min(math.ceil(region["end"] * scale), num_samples)
        if end > start:
            spans.append(SpeechSpan(start, end))
    return spans


def _check_parameters(threshold: float, min_silence_s: float, pad_s: float, max_span_s: float | None) -> None:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if min_silence_s < 0:
        raise ValueError(f"min_silence_s must be >= 0, got {min_silence_s}")
    if pad_s < 0:
        raise ValueError(f"pad_s must be >= 0, got {pad_s}")
    # Silero keeps max_span_s - 2 * pad_s - one frame of speech before cutting.
    if max_span_s is not None and max_span_s <= 2 * pad_s + FRAME_SAMPLES / VAD_SAMPLE_RATE:
        raise ValueError(f"max_span_s ({max_span_s}) must exceed 2 * pad_s + 0.032 s ({2 * pad_s + 0.032:.3f})")


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's count.

    The model does tiny matrix products per 32 ms frame; extra threads only add
    synchronization (measured on 2 cores: 1 thread 0.18 s, 2 threads 7-30 s for the
    same batch). The count is process-wide, so it is restored at once.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
