"""Whisper with packing on (``--pack``): short files share 30 s windows, results split back.

The step of :meth:`WhisperBase.transcribe <speech.asr.whisper_base.WhisperBase.transcribe>` for
either engine when its ``pack`` is set; the layout and the features are
:mod:`speech.asr.packing`'s. In order:

1. the files that may share a window: one window each (no chunking), short enough to leave
   room for a gap and another file (:func:`~speech.asr.packing.can_share`);
2. the language of each such file, before packing: given (``--language``, a manifest column)
   or detected on the file's own window (one encoder pass per file, so a corpus of known
   language packs cheaper);
3. per language and decoding options, the files in duration order laid out into windows;
4. every window decoded by the shared loop, with timestamps;
5. each packed window's text split back: a segment (with word timestamps, a word) goes to the
   file whose audio holds its midpoint (in a gap, the nearest file), its times made relative
   to that file. A window that holds one file only is decoded as it would be unpacked.

Each file's ``computed_samples`` is its share of the window (by length), so a job's padding
efficiency counts each window once. The window-level figures (``avg_logprob``,
``no_speech_prob``, temperature, compression ratio, ``thresholds_failed``) are the packed
window's: temperature fallback and the no-speech rule act on the window as a whole.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from speech.asr import decoding, packing
from speech.asr.base import Batches, Transcript, Window
from speech.options import DecodingOptions

if TYPE_CHECKING:
    from speech.asr.whisper_base import WhisperBase, _Window


def transcribe_packed(recognizer: WhisperBase, utterances: Sequence[list[Window]], language: list[str | None],
                      per_file: Sequence[DecodingOptions], batches: Batches) -> list[Transcript]:
    """One transcript per utterance, short ones decoded packed (see the module docstring).

    ``language``: per file, its code or None (detected here); ``batches``: the planned calls,
    whose order of first windows is the order files are packed in (duration order in a job).
    """
    count = len(utterances)
    rate, capacity = recognizer.sample_rate, recognizer.window_samples
    gap = packing.gap_samples(rate)
    probability: list[float | None] = [None] * count
    order = list(dict.fromkeys(u for batch in batches for u, k in batch if k == 0))
    sharing = [u for u in order if len(utterances[u]) == 1 and packing.can_share(utterances[u][0].num_samples, capacity, gap)]
    _detect_languages(recognizer, utterances, [u for u in sharing if language[u] is None], language, probability)
    groups: dict[tuple, list[int]] = {}
    for u in sorted(sharing, key=lambda u: utterances[u][0].num_samples):  # stable: ties keep the planned order
        groups.setdefault((language[u], per_file[u]), []).append(u)
    layouts: list[tuple[list[int], list[packing.Placement]]] = []  # windows of two files or more
    for files in groups.values():
        # Files start on a timestamp step (two feature frames), so a seam falls between timestamps.
        lengths = [utterances[u][0].num_samples for u in files]
        layouts += [([files[p.item] for p in placements], placements)
                    for placements in packing.lay_out(lengths, capacity, gap, align=2 * recognizer.hop_length)
                    if len(placements) > 1]
    packed = {u for files, _ in layouts for u in files}
    alone = [u for u in range(count) if u not in packed]
    windows = [utterances[u] for u in alone] + [
        [Window(packing.pack_features([utterances[u][0].features for u in files], placements, recognizer.hop_length),
                placements[-1].end)]
        for files, placements in layouts
    ]
    run_language = [language[u] for u in alone] + [language[files[0]] for files, _ in layouts]
    run_probability = [probability[u] for u in alone] + [None] * len(layouts)
    run_options = [per_file[u] for u in alone] + [per_file[files[0]] for files, _ in layouts]
    decoded = recognizer._run(windows, run_language, run_probability, run_options, recognizer.plan(windows, run_options))
    transcripts: list[Transcript | None] = [None] * count
    for i, u in enumerate(alone):
        transcripts[u] = recognizer._transcript(utterances[u], [decoded[(i, k)] for k in range(len(utterances[u]))],
                                                run_language[i], run_probability[i], per_file[u])
    for j, (files, placements) in enumerate(layouts):
        parts = split(recognizer, decoded[(len(alone) + j, 0)], windows[len(alone) + j][0], placements,
                      [utterances[u][0] for u in files], language[files[0]], per_file[files[0]])
        for u, transcript in zip(files, parts):
            transcript.language_probability = probability[u]
            transcripts[u] = transcript
    return transcripts


def _detect_languages(recognizer: WhisperBase, utterances: Sequence[list[Window]], unknown: list[int],
                      language: list[str | None], probability: list[float | None]) -> None:
    """Detect the language of each ``unknown`` file on its own (first) window, in batches."""
    for start in range(0, len(unknown), recognizer.batch_size):
        chunk = unknown[start : start + recognizer.batch_size]
        encoded = recognizer._encode([utterances[u][0] for u in chunk])
        for u, (code, p) in zip(chunk, recognizer._detect(encoded, list(range(len(chunk))))):
            language[u], probability[u] = code, p


def split(recognizer: WhisperBase, out: _Window, window: Window, placements: Sequence[packing.Placement],
          files: Sequence[Window], language: str | None, options: DecodingOptions) -> list[Transcript]:
    """The transcripts of the files packed in ``window`` (their own windows ``files``, placed
    at ``placements``) from the window's decoded result ``out``."""
    result, attempt = out.result, out.result.attempt
    rate = recognizer.sample_rate
    total = sum(p.length for p in placements)
    owned: list[list[tuple[list[int], float, float]]] = [[] for _ in placements]  # per file: (positions, start, end)
    silent = decoding.is_silence(attempt, options)
    if not silent:
        extent = window.num_samples / rate
        for positions, start, end in recognizer._pieces(attempt.tokens, timed=True):
            end = min(end, extent)
            if out.bounds is None:
                by_file = {packing.owner((start + end) / 2, placements, rate): positions}
            else:  # word by word: a segment across a seam is cut there
                by_file = {}
                for word in recognizer._word_groups(attempt, positions, language):
                    middle = (out.bounds[word[0]] + out.bounds[word[-1] + 1]) / 2
                    by_file.setdefault(packing.owner(middle, placements, rate), []).extend(word)
            for f, mine in by_file.items():
                owned[f].append((mine, start, end))
    transcripts = []
    for f, (placement, file_window) in enumerate(zip(placements, files)):
        to_file = functools.partial(_file_time, file_window, placement, rate)
        pieces = owned[f]
        if recognizer.timestamps == "none" and pieces:  # as unpacked: one segment over the file
            pieces = [([j for positions, _, _ in pieces for j in positions], 0.0, np.inf)]
        segments = [recognizer._segment(to_file, result, positions, start, end) for positions, start, end in pieces]
        words = []
        if out.bounds is not None:
            for positions, _, _ in pieces:
                words.extend(recognizer._words(to_file, attempt, out.bounds, positions, language))
        text_positions = [j for positions, _, _ in pieces for j in positions]
        probs = np.exp(attempt.logprobs[text_positions]) if text_positions else None
        transcripts.append(Transcript(
            text="".join(s.text for s in segments).strip(),
            confidence=float(probs.mean()) if probs is not None else None,
            words=words,
            segments=segments,
            language=language,
            computed_samples=round(recognizer.window_samples * placement.length / total),
            thresholds_failed=False if silent else result.failed,
        ))
    return transcripts


def _file_time(file_window: Window, placement: packing.Placement, rate: int, seconds: float) -> float:
    """Seconds of the packed window -> seconds on the file's timeline (its window may start
    after the file's start, with VAD), clipped to the file's audio."""
    return round(float(file_window.offset + placement.file_seconds(float(seconds), rate) * rate) / rate, 3)
