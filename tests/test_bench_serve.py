"""`speech bench serve --quick`: the real app under a bounded load, batching on vs off, and live
transcription sessions with --realtime (no timing thresholds)."""

from __future__ import annotations

import psutil
import pytest
from conftest import FIXTURES_DIR, run_bench

from bench.asr import QUICK_FILES
from bench.corpus import CorpusSpec, build_corpus
from bench.realtime import QUICK_CLIPS, QUICK_SESSIONS, SILENCE_MS
from bench.serve import QUICK_CONCURRENCY, QUICK_REQUESTS
from cli import main

SETTINGS = ("on", "off")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """``(report, printed table)`` of one quick run with the CLI's defaults, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench-serve")
    return run_bench(out, "serve", "--quick")


def test_every_request_is_answered_and_every_figure_is_positive(quick_report):
    report, table = quick_report
    assert report["settings"]["requests"] == QUICK_REQUESTS
    assert report["settings"]["concurrency"] == QUICK_CONCURRENCY
    for setting in SETTINGS:
        figures = report["batching"][setting]
        assert figures["requests"] == QUICK_REQUESTS and figures["errors"] == 0, setting
        assert sum(figures["batch_sizes"]["histogram"].values()) == QUICK_REQUESTS, setting
        for key in ("wall_s", "audio_s", "throughput_rps", "audio_s_per_s", "startup_s", "peak_rss_mb", "peak_pss_mb"):
            assert figures[key] > 0, (setting, key)
        latency = figures["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], setting
        assert figures["throughput_rps"] == pytest.approx(figures["requests"] / figures["wall_s"], rel=1e-3)
        sizes = figures["batch_sizes"]
        assert sizes["mean_per_call"] == pytest.approx(QUICK_REQUESTS / sizes["model_calls"], rel=0.01), setting
        assert f"| {setting} |" in table
    assert "On / off: throughput" in table


def test_requests_upload_the_corpus_in_order(quick_report):
    report, _ = quick_report
    corpus = build_corpus(FIXTURES_DIR, CorpusSpec(files=QUICK_FILES))
    expected = sum(corpus.durations_s[i % len(corpus.paths)] for i in range(QUICK_REQUESTS))
    for setting in SETTINGS:
        figures = report["batching"][setting]
        assert figures["audio_s"] == pytest.approx(expected, abs=0.05), setting
        assert figures["audio_s_per_s"] == pytest.approx(expected / figures["wall_s"], rel=1e-3), setting


def test_ratios_equal_their_definitions(quick_report):
    report, _ = quick_report
    on, off = report["batching"]["on"], report["batching"]["off"]
    assert report["throughput_ratio"] == pytest.approx(on["throughput_rps"] / off["throughput_rps"], abs=2e-3)
    assert report["p50_ratio"] == pytest.approx(on["latency_ms"]["p50"] / off["latency_ms"]["p50"], abs=2e-3)
    assert report["p99_ratio"] == pytest.approx(on["latency_ms"]["p99"] / off["latency_ms"]["p99"], abs=2e-3)
    assert all(report[k] > 0 for k in ("throughput_ratio", "p50_ratio", "p99_ratio"))


def test_batching_on_shares_model_calls_and_off_does_not(quick_report):
    report, _ = quick_report
    on, off = report["batching"]["on"], report["batching"]["off"]
    assert on["user_config"]["max_batch_size"] > 1 and off["user_config"]["max_batch_size"] == 1
    assert on["batch_sizes"]["max"] > 1  # concurrent requests met in one model call
    assert on["batch_sizes"]["max"] <= min(on["user_config"]["max_batch_size"], QUICK_CONCURRENCY)
    assert off["batch_sizes"]["histogram"] == {"1": QUICK_REQUESTS}


def test_servers_and_their_ray_are_stopped(quick_report):
    report, _ = quick_report
    for setting in SETTINGS:
        pids = report["batching"][setting]["server_pids"]
        assert len(pids) >= 4, setting  # the driver, Ray's GCS and raylet, and the replicas' workers at least
        assert not [pid for pid in pids if _running(pid)], setting


def test_a_model_that_cannot_be_served_is_reported(tmp_path, capsys):
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    argv = ["bench", "serve", "--quick", "--model", str(not_a_model), "--cache", str(FIXTURES_DIR),
            "--work", str(tmp_path / "work")]
    assert main(argv) == 2
    assert f"cannot serve {not_a_model}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def realtime_report(tmp_path_factory):
    """``(report, printed table)`` of one quick --realtime run."""
    return run_bench(tmp_path_factory.mktemp("bench-realtime"), "serve", "--realtime", "--quick")


def test_realtime_every_turn_is_timed(realtime_report):
    report, table = realtime_report
    settings = report["settings"]
    assert (settings["sessions"], settings["clips_per_session"]) == (QUICK_SESSIONS, QUICK_CLIPS)
    assert report["turns"] == QUICK_SESSIONS * QUICK_CLIPS
    for key in ("first_partial_ms", "final_ms"):
        figures = report[key]
        assert 0 < figures["min"] <= figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"], key
    # A turn closes only after the VAD heard SILENCE_MS of quiet, which streams in real time
    # (less one 100 ms append: its last speech sample may sit at the append's start).
    assert report["final_ms"]["min"] >= SILENCE_MS - 100
    assert f"| {QUICK_SESSIONS} | {report['turns']} |" in table
    assert not [pid for pid in report["server_pids"] if _running(pid)]


def test_realtime_flags_are_checked(capsys):
    assert main(["bench", "serve", "--sessions", "2"]) == 2
    assert "--sessions and --clips need --realtime" in capsys.readouterr().err
    assert main(["bench", "serve", "--realtime", "--requests", "5"]) == 2
    assert "--realtime takes --sessions" in capsys.readouterr().err


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
