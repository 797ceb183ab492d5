"""Length bucketing, padding and chunking: pure functions, no model, no Ray.

Batches are bounded by the audio the model will *compute on*: a batch of ``n``
segments padded to its longest one costs ``n * longest`` samples. Sorting by length
first keeps that close to the real audio (padding efficiency near 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def plan_batches(lengths: Sequence[int], max_padded: int, *, exact_lengths: bool = False) -> list[list[int]]:
    """Group indices into batches whose padded size stays within a budget.

    Args:
        lengths: length of each item, in samples (any unit works, consistently).
        max_padded: budget per batch, ``len(batch) * max(lengths in batch)``, same unit.
            An item longer than the budget forms a batch of its own.
        exact_lengths: only batch items of identical length, so nothing is padded.
            For models that take no attention mask and whose output padding changes.

    Returns:
        Lists of indices into ``lengths``; each batch is in ascending length order and
        the batches are in ascending order of their longest item. Every index appears
        exactly once.
    """
    if max_padded <= 0:
        raise ValueError(f"max_padded must be positive, got {max_padded}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        length = lengths[index]
        # Items arrive in ascending order, so `length` is the new longest.
        fits = (len(current) + 1) * length <= max_padded
        same_length = not current or lengths[current[-1]] == length
        if current and (not fits or (exact_lengths and not same_length)):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def plan_windows(
    costs: Sequence[Sequence[int]], max_padded: int, *, exact_lengths: bool = False, by_rank: bool = False,
) -> list[list[tuple[int, int]]]:
    """The model calls that run the windows of several utterances, planned with :func:`plan_batches`.

    Args:
        costs: per utterance, the batching cost of each of its windows (see ``FrontEnd.batch_cost``).
        max_padded, exact_lengths: as :func:`plan_batches`.
        by_rank: a batch holds windows of one rank (window k of its utterance) only, and window
            k of every utterance comes before window k + 1 of any (decoding that prompts a
            window with the text of the one before it).

    Returns:
        ``(utterance, window)`` pairs per model call, in call order. Windows are taken first
        windows first (rank, then utterance) and length ties keep that order, so the first
        window of an utterance never comes after one of its later windows.
    """
    order = sorted(((u, k) for u, windows in enumerate(costs) for k in range(len(windows))), key=lambda uk: (uk[1], uk[0]))
    groups = [[uk for uk in order if uk[1] == k] for k in sorted({k for _, k in order})] if by_rank else [order]
    batches: list[list[tuple[int, int]]] = []
    for group in groups:
        lengths = [costs[u][k] for u, k in group]
        batches += [[group[i] for i in batch] for batch in plan_batches(lengths, max_padded, exact_lengths=exact_lengths)]
    return batches


def check_batches(counts: Sequence[int], batches: Sequence[Sequence[tuple[int, int]]]) -> None:
    """Raise ``ValueError`` unless ``batches`` (see :func:`plan_windows`) run every window of
    utterances with ``counts`` windows exactly once."""
    planned = sorted(uk for batch in batches for uk in batch)
    wanted = [(u, k) for u, count in enumerate(counts) for k in range(count)]
    if planned != wanted:
        raise ValueError(f"the planned batches run windows {planned}, not each of {wanted} once")


def run_planned(
    inputs: Sequence[Sequence[np.ndarray]], batches: Sequence[Sequence[tuple[int, int]]],
    forward: Callable[[list[np.ndarray]], Sequence[T]],
) -> tuple[dict[tuple[int, int], T], dict[tuple[int, int], int]]:
    """Call ``forward`` on each planned batch (see :func:`plan_windows`) of ``inputs[u][k]``.

    Returns, by ``(u, k)``, its output (``forward`` returns one per batch item, in order) and
    the padded length of its batch (what it cost the model). Raises ``ValueError`` unless the
    batches run every input exactly once.
    """
    check_batches([len(x) for x in inputs], batches)
    outputs: dict[tuple[int, int], T] = {}
    computed: dict[tuple[int, int], int] = {}
    for batch in batches:
        arrays = [inputs[u][k] for u, k in batch]
        longest = max(len(x) for x in arrays)
        for uk, output in zip(batch, forward(arrays), strict=True):
            outputs[uk], computed[uk] = output, longest
    return outputs, computed


def run_batches(
    inputs: Sequence[np.ndarray], max_padded: int, forward: Callable[[list[np.ndarray]], Sequence[T]],
    *, exact_lengths: bool = False,
) -> tuple[list[T], list[int]]:
    """Call ``forward`` on the batches :func:`plan_batches` makes of ``inputs`` (by length).

    Returns, per input in the given order, its output and the padded length of its batch.
    """
    single = [[x] for x in inputs]
    batches = plan_windows([[len(x)] for x in inputs], max_padded, exact_lengths=exact_lengths)
    outputs, computed = run_planned(single, batches, forward)
    return [outputs[i, 0] for i in range(len(inputs))], [computed[i, 0] for i in range(len(inputs))]


def pad(arrays: Sequence[np.ndarray], padding_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad 1-D arrays into one matrix.

    Returns:
        ``(padded, lengths)``: float32 ``[batch, max_len]`` and int64 ``[batch]``.
    """
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    padded = np.full((len(arrays), int(lengths.max(initial=0))), padding_value, dtype=np.float32)
    for row, array in zip(padded, arrays):
        row[: len(array)] = array
    return padded, lengths


@dataclass(frozen=True)
class Chunk:
    """One window of a long input, in samples.

    ``left`` and ``right`` are the overlaps (strides) whose model outputs are discarded
    when the windows are stitched back together.
    """

    start: int
    end: int
    left: int
    right: int

    @property
    def length(self) -> int:
        return self.end - self.start


def chunk_spans(num_samples: int, chunk_len: int, stride_left: int, stride_right: int) -> list[Chunk]:
    """Overlapping windows over ``num_samples`` samples, as transformers' ASR pipeline cuts them.

    Windows are ``chunk_len`` long and advance by ``chunk_len - stride_left - stride_right``;
    the first window has no left stride and the last no right stride. A trailing window no
    longer than its left stride carries nothing new and is dropped. Matching the pipeline's
    arithmetic exactly is what lets our chunked output be compared against it.
    """
    step = chunk_len - stride_left - stride_right
    if step <= 0:
        raise ValueError(
            f"chunk length ({chunk_len}) must exceed the strides ({stride_left} + {stride_right})"
        )
    chunks: list[Chunk] = []
    for start in range(0, num_samples, step):
        end = min(start + chunk_len, num_samples)
        is_last = start + chunk_len >= num_samples
        left = 0 if start == 0 else stride_left
        right = 0 if is_last else stride_right
        if end - start > left:
            chunks.append(Chunk(start, end, left, right))
        if is_last:
            break
    return chunks
