"""Whisper short-clip packing: several short files in one 30 s window, and each result split back.

Whisper's encoder always runs on 30 s, so a 4 s clip is 87% padding. Packing lays short files
(in the order given: duration order in a job) one after another into one window, at least
``gap`` samples of silence between them, decodes the window once with timestamps, and gives
each file the text whose time falls in its audio. Everything here is pure: where each file
goes (:func:`lay_out`), the window's features built from the files' own (:func:`pack_features`),
and which file a time belongs to (:func:`owner`, :meth:`Placement.file_seconds`).

The window's features are assembled from each file's log-mel frames (as the front end computed
them for the file alone) rather than computed again on concatenated audio: Whisper's log-mel
is a per-frame transform (25 ms STFT frames every 10 ms) followed by one clamp at the window's
maximum - 8 (log10), so the assembled window equals the log-mel of the concatenated audio except
in the one or two frames at each file's edges (the STFT's reflect padding there) and in the
floor of a file quieter than the loudest (its clamp was at its own maximum). Placing every file
on a whole frame keeps the rest exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Silence between two packed files, seconds: enough that Whisper hears a pause between
#: utterances (and not one sentence running on), and that no STFT frame sees two files.
GAP_S = 1.0

#: Frames after a file's last sample whose STFT window (25 ms, centered) still reaches into its
#: audio: they are the file's own frames too (its window has silence after the audio, as the
#: packed window has).
_TAIL_FRAMES = 2

#: Whisper's log-mel clamp, in normalized units: the log10 floor (maximum - 8) divided by
#: the extractor's scale of 4 (``(log_spec + 4) / 4``).
_FLOOR_BELOW_MAX = 2.0


@dataclass(frozen=True)
class Placement:
    """One file in a packed window, in samples of the window."""

    item: int  # index of the file (utterance) among those laid out
    offset: int  # first sample of the file in the window
    length: int  # samples of the file

    @property
    def end(self) -> int:
        return self.offset + self.length

    def file_seconds(self, window_seconds: float, sample_rate: int) -> float:
        """A time in the window (seconds) -> seconds from the file's own start, clipped to the file."""
        inside = min(max(window_seconds * sample_rate - self.offset, 0.0), float(self.length))
        return inside / sample_rate


def gap_samples(sample_rate: int) -> int:
    """:data:`GAP_S` in samples."""
    return int(GAP_S * sample_rate)


def can_share(length: int, capacity: int, gap: int) -> bool:
    """Whether a file of ``length`` samples leaves room in a window of ``capacity`` for a gap
    and another file; longer files are never packed."""
    return length + gap < capacity


def lay_out(lengths: Sequence[int], capacity: int, gap: int, align: int = 1) -> list[list[Placement]]:
    """Files of ``lengths`` samples into windows of ``capacity`` samples, in the given order.

    Next fit: a file goes into the current window if it ends within ``capacity`` after at
    least ``gap`` samples of silence from the file before it (its offset rounded up to a
    multiple of ``align``, e.g. a feature frame), else it opens the next window. The order
    is kept, so windows of files in duration order hold files of similar lengths.

    Returns:
        Per window, its placements in order; the first file of a window starts at 0.

    Raises:
        ValueError: a length is not positive or exceeds ``capacity``, or ``gap`` or
            ``align`` is not positive.
    """
    if gap <= 0 or align <= 0:
        raise ValueError(f"gap ({gap}) and align ({align}) must be positive")
    windows: list[list[Placement]] = []
    for item, length in enumerate(lengths):
        if not 0 < length <= capacity:
            raise ValueError(f"file {item}: length {length} samples, must be in (0, {capacity}]")
        if windows:
            last = windows[-1][-1]
            offset = -(-(last.end + gap) // align) * align
            if offset + length <= capacity:
                windows[-1].append(Placement(item, offset, length))
                continue
        windows.append([Placement(item, 0, length)])
    return windows


def pack_features(features: Sequence[np.ndarray], placements: Sequence[Placement], hop: int) -> np.ndarray:
    """The log-mel window of packed files from each file's own window features.

    Args:
        features: per placement, the file's window features, float32 ``[n_mels, frames]``
            (normalized log-mel, as Whisper's feature extractor returns them, the file at
            frame 0 and padded after it).
        placements: where each file goes (offsets multiples of ``hop``).
        hop: samples per feature frame.

    Returns:
        float32 ``[n_mels, frames]``: each file's frames at its offset, silence (the clamp
        floor: window maximum - 2) in the gaps, and after the last file the padding that
        followed it in its own window (the front end's: silence, or zero log-mel frames).
    """
    if len(features) != len(placements) or not placements:
        raise ValueError(f"{len(features)} feature arrays for {len(placements)} placements")
    if any(p.offset % hop for p in placements):
        raise ValueError(f"offsets {[p.offset for p in placements]} are not multiples of the hop ({hop})")
    n_mels, frames = features[0].shape
    packed = np.empty((n_mels, frames), np.float32)
    spans = []
    for array, placement in zip(features, placements):
        start = placement.offset // hop
        if placement.end > frames * hop:
            raise ValueError(f"file {placement.item} ends at sample {placement.end}, after the window's {frames * hop}")
        count = min(-(-placement.length // hop) + _TAIL_FRAMES, frames - start)
        packed[:, start : start + count] = array[:, :count]
        spans.append((start, start + count))
    audio_end = spans[-1][1]
    floor = max(float(array[:, : end - start].max()) for array, (start, end) in zip(features, spans)) - _FLOOR_BELOW_MAX
    gaps = np.ones(audio_end, bool)
    for start, end in spans:
        gaps[start:end] = False
    packed[:, :audio_end][:, gaps] = floor
    np.maximum(packed[:, :audio_end], floor, out=packed[:, :audio_end])
    # After the last file: its own padding, as the front end made it: the log-mel of silence
    # (its own floor, which becomes the window's) or zero frames (log-mel padding).
    last, (start, end) = features[-1], spans[-1]
    tail = last[:, end - start : frames - start]
    own_floor = float(last[:, : end - start].max()) - _FLOOR_BELOW_MAX
    packed[:, audio_end:] = np.where(np.isclose(tail, own_floor, atol=1e-5), floor, tail)
    return packed


def owner(time_s: float, placements: Sequence[Placement], sample_rate: int) -> int:
    """Index (into ``placements``) of the file whose audio holds ``time_s`` (seconds in the
    window); in a gap or after the last file, the nearest file (the earlier one on a tie)."""
    sample = time_s * sample_rate
    distances = [max(p.offset - sample, sample - p.end, 0.0) for p in placements]
    return int(np.argmin(distances))
