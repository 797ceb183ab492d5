"""`speech bench asr`: the benchmark runs end to end and reports every figure (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES_DIR, run_bench

from bench.corpus import CorpusSpec, build_corpus, durations, repeat_manifest
from bench.memory import TreeMemory, role
from cli import main

SYSTEMS = ("ours", "naive", "unsorted", "ceiling", "ours_10x", "ours_onnx", "ours_onnx_int8")
SCALE = 3  # memory run multiple, small to keep the test fast


def test_durations_are_log_normal_within_bounds_and_deterministic():
    spec = CorpusSpec(files=2000, seed=7)
    d = durations(spec)
    assert d.min() >= spec.min_s and d.max() <= spec.max_s
    assert 5.0 < d.mean() < 7.0  # log-normal with mean ~6 s, slightly trimmed by clipping
    assert np.median(d) < d.mean()  # right-skewed: many short files, a few long ones
    assert np.array_equal(d, durations(CorpusSpec(files=2000, seed=7)))
    assert not np.array_equal(d, durations(CorpusSpec(files=2000, seed=8)))


def test_corpus_files_match_manifest_and_repeat(tmp_path):
    import soundfile as sf

    corpus = build_corpus(tmp_path, CorpusSpec(files=5, seed=3))
    assert [round(sf.info(p).duration, 4) for p in corpus.paths] == [round(d, 4) for d in corpus.durations_s]
    assert build_corpus(tmp_path, CorpusSpec(files=5, seed=3)).paths == corpus.paths  # cached, not rebuilt
    rows = [json.loads(line) for line in repeat_manifest(corpus, 3, tmp_path / "x3.jsonl").read_text().splitlines()]
    assert len(rows) == 15 and len({r["id"] for r in rows}) == 15
    assert [r["path"] for r in rows] == corpus.paths * 3


def test_tree_memory_counts_grandchildren():
    # A child that starts a grandchild holding ~300 MiB: only a tree-wide sum sees it. 3 s held:
    # several PSS samples (one every pss_every * interval_s = 0.6 s) even on a loaded machine.
    grandchild = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    process = subprocess.Popen([sys.executable, "-c", child])
    with TreeMemory(process.pid, interval_s=0.1) as memory:
        process.wait()
    assert process.returncode == 0
    assert memory.peak_processes >= 2
    assert memory.peak_rss_mb >= 300 and memory.peak_pss_mb >= 300


def test_a_peak_between_pss_reads_is_seen():
    # PSS is read once (the first sample); a 300 MiB buffer held ~1 s later is seen only by
    # carrying PSS forward with RSS, and the process's own peak RSS is the kernel's (VmHWM).
    code = ("import time; time.sleep(1.0); b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "time.sleep(1.0); del b; time.sleep(1.0)")
    process = subprocess.Popen([sys.executable, "-c", code])
    with TreeMemory(process.pid, interval_s=0.05, pss_every=10**6) as memory:
        process.wait()
    assert process.returncode == 0 and memory.samples > 20
    (own,) = memory.processes.values()
    assert memory.peak_pss_mb >= 300 and own.peak_pss_mb >= 300 and own.peak_rss_mb >= 300
    assert own.pss_mb is not None and own.pss_mb < 100  # the one read was before the buffer


def test_each_process_cpu_seconds_are_kept():
    # A child that spins ~1 s of CPU, then idles 0.5 s so that a sample sees its total.
    code = "import time; t = time.process_time()\nwhile time.process_time() - t < 1.0: pass\ntime.sleep(0.5)"
    process = subprocess.Popen([sys.executable, "-c", code])
    with TreeMemory(process.pid, interval_s=0.05) as memory:
        process.wait()
    assert process.returncode == 0
    (own,) = memory.processes.values()
    assert 0.9 <= own.cpu_s < 5.0
    assert memory.by_role()[own.role]["cpu_s"] == round(own.cpu_s, 1)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """``(report, printed table)`` of one quick run (with the ONNX systems), shared by the tests below."""
    out = tmp_path_factory.mktemp("bench")
    return run_bench(out, "asr", "--quick", "--files", "4", "--memory-scale", str(SCALE), "--engine", "onnx")


def test_quick_report_has_every_figure(quick_report):
    report, table = quick_report
    for label in ("ours: speech transcribe", "1 at a time", "batch 16 unsorted", "ceiling", f"corpus x{SCALE}"):
        assert label in table
    assert set(report["rtfx"]) == set(SYSTEMS)
    assert all(v > 0 for v in report["rtfx"].values())
    for key in ("ceiling_fraction", "speedup_vs_naive", "speedup_vs_unsorted", "peak_rss_ratio_10x", "peak_pss_ratio_10x"):
        assert report[key] > 0, key
    # Ratios are reported to 3 decimals.
    assert report["ceiling_fraction"] == pytest.approx(report["rtfx"]["ours"] / report["rtfx"]["ceiling"], abs=2e-3)
    assert report["speedup_vs_naive"] == pytest.approx(report["rtfx"]["ours"] / report["rtfx"]["naive"], abs=2e-3)
    assert all(0 < v <= 1 for v in report["padding_efficiency"].values())
    assert report["padding_efficiency"]["naive"] == 1.0
    assert set(report["peak_rss_mb"]) == set(SYSTEMS)
    # Ours runs a Ray driver, raylet, GCS and workers: the tree holds several processes.
    assert report["systems"]["ours"]["peak_processes"] >= 4
    assert all(v > 0 for v in report["peak_pss_mb"].values())
    assert {t["target"] for t in report["targets"]} >= {"ours / ceiling RTFx", "ours padding efficiency"}
    stages = report["profile"]["stages_s"]
    assert {"network forward", "read + decode + resample", "features + chunking", "write parquet"} <= set(stages)
    assert all(v >= 0 for v in stages.values())


def test_every_system_ran_on_the_same_audio(quick_report):
    report, _ = quick_report
    corpus = report["settings"]["corpus"]
    assert corpus["files"] == 4
    for name in ("ours", "naive", "unsorted", "ceiling", "ours_onnx", "ours_onnx_int8"):
        assert report["systems"][name]["files"] == 4, name
        assert report["systems"][name]["audio_s"] == pytest.approx(corpus["audio_s"], abs=0.05), name
    assert report["systems"]["ours_10x"]["files"] == 4 * SCALE
    assert report["systems"]["ours_10x"]["audio_s"] == pytest.approx(SCALE * corpus["audio_s"], abs=0.2)


def test_onnx_systems_are_reported_against_pytorch(quick_report):
    report, table = quick_report
    rtfx, onnx = report["rtfx"], report["onnx"]
    assert "ours on onnxruntime, float32 export" in table and "ONNX Runtime: float32 job / PyTorch ceiling" in table
    assert onnx["float32_vs_ceiling"] == pytest.approx(rtfx["ours_onnx"] / rtfx["ceiling"], abs=2e-3)
    assert onnx["int8_vs_ours"] == pytest.approx(rtfx["ours_onnx_int8"] / rtfx["ours"], abs=2e-3)
    assert onnx["float32_cer_vs_pytorch"] <= 0.002  # the float32 export transcribes like PyTorch
    assert 0 <= onnx["int8_cer_vs_float32"] < 1
    assert report["settings"]["onnx_models"]["ours_onnx"].endswith("ctc-xlsr-onnx")
    assert "ours on ONNX float32 / PyTorch ceiling RTFx" in {t["target"] for t in report["targets"]}


def test_first_batch_and_each_process_are_reported(quick_report):
    """Our job's seconds to its first model call, and its processes' own peaks by role."""
    report, table = quick_report
    for name in ("ours", "ours_10x"):
        first, system = report["first_batch_s"][name], report["systems"][name]
        assert system["startup_s"] < first < system["wall_s"], name  # after Ray's start, before the end
    assert "first batch s" in table and "ceiling" not in report["first_batch_s"]
    # The quick run is fused on this 2-CPU machine (prepare auto): one model actor, no prepare actor.
    roles = report["memory_by_process"]["ours_10x"]
    assert {"driver", "raylet", "GCS", "model actor (fused prepare)"} <= set(roles)
    assert "prepare actor" not in roles and roles["model actor (fused prepare)"]["processes"] == 1
    assert all(r["peak_pss_mb"] > 0 and r["peak_rss_mb"] >= r["peak_pss_mb"] for r in roles.values())
    # Each role's sum of its processes' own peaks is at least the whole tree's peak at one time.
    assert sum(r["peak_pss_mb"] for r in roles.values()) >= report["peak_pss_mb"]["ours_10x"] - 1
    assert "| model actor (fused prepare) | 1/1 |" in table
    # CPU seconds per role: the model actor did the job's work, so it used CPU in both runs.
    assert all(r["cpu_s"] > 0 for r in (report["memory_by_process"]["ours"]["model actor (fused prepare)"],
                                         roles["model actor (fused prepare)"]))
    assert "CPU s x1 (share)" in table


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["ray::MapWorker(MapBatches(PrepareUnits))"], "prepare actor"),
        (["ray::MapWorker(MapBatches(FaultyRecognizeUnits))"], "actor FaultyRecognizeUnits"),
        (["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--raylet_socket_name=/x/raylet"], "raylet"),
        (["/venv/bin/python", "-u", "/venv/lib/ray/_private/log_monitor.py", "--session-dir=/x"], "log monitor"),
        (["/venv/bin/python", "/venv/lib/ray/_private/workers/default_worker.py", "--raylet-name=/x/raylet"],
         "worker (starting)"),
        (["ray::IDLE"], "idle worker"),
        (["ray::Write"], "ray worker Write"),
        (["ray::_StatsActor.get_dataset_metadata"], "ray worker _StatsActor"),
    ],
)
def test_process_roles(command, expected):
    assert role(command) == expected


def test_unsorted_padding_efficiency_is_the_corpus_order_figure(quick_report):
    report, _ = quick_report
    # Four files in corpus order form one batch of 16 at most: padded to the longest.
    d = durations(CorpusSpec(files=4))
    assert report["padding_efficiency"]["unsorted"] == pytest.approx(d.sum() / (4 * d.max()), abs=1e-3)


def test_failing_system_is_reported_with_its_log(tmp_path, capsys):
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    argv = ["bench", "asr", "--quick", "--files", "2", "--model", str(not_a_model), "--cache", str(FIXTURES_DIR),
            "--work", str(tmp_path / "work")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ceiling failed" in err and "log.txt" in err
