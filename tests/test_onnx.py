"""ONNX Runtime engines: `speech convert onnx`, then the same jobs on onnxruntime.

CTC: the transcription job's rows on the exported model equal the PyTorch engine's file by
file (tiny XLSR-style and base-style checkpoints, batching, chunking and VAD included); int8
is measured against float32. Kokoro: the exported model's audio against the PyTorch
backend's, and through the synthesis job. Bad input gets one line and exit 2.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import FIXTURES_DIR, SAMPLES

from cli import main as cli_main
from jobs import transcribe
from speech.audio import decode
from speech.onnx_model import read_manifest
from speech.options import SynthesizeOptions, TranscribeOptions
from speech.testing.onnx_checkpoints import onnx_export
from speech.text.score import character_error_rate

RATE = 16_000
MAX_CER = 0.002  # per file: a float rounding difference may flip a near-tied frame


@pytest.fixture(scope="module")
def exports(checkpoints) -> dict:
    """``{name: directory}``: float32 exports of both CTC fixtures, and int8 of the XLSR one."""
    xlsr = onnx_export(FIXTURES_DIR, checkpoints["ctc-xlsr"])
    return {"ctc-xlsr": xlsr, "ctc-base": onnx_export(FIXTURES_DIR, checkpoints["ctc-base"]),
            "ctc-xlsr-int8": onnx_export(FIXTURES_DIR, xlsr, quantize="int8")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The bundled samples plus a 75 s file (chunked, or cut at pauses by VAD)."""
    root = tmp_path_factory.mktemp("onnx-corpus")
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    speech = np.concatenate([decode(str(SAMPLES / r["path"]), RATE) for r in rows if r["path"].endswith(".flac")])
    sf.write(root / "long.flac", np.tile(speech, 3)[: 75 * RATE], RATE)
    return [str(SAMPLES / "manifest.jsonl"), str(root / "long.flac")]


def _job(ray_local, corpus, model, out, **options) -> pd.DataFrame:
    run = TranscribeOptions(inputs=corpus, output=str(out), model=str(model), torch_threads=1, **options)
    transcribe.run(run)
    return transcribe.read_output(run.output).to_pandas().set_index("id").sort_index()


@pytest.mark.parametrize("name, options", [("ctc-xlsr", {"vad": True}), ("ctc-base", {"chunk_length_s": 20.0})])
def test_onnx_job_equals_pytorch_file_by_file(ray_local, checkpoints, exports, corpus, tmp_path, name, options):
    manifest = read_manifest(exports[name])
    assert manifest.quantization is None and manifest.verification["float32"]["argmax_agreement"] == 1.0
    torch_rows = _job(ray_local, corpus, checkpoints[name], tmp_path / "torch", **options)
    onnx_rows = _job(ray_local, corpus, exports[name], tmp_path / "onnx", **options)
    assert list(onnx_rows.index) == list(torch_rows.index) and len(onnx_rows) == 11
    assert onnx_rows["error"].isna().all() and torch_rows["error"].isna().all()
    assert set(torch_rows["engine"]) == {"transformers"} and set(onnx_rows["engine"]) == {"onnxruntime"}
    assert set(onnx_rows["backend"]) == {"ctc"}
    for row_id, row in onnx_rows.iterrows():
        want = torch_rows.loc[row_id]
        assert character_error_rate(want["text"], row["text"]) <= MAX_CER, row_id
        assert row["confidence"] == pytest.approx(want["confidence"], abs=1e-4), row_id
        assert row["computed_s"] == pytest.approx(want["computed_s"]), row_id  # the same batches
        if row["text"] == want["text"]:  # same path: same words at the same times
            assert [(w["word"], w["start"], w["end"]) for w in row["words"]] == [
                (w["word"], w["start"], w["end"]) for w in want["words"]], row_id
    long = onnx_rows.loc["long.flac"]
    assert long["words"][-1]["end"] > 60  # stitched onto the whole file's timeline


def test_int8_transcripts_are_close_to_float(exports, corpus):
    # In process (the job is the same recognizer, checked above): float32 vs int8 exports.
    from speech.asr import load_front_end, load_recognizer

    manifest = read_manifest(exports["ctc-xlsr-int8"])
    assert manifest.quantization == "int8" and manifest.verification["int8"]["against"] == "float32 onnx"
    assert (exports["ctc-xlsr-int8"] / "model.onnx").stat().st_size < 0.5 * (exports["ctc-xlsr"] / "model.onnx").stat().st_size
    texts = {}
    for name in ("ctc-xlsr", "ctc-xlsr-int8"):
        options = TranscribeOptions(inputs=corpus, output="unused", model=str(exports[name]))
        front_end = load_front_end(options.model, options.asr)
        recognizer = load_recognizer(options.model, options.asr, "cpu", run=options.run)
        assert recognizer.engine == "onnxruntime"
        rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
        windows = [front_end.windows(decode(str(SAMPLES / r["path"]), RATE)) for r in rows]
        texts[name] = [t.text for t in recognizer.transcribe(windows)]
    cers = [character_error_rate(a, b) for a, b in zip(texts["ctc-xlsr"], texts["ctc-xlsr-int8"])]
    # Documented, not a target: a random tiny model has many near-tied frames (see docs/benchmarks.md).
    assert len(cers) == 10 and 0 <= float(np.mean(cers)) < 0.5, cers


def test_bad_onnx_inputs_get_one_line_and_exit_2(checkpoints, exports, tmp_path, capsys):
    def fails(argv, *messages):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        for message in messages:
            assert message in err, err

    # A graph that does not take what the processor gives: the base model's graph (no mask)
    # in the XLSR export's directory, caught by the driver before Ray starts.
    swapped = tmp_path / "swapped"
    shutil.copytree(exports["ctc-xlsr"], swapped)
    shutil.copy(exports["ctc-base"] / "model.onnx", swapped / "model.onnx")
    fails(["transcribe", str(SAMPLES), "-o", str(tmp_path / "o1"), "--model", str(swapped)],
          "model.onnx takes inputs [input_values (float32, rank 2)]", "onnx_manifest.json says")
    # A processor that returns a mask the graph does not take.
    masked = tmp_path / "masked"
    shutil.copytree(exports["ctc-base"], masked)
    for name in ("preprocessor_config.json", "processor_config.json"):  # transformers 5 reads the nested one
        config = json.loads((masked / name).read_text())
        inner = config.get("feature_extractor", config)
        inner["return_attention_mask"] = True
        (masked / name).write_text(json.dumps(config))
    fails(["transcribe", str(SAMPLES), "-o", str(tmp_path / "o2"), "--model", str(masked)],
          "its graph takes ['input_values']", "returns attention_mask")
    fails(["transcribe", str(SAMPLES), "-o", str(tmp_path / "o3"), "--model", str(exports["ctc-xlsr"]), "--dtype", "bfloat16"],
          "dtype bfloat16", "use dtype float32")
    fails(["convert", "onnx", str(checkpoints["ctc-xlsr"]), str(tmp_path / "q"), "--quantize", "int4"],
          "--quantize 'int4' is not supported; supported: int8")
    fails(["convert", "onnx", str(checkpoints["whisper"]), str(tmp_path / "w")],
          "is not a CTC model", "WhisperForConditionalGeneration")
    fails(["convert", "onnx", str(checkpoints["ctc-xlsr"]), str(exports["ctc-base"])], "exists and is not an empty directory")
    fails(["convert", "onnx", str(exports["ctc-xlsr-int8"]), str(tmp_path / "again"), "--quantize", "int8"],
          "already an ONNX export")
    assert not (tmp_path / "q").exists() and not (tmp_path / "w").exists()  # nothing half-written


def test_serve_accepts_onnx_directories(exports, kokoro_pair):
    from serve.app import ServeArgs, served_models

    options, _, _ = kokoro_pair
    args = ServeArgs.model_validate({"asr_models": [str(exports["ctc-xlsr"])], "tts_models": [options["onnx"].model]})
    assert [(m.kind, m.backend) for m in served_models(args)] == [("transcription", "ctc"), ("speech", "kokoro")]


# --- Kokoro ---------------------------------------------------------------------------------------

#: See speech.convert.onnx_kokoro: the first STFT frame's phase is +-pi by a rounding residue, which
#: PyTorch itself flips when its harmonic source moves by 4e-8; its reach is the first 30 ms, and
#: instance norms carry a flip to the rest of the clip at up to ~0.01.
FIRST_FRAME_SAMPLES = int(0.03 * 24_000)
AFTER_FIRST_FRAME = 0.02


@pytest.fixture(scope="module")
def kokoro_pair():
    from speech.testing.tts_checkpoints import build_kokoro_fixture
    from speech.tts import load_front_end, load_model

    source = build_kokoro_fixture(FIXTURES_DIR)
    export = onnx_export(FIXTURES_DIR, source)
    options = {name: SynthesizeOptions(input="x", output="y", model=str(path), speed=1.2)
               for name, path in (("torch", source), ("onnx", export))}
    return options, load_front_end(options["onnx"].tts), {name: load_model(o.tts, "cpu", o.run) for name, o in options.items()}


def _close(got: np.ndarray, want: np.ndarray) -> float:
    """Max |difference| after the first STFT frame's reach; lengths must be equal."""
    assert len(got) == len(want)
    return float(np.abs(got - want)[FIRST_FRAME_SAMPLES:].max())


def test_kokoro_onnx_audio_equals_pytorch(kokoro_pair):
    from speech.testing.tts_checkpoints import KOKORO_VOICES
    from speech.tts.frontend import prepare_row

    _, front_end, models = kokoro_pair
    assert models["onnx"].engine == "onnxruntime"
    utterances = [u for seed, (text, voice) in enumerate([("Hello there.", None), ("Hola.", KOKORO_VOICES[1])])
                  for u in prepare_row(front_end, text, voice=voice, language=None, seed=seed,
                                     max_text_chars=100).utterances]
    want = models["torch"].synthesize(utterances)
    got = models["onnx"].synthesize(utterances)
    for g, w in zip(got, want):
        assert _close(g, w) <= AFTER_FIRST_FRAME
        # Over the whole clip: a phase flip in the first frame, or float rounding, not another model.
        assert 10 * np.log10(np.sum(w**2) / np.sum((g - w) ** 2)) > 20


def test_kokoro_onnx_synthesis_job(kokoro_pair, ray_local, tmp_path):
    from jobs import synthesize
    from speech.tts.frontend import join_pieces, prepare_row

    options, front_end, models = kokoro_pair
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Good morning.\nSee you.\n")
    job = options["onnx"].model_copy(update={"input": str(corpus), "output": str(tmp_path / "out"), "cpus_per_actor": 0.5})
    synthesize.run(job)
    rows = synthesize.read_output(job.output).to_pylist()
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    for row in rows:
        written, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        utterances = prepare_row(front_end, row["text"], voice=None, language=None, seed=0,
                                 max_text_chars=100, speed=job.speed).utterances
        want = join_pieces(models["torch"].synthesize(utterances), pause_s=job.sentence_pause_s, sample_rate=rate)
        assert rate == 24_000 and _close(written, np.clip(want, -1, 1)) <= AFTER_FIRST_FRAME + 1 / 32768


def test_kokoro_convert_refuses_quantization(kokoro_pair, tmp_path, capsys):
    options, _, _ = kokoro_pair
    source = options["torch"].model
    assert cli_main(["convert", "onnx", source, str(tmp_path / "k"), "--quantize", "int8"]) == 2
    assert "quantization is offered for CTC models only" in capsys.readouterr().err
