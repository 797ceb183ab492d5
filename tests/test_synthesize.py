"""Tests of speech synthesis: backends on tiny real-architecture checkpoints, and the Ray job.

Every backend is checked for the property the dataset depends on: a row's audio does not
depend on what it is batched with (batched == one at a time, lengths exact) nor on the run
(same seed, same audio). The job is run end to end on real local Ray.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES_DIR

from jobs.output import OutputError
from jobs.synthesize import UTTERANCE_TYPE, read_utterances, utterance_values
from speech.options import SynthesizeOptions
from speech.testing.tts_checkpoints import KOKORO_VOICES, build_kokoro_fixture, build_tts_fixtures
from speech.text import TextError
from speech.tts import detect_backend, load_front_end, load_model
from speech.tts.frontend import prepare_row

TOLERANCE = 1e-4  # max |batched - single| per sample
PCM16_STEP = 1 / 32768  # one step of the 16-bit files the job writes


@pytest.fixture(scope="module")
def tts() -> dict[str, Path]:
    return build_tts_fixtures(FIXTURES_DIR)


def _options(model: Path | str, tmp_path: Path | None = None, **kwargs) -> SynthesizeOptions:
    defaults = dict(input="unused.txt", output=str(tmp_path or "unused"), model=str(model), cpus_per_actor=0.5)
    return SynthesizeOptions(**{**defaults, **kwargs})


def _prepare(front_end, texts, seed=0, voice=None, **kwargs):
    return [u for i, t in enumerate(texts)
            for u in prepare_row(front_end, t, voice=voice, language=None, seed=seed + i, max_text_chars=1000, **kwargs).utterances]


def _assert_batch_equals_single(model, utterances) -> float:
    """Synthesize together and one by one; returns the max abs difference."""
    batched = model.synthesize(utterances)
    single = [model.synthesize([u])[0] for u in utterances]
    assert [len(b) for b in batched] == [len(s) for s in single]
    assert len({len(b) for b in batched}) > 1, "test needs utterances of different lengths"
    worst = max(float(np.abs(b - s).max()) for b, s in zip(batched, single))
    assert worst <= TOLERANCE
    return worst


# --- backends ------------------------------------------------------------------------------


def test_backend_is_detected_from_the_checkpoint(tts, tmp_path):
    assert detect_backend(str(tts["tts-vits"])) == "vits"
    assert detect_backend(str(tts["tts-chattts"])) == "chattts"
    assert detect_backend(str(tts["tts-vits"]), "kokoro") == "kokoro"  # --backend wins
    from speech.tts import ModelError

    with pytest.raises(ModelError, match="cannot load model"):
        detect_backend(str(tmp_path))


def test_vocos_batched_decode_keeps_each_clip_exact(tts):
    from speech.tts.vocoder import VocosVocoder

    vocoder = VocosVocoder.from_directory(tts["tts-vocos"])
    generator = torch.Generator().manual_seed(0)
    mels = [torch.randn(vocoder.n_mels, frames, generator=generator) for frames in (4, 31, 90)]
    batched = vocoder.decode(mels)
    for mel, waveform in zip(mels, batched):
        upstream_single = vocoder.vocos.decode(mel[None])[0].numpy()
        assert len(waveform) == len(upstream_single) == vocoder.num_samples(mel.shape[1])
        assert np.abs(waveform - upstream_single).max() <= TOLERANCE
    # Upstream batching (pad to the longest, cut back) changes the short clips (ChatTTS#813).
    padded = torch.zeros(len(mels), vocoder.n_mels, 90)
    for row, mel in zip(padded, mels):
        row[:, : mel.shape[1]] = mel
    upstream = vocoder.vocos.decode(padded)[0, : len(batched[0])].numpy()
    assert np.abs(upstream - batched[0]).max() > 1e-3


@pytest.fixture(scope="module")
def vits(tts):
    """``(options, front end, model)`` of the VITS fixture, loaded once (uroman alone takes seconds)."""
    options = _options(tts["tts-vits"])
    return options, load_front_end(options.tts), load_model(options.tts, "cpu", options.run)


def test_vits_batched_equals_single_and_reruns_identically(vits):
    options, front_end, model = vits
    utterances = _prepare(front_end, ["안녕하세요.", "hello world, this is longer", "오늘 날씨가 좋네요! 정말 좋아요."])
    _assert_batch_equals_single(model, utterances)
    again = load_model(options.tts, "cpu", options.run).synthesize(utterances)
    assert all(np.array_equal(a, b) for a, b in zip(model.synthesize(utterances), again))
    other_seed = _prepare(front_end, ["안녕하세요."], seed=99)
    assert not np.array_equal(model.synthesize(other_seed)[0][:100], model.synthesize(utterances[:1])[0][:100])


def test_utterances_round_trip_through_the_stage_column(vits, chattts):
    # Token ids (VITS) and symbol strings (ChatTTS) survive the Arrow column between the stages.
    for front_end, speed in ((vits[1], 1.5), (chattts[0], None)):
        utterances = prepare_row(front_end, "Hello there. How are you today?", voice=None, language="en",
                                 seed=3, max_text_chars=200, speed=speed).utterances
        column = pa.array([utterance_values(utterances)], pa.list_(UTTERANCE_TYPE))
        assert read_utterances(column.to_pylist()[0]) == utterances


def test_vits_speed_is_applied_per_utterance(vits):
    _, front_end, model = vits
    text = ["hello world, this is a sentence"]
    normal, fast, default = (model.synthesize(_prepare(front_end, text, speed=speed))[0] for speed in (1.0, 2.0, None))
    assert np.array_equal(normal, default)  # None: the checkpoint's own rate, 1.0
    assert len(fast) < len(normal)  # durations scaled by 1 / speed
    mixed = model.synthesize(_prepare(front_end, text, speed=2.0) + _prepare(front_end, text, speed=1.0))
    assert np.array_equal(mixed[0], fast) and np.array_equal(mixed[1], normal)  # one model, any speeds
    with pytest.raises(TextError, match=r"speed 9 is outside 0\.25\.\.4"):
        _prepare(front_end, text, speed=9.0)


def test_vits_front_end_rejects_what_it_cannot_say(vits):
    _, front_end, _ = vits
    with pytest.raises(TextError, match=r"cannot say: '1', '2'"):
        _prepare(front_end, ["call 12"], normalize=False)
    # Normalized, the digits are words; uroman's Han numerals (十二 -> 12) are romanized as pinyin.
    assert _prepare(front_end, ["call 12", "价格是12元"])
    prepared = prepare_row(front_end, "call 12", voice=None, language=None, seed=0, max_text_chars=100,
                           normalize=False, unknown_chars="spell")
    assert (prepared.spoken, prepared.unknown) == ("call one two", "12")
    with pytest.raises(TextError, match="unknown voice 'x'"):
        _prepare(front_end, ["hello"], voice="x")
    # Hangul is romanized by uroman, as for the real MMS Korean checkpoint.
    assert _prepare(front_end, ["안녕"])[0].voice == "default"


@pytest.fixture(scope="module")
def chattts(tts):
    options = _options(tts["tts-chattts"], max_new_tokens=12, batch_size=4)
    return load_front_end(options.tts), load_model(options.tts, "cpu", options.run)


def test_chattts_decoder_and_vocos_batch_with_exact_lengths(chattts):
    _, model = chattts
    generator = torch.Generator().manual_seed(1)
    hidden_size = model.chat.config.gpt.hidden_size
    hiddens = [torch.randn(tokens, hidden_size, generator=generator) for tokens in (3, 9, 17)]
    batched = model._decode(hiddens)
    for hidden, waveform in zip(hiddens, batched):
        single = model._decode([hidden])[0]
        # Two mel frames per GPT token, one hop per frame gap.
        assert len(waveform) == len(single) == model.vocoder.hop_length * (2 * hidden.shape[0] - 1)
        assert np.abs(waveform - single).max() <= TOLERANCE


def test_chattts_synthesis_is_batch_independent_and_reproducible(chattts):
    front_end, model = chattts
    utterances = _prepare(front_end, ["Hello [uv_break] world.", "你好，世界。", "A bit longer [laugh] sentence here."])
    assert utterances[0].voice == "seed:0" and "[uv_break]" in utterances[0].inputs
    batched = model.synthesize(utterances)
    single = [model.synthesize([u])[0] for u in utterances]
    assert [len(b) for b in batched] == [len(s) for s in single]
    assert max(float(np.abs(b - s).max()) for b, s in zip(batched, single)) <= TOLERANCE
    assert all(np.array_equal(a, b) for a, b in zip(batched, model.synthesize(utterances)))


def test_chattts_voices_and_unsayable_text(chattts):
    front_end, model = chattts
    embedding = model.chat.speaker._encode(torch.zeros(model.chat.config.gpt.hidden_size, dtype=torch.float16))
    assert front_end.resolve_voice(embedding, 0) == embedding
    assert front_end.resolve_voice("seed:7", 0) == "seed:7"
    with pytest.raises(TextError, match="unknown voice"):
        front_end.resolve_voice("not-a-speaker", 0)
    with pytest.raises(TextError, match=r"cannot say: '1', '2'"):
        _prepare(front_end, ["room 12"], normalize=False)
    with pytest.raises(TextError, match="cannot say: 'п'"):
        _prepare(front_end, ["привет"])
    with pytest.raises(TextError, match="speed: the chattts backend takes no speaking rate"):
        _prepare(front_end, ["hello"], speed=1.5)
    dropped = prepare_row(front_end, "안녕 hello 你好", voice=None, language=None, seed=0, max_text_chars=100,
                          unknown_chars="drop")
    assert (dropped.spoken, dropped.unknown) == ("hello 你好", "안녕")
    with pytest.raises(TextError, match="nothing left to say once the characters the chattts model cannot say were dropped"):
        prepare_row(front_end, "안녕", voice=None, language=None, seed=0, max_text_chars=100, unknown_chars="drop")
    # A marker alone is something to act on, not an empty row.
    assert _prepare(front_end, ["Hi. [laugh]"])[-1].text.endswith("[laugh]")


@pytest.fixture(scope="module")
def kokoro():
    path = build_kokoro_fixture(FIXTURES_DIR)
    options = _options(path, max_piece_chars=40)
    return load_front_end(options.tts), load_model(options.tts, "cpu", options.run)


def test_kokoro_espeak_g2p_offline_and_batch_independent(kokoro):
    front_end, model = kokoro
    english = _prepare(front_end, ["Hi.", "Hello there."])
    spanish = _prepare(front_end, ["Hola."], voice=KOKORO_VOICES[1])
    assert english[0].voice == KOKORO_VOICES[0] and spanish[0].voice == "ef_beta"
    assert all(isinstance(u.inputs, str) and u.inputs for u in english + spanish)
    worst = _assert_batch_equals_single(model, english + spanish)
    assert worst == 0.0  # one utterance per forward pass: nothing can leak
    with pytest.raises(TextError, match="unknown voice 'zz_nobody'"):
        _prepare(front_end, ["Hi."], voice="zz_nobody")


def test_kokoro_blend_is_the_weighted_average_of_the_packs(kokoro):
    front_end, model = kokoro
    alpha, beta = (torch.load(Path(model.packs.files[name]), weights_only=True) for name in KOKORO_VOICES)
    blend = front_end.resolve_voice(f"{KOKORO_VOICES[0]}:7+{KOKORO_VOICES[1]}:3", 0)
    assert blend == f"{KOKORO_VOICES[0]}:0.7+{KOKORO_VOICES[1]}:0.3"  # weights normalized
    assert torch.allclose(model.packs.pack(blend), 0.7 * alpha + 0.3 * beta, atol=1e-7)
    # Equal weights are what KPipeline.load_voice("a,b") gives: the mean of the stacked packs.
    equal = front_end.resolve_voice("+".join(KOKORO_VOICES), 0)
    assert torch.allclose(model.packs.pack(equal), torch.mean(torch.stack([alpha, beta]), dim=0), atol=1e-7)
    for bad in (f"{KOKORO_VOICES[0]}:-1", f"{KOKORO_VOICES[0]}:x", f"{KOKORO_VOICES[0]}+zz_nobody"):
        with pytest.raises(TextError):
            front_end.resolve_voice(bad, 0)
    assert [(v.name, v.language) for v in front_end.voices()] == [(KOKORO_VOICES[0], "en-us"), (KOKORO_VOICES[1], "es")]
    # A blend synthesizes, and speed is applied per utterance.
    utterances = _prepare(front_end, ["Hello there."], voice=blend) + _prepare(front_end, ["Hello there."], voice=blend, speed=2.0)
    slow, fast = model.synthesize(utterances)
    assert 0 < len(fast) < len(slow)


# --- the job -------------------------------------------------------------------------------

_GOOD = {
    "ko-1": "안녕하세요. 오늘 날씨가 좋네요!",
    "en/2": "hello world",
    "long": " ".join(["this sentence is here to be split into pieces."] * 6),
    "digits": "call 555",  # not normalized in this run: the digits are spelled (unknown_chars=spell)
}
_BAD = {
    "empty": ("", "text is empty"),
    "spaces": ("   ", "text is empty"),
    "punct": ("?!... —", "nothing to say"),
    "huge": ("a" * 400, "over the limit of 300"),
    "voice": ("hello", "unknown voice 'nobody'"),
    "../../escape": ("hello", "cannot be used as a file name"),
    "/abs/path": ("hello", "cannot be used as a file name"),
    "new\nline": ("hello", "cannot be used as a file name"),
    "/".join(["p" * 200] * 21): ("hello", "cannot be used as a file name"),  # 4,220 characters
}


def _write_corpus(path: Path) -> Path:
    rows = [{"id": k, "text": v} for k, v in _GOOD.items()]
    rows += [{"id": k, "text": text, **({"voice": "nobody"} if k == "voice" else {})} for k, (text, _) in _BAD.items()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_job_end_to_end_with_round_trip_gate(tts, checkpoints, ray_local, tmp_path):
    """One run covers the pipeline, every bad-row kind, the HF dataset and the CER gate."""
    import datasets

    from jobs import synthesize

    out = tmp_path / "out"
    options = _options(
        tts["tts-vits"], out, input=str(_write_corpus(tmp_path / "corpus.jsonl")),
        max_text_chars=300, max_piece_chars=60, rows_per_call=4, cpus_per_front_end=0.25,
        verify_with=str(checkpoints["ctc-xlsr"]), max_cer=0.5, normalize=False, unknown_chars="spell",
    )
    summary = synthesize.run(options)

    rows = {r["id"]: r for r in synthesize.read_output(str(out)).to_pylist()}
    assert sorted(rows) == sorted([*_GOOD, *_BAD])  # N rows in, N rows out
    for row_id, (_, message) in _BAD.items():
        assert message in (rows[row_id]["error"] or ""), row_id
        assert rows[row_id]["audio"] is None and rows[row_id]["cer"] is None
    assert rows["long"]["pieces"] >= 5
    assert (rows["digits"]["text_normalized"], rows["digits"]["unknown_chars"]) == ("call five five five", "5")
    # The gate: every synthesized row is transcribed and scored; above max_cer is an error.
    for row_id in _GOOD:
        row = rows[row_id]
        assert isinstance(row["asr_text"], str) and row["cer"] >= 0
        assert (row["cer"] > 0.5) == (row["error"] is not None), row
        if row["error"]:
            assert f"round-trip CER {row['cer']:.3f} is above max_cer 0.5" == row["error"]
    rejected = sum(rows[i]["error"] is not None for i in _GOOD)
    assert summary.rejected == rejected
    assert summary.mean_cer == pytest.approx(np.mean([rows[i]["cer"] for i in _GOOD]), abs=1e-3)
    assert not (out / "_verify").exists()
    # Files only under OUTPUT/audio, named by id (rejected audio is kept for inspection).
    written = sorted(str(p.relative_to(out / "audio")) for p in (out / "audio").rglob("*.flac"))
    assert written == sorted(f"{i}.flac" for i in _GOOD)
    # Refused ids made no directory (a 4,220-character id once left 20 empty ones).
    assert [str(p.relative_to(out / "audio")) for p in (out / "audio").rglob("*") if p.is_dir()] == ["en"]
    assert not list(tmp_path.rglob("escape*")) and not list(tmp_path.rglob("path.flac"))

    summary_file = json.loads((out / "_summary.json").read_text())
    assert summary_file["unknown_chars"] == {"policy": "spell", "rows": 1, "characters": {"5": 1}}
    assert summary_file["rows"] == len(_GOOD) + len(_BAD)
    assert summary_file["ok"] == len(_GOOD) - rejected and summary_file["errors"] == len(_BAD) + rejected
    ok_ids = [i for i in _GOOD if rows[i]["error"] is None]
    assert summary_file["audio_seconds"] == pytest.approx(sum(rows[i]["duration_s"] for i in ok_ids), abs=1e-3)

    dataset = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    assert isinstance(dataset.features["audio"], datasets.Audio)
    decoded = 0
    for row in dataset:
        if row["audio"] is not None:
            samples = row["audio"].get_all_samples()
            assert samples.sample_rate == row["sample_rate"] == 16_000
            assert samples.data.shape == (1, row["num_samples"])
            decoded += 1
    assert decoded == len(_GOOD)

    # Each row's audio equals synthesizing that row alone (16-bit files: one PCM step).
    front_end, model = load_front_end(options.tts), load_model(options.tts, "cpu", options.run)
    pause = np.zeros(int(round(options.sentence_pause_s * model.sample_rate)), np.float32)
    for row_id, text in _GOOD.items():
        prepared = prepare_row(front_end, text, voice=None, language=None, seed=0, max_text_chars=300,
                               normalize=False, unknown_chars="spell")
        assert rows[row_id]["text_normalized"] == prepared.spoken
        parts = [model.synthesize([u])[0] for u in prepared.utterances]
        expected = np.clip(np.concatenate([x for k, p in enumerate(parts) for x in ([pause, p] if k else [p])]), -1, 1)
        written_audio, _ = sf.read(io.BytesIO(rows[row_id]["audio"]["bytes"]), dtype="float32")
        assert len(written_audio) == len(expected) == rows[row_id]["num_samples"]
        assert np.abs(written_audio - expected).max() <= PCM16_STEP + TOLERANCE

    # A rerun resumes: every row is done, nothing is synthesized, scored or written twice.
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "_summary.json"}
    again = synthesize.run(options)
    assert (again.rows, again.ok, again.rejected) == (summary.rows, summary.ok, 0)
    assert {p: p.stat().st_mtime_ns for p in files} == files
    with pytest.raises(OutputError, match="different job"):
        synthesize.run(options.model_copy(update={"seed": 1}))


def test_cli_rejects_inconsistent_options_before_starting(tts, tmp_path, capsys):
    from cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("hi\n")
    code = main(["synthesize", str(corpus), "-o", str(tmp_path / "o"), "--model", str(tts["tts-vits"]), "--max-cer", "0.3"])
    assert code == 2
    assert "max_cer needs verify_with" in capsys.readouterr().err
    code = main(["synthesize", str(corpus), "-o", str(tmp_path / "o"), "--model", str(tts["tts-chattts"]), "--speed", "1.5"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("speech: error: speed: the chattts backend takes no speaking rate "
                                               "(ChatTTS: a [speed_N] prompt token of its GPT); leave speed unset")


def test_voices_are_dealt_reproducibly_to_rows_without_one(tmp_path):
    from jobs.synthesize import with_voices
    from speech.text.corpus import read_corpus

    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": "hi", **({"voice": "own"} if i == 1 else {})}) + "\n" for i in range(10)))
    corpus = read_corpus(str(path))
    options = _options("unused", input=str(path), voices=["a", "b:1+c:1", "d"], seed=3)
    voices = with_voices(corpus, options)["voice"].to_pylist()
    assert voices[1] == "own"  # a row's own voice wins
    assert voices == with_voices(corpus, options)["voice"].to_pylist()  # same seed, same voices
    # Dealt in turn over the corpus order: every third row has the same voice, all three are used.
    assert all(voices[i] == voices[i + 3] for i in range(7) if 1 not in (i, i + 3))
    assert {voices[0], voices[2], voices[4]} == {"a", "b:1+c:1", "d"}
    shuffled = [with_voices(corpus, options.model_copy(update={"seed": seed}))["voice"].to_pylist() for seed in range(6)]
    assert len({tuple(v) for v in shuffled}) > 1  # the seed picks the order
    assert with_voices(corpus, _options("unused", input=str(path)))["voice"].to_pylist() == corpus["voice"].to_pylist()


def test_speech_voices_lists_a_models_voices(tts, capsys):
    from cli import main

    assert main(["voices", str(tts["tts-vits"])]) == 0
    assert capsys.readouterr().out.split() == ["default", "kor"]
    assert main(["voices", str(tts["tts-chattts"])]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("seed:N")
    assert main(["voices", str(tts["tts-vits"]) + "-missing"]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_audio_names_stay_inside_the_output():
    from jobs.synthesize import audio_name

    assert audio_name("en/001", "flac") == "en/001.flac"
    for bad in ("", "../x", "a/../../b", "/etc/passwd", "a//b", "c:\\x", "a/./b", "x\n", "a\tb", "a\x7fb",
                "x" * 252, "/".join(["p" * 200] * 21)):
        with pytest.raises(TextError, match="cannot be used as a file name"):
            audio_name(bad, "wav")
    assert audio_name("x" * 251, "wav") == "x" * 251 + ".wav"  # 255 bytes: the longest file name


# --- a real corpus: numbers, dates, currencies, abbreviations, mixed scripts ----------------

_TEMPLATES = {
    "en": [
        "I counted {n} birds in the garden.", "She finished {nth} in the race.", "The value is {d} exactly.",
        "The bridge was built in {year}.", "The meeting is on {month} {day}, {year}.", "The train leaves at {h}:{mm} pm.",
        "The ticket costs ${d}.", "Prices rose {n}% this year.", "The box weighs {n} kg.",
        "Dr. Lee and Mr. Park arrived, e.g. on time.", "Call me at 555-{four}.", "Visit www.example{n}.com for more.",
        "I ate {n} bowls of 拉面 in Tokyo.", "It was {n}°C on {iso}.", "Room No. {n}, the {decade}s & more.",
    ],
    "ko": [
        "사과 {n}개를 샀어요.", "{year}년 {m}월 {day}일에 만나요.", "오후 {h}시 {mm}분에 출발합니다.",
        "가격은 {money}원입니다.", "할인율은 {n}%입니다.", "거리는 {d}km입니다.", "전화번호는 010-{four}-{four}입니다.",
        "{n}번째 손님입니다.", "제{n}회 대회가 열렸다.", "원주율은 {d}입니다.", "iPhone {n}를 샀다.",
        "학생 {n}명이 {h}:{mm}에 왔다.", "온도는 -{n}°C였다.",
    ],
    "zh": [
        "我买了{n}个苹果。", "{year}年{m}月{day}日开会。", "下午{h}:{mm}出发。", "价格是¥{d}。", "涨了{n}%。",
        "距离{d}公里，重{n}kg。", "电话1{ten}。", "他是第{n}名。", "温度-{n}℃。", "{n}/{big}的人同意。",
        "我用iPhone {n}拍照。", "共有{money}人参加。", "会议在{iso}举行。",
    ],
}
_MONTHS = ["Jan.", "February", "Mar", "April", "May", "June", "July", "Aug.", "Sept.", "October", "Nov", "December"]
#: Rows whose language has no normalizer and that hold digits: the errors this corpus expects.
_UNREADABLE = {"fr-1": ("Il a 42 ans.", "cannot read '4', '2'"), "fr-2": ("Page 7 sur 9.", "cannot read '7', '9'")}


def _mixed_corpus(path: Path, rows: int = 200) -> dict[str, dict]:
    """``rows`` lines from the templates above with seeded random values, ids ``<lang>-<n>``;
    every other row names its language, the rest leave it to the script. Returns the rows by id."""
    import random

    rng = random.Random(19)
    corpus = {}
    languages = list(_TEMPLATES)
    for i in range(rows - len(_UNREADABLE)):
        language = languages[i % 3]
        templates = _TEMPLATES[language]
        values = dict(
            n=rng.randint(2, 99), nth=rng.choice(["1st", "2nd", "3rd", "4th", "21st", "102nd"]),
            d=f"{rng.randint(1, 999)}.{rng.randint(10, 99)}", year=rng.randint(1900, 2030), month=rng.choice(_MONTHS),
            m=rng.randint(1, 12), day=rng.randint(1, 28), h=rng.randint(1, 12), mm=f"{rng.randint(0, 59):02d}",
            four=f"{rng.randint(0, 9999):04d}", ten=f"{rng.randint(0, 10**10 - 1):010d}", money=f"{rng.randint(1000, 999999):,}",
            big=rng.randint(100, 200), iso=f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            decade=rng.choice([1960, 1970, 1980, 1990]),
        )
        corpus[f"{language}-{i}"] = {"text": templates[(i // 3) % len(templates)].format(**values),
                                     "language": language if i % 2 else None,
                                     "speed": 1.25 if i % 10 == 0 else None}
    for row_id, (text, _) in _UNREADABLE.items():
        corpus[row_id] = {"text": text, "language": "fr", "speed": None}
    path.write_text("".join(json.dumps({"id": k, **v}, ensure_ascii=False) + "\n" for k, v in corpus.items()), encoding="utf-8")
    return corpus


def test_mixed_corpus_of_three_languages_synthesizes(tts, ray_local, tmp_path):
    """200 lines of numbers, dates, times, currencies, percentages, units, phone numbers,
    abbreviations and mixed scripts in en, ko, zh through the VITS fixture (uroman reads
    Hangul and Han): under 2% error rows, each naming what it could not read."""
    from jobs import synthesize

    corpus = _mixed_corpus(tmp_path / "mixed.jsonl")
    out = tmp_path / "out"
    options = _options(tts["tts-vits"], out, input=str(tmp_path / "mixed.jsonl"), rows_per_call=50)
    summary = synthesize.run(options)
    rows = {r["id"]: r for r in synthesize.read_output(str(out)).to_pylist()}
    assert sorted(rows) == sorted(corpus)
    errors = {row_id: row["error"] for row_id, row in rows.items() if row["error"] is not None}
    assert len(errors) / len(rows) < 0.02, errors
    assert sorted(errors) == sorted(_UNREADABLE), errors
    for row_id, (_, message) in _UNREADABLE.items():
        assert message in errors[row_id] and "language is 'fr'" in errors[row_id]
    for row_id, row in rows.items():
        if row["error"] is None:
            assert not any(c.isdigit() or c in "%$¥₩€£℃°&" for c in row["text_normalized"]), row
            assert row["num_samples"] > 0 and row["speed"] == corpus[row_id]["speed"]
    assert summary.errors == len(_UNREADABLE)
    assert json.loads((out / "_summary.json").read_text())["unknown_chars"] == {"policy": "error", "rows": 0, "characters": {}}
    # A few lines as a reader says them (by hand).
    by_text = {row["text"]: row["text_normalized"] for row in rows.values()}
    spoken = {text: by_text[text] for text in ("Dr. Lee and Mr. Park arrived, e.g. on time.",) if text in by_text}
    assert spoken == {"Dr. Lee and Mr. Park arrived, e.g. on time.": "Doctor Lee and Mister Park arrived, for example on time."}
