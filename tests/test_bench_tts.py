"""`speech bench tts`: the benchmark runs end to end and reports every figure (no timing thresholds)."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES_DIR, run_bench

from bench.tts import write_corpus
from cli import main

SYSTEMS = ("ours", "loop", "ceiling")
ROWS = 4


def test_corpus_is_seeded_log_normal_and_sayable(tmp_path):
    stats = write_corpus(tmp_path / "a.jsonl", 400, seed=3)
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == stats["rows"] == 400 and len({r["id"] for r in rows}) == 400
    words = [len(r["text"].split()) for r in rows]
    assert 10 < stats["words_mean"] < 14 and stats["words_min"] >= 2 and stats["words_max"] <= 48
    assert sorted(words)[200] < stats["words_mean"]  # right-skewed: median below the mean
    assert stats["characters"] == sum(len(r["text"]) for r in rows)
    # Rows over 20 words are two sentences; every text is lower-case ASCII words and periods.
    assert sum(r["text"].count(".") == 2 for r in rows) == stats["two_sentence_rows"] > 0
    assert all(all(c.isascii() and (c.isalpha() or c in " .") for c in r["text"]) for r in rows)
    write_corpus(tmp_path / "b.jsonl", 400, seed=3)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    write_corpus(tmp_path / "c.jsonl", 400, seed=4)
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """``(report, printed table)`` of one quick ChatTTS run, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench-tts")
    return run_bench(out, "tts", "--quick", "--utterances", str(ROWS))


def test_quick_report_has_every_figure(quick_report):
    report, table = quick_report
    for label in ("ours: speech synthesize", "loop: same backend", "ceiling: model calls only", "speedup_vs_loop"):
        assert label in table
    assert set(report["systems"]) == set(SYSTEMS)
    for name, figures in report["systems"].items():
        for key in ("wall_s", "audio_s", "rtfx", "chars_per_s", "peak_rss_mb", "peak_pss_mb"):
            assert figures[key] > 0, (name, key)
        assert figures["startup_s"] >= 0
    assert report["systems"]["loop"]["startup_s"] > 0 and report["systems"]["ours"]["startup_s"] > 0
    assert 0 < report["systems"]["loop"]["model_s"] < report["systems"]["loop"]["wall_s"]
    # Ours runs a Ray driver, raylet, GCS and workers: the tree holds several processes.
    assert report["systems"]["ours"]["peak_processes"] >= 4
    assert report["settings"]["backend"] == "chattts" and report["settings"]["model_parameters"] > 0


def test_ratios_equal_their_definitions(quick_report):
    report, _ = quick_report
    systems, rtfx = report["systems"], report["rtfx"]
    chars = report["settings"]["corpus"]["characters"]
    for name, figures in systems.items():
        assert rtfx[name] == pytest.approx(figures["audio_s"] / figures["wall_s"], abs=2e-3)
        assert report["chars_per_s"][name] == pytest.approx(chars / figures["wall_s"], abs=0.01)
    assert report["speedup_vs_loop"] == pytest.approx(rtfx["ours"] / rtfx["loop"], abs=2e-3)
    assert report["ceiling_fraction"] == pytest.approx(rtfx["ours"] / rtfx["ceiling"], abs=2e-3)
    loop = systems["loop"]
    assert report["batching_gain"] == pytest.approx(rtfx["ceiling"] / (loop["audio_s"] / loop["model_s"]), rel=2e-3)
    assert report["loop_model_share"] == pytest.approx(loop["model_s"] / loop["wall_s"], abs=2e-3)


def test_every_system_made_the_same_audio(quick_report):
    report, _ = quick_report
    checks = report["checks"]
    assert checks["rows"] == dict.fromkeys(SYSTEMS, ROWS)
    assert len(set(checks["pieces"].values())) == 1 and checks["pieces"]["loop"] >= ROWS
    # ChatTTS is seeded per piece and its batched decode keeps exact lengths: equal row by row.
    assert checks["lengths_equal"] and checks["length_mismatches"] == {"ours": 0, "ceiling": 0}
    audio = {name: figures["audio_s"] for name, figures in report["systems"].items()}
    assert audio["ours"] == pytest.approx(audio["loop"], abs=1e-3) == pytest.approx(audio["ceiling"], abs=1e-3)


def test_unknown_model_fails_with_the_system_log(tmp_path, capsys):
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    argv = ["bench", "tts", "--quick", "--backend", "vits", "--utterances", "1", "--model", str(not_a_model),
            "--cache", str(FIXTURES_DIR), "--work", str(tmp_path / "work")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ceiling failed" in err and "log.txt" in err


def test_kokoro_onnx_mode_runs_beside_pytorch(tmp_path):
    report, table = run_bench(tmp_path, "tts", "--quick", "--backend", "kokoro", "--engine", "onnx", "--utterances", "2")
    assert set(report["systems"]) == {*SYSTEMS, "ceiling_onnx", "ours_onnx"}
    assert "ours on onnxruntime" in table and "ONNX Runtime / PyTorch RTFx" in table
    rtfx = report["rtfx"]
    assert report["onnx_vs_torch"]["ceiling"] == pytest.approx(rtfx["ceiling_onnx"] / rtfx["ceiling"], abs=2e-3)
    assert report["onnx_vs_torch"]["ours"] == pytest.approx(rtfx["ours_onnx"] / rtfx["ours"], abs=2e-3)
    # Same durations from the text graph: every ONNX row has the PyTorch row's length.
    assert report["checks"]["lengths_equal"], report["checks"]
    assert report["checks"]["rows"]["ours_onnx"] == 2
