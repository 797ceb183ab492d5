"""The embedding job end to end: real local Ray, real transformers, tiny real-architecture encoders.

The reference is transformers itself: ``hidden_states[layer]`` of a single-file forward,
averaged over all its frames.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from conftest import SAMPLES
from transformers import AutoFeatureExtractor, AutoModel

from cli import main as cli_main
from jobs import embed
from speech.audio import decode
from speech.options import EmbedOptions

RATE = 16000
CHUNK_S, STRIDE_S = 4.0, 0.5  # files over 4 s are chunked in the xlsr runs
LONG = "long.wav"  # 10 s: three chunks


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real speech clips 0.4-3.5 s (two of exactly 2 s), one 10 s file, and one that is not audio."""
    root = tmp_path_factory.mktemp("embed-corpus")
    manifest = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    source = np.concatenate([decode(str(SAMPLES / row["path"]), RATE) for row in manifest])
    durations = [0.4, 0.9, 1.3, 2.0, 2.0, 2.7, 3.5]
    offset = 0
    for i, seconds in enumerate(durations):
        n = int(seconds * RATE)
        sf.write(root / f"clip{i}.wav", source[offset : offset + n], RATE)
        offset += n
    sf.write(root / LONG, source[offset : offset + 10 * RATE], RATE)
    (root / "broken.wav").write_bytes(b"RIFF but not really a wav file" * 4)
    return root


def _run(tmp_path, corpus, model, name, **kwargs):
    options = EmbedOptions(inputs=[str(corpus)], output=str(tmp_path / name), model=str(model), torch_threads=1,
                           batch_seconds=8, **kwargs)
    summary = embed.run(options)
    return options, summary, embed.read_output(options)


@pytest.fixture(scope="module")
def xlsr_runs(ray_local, checkpoints, corpus, tmp_path_factory):
    """Two runs on the XLSR-style (layer-norm, attention-mask) fixture: layer 1 mean-pooled, and every layer per frame."""
    tmp = tmp_path_factory.mktemp("embed-xlsr")
    chunking = dict(chunk_length_s=CHUNK_S, stride_length_s=STRIDE_S)
    mean = _run(tmp, corpus, checkpoints["ctc-xlsr"], "mean", layer=1, pooling="mean", **chunking)
    frames = _run(tmp, corpus, checkpoints["ctc-xlsr"], "frames", layer="all", pooling="none", **chunking)
    return mean, frames


def _reference(model_dir, path, layer: int) -> np.ndarray:
    """``hidden_states[layer]`` of a single-file forward: ``[frames, hidden]``."""
    model = AutoModel.from_pretrained(model_dir).eval()
    features = AutoFeatureExtractor.from_pretrained(model_dir)(decode(str(path), RATE), sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        return model(features.input_values, output_hidden_states=True).hidden_states[layer][0].numpy()


def _matrix(table) -> np.ndarray:
    """The README's recipe: ok rows' vectors as one [n, hidden] matrix, without a per-row copy."""
    ok = table.filter(pc.is_null(table["error"]))
    column = ok["embedding"].combine_chunks()
    return column.flatten().to_numpy().reshape(ok.num_rows, column.type.list_size)


def test_mean_pooled_vectors_equal_a_single_file_forward_in_padded_batches(xlsr_runs, checkpoints, corpus):
    (_options, summary, table), _ = xlsr_runs
    by_id = dict(zip(table["id"].to_pylist(), _matrix(table)))
    short = sorted(p for p in corpus.glob("clip*.wav"))
    for path in short:
        expected = _reference(checkpoints["ctc-xlsr"], path, layer=1).mean(axis=0)
        np.testing.assert_allclose(by_id[path.name], expected, atol=1e-4, err_msg=path.name)
    assert summary.rows == len(short) + 2 and summary.ok == len(short) + 1 and summary.errors == 1
    assert table["layer"].to_pylist() == [1] * table.num_rows
    assert set(table["frame_rate_hz"].to_pylist()) == {50.0}


@pytest.fixture(scope="module")
def base_run(ray_local, checkpoints, corpus, tmp_path_factory):
    """The wav2vec2-base-style (group-norm, no mask) fixture through the CLI, default layer and pooling."""
    out = tmp_path_factory.mktemp("embed-base") / "out"
    config = out.parent / "embed.yaml"
    config.write_text("torch_threads: 1\nbatch_seconds: 8\n")
    status = cli_main(["embed", str(corpus), "-o", str(out), "--model", str(checkpoints["ctc-base"]), "--config", str(config)])
    assert status == 0
    options = EmbedOptions(inputs=[str(corpus)], output=str(out), model=str(checkpoints["ctc-base"]))
    return json.loads((out / "_summary.json").read_text()), embed.read_output(options)


def test_group_norm_model_batches_only_equal_lengths_and_still_matches(base_run, checkpoints, corpus):
    # The wav2vec2-base-style fixture takes no attention mask: padding would change its output,
    # so only equal-length files (the two 2 s clips) may share a forward pass.
    summary, table = base_run
    vectors = dict(zip(table.filter(pc.is_null(table["error"]))["id"].to_pylist(), _matrix(table)))
    for path in sorted(corpus.glob("*.wav")):
        if path.name == "broken.wav":
            continue
        expected = _reference(checkpoints["ctc-base"], path, layer=-1).mean(axis=0)
        np.testing.assert_allclose(vectors[path.name], expected, atol=1e-4, err_msg=path.name)
    assert table["layer"].to_pylist() == [2] * table.num_rows  # -1 resolved: the fixture has 2 layers
    assert summary["ok"] == 8 and summary["errors"] == 1 and summary["layer"] == -1 and summary["hidden_size"] == 32


def test_per_frame_output_covers_every_real_frame_of_every_layer(xlsr_runs, checkpoints, corpus):
    (_, _, pooled), (_options, _, table) = xlsr_runs
    rows = {row["id"]: row for row in table.to_pylist()}
    mean = dict(zip(pooled["id"].to_pylist(), pooled["embedding"].to_pylist()))
    model = AutoModel.from_pretrained(checkpoints["ctc-xlsr"])
    for name, row in rows.items():
        if name == "broken.wav":
            assert row["embedding"] is None and row["error"]
            continue
        layers = np.asarray(row["embedding"], np.float32)  # [layers, frames, hidden]
        assert row["layer"] is None and layers.shape[0] == model.config.num_hidden_layers + 1
        samples = len(decode(str(corpus / name), RATE))
        unchunked = int(model._get_feat_extract_output_lengths(torch.tensor(samples)))
        if name == LONG:  # stitched chunks: the file's timeline, up to a frame of rounding per chunk
            assert abs(layers.shape[1] - unchunked) <= 3
        else:
            assert layers.shape[1] == unchunked
            np.testing.assert_allclose(layers[1], _reference(checkpoints["ctc-xlsr"], corpus / name, 1), atol=1e-4)
        # Mean pooling is the mean of exactly these frames, for chunked files too.
        np.testing.assert_allclose(layers[1].mean(axis=0), mean[name], atol=1e-5)
    # The whole column as one [files, layers, frames...] buffer: offsets say where each file is.
    assert table.schema.field("embedding").type.value_type.value_type.list_size == 32


def test_output_loads_with_datasets_and_as_one_matrix(xlsr_runs):
    import datasets

    (options, _, table), _ = xlsr_runs
    loaded = datasets.load_dataset("parquet", data_files=f"{options.output}/*.parquet", split="train")
    assert sorted(loaded["id"]) == sorted(table["id"].to_pylist())
    matrix = _matrix(table)
    by_id = dict(zip(table.filter(pc.is_null(table["error"]))["id"].to_pylist(), matrix))
    for row in loaded:
        if row["error"] is None:
            np.testing.assert_array_equal(np.asarray(row["embedding"], np.float32), by_id[row["id"]])
    # Zero-copy: the matrix is a view on the Arrow buffer, not a per-row copy.
    assert not matrix.flags.owndata
    assert pq.read_table(options.output).schema.field("embedding").type.list_size == 32


def test_bad_file_gets_its_error_row(xlsr_runs):
    (_, _, table), _ = xlsr_runs
    broken = table.filter(pc.equal(table["id"], "broken.wav")).to_pylist()[0]
    assert "cannot read audio header" in broken["error"] and broken["embedding"] is None


def test_cli_refuses_models_and_layers_it_cannot_use(checkpoints, tmp_path, capsys):
    for args, message in [
        (["--model", str(checkpoints["whisper"])], "not a wav2vec2-family speech encoder"),
        (["--model", str(checkpoints["ctc-xlsr"]), "--layer", "7"], "layer 7: model has hidden states 0..2"),
        (["--model", str(tmp_path)], "cannot load model"),
    ]:
        assert cli_main(["embed", str(SAMPLES), "-o", str(tmp_path / "refused"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
