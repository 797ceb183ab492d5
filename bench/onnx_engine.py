"""``--engine onnx`` of ``speech bench asr`` and ``speech bench tts``: the same job on onnxruntime.

The benchmark's model is converted once with ``speech convert onnx`` (float32, and for CTC
int8 from that), cached beside the other fixtures, and our job runs on each export as one
more system, beside the PyTorch systems and on the same corpus. The report adds the ratios
to the PyTorch systems and, for CTC, how far the exports' transcripts are from PyTorch's.
"""

from __future__ import annotations

from pathlib import Path

#: ASR systems added by --engine onnx: our job on the float32 and the int8 export.
ASR_SYSTEMS = {"ours_onnx": None, "ours_onnx_int8": "int8"}
ASR_LABELS = {"ours_onnx": "ours on onnxruntime, float32 export", "ours_onnx_int8": "ours on onnxruntime, int8 export"}
#: TTS systems added by --engine onnx (Kokoro): the model calls alone, and our job.
TTS_SYSTEMS = ("ceiling_onnx", "ours_onnx")
TTS_LABELS = {"ceiling_onnx": "ceiling on onnxruntime (model calls only)", "ours_onnx": "ours on onnxruntime"}
#: The issue's goal for the float32 export: our whole job vs PyTorch's bare forward.
ONNX_VS_CEILING_GOAL = 1.3


def exports(cache: Path, model: Path, *, int8: bool) -> dict[str | None, Path]:
    """``{None: float32 export, "int8": int8 export}`` of ``model``, converted once into ``cache``."""
    from speech.testing.onnx_checkpoints import onnx_export

    converted = {None: onnx_export(cache, model)}
    if int8:
        converted["int8"] = onnx_export(cache, converted[None], quantize="int8")
    return converted


def asr_figures(rtfx: dict[str, float], work: Path) -> dict:
    """Ratios of the ONNX systems to PyTorch's ceiling and our PyTorch job, and the mean CER of
    their transcripts against our PyTorch job's (first round's outputs, file by file)."""
    texts = {name: _texts(work / f"{name}-0" / "output") for name in ("ours", *ASR_SYSTEMS)}
    return {
        "float32_vs_ceiling": round(rtfx["ours_onnx"] / rtfx["ceiling"], 3),
        "int8_vs_ceiling": round(rtfx["ours_onnx_int8"] / rtfx["ceiling"], 3),
        "float32_vs_ours": round(rtfx["ours_onnx"] / rtfx["ours"], 3),
        "int8_vs_ours": round(rtfx["ours_onnx_int8"] / rtfx["ours"], 3),
        "float32_cer_vs_pytorch": _mean_cer(texts["ours"], texts["ours_onnx"]),
        "int8_cer_vs_float32": _mean_cer(texts["ours_onnx"], texts["ours_onnx_int8"]),
        "int8_cer_vs_pytorch": _mean_cer(texts["ours"], texts["ours_onnx_int8"]),
    }


def asr_target(figures: dict) -> dict:
    value = figures["float32_vs_ceiling"]
    return {"target": "ours on ONNX float32 / PyTorch ceiling RTFx", "value": value,
            "goal": f">= {ONNX_VS_CEILING_GOAL:g}", "met": value >= ONNX_VS_CEILING_GOAL}


def tts_figures(rtfx: dict[str, float]) -> dict:
    """ONNX vs PyTorch, model calls alone (ceiling) and whole job (ours)."""
    return {"ceiling": round(rtfx["ceiling_onnx"] / rtfx["ceiling"], 3), "ours": round(rtfx["ours_onnx"] / rtfx["ours"], 3)}


def _texts(output: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(output, columns=["id", "text"])
    return dict(zip(table["id"].to_pylist(), table["text"].to_pylist()))


def _mean_cer(reference: dict[str, str], hypothesis: dict[str, str]) -> float:
    from speech.text.score import character_error_rate

    scores = [character_error_rate(reference[i] or "", hypothesis.get(i) or "") for i in reference]
    return round(sum(scores) / len(scores), 5)
