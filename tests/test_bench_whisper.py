"""`speech bench asr --backend whisper`: every system runs on the same weights and reports its figures.

No timing thresholds: figures must exist and be positive, ratios must equal their definitions,
and every system must have generated the same number of tokens (greedy decoding of the same
weights, so the same work).
"""

from __future__ import annotations

import pytest
from conftest import run_bench

SYSTEMS = ("ours", "naive", "unsorted", "faster_whisper", "ceiling")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """``(report, printed table)`` of one quick Whisper run, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench-whisper")
    return run_bench(out, "asr", "--backend", "whisper", "--quick", "--files", "3")


def test_every_system_reports_positive_figures(quick_report):
    report, table = quick_report
    assert report["backend"] == "whisper"
    for label in ("ours: speech transcribe", "1 at a time", "batch 16 unsorted", "faster-whisper batched", "ceiling"):
        assert label in table
    assert set(report["systems"]) == set(SYSTEMS)
    for name in SYSTEMS:
        assert report["rtfx"][name] > 0, name
        assert report["peak_rss_mb"][name] > 0, name
        assert report["tokens"][name] > 0, name
        assert report["systems"][name]["files"] == 3, name
    audio = {round(report["systems"][name]["audio_s"], 3) for name in SYSTEMS}
    assert len(audio) == 1  # the same corpus everywhere


def test_ratios_equal_their_definitions(quick_report):
    report, _ = quick_report
    rtfx = report["rtfx"]
    # Reported ratios are rounded to 3 decimals.
    for name in SYSTEMS:
        assert report["ratio_to_ours"][name] == pytest.approx(rtfx[name] / rtfx["ours"], abs=2e-3)
    assert report["ceiling_fraction"] == pytest.approx(rtfx["ours"] / rtfx["ceiling"], abs=2e-3)
    assert report["speedup_vs_naive"] == pytest.approx(rtfx["ours"] / rtfx["naive"], abs=2e-3)
    assert report["speedup_vs_unsorted"] == pytest.approx(rtfx["ours"] / rtfx["unsorted"], abs=2e-3)
    assert report["speedup_vs_faster_whisper"] == pytest.approx(rtfx["ours"] / rtfx["faster_whisper"], abs=2e-3)
    for name in SYSTEMS:
        figures = report["systems"][name]
        assert rtfx[name] == pytest.approx(figures["audio_s"] / figures["wall_s"], abs=2e-3)


def test_every_system_generated_the_same_tokens(quick_report):
    report, _ = quick_report
    tokens = report["tokens"]
    # The quick fixture ends its outputs at varying lengths, so equal counts mean equal greedy
    # decoding on the same features and weights, not merely the max_new_tokens bound.
    # Our job's tokens are known through its transcripts: the same text as the naive pipeline's.
    assert report["ours_same_text_as_naive"] is True and tokens["ours"] == tokens["naive"]
    assert tokens["faster_whisper"] == tokens["ceiling"] == tokens["unsorted"] == tokens["naive"]
    assert report["tokens_equal"] is True and len(set(tokens.values())) == 1
    assert tokens["ours"] < report["settings"]["max_new_tokens"] * report["systems"]["ours"]["files"]


REAL_SYSTEMS = ("ours_ct2_int8", "ours_ct2_float32", "ours_transformers", "faster_whisper_int8",
                "faster_whisper_float32", "pipeline_batch16")


def test_real_weights_report_wer_beside_rtfx_for_both_engines(real_whisper, tmp_path_factory):
    """``--real --quick``: every system on the real whisper-base and English speech; no times asserted."""
    report, table = run_bench(tmp_path_factory.mktemp("bench-real"), "asr", "--backend", "whisper", "--real", "--quick")
    assert report["real"] is True and set(report["systems"]) == set(REAL_SYSTEMS)
    for label in ("CTranslate2 int8", "CTranslate2 float32", "transformers float32", "faster-whisper batched (16), int8",
                  "transformers pipeline, batch 16"):
        assert label in table
    audio = {round(report["systems"][name]["audio_s"], 3) for name in REAL_SYSTEMS}
    assert len(audio) == 1 and report["settings"]["corpus"]["files"] == 3
    for name in REAL_SYSTEMS:
        assert report["rtfx"][name] > 0 and report["peak_rss_mb"][name] > 0, name
        # Real recognition of English speech: every system hears most words.
        assert 0 <= report["wer"][name] < 0.6, name
    # The same weights, the same greedy decoding, features padded the same way: our CTranslate2
    # engine hears exactly what faster-whisper hears, at each compute type.
    assert report["wer"]["ours_ct2_float32"] == report["wer"]["faster_whisper_float32"]
    assert {t["target"] for t in report["targets"]} >= {"ours CTranslate2 WER - faster-whisper WER, int8"}
