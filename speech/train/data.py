"""Training data: manifest rows with audio and text, duration-bucketed batches, padded tensors.

The driver reads a manifest (:func:`read_examples`: headers only, no audio decoded) and leaves
out rows it cannot use, with the reason. Each training worker then plans its share of an epoch
(:func:`epoch_batches`: batches of similar durations within a seconds budget, the same plan on
every worker) and decodes and collates one batch at a time (:func:`collate`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from speech.audio import AudioDecodeError, decode, probe
from speech.batching import pad, plan_batches
from speech.inputs import read_manifest

_PROBE_THREADS = 16


@dataclass(frozen=True)
class Example:
    """One usable training or evaluation row."""

    id: str
    path: str  # local path or fsspec URL, readable by every worker
    text: str
    duration_s: float


@dataclass(frozen=True)
class Skipped:
    """A manifest row left out, and why (reported in the job summary)."""

    id: str
    reason: str


def read_examples(manifest: str, *, max_duration_s: float | None = None) -> tuple[list[Example], list[Skipped]]:
    """Rows of ``manifest`` (``path`` and ``text`` columns, optional ``id``) with their durations.

    Rows without text, with an unreadable header or longer than ``max_duration_s`` are
    returned as :class:`Skipped`. Raises speech.inputs.InputError for a manifest that cannot
    be read or lacks a column.
    """
    table = read_manifest(manifest, required=("text",))
    rows = table.to_pylist()
    with ThreadPoolExecutor(_PROBE_THREADS) as threads:
        durations = list(threads.map(_duration, (row["path"] for row in rows)))
    examples, skipped = [], []
    for row, duration in zip(rows, durations):
        text = (row["reference"] or "").strip()
        if isinstance(duration, str):
            skipped.append(Skipped(row["id"], duration))
        elif not text:
            skipped.append(Skipped(row["id"], "field 'text' is empty"))
        elif max_duration_s is not None and duration > max_duration_s:
            skipped.append(Skipped(row["id"], f"audio is {duration:.1f} s long, over max_duration_s ({max_duration_s:g} s)"))
        else:
            examples.append(Example(row["id"], row["path"], text, duration))
    return examples, skipped


def _duration(path: str) -> float | str:
    """Seconds of audio, or why the header cannot be read."""
    try:
        return probe(path).duration_s
    except AudioDecodeError as err:
        return str(err)
    except FileNotFoundError as err:
        return f"file not found: {err.filename or path}"
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def epoch_batches(
    examples: Sequence[Example], budget_s: float, *, epoch: int, seed: int, rank: int = 0, world: int = 1
) -> list[list[Example]]:
    """This worker's batches of one epoch.

    Examples are grouped by duration into batches whose padded audio (``len(batch) * longest``)
    stays within ``budget_s`` seconds; the batches are shuffled by ``(seed, epoch)``, identically
    on every worker, and dealt round-robin to the ``world`` workers. Every worker gets the same
    number of batches (DDP synchronizes each step), the last ones wrapping around to the first
    batches when they do not divide evenly.
    """
    lengths = [int(round(e.duration_s * 1000)) for e in examples]  # milliseconds
    batches = [[examples[i] for i in batch] for batch in plan_batches(lengths, int(budget_s * 1000))]
    random.Random(f"{seed}:{epoch}").shuffle(batches)
    per_worker = -(-len(batches) // world)  # ceil
    padded = [batches[i % len(batches)] for i in range(per_worker * world)]
    return padded[rank::world]


@dataclass
class Batch:
    """Padded model inputs of one batch.

    ``input_values`` float32 ``[batch, samples]``; ``attention_mask`` int64 ``[batch, samples]`` or
    None for models trained without one; ``labels`` int64 ``[batch, tokens]``, padded with -100
    (ignored by the CTC loss); ``texts`` the references; ``skipped`` rows that failed to decode.
    """

    input_values: torch.Tensor
    attention_mask: torch.Tensor | None
    labels: torch.Tensor
    texts: list[str]
    skipped: list[Skipped]

    def __len__(self) -> int:
        return len(self.texts)


def collate(examples: Sequence[Example], feature_extractor, tokenizer) -> Batch:
    """Decode, normalize (per utterance, over its real samples) and pad ``examples``.

    A file that fails to decode is left out of the batch and listed in ``skipped``; the batch
    may then be empty (``len(batch) == 0``).
    """
    rate = int(feature_extractor.sampling_rate)
    features, texts, skipped = [], [], []
    for example in examples:
        try:
            audio = decode(example.path, rate)
        except (AudioDecodeError, OSError) as err:
            skipped.append(Skipped(example.id, str(err)))
            continue
        values = feature_extractor(audio, sampling_rate=rate, return_tensors="np").input_values[0]
        features.append(values.astype(np.float32, copy=False))
        texts.append(example.text)
    padded, lengths = pad(features, float(feature_extractor.padding_value))
    mask = None
    if feature_extractor.return_attention_mask:
        mask = torch.from_numpy(np.arange(padded.shape[1])[None, :] < lengths[:, None]).long()
    ids = [tokenizer(text).input_ids for text in texts]
    labels = np.full((len(ids), max((len(i) for i in ids), default=0)), -100, np.int64)
    for row, tokens in zip(labels, ids):
        row[: len(tokens)] = tokens
    return Batch(torch.from_numpy(padded), mask, torch.from_numpy(labels), texts, skipped)
