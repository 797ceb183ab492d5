"""Exported ONNX model directories: the manifest format, detection, checks and sessions.

``speech convert onnx`` (:mod:`speech.convert`) writes a directory holding one or more ONNX
graphs, the files the model's front end reads (processor, tokenizer, config, voice packs)
and ``onnx_manifest.json``, which says what was exported and how. The engines that run such
a directory with onnxruntime (:mod:`speech.asr.ctc_onnx`, :mod:`speech.tts.kokoro_onnx`)
read it through this module; a directory is an ONNX model when it holds the manifest.

The manifest (``format_version`` 1)::

    {"format": "speech-onnx", "format_version": 1,
     "kind": "ctc" | "kokoro", "source_model": "...", "architecture": "Wav2Vec2ForCTC",
     "graphs": {"model": {"file": "model.onnx",
                          "inputs": [{"name": "input_values", "dtype": "float32",
                                      "shape": ["batch", "samples"]}, ...],
                          "outputs": [...]}},
     "opset": 18, "quantization": null | "int8",
     "exporter": "torch.onnx.export (dynamo)", "versions": {"torch": ..., "onnx": ..., ...},
     "verification": {...},   # what the converter measured against PyTorch
     "details": {...}}        # what the kind's engine needs besides the graphs

onnxruntime and onnx are imported only by the functions that need them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "onnx_manifest.json"
FORMAT = "speech-onnx"
FORMAT_VERSION = 1

#: ONNX TensorProto element types -> the dtype names the manifest uses.
_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


class OnnxModelError(ValueError):
    """An ONNX model directory that cannot be used; the message is one line naming the directory."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, element type and shape (ints, or axis names)."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph file of a directory and its inputs and outputs."""

    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]


@dataclass(frozen=True)
class Manifest:
    """``onnx_manifest.json`` (see the module docstring)."""

    kind: str  # "ctc" or "kokoro": which engine runs the directory
    source_model: str
    architecture: str
    graphs: dict[str, GraphSpec]
    opset: int
    quantization: str | None  # None (float32) or "int8" (dynamic quantization of the weights)
    exporter: str
    versions: dict[str, str]
    verification: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def is_onnx_model(model: str | Path) -> bool:
    """Whether ``model`` is a local directory written by ``speech convert onnx``."""
    return (Path(model) / MANIFEST_FILE).is_file()


def read_manifest(model: str | Path) -> Manifest:
    """The manifest of ONNX model directory ``model``; :class:`OnnxModelError` if it is unreadable,
    of another format version, or names a graph file that is missing."""
    path = Path(model) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OnnxModelError(f"cannot read {path}: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OnnxModelError(f"{path} is not a {FORMAT} manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise OnnxModelError(
            f"{path} has format_version {data.get('format_version')!r}; this version of speech reads "
            f"{FORMAT_VERSION}: convert the model again with `speech convert onnx`"
        )
    try:
        graphs = {
            name: GraphSpec(
                file=g["file"],
                inputs=[TensorSpec(**t) for t in g["inputs"]],
                outputs=[TensorSpec(**t) for t in g["outputs"]],
            )
            for name, g in data["graphs"].items()
        }
        manifest = Manifest(**{**data, "graphs": graphs})
    except (KeyError, TypeError) as err:
        raise OnnxModelError(f"{path} is missing or has a malformed field: {err}") from err
    for graph in graphs.values():
        if not (Path(model) / graph.file).is_file():
            raise OnnxModelError(f"ONNX model {model}: graph file {graph.file} named by {MANIFEST_FILE} is missing")
    return manifest


def graph_specs(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs an ONNX file really declares (reads the graph, not the weights)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return TensorSpec(value.name, _DTYPES.get(tensor.elem_type, str(tensor.elem_type)), shape)

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in proto.graph.output]


def check_graphs(model: str | Path, manifest: Manifest) -> None:
    """Every graph file declares exactly the inputs (names, element types, ranks) the manifest
    says; :class:`OnnxModelError` naming the first that does not."""
    for graph in manifest.graphs.values():
        try:
            inputs, _ = graph_specs(Path(model) / graph.file)
        except Exception as err:  # onnx raises several types for a damaged file
            raise OnnxModelError(f"ONNX model {model}: cannot read {graph.file}: {_first_line(err)}") from err
        got = [(t.name, t.dtype, len(t.shape)) for t in inputs]
        want = [(t.name, t.dtype, len(t.shape)) for t in graph.inputs]
        if got != want:
            raise OnnxModelError(
                f"ONNX model {model}: {graph.file} takes inputs {_describe(got)} but {MANIFEST_FILE} says "
                f"{_describe(want)}; convert the model again with `speech convert onnx`"
            )


def session(path: str | Path, *, threads: int, device: str = "cpu"):
    """An onnxruntime session for ``path`` that runs on ``threads`` intra-op threads.

    The caller's thread budget (a model actor's ``torch_threads``) is the session's, with one
    inter-op thread and every graph optimization. Worker threads do not spin while waiting:
    the model actors share their cores with the job's CPU stages, which spinning would starve.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: shape-merge warnings of dynamic axes are noise
    return ort.InferenceSession(str(path), sess_options=options, providers=providers(device))


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for torch-style ``device`` (``"cpu"`` or ``"cuda"``)."""
    import onnxruntime as ort

    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise OnnxModelError(
                "a GPU was asked for, but this onnxruntime has no CUDA provider (install onnxruntime-gpu), "
                "or run ONNX models with gpus_per_actor 0"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _describe(specs: list[tuple[str, str, int]]) -> str:
    return "[" + ", ".join(f"{name} ({dtype}, rank {rank})" for name, dtype, rank in specs) + "]"


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
