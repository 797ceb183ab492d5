"""CTC fine-tuning on Ray Train: real local Ray, 2 CPU workers (DDP over gloo), a tiny real Wav2Vec2ForCTC.

The task: a dozen English words spoken by espeak-ng, made at test time, each its own text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import kill_session
from transformers import AutoModelForCTC, AutoProcessor

from cli import main as cli_main
from jobs import transcribe
from speech.options import TranscribeOptions
from speech.train.data import Example, epoch_batches, read_examples
from speech.train.loop import evaluate
from speech.train.model import load_for_training, save_for_inference
from speech.train.vocab import unknown_characters

WORDS = ["yes", "no", "up", "down", "left", "right", "stop", "go", "one", "two", "three", "four"]
EPOCHS = 8
KILL_AFTER = 2  # epochs checkpointed before the first run is killed


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """``train.jsonl``: 12 espeak-ng words (0.4-0.8 s, 22.05 kHz WAV) with their text."""
    root = tmp_path_factory.mktemp("words")
    for word in WORDS:
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(root / f"{word}.wav"), word], check=True)
    (root / "train.jsonl").write_text("\n".join(json.dumps({"path": f"{w}.wav", "text": w}) for w in WORDS))
    return root / "train.jsonl"


def _args(words, out, model, config):
    return ["finetune", str(words), "--eval", str(words), "-o", str(out), "--model", str(model), "--config", str(config)]


@pytest.fixture(scope="module")
def trained(ray_local, checkpoints, words, tmp_path_factory):
    """A run killed (SIGKILL of its whole session) after epoch 2's checkpoint, then rerun to the end.

    Returns ``(summary, history the killed run had checkpointed, output directory)``.
    """
    root = tmp_path_factory.mktemp("finetune")
    out, config = root / "out", root / "finetune.yaml"
    # 1 CPU and 1 torch thread per worker: two workers fit on two cores.
    config.write_text(f"workers: 2\ncpus_per_worker: 1\ntorch_threads: 1\nepochs: {EPOCHS}\nlr: 0.005\nbatch_seconds: 1.0\n")
    snapshot = out / "_train" / "run" / "checkpoint_manager_snapshot.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *_args(words, out, checkpoints["ctc-xlsr"], config)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            if snapshot.exists() and f"epoch-{KILL_AFTER:04d}" in snapshot.read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the first run ended (exit {proc.returncode}) before it could be killed"
    finally:
        kill_session(proc.pid)
        proc.wait()
    # The checkpoint a rerun resumes from is the last one Ray Train registered in its snapshot;
    # a later epoch's directory may be on disk already, written before the kill but never registered.
    latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]["checkpoint_dir_name"]
    before = json.loads((out / "_train" / "run" / latest / "train_state.json").read_text())["history"]
    assert KILL_AFTER <= len(before) < EPOCHS and not (out / "_summary.json").exists()

    assert cli_main(_args(words, out, checkpoints["ctc-xlsr"], config)) == 0
    return json.loads((out / "_summary.json").read_text()), before, out


def test_rerun_resumes_from_the_last_checkpoint(trained):
    summary, before, _ = trained
    assert [e["epoch"] for e in summary["epochs"]] == list(range(1, EPOCHS + 1))
    # The killed run's epochs are carried over as they were (their timings too), not trained again.
    assert summary["epochs"][: len(before)] == before
    assert summary["workers"] == 2 and summary["train_rows"] == 12 and summary["skipped"] == []


def test_training_loss_halves_and_train_set_cer_falls(trained, checkpoints, words):
    summary, _, _ = trained
    losses = [e["train_loss"] for e in summary["epochs"]]
    assert losses[-1] <= 0.5 * losses[0], losses
    # The starting checkpoint's CER on the same rows, scored the same way.
    model, processor = load_for_training(str(checkpoints["ctc-xlsr"]))
    examples, _ = read_examples(str(words))
    torch.manual_seed(0)
    start = evaluate(model, epoch_batches(examples, 1.0, epoch=0, seed=0), processor, torch.device("cpu"))
    assert summary["epochs"][-1]["eval_cer"] < start.cer, (start.cer, [e["eval_cer"] for e in summary["epochs"]])
    assert all(e["eval_wer"] >= 0 for e in summary["epochs"])


def test_final_model_is_what_transcribe_takes(trained, words, tmp_path):
    summary, _, out = trained
    assert summary["final_model"] == str(out / "final")
    options = TranscribeOptions(inputs=[str(words)], output=str(tmp_path / "asr"), model=summary["final_model"], torch_threads=1)
    result = transcribe.run(options)
    assert result.rows == 12 and result.ok == 12 and result.backend == "ctc"
    # The same weights as the last checkpoint, loaded by plain transformers.
    final = AutoModelForCTC.from_pretrained(out / "final")
    last = AutoModelForCTC.from_pretrained(sorted((out / "_train" / "run").glob("epoch-*"))[-1])
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), last.state_dict().values()))


def test_extend_vocab_adds_characters_and_output_rows(checkpoints, tmp_path):
    model, processor = load_for_training(str(checkpoints["ctc-xlsr"]), new_characters=["é", "ß"], seed=0)
    original = AutoModelForCTC.from_pretrained(checkpoints["ctc-xlsr"])
    size = original.config.vocab_size
    assert model.config.vocab_size == size + 2 and model.lm_head.out_features == size + 2
    assert torch.equal(model.lm_head.weight[:size], original.lm_head.weight)
    assert unknown_characters(processor.tokenizer, ["café straße"]) == {}
    save_for_inference(model, processor, tmp_path / "grown")
    reloaded = AutoProcessor.from_pretrained(tmp_path / "grown")
    assert reloaded.tokenizer.convert_tokens_to_ids("ß") == size + 1
    assert AutoModelForCTC.from_pretrained(tmp_path / "grown").lm_head.out_features == size + 2


def test_batches_cover_every_row_with_equal_steps_per_worker():
    examples = [Example(str(i), f"{i}.wav", "a", 0.3 + 0.1 * i) for i in range(11)]
    shards = [epoch_batches(examples, 1.5, epoch=3, seed=1, rank=r, world=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    seen = [e.id for shard in shards for batch in shard for e in batch]
    assert set(seen) == {e.id for e in examples}
    assert all(len(batch) * max(e.duration_s for e in batch) <= 1.5 or len(batch) == 1 for s in shards for batch in s)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-text", "has no 'text' column"),
        ("no-rows", "no usable training rows"),
        ("no-ctc-head", "has no CTC head"),
        ("unknown-chars", "not in the tokenizer's vocabulary: 'Ω' (1 rows); pass --extend-vocab"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, message, checkpoints, words, tmp_path, capsys):
    manifest, model = tmp_path / "m.jsonl", checkpoints["ctc-xlsr"]
    first = str(words.parent / "yes.wav")
    rows = {
        "no-text": [{"path": first}],
        "no-rows": [{"path": str(tmp_path / "missing.wav"), "text": "yes"}],
        "no-ctc-head": [{"path": first, "text": "yes"}],
        "unknown-chars": [{"path": first, "text": "yes Ω"}],
    }[case]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    if case == "no-ctc-head":
        model = checkpoints["whisper"]
    assert cli_main(["finetune", str(manifest), "-o", str(tmp_path / "out"), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
