"""Fused preparation (jobs/fused.py) against the separate prepare stage: the same rows, errors
included, from real local Ray and a tiny real-architecture model; and the rule that picks one."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SAMPLES

from jobs import fused, transcribe
from speech.audio import decode
from speech.options import OptionsError, TranscribeOptions, load_options

RATE = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 speech files of 0.3-12 s (two longer than the 8 s chunk), plus files that fail."""
    root = tmp_path_factory.mktemp("fused")
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    source = np.concatenate([decode(str(SAMPLES / r["path"]), RATE) for r in rows])
    rng = np.random.default_rng(5)
    for i, seconds in enumerate([*rng.uniform(0.3, 4.0, size=38), 10.0, 12.0]):
        start = int(rng.integers(0, len(source) - int(seconds * RATE)))
        sf.write(root / f"utt{i:02d}.wav", source[start : start + int(seconds * RATE)], RATE)
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_bytes(b"not audio\n" * 40)
    sf.write(root / "nan.wav", np.full(800, np.nan, np.float32), RATE, subtype="FLOAT")
    return root


def _run(corpus, out, model, prepare: str) -> pd.DataFrame:
    # Windows of 8 files: several windows per fused call and several calls; chunks of 8 s.
    options = TranscribeOptions(inputs=[str(corpus)], output=str(out), model=str(model), torch_threads=1,
                                batch_seconds=4, prepare_window=8, chunk_length_s=8, prepare=prepare)
    summary = transcribe.run(options)
    assert summary.rows == 43 and summary.errors == 3
    return transcribe.read_output(str(out)).to_pandas().set_index("id").sort_index()


def test_fused_rows_equal_separate_rows(ray_local, checkpoints, corpus, tmp_path, caplog):
    """Row for row, every column (text, words, confidence, computed seconds, errors), both paths."""
    model = checkpoints["ctc-xlsr"]
    with caplog.at_level(logging.INFO, logger="jobs.fused"):
        separate = _run(corpus, tmp_path / "separate", model, "separate")
        fused_rows = _run(corpus, tmp_path / "fused", model, "fused")
    assert "prepare: separate actors (set by the prepare option)" in caplog.text
    assert "prepare: fused into the model actors (set by the prepare option)" in caplog.text
    assert list(separate.columns) == list(fused_rows.columns)
    pd.testing.assert_frame_equal(separate, fused_rows)
    assert separate["text"].notna().sum() == 40 and (separate["computed_s"] > separate["duration_s"]).any()
    assert "empty file" in fused_rows.loc["empty.wav", "error"] and "NaN" in fused_rows.loc["nan.wav", "error"]


@pytest.mark.parametrize(
    ("prepare", "gpus", "cpus", "actors", "given", "expected", "reason"),
    [
        ("auto", 0, 2, 1, {}, True, "auto: 2 cluster CPUs for 1 CPU model replica, under 4 per replica"),
        ("auto", 0, 16, 2, {}, False, "auto: 16 cluster CPUs for 2 CPU model replicas, at least 4 per replica"),
        ("auto", 0, 8, 4, {}, True, "auto: 8 cluster CPUs for 4 CPU model replicas, under 4 per replica"),
        ("auto", 1, 2, 1, {}, False, "auto: the model actors use GPUs"),
        # The separate stage sized by hand (even at the defaults' values) is not dropped silently.
        ("auto", 0, 2, 1, {"prepare_actors": 1}, False, "auto: prepare_actors given"),
        ("auto", 0, 2, 1, {"prepare_actors": 2, "cpus_per_prepare": 0.5}, False,
         "auto: prepare_actors, cpus_per_prepare given"),
        ("fused", 1, 64, 1, {}, True, "set by the prepare option"),
        ("separate", 0, 2, 1, {"cpus_per_prepare": 1}, False, "set by the prepare option"),
    ],
)
def test_the_rule_and_its_log_line(prepare, gpus, cpus, actors, given, expected, reason, caplog):
    options = load_options(TranscribeOptions, None, {"inputs": ["x"], "output": "o", "model": "m", "prepare": prepare,
                                                     "gpus_per_actor": gpus, "actors": actors, **given})
    with caplog.at_level(logging.INFO, logger="jobs.fused"):
        assert fused.choose(options, cpus) is expected
    assert len(caplog.records) == 1 and reason in caplog.text


def test_prepare_option_is_checked():
    with pytest.raises(ValueError, match="prepare"):
        TranscribeOptions(inputs=["x"], output="o", model="m", prepare="both")


def test_a_fused_stage_refuses_the_separate_stages_sizes():
    with pytest.raises(OptionsError, match=r"^invalid options: cpus_per_prepare: they size the "
                                           r"separate prepare stage, but prepare is 'fused' \(drop them, or use "
                                           r"prepare: separate\)$"):
        load_options(TranscribeOptions, None, {"inputs": ["x"], "output": "o", "model": "m", "prepare": "fused",
                                               "cpus_per_prepare": 1})


@pytest.mark.parametrize(("rows", "actors", "expected"), [(43, 1, 32), (43, 2, 24), (43, 8, 8), (5, 1, 8), (900, 1, 32)])
def test_calls_are_whole_windows_spread_over_the_pool(rows, actors, expected):
    options = TranscribeOptions(inputs=["x"], output="o", model="m", prepare_window=8, actors=actors)
    assert fused.rows_per_call(options, rows) == expected


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_the_prepare_thread_alone_yields_to_the_model():
    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice()
    with ThreadPoolExecutor(1, initializer=fused._lower_priority) as thread:
        assert thread.submit(nice).result() == min(19, before + fused.PREPARE_NICENESS)
    assert nice() == before  # the calling thread (the model's) is untouched
