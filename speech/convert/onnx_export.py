"""``speech convert onnx``: what every ONNX conversion shares, and the dispatch by model kind.

A conversion writes a directory that the same ``speech transcribe`` / ``speech synthesize``
commands (and the server) run with onnxruntime: the ONNX graph(s), the files the model's
front end reads, and ``onnx_manifest.json`` (see :mod:`speech.onnx_model`).

Exporter: ``torch.export`` (non-strict) and ``torch.onnx.export`` on the exported program
(the "dynamo" exporter of torch 2.14). The TorchScript exporter traces Python: it froze
shape-dependent values of transformers' wav2vec2 at the example's length (logits off by
0.8 on other lengths, 20-50% of frames with another argmax), while the dynamo exporter keeps
them symbolic (max |dlogit| 1e-6). Two settings make it keep *every* axis dynamic:

* LSTMs (Kokoro) are lowered through torch's while-loop decomposition, not unrolled over
  the example's length;
* ``backed_size_oblivious`` and deferred runtime asserts, so that guards torch cannot prove
  symbolically (e.g. ``300 * trunc(600 * F / 300.0) == 600 * F``) become checks instead of
  specializing the axis to the example's size. ``torch.onnx.export`` given a module would
  silently "refine" such an axis into a constant; this module checks the written graph and
  fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from speech.onnx_model import Manifest, TensorSpec, graph_specs

#: ``--quantize`` values.
QUANTIZATIONS = ("int8",)
EXPORTER = "torch.export (non-strict) + torch.onnx.export (dynamo)"


class ConvertError(ValueError):
    """A conversion that cannot be done; the message is one line naming the model or option."""


def convert_onnx(model: str, out_dir: str | Path, *, quantize: str | None = None) -> Manifest:
    """Convert ``model`` for onnxruntime into the new directory ``out_dir``; returns its manifest.

    ``model``: a CTC checkpoint (hub id or directory, any ``AutoModelForCTC``), a Kokoro
    checkpoint directory, or a float32 ONNX CTC directory (only to quantize it).
    ``quantize``: None, or ``"int8"`` (CTC models: dynamic int8 quantization of the weights).
    Raises :class:`ConvertError` for anything the user can fix.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConvertError(f"--quantize {quantize!r} is not supported; supported: {', '.join(QUANTIZATIONS)}")
    from speech.onnx_model import OnnxModelError, is_onnx_model, read_manifest

    if is_onnx_model(model):
        try:
            manifest = read_manifest(model)
        except OnnxModelError as err:
            raise ConvertError(str(err)) from err
        if manifest.kind != "ctc" or quantize is None or manifest.quantization is not None:
            raise ConvertError(
                f"{model} is already an ONNX export ({manifest.kind}, quantization {manifest.quantization}); "
                "only a float32 CTC export can be converted again, with --quantize int8"
            )
        from speech.convert.onnx_ctc import quantize_ctc

        return write_directory(out_dir, lambda out: quantize_ctc(model, out))
    if _is_kokoro(model):
        if quantize is not None:
            raise ConvertError(f"--quantize {quantize}: quantization is offered for CTC models only, not Kokoro")
        from speech.convert.onnx_kokoro import convert_kokoro

        return write_directory(out_dir, lambda out: convert_kokoro(model, out))
    from speech.convert.onnx_ctc import convert_ctc

    return write_directory(out_dir, lambda out: convert_ctc(model, out, quantize=quantize))


def _is_kokoro(model: str) -> bool:
    from speech.tts import ModelError, detect_backend

    try:
        return Path(model).is_dir() and detect_backend(model) == "kokoro"
    except ModelError:
        return False


def write_directory(out_dir: str | Path, write: Callable[[Path], Manifest]) -> Manifest:
    """Run ``write(tmp)`` in a fresh sibling of ``out_dir`` and rename it into place when it
    succeeds, so a failed or interrupted conversion never leaves a directory that looks done."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvertError(f"output {out} exists and is not an empty directory; choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        manifest = write(tmp)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def export_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    axes: dict[str, dict[int, str]],
) -> tuple[list[TensorSpec], list[TensorSpec], int]:
    """Export ``module(*args)`` to the ONNX file ``path`` with the named axes dynamic.

    ``input_names`` are the forward arguments, in order; ``axes`` maps some of them to
    ``{axis: name}`` (e.g. ``{"input_values": {0: "batch", 1: "samples"}}``). torch.export
    infers the range of each axis and the relations between them (two inputs sharing an
    axis); the graph's symbols are then renamed to the given names. Returns the graph's
    declared inputs, outputs and its opset. Raises :class:`ConvertError` if an axis meant to
    be dynamic came out fixed.
    """
    from torch.export._patches import register_lstm_while_loop_decomposition

    auto = torch.export.Dim.AUTO
    dynamic_shapes = {name: dict.fromkeys(axes.get(name, {}), auto) or None for name in input_names}
    module = module.eval()
    with _quiet_exporter(), torch.no_grad(), register_lstm_while_loop_decomposition(), \
            torch.fx.experimental._config.patch(backed_size_oblivious=True):
        program = torch.export.export(
            module, args, dynamic_shapes=dynamic_shapes, strict=False, prefer_deferred_runtime_asserts_over_guards=True
        )
        onnx_program = torch.onnx.export(
            program, args, input_names=input_names, output_names=output_names, dynamo=True, verbose=False
        )
    onnx_program.save(str(path))
    _name_axes(path, input_names, axes)
    inputs, outputs = graph_specs(path)
    for spec in inputs:
        for axis, name in axes.get(spec.name, {}).items():
            if spec.shape[axis] != name:
                raise ConvertError(f"the exporter fixed axis {axis} ({name}) of input {spec.name} to {spec.shape[axis]}")
    import onnx

    opset = next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
    return inputs, outputs, opset


def _name_axes(path: Path, input_names: list[str], axes: dict[str, dict[int, str]]) -> None:
    """Rename the exporter's axis symbols (``s76``) to ``axes``' names wherever they appear."""
    import re

    import onnx

    proto = onnx.load(str(path))
    inputs = {value.name: value for value in proto.graph.input}
    renames = {}
    for name, named in axes.items():
        dims = inputs[name].type.tensor_type.shape.dim
        for axis, new in named.items():
            if dims[axis].dim_param:
                renames[dims[axis].dim_param] = new
    if not renames:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b")
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: renames[m.group(1)], dim.dim_param)
    onnx.save(proto, str(path))


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization (onnxruntime) of the weights of the MatMul and Gemm nodes.

    Activations stay float and are quantized on the fly per call. Only matrix products are
    quantized: they hold most weights of a transformer, and dynamically quantized
    convolutions (the waveform encoder of wav2vec2) are slower on onnxruntime's CPU kernels.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_exporter():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def versions() -> dict[str, str]:
    """Versions of the libraries that shaped an export (recorded in the manifest)."""
    import onnx
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' progress lines and warnings (the CLI reports what matters)."""
    import logging
    import warnings

    # The root logger too: onnxruntime's quantizer warns there that it was not given a
    # pre-processed (shape-inferred) model, which dynamic quantization of MatMul/Gemm does not need.
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch.export", "torch._dynamo", "onnxruntime")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
