"""Export a transformers CTC checkpoint (wav2vec2, XLSR, HuBERT, ... ``AutoModelForCTC``) to ONNX.

The graph (``model.onnx``) takes ``input_values`` (float32 ``[batch, samples]``, normalized
as the feature extractor does) and, when the feature extractor returns one, ``attention_mask``
(int64 ``[batch, samples]``, 1 on real samples); it returns ``logits`` (float32 ``[batch,
frames, vocab]``). Batch and time axes are dynamic. The directory also gets the config,
feature extractor, tokenizer and processor files, so the front end and the CTC decoding load
from it exactly as from the checkpoint, and the manifest records the feature encoder's
convolutions, from which the engine counts each row's output frames.

Before writing the manifest the export is checked against PyTorch on a padded batch of
noise (max |logit difference|, share of frames with the same argmax): a float32 export that
disagrees is an error; for int8 the figures are recorded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoProcessor, AutoTokenizer

from speech.asr.ctc_onnx import ATTENTION_MASK, GRAPH, INPUT_VALUES, LOGITS, frame_lengths
from speech.convert.onnx_export import EXPORTER, ConvertError, export_graph, quantize_int8, versions
from speech.onnx_model import GraphSpec, Manifest, read_manifest, session

MODEL_FILE = "model.onnx"
#: A float32 export must give the same argmax on at least this share of frames (1 ulp-level
#: differences can flip near-ties of a random model; a broken export agrees on ~1/vocab).
_MIN_AGREEMENT = 0.99
#: Probe batch: seconds of each row (different lengths, so padding is exercised).
_PROBE_SECONDS = (1.3, 0.7, 1.0)


class _Logits(torch.nn.Module):
    """``model(input_values[, attention_mask]).logits`` as a module with tensor-only I/O."""

    def __init__(self, model: torch.nn.Module, attention_mask: bool):
        super().__init__()
        self.model = model
        self.attention_mask = attention_mask

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_values, attention_mask=attention_mask).logits


def convert_ctc(model: str, out: Path, *, quantize: str | None = None) -> Manifest:
    """Export CTC checkpoint ``model`` into the (empty) directory ``out``; see the module docstring."""
    config = AutoConfig.from_pretrained(model)
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForCTC") for name in architectures):
        raise ConvertError(
            f"model {model!r} ({config.model_type}, architectures {architectures}) is not a CTC model; "
            "`speech convert onnx` exports CTC checkpoints (AutoModelForCTC) and Kokoro"
        )
    network = AutoModelForCTC.from_pretrained(model, dtype=torch.float32).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(model)
    mask = bool(feature_extractor.return_attention_mask)
    layers = _frame_layers(network)
    _save_front_end(model, config, feature_extractor, out)

    names = [INPUT_VALUES, ATTENTION_MASK] if mask else [INPUT_VALUES]
    probe = _probe(feature_extractor, mask)
    axes = {name: {0: "batch", 1: "samples"} for name in names}
    example = tuple(torch.from_numpy(a) for a in probe)
    inputs, outputs, opset = export_graph(
        _Logits(network, mask), example, out / MODEL_FILE, input_names=names, output_names=[LOGITS], axes=axes
    )
    verification = _compare(_torch_logits(network, probe, layers), _onnx_logits(out / MODEL_FILE, probe, names, layers))
    if verification["argmax_agreement"] < _MIN_AGREEMENT:
        raise ConvertError(f"the ONNX export of {model!r} disagrees with PyTorch: {verification}")
    manifest = Manifest(
        kind="ctc",
        source_model=str(model),
        architecture=architectures[0],
        graphs={GRAPH: GraphSpec(MODEL_FILE, inputs, outputs)},
        opset=opset,
        quantization=None,
        exporter=EXPORTER,
        versions=versions(),
        verification={"float32": verification},
        details={"frame_layers": layers, "attention_mask": mask, "parameters": sum(p.numel() for p in network.parameters())},
    )
    if quantize == "int8":
        manifest = _quantized(manifest, out, network=network, probe=probe)
    manifest.write(out)
    return manifest


def quantize_ctc(onnx_dir: str, out: Path) -> Manifest:
    """Copy the float32 ONNX CTC directory ``onnx_dir`` to ``out`` with its graph quantized to int8."""
    source = Path(onnx_dir)
    manifest = read_manifest(source)
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith(".") and item.name != manifest.graphs[GRAPH].file:
            shutil.copy2(item, out / item.name)
    shutil.copy2(source / manifest.graphs[GRAPH].file, out / MODEL_FILE)
    network = AutoModelForCTC.from_pretrained(source, dtype=torch.float32).eval() if _has_weights(source) else None
    probe = _probe(AutoFeatureExtractor.from_pretrained(source), manifest.details["attention_mask"])
    manifest = _quantized(manifest, out, network=network, probe=probe)
    manifest.write(out)
    return manifest


def _quantized(manifest: Manifest, out: Path, *, network: torch.nn.Module | None, probe: list[np.ndarray]) -> Manifest:
    """Quantize ``out/model.onnx`` in place; the manifest with the int8 figures added.

    Agreement is measured against PyTorch when the weights are at hand (a fresh export),
    else against the float32 graph it was quantized from.
    """
    graph = manifest.graphs[GRAPH]
    float_path = out / f".float32-{MODEL_FILE}"
    (out / MODEL_FILE).rename(float_path)
    try:
        quantize_int8(float_path, out / MODEL_FILE)
        names, layers = graph.input_names, manifest.details["frame_layers"]
        reference = (_torch_logits(network, probe, layers) if network is not None
                     else _onnx_logits(float_path, probe, names, layers))
        figures = _compare(reference, _onnx_logits(out / MODEL_FILE, probe, names, layers))
        figures["against"] = "pytorch" if network is not None else "float32 onnx"
    finally:
        float_path.unlink(missing_ok=True)
    return Manifest(**{**manifest.__dict__, "quantization": "int8", "verification": {**manifest.verification, "int8": figures}})


def _has_weights(directory: Path) -> bool:
    return any(directory.glob("*.safetensors")) or any(directory.glob("pytorch_model*.bin"))


def _frame_layers(network: torch.nn.Module) -> list[list[int]]:
    """``[[kernel, stride], ...]`` whose composition gives the model's output frames per input,
    checked against the model's own count on lengths from 1 to 120 s."""
    config = network.config
    layers = [[int(k), int(s)] for k, s in zip(config.conv_kernel, config.conv_stride)]
    if getattr(config, "add_adapter", False):
        layers += [[1, int(config.adapter_stride)]] * int(config.num_adapter_layers)
    lengths = np.unique(np.geomspace(400, 120 * 16_000, 200).astype(np.int64))
    want = network._get_feat_extract_output_lengths(torch.from_numpy(lengths)).tolist()
    if frame_lengths(lengths, layers) != want:
        raise ConvertError(f"cannot derive the output frame count of {type(network).__name__} from its config")
    return layers


def _save_front_end(model: str, config, feature_extractor, out: Path) -> None:
    """What the front end and decoder load besides the network: config, feature extractor,
    tokenizer and (where the checkpoint has one) the processor, written with save_pretrained."""
    config.save_pretrained(out)
    feature_extractor.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    try:
        processor = AutoProcessor.from_pretrained(model)
    except (OSError, ValueError, TypeError):
        return  # a checkpoint without a processor: its two halves above are what the job loads
    processor.save_pretrained(out)


def _probe(feature_extractor, mask: bool) -> list[np.ndarray]:
    """A padded batch of normalized noise: ``[input_values]`` (+ ``attention_mask``), rows of
    different lengths when the model takes a mask, else of one length (it cannot be padded)."""
    rate = int(feature_extractor.sampling_rate)
    rng = np.random.default_rng(0)
    seconds = _PROBE_SECONDS if mask else (_PROBE_SECONDS[0],) * 2
    rows = [feature_extractor(rng.standard_normal(int(s * rate)).astype(np.float32), sampling_rate=rate,
                              return_tensors="np").input_values[0] for s in seconds]
    longest = max(map(len, rows))
    values = np.full((len(rows), longest), float(feature_extractor.padding_value), np.float32)
    attention = np.zeros((len(rows), longest), np.int64)
    for i, row in enumerate(rows):
        values[i, : len(row)] = row
        attention[i, : len(row)] = 1
    return [values, attention] if mask else [values]


def _torch_logits(network: torch.nn.Module, probe: list[np.ndarray], layers: list[list[int]]) -> list[np.ndarray]:
    """Logits of each probe row over its own frames (padding frames excluded)."""
    with torch.inference_mode():
        logits = _Logits(network, len(probe) > 1)(*(torch.from_numpy(a) for a in probe)).numpy()
    return _valid_frames(logits, probe, layers)


def _onnx_logits(path: Path, probe: list[np.ndarray], names: list[str], layers: list[list[int]]) -> list[np.ndarray]:
    logits = session(path, threads=torch.get_num_threads()).run([LOGITS], dict(zip(names, probe)))[0]
    return _valid_frames(logits, probe, layers)


def _valid_frames(logits: np.ndarray, probe: list[np.ndarray], layers: list[list[int]]) -> list[np.ndarray]:
    lengths = probe[1].sum(axis=1) if len(probe) > 1 else np.full(len(probe[0]), probe[0].shape[1])
    return [row[:n] for row, n in zip(logits, frame_lengths(lengths, layers))]


def _compare(reference: list[np.ndarray], got: list[np.ndarray]) -> dict:
    """Max |logit difference| and the share of frames whose argmax agrees, over all rows."""
    diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, got))
    same = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(reference, got))
    frames = sum(len(a) for a in reference)
    return {"max_abs_logit_diff": round(diff, 7), "argmax_agreement": round(same / frames, 5), "frames": frames}
