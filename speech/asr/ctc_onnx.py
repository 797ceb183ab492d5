"""The CTC forward pass on onnxruntime, for directories written by ``speech convert onnx``.

:class:`OnnxCtcNetwork` is the onnxruntime twin of :class:`speech.asr.ctc.TorchCtcNetwork`:
the recognizer around it (batching, stitching, greedy decoding, confidences, word timings)
is the same object for both engines. The graph takes ``input_values`` (float32 ``[batch,
samples]``) and, for models whose feature extractor returns one, ``attention_mask`` (int64,
1 on real samples), and returns ``logits`` (float32 ``[batch, frames, vocab]``); both axes
are dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speech.onnx_model import Manifest, OnnxModelError, check_graphs, read_manifest, session

#: The graph of a CTC directory, as the converter names it.
GRAPH = "model"
INPUT_VALUES, ATTENTION_MASK, LOGITS = "input_values", "attention_mask", "logits"


def check_ctc_model(model: str | Path, *, attention_mask: bool) -> Manifest:
    """The manifest of ONNX CTC directory ``model`` once its graph is checked against it and
    against the processor (``attention_mask``: whether the feature extractor returns a mask).

    Reads the graph's declared inputs, not its weights; raises :class:`OnnxModelError`.
    """
    manifest = read_manifest(model)
    if manifest.kind != "ctc" or GRAPH not in manifest.graphs:
        raise OnnxModelError(f"ONNX model {model} is a {manifest.kind} export, not a CTC model")
    check_graphs(model, manifest)
    names = manifest.graphs[GRAPH].input_names
    wanted = [INPUT_VALUES, ATTENTION_MASK] if attention_mask else [INPUT_VALUES]
    if names != wanted:
        raise OnnxModelError(
            f"ONNX model {model}: its graph takes {names}, but its feature extractor "
            f"{'returns' if attention_mask else 'returns no'} attention_mask, so the model needs {wanted}; "
            "convert the checkpoint again with `speech convert onnx`"
        )
    return manifest


def frame_lengths(lengths: Sequence[int] | np.ndarray, layers: Sequence[Sequence[int]]) -> list[int]:
    """Output frames of inputs of ``lengths`` samples after convolutions ``[(kernel, stride), ...]``
    (the feature encoder, and adapter layers where a model has them), as transformers counts them."""
    frames = np.asarray(lengths, np.int64)
    for kernel, stride in layers:
        frames = (frames - kernel) // stride + 1
    return frames.tolist()


class OnnxCtcNetwork:
    """An exported CTC model in an onnxruntime session (see :class:`speech.asr.ctc.CtcNetwork`).

    The session runs on this process's torch thread count, which the model actor set from its
    ``torch_threads`` option, so both engines get the same CPU budget.
    """

    engine = "onnxruntime"

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "float32", attention_mask: bool):
        if dtype != "float32":
            raise OnnxModelError(
                f"dtype {dtype}: an ONNX model runs at the precision it was exported with; use dtype float32"
            )
        manifest = check_ctc_model(model, attention_mask=attention_mask)
        self.layers = manifest.details["frame_layers"]
        self.session = session(Path(model) / manifest.graphs[GRAPH].file, threads=torch.get_num_threads(), device=device)

    def logits(self, padded: np.ndarray, mask: np.ndarray | None) -> torch.Tensor:
        feeds = {INPUT_VALUES: np.ascontiguousarray(padded, np.float32)}
        if mask is not None:
            feeds[ATTENTION_MASK] = mask.astype(np.int64)
        return torch.from_numpy(self.session.run([LOGITS], feeds)[0])

    def frames(self, lengths: np.ndarray) -> list[int]:
        return frame_lengths(lengths, self.layers)
