"""One epoch of CTC training and one evaluation pass, on whatever process group is running.

Plain PyTorch: the caller wraps the model (DDP under Ray Train, nothing in a notebook) and
hands each worker its batches. Figures are summed over workers with ``torch.distributed``
when a process group is initialized, so every worker returns the same corpus-level numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from speech.text.score import ErrorCounts, error_counts
from speech.train.data import Example, Skipped, collate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    loss: float  # mean over every worker's steps of the model's own CTC loss
    steps: int  # optimizer steps, over all workers
    skipped: list[Skipped]  # rows that failed to decode on this worker


def train_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Sequence[list[Example]], processor,
    device: torch.device,
) -> EpochResult:
    """One optimizer step per batch with the model's CTC loss (``config.ctc_loss_reduction``).

    A batch whose files all failed to decode still takes its step with a zero loss, so DDP
    workers stay in step.
    """
    model.train()
    total, skipped = torch.zeros(2, dtype=torch.float64), []
    for examples in batches:
        batch = collate(examples, processor.feature_extractor, processor.tokenizer)
        skipped += batch.skipped
        optimizer.zero_grad(set_to_none=True)
        if len(batch):
            out = model(
                batch.input_values.to(device),
                attention_mask=None if batch.attention_mask is None else batch.attention_mask.to(device),
                labels=batch.labels.to(device),
            )
            loss = out.loss
        else:
            log.warning("every file of a training batch failed to decode; the step is empty")
            loss = sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)
        loss.backward()
        optimizer.step()
        total += torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64)
    total = _summed(total, device)
    return EpochResult(loss=float(total[0] / max(total[1], 1)), steps=int(total[1]), skipped=skipped)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, batches: Sequence[list[Example]], processor, device: torch.device
) -> ErrorCounts:
    """Greedy CTC transcripts of ``batches`` scored against their texts, summed over workers."""
    model.eval()
    inner = getattr(model, "module", model)  # DDP's wrapped model
    counts = ErrorCounts()
    for examples in batches:
        batch = collate(examples, processor.feature_extractor, processor.tokenizer)
        if not len(batch):
            continue
        mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
        logits = inner(batch.input_values.to(device), attention_mask=mask).logits
        lengths = batch.attention_mask.sum(dim=1) if mask is not None else torch.full((len(batch),), batch.input_values.shape[1])
        frames = inner._get_feat_extract_output_lengths(lengths).tolist()
        ids = logits.argmax(dim=-1).cpu()
        for row, (n, text) in enumerate(zip(frames, batch.texts)):
            counts += error_counts(text, processor.tokenizer.decode(ids[row, :n]))
    summed = _summed(torch.tensor([counts.char_edits, counts.chars, counts.word_edits, counts.words], dtype=torch.float64), device)
    return ErrorCounts(*(int(v) for v in summed.tolist()))


def _summed(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` summed over the workers of the process group, if there is one (on ``device``:
    NCCL reduces GPU tensors only)."""
    if dist.is_available() and dist.is_initialized():
        values = values.to(device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()
