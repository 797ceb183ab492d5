"""Word timing of the transformers Whisper engine: cross-attention of the alignment heads, by DTW.

:class:`CrossAttention` collects the alignment heads' cross-attention while the decoder runs
(during ``generate``, or a teacher-forced pass); :func:`token_bounds` turns one window's
weights into token boundary times the way transformers' ``_extract_token_timestamps`` does.
"""

from __future__ import annotations

import numpy as np
import torch


def token_bounds(queries: torch.Tensor, frames: int, median_width: int, time_precision: float) -> np.ndarray:
    """Token boundary times (seconds) from alignment-head cross-attention, by DTW.

    ``queries``: float32 ``[heads, tokens, encoder frames]``, one row per generated token
    fed back; ``frames``: encoder frames of real audio in the window. Returns float64
    ``[tokens + 2]``: 0 for the token before the first, then the time each next token's
    alignment starts (so token ``j`` ends at entry ``j + 1``), then the last one again for
    the end-of-text token. The steps are transformers' (z-score over tokens per head, median
    filter along time, mean over heads, DTW, jump times), except that each window keeps only
    its own tokens and frames of real audio.
    """
    tokens = queries.shape[1]
    if tokens == 0 or frames == 0:
        return np.zeros(tokens + 2)
    matrix = queries[:, :, :frames]
    std, mean = torch.std_mean(matrix, dim=-2, keepdim=True, unbiased=False)
    matrix = median_filter((matrix - mean) / std, median_width).mean(dim=0)
    text_indices, time_indices = dtw(-matrix.double().cpu().numpy())
    jumps = np.diff(text_indices, prepend=-1).astype(bool)
    times = time_indices[jumps] * time_precision
    return np.concatenate([[0.0], times, times[-1:]])


class CrossAttention:
    """Collects the cross-attention weights of chosen decoder heads while it is entered.

    Forward hooks on the decoder layers' cross-attention keep only the alignment heads,
    ``[batch, heads, queries, frames]`` per step, rather than every layer and head as
    ``output_attentions`` would (gigabytes for large-v3 batches). Needs eager attention,
    which returns the weights.
    """

    def __init__(self, model, heads: list[tuple[int, int]]):
        self.model = model
        self.heads = heads
        self.steps: dict[int, list[torch.Tensor]] = {layer: [] for layer, _ in heads}
        self.handles = []

    def __enter__(self) -> CrossAttention:
        layers = self.model.get_decoder().layers
        for layer in self.steps:
            wanted = [head for at, head in self.heads if at == layer]
            self.handles.append(layers[layer].encoder_attn.register_forward_hook(self._keep(layer, wanted)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _keep(self, layer: int, heads: list[int]):
        def hook(module, args, output):
            weights = output[1]
            if weights is None:
                raise RuntimeError("word timestamps need attention weights; load the model with attn_implementation='eager'")
            self.steps[layer].append(weights[:, heads].float())

        return hook

    def weights(self) -> torch.Tensor:
        """float32 ``[batch, heads, queries, frames]``, heads in the order they were given."""
        by_layer = {layer: torch.cat(steps, dim=2) for layer, steps in self.steps.items()}
        index = {layer: [h for at, h in self.heads if at == layer] for layer in by_layer}
        return torch.stack([by_layer[layer][:, index[layer].index(head)] for layer, head in self.heads], dim=1)


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window of odd ``width`` along the last axis, edges reflected."""
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = torch.nn.functional.pad(x, (half, half), mode="reflect")  # x: [..., rows, time], 3-D
    return padded.unfold(-1, width, 1).sort(dim=-1).values[..., half]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through ``cost`` (``[tokens, frames]``, float64).

    Returns ``(text_indices, time_indices)``, the path's cells from ``(0, 0)`` to the last
    one. Ties are broken as transformers breaks them (diagonal, then up, then left) and the
    accumulated cost is kept in float32 as it keeps it, so the path is the same; the cells
    of one anti-diagonal are computed together instead of one by one.
    """
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf, dtype=np.float32)
    trace = np.full((rows + 1, cols + 1), -1, dtype=np.int8)
    total[0, 0] = 0
    for diagonal in range(2, rows + cols + 1):
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        diag, up, left = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where((diag < up) & (diag < left), 0, np.where((up < diag) & (up < left), 1, 2))
        best = np.choose(step, [diag, up, left])
        total[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = step
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, path = rows, cols, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = trace[i, j]
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    text, time = np.array(path[::-1]).T
    return text, time

