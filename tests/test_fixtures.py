"""Tests of the offline model fixtures (speech.testing.checkpoints) and the samples/ corpus."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoProcessor, Wav2Vec2ForCTC, pipeline

from speech.testing import checkpoints
from speech.testing.checkpoints import FIXTURES_VERSION, build_ctc_checkpoint, build_fixtures

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _manifest(name: str = "manifest.jsonl") -> list[dict]:
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _english() -> list[dict]:
    return _manifest("en.jsonl")


@pytest.fixture(scope="module")
def fixtures_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="module")
def fixtures(fixtures_root) -> dict[str, Path]:
    return build_fixtures(fixtures_root)


# --- checkpoints -------------------------------------------------------------------------


def test_builds_the_named_fixtures(fixtures, fixtures_root):
    assert set(fixtures) == {"ctc-xlsr", "ctc-base", "whisper"}
    for name, path in fixtures.items():
        assert path == fixtures_root / name
        assert (path / ".complete").read_text().strip() == FIXTURES_VERSION
        # Whisper's tokenizer is saved as tokenizer.json, the CTC ones as vocab.json.
        tokenizer = "tokenizer.json" if name == "whisper" else "vocab.json"
        for file in ("config.json", "model.safetensors", tokenizer, "preprocessor_config.json"):
            assert (path / file).is_file(), f"{name} lacks {file}"
    # Nothing but the fixtures is left in the root (no temporary build directories).
    assert sorted(p.name for p in fixtures_root.iterdir()) == ["ctc-base", "ctc-xlsr", "whisper"]


@pytest.mark.parametrize("name", ["ctc-xlsr", "ctc-base"])
def test_model_loads_with_real_frame_rate(fixtures, name):
    model = AutoModelForCTC.from_pretrained(fixtures[name])
    processor = AutoProcessor.from_pretrained(fixtures[name])
    assert isinstance(model, Wav2Vec2ForCTC)
    assert model.config.inputs_to_logits_ratio == 320
    assert model.config.vocab_size == len(processor.tokenizer)
    assert model.config.pad_token_id == processor.tokenizer.pad_token_id == 0

    audio = torch.zeros(1, 16_000)  # 1 s -> 49 frames of 20 ms
    with torch.no_grad():
        logits = model(audio).logits
    assert logits.shape == (1, 49, model.config.vocab_size)


def test_attention_mask_follows_architecture_style(fixtures):
    audio = np.zeros(8_000, dtype=np.float32)

    xlsr = AutoFeatureExtractor.from_pretrained(fixtures["ctc-xlsr"])
    assert "attention_mask" in xlsr(audio, sampling_rate=16_000)
    xlsr_config = AutoModelForCTC.from_pretrained(fixtures["ctc-xlsr"]).config
    assert (xlsr_config.feat_extract_norm, xlsr_config.do_stable_layer_norm) == ("layer", True)

    base = AutoFeatureExtractor.from_pretrained(fixtures["ctc-base"])
    assert "attention_mask" not in base(audio, sampling_rate=16_000)
    base_config = AutoModelForCTC.from_pretrained(fixtures["ctc-base"]).config
    assert (base_config.feat_extract_norm, base_config.do_stable_layer_norm) == ("group", False)


def test_vocabulary_covers_english_korean_chinese(fixtures):
    tokenizer = AutoProcessor.from_pretrained(fixtures["ctc-xlsr"]).tokenizer
    vocab = tokenizer.get_vocab()
    for token in ("a", "z", "'", "7", "한", "힣", "中", "鿿"):
        assert token in vocab, token
    assert vocab["<pad>"] == 0
    assert tokenizer.word_delimiter_token == "|"
    assert len(vocab) == 4 + 1 + 1 + 26 + 10 + 11_172 + 20_992
    # CTC decoding: repeats collapse, blanks vanish, "|" becomes a space, case is kept.
    ids = [vocab[t] for t in ["h", "h", "<pad>", "i", "|", "한", "<pad>", "한", "中"]]
    assert tokenizer.decode(ids) == "hi 한한中"


@pytest.mark.parametrize("name", ["ctc-xlsr", "ctc-base"])
def test_transcribes_speech_to_some_text(fixtures, name):
    audio, rate = sf.read(SAMPLES / "en" / "001.flac", dtype="float32")
    asr = pipeline("automatic-speech-recognition", model=str(fixtures[name]))
    text = asr({"raw": audio, "sampling_rate": rate})["text"]
    # Random weights give gibberish, but not nothing, and not one character per frame.
    frames = len(audio) // 320
    assert 0 < len(text.strip()) < frames


@pytest.mark.parametrize("name", ["ctc-xlsr", "ctc-base"])
def test_output_is_blank_on_some_frames_only(fixtures, name):
    """The blank is calibrated to win part of the time, as in a trained CTC model."""
    audio, rate = sf.read(SAMPLES / "en" / "001.flac", dtype="float32")
    feature_extractor = AutoFeatureExtractor.from_pretrained(fixtures[name])
    model = AutoModelForCTC.from_pretrained(fixtures[name])
    inputs = feature_extractor(audio, sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        best = model(inputs.input_values).logits.argmax(-1)[0]
    blank_share = (best == model.config.pad_token_id).float().mean().item()
    assert 0.2 < blank_share < 0.9


def test_cache_is_reused(fixtures, fixtures_root):
    before = {name: (path / "model.safetensors").stat().st_mtime_ns for name, path in fixtures.items()}
    again = build_fixtures(fixtures_root)
    assert again == fixtures
    after = {name: (path / "model.safetensors").stat().st_mtime_ns for name, path in again.items()}
    assert after == before


def test_stale_fixture_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "_FIXTURES", {"ctc-xlsr": checkpoints._FIXTURES["ctc-xlsr"]})
    path = build_fixtures(tmp_path)["ctc-xlsr"]
    (path / ".complete").write_text("an older version\n")
    (path / "stale-file").write_text("left by the old build")

    assert build_fixtures(tmp_path)["ctc-xlsr"] == path
    assert (path / ".complete").read_text().strip() == FIXTURES_VERSION
    assert not (path / "stale-file").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctc-xlsr"]


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(out_dir: Path) -> Path:
        (out_dir / "model.safetensors").write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "_FIXTURES", {"broken": broken})
    with pytest.raises(OSError, match="disk full"):
        build_fixtures(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_directory_is_created_when_missing(tmp_path):
    """A fresh clone has no .cache/fixtures: the first build makes it (speech bench asr did not)."""
    root = tmp_path / "fresh" / ".cache" / "fixtures"

    def build(out_dir: Path) -> Path:
        (out_dir / "weights.bin").write_bytes(b"x")
        return out_dir

    built = checkpoints.build_cached(root, "thing", build)
    assert built == root / "thing" and (built / "weights.bin").read_bytes() == b"x"


def test_weights_are_a_function_of_the_seed(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    paths = {name: build_ctc_checkpoint(tmp_path / name, seed=seed) for name, seed in [("a", 0), ("b", 0), ("c", 1)]}
    assert torch.equal(torch.rand(1), expected_next), "the caller's torch RNG state was disturbed"

    weights = {name: AutoModelForCTC.from_pretrained(path).lm_head.weight for name, path in paths.items()}
    assert torch.equal(weights["a"], weights["b"])
    assert not torch.equal(weights["a"], weights["c"])


# --- samples/ ------------------------------------------------------------------------------


def test_manifest_lists_three_clips_per_language():
    rows = _manifest()
    assert [set(row) for row in rows] == [{"id", "path", "text", "language"}] * len(rows)
    assert len({row["id"] for row in rows}) == len(rows)
    languages = Counter(row["language"] for row in rows if not row["id"].startswith("misc/"))
    assert languages == {"en": 3, "ko": 3, "zh": 3}
    assert all(row["text"].strip() for row in rows)


def test_english_manifest_lists_every_english_clip_without_its_language():
    english = _english()
    manifest = [{k: v for k, v in row.items() if k != "language"} for row in _manifest() if row["language"] == "en"]
    assert [row for row in english if row["id"] in {m["id"] for m in manifest}] == manifest
    assert len(english) == len(manifest) + 4  # the demo's extra sentences
    listed = {row["path"] for row in english} | {row["path"] for row in _manifest()}
    on_disk = {str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*") if p.suffix in (".flac", ".wav")}
    assert on_disk == listed


@pytest.mark.parametrize("row", _manifest() + _english()[-4:], ids=lambda row: row["id"])
def test_manifest_files_decode(row):
    path = SAMPLES / row["path"]
    assert path.is_file()
    audio, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    if row["id"] == "misc/stereo_8k":
        assert (rate, audio.shape[1]) == (8_000, 2)
        assert row.get("language", "en") == "en"
    else:
        assert (rate, audio.shape[1]) == (16_000, 1)
        assert path.suffix == ".flac"
    assert 1.5 <= len(audio) / rate <= 6.0
    assert np.sqrt(np.mean(audio**2)) > 0.01, "clip is (nearly) silent"


def test_samples_stay_small():
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 1_000_000
