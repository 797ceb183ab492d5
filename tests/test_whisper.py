"""The Whisper backend: real WhisperForConditionalGeneration (tiny, random, offline), real Ray.

The fixture's outputs are gibberish, so every check compares code paths: batched against one
window at a time, our recognizer against transformers' own ASR pipeline, VAD windows against
the same speech transcribed on its own, and the whole job against the bad inputs it must survive.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SAMPLES
from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, GenerationConfig, pipeline

from cli import main as cli_main
from jobs import transcribe
from jobs.units import Item
from speech.asr import ModelError, detect_backend, detect_model, load_front_end, load_recognizer
from speech.asr.whisper import WhisperFrontEnd, WhisperRecognizer
from speech.audio import decode
from speech.options import AsrOptions, DecodingOptions, TranscribeOptions

RATE = 16_000
MAX_NEW_TOKENS = 24  # random decoders babble; every call is bounded


@pytest.fixture(scope="module")
def model(checkpoints) -> str:
    return str(checkpoints["whisper"])


@pytest.fixture(scope="module")
def front_end(model) -> WhisperFrontEnd:
    return WhisperFrontEnd(model)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """The sample corpus decoded at 16 kHz: id -> float32 [n] (2-4 s of espeak-ng speech each)."""
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]
    return {row["id"]: decode(str(SAMPLES / row["path"]), RATE) for row in rows}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


#: Greedy only: a random decoder fails every threshold, and sampled fallbacks would make the
#: compared code paths differ by chance (fallback has its own tests).
GREEDY = DecodingOptions(temperature=0.0)


def _recognizer(model: str, windows_per_batch: int = 1, decoding: DecodingOptions = GREEDY, **kwargs) -> WhisperRecognizer:
    return WhisperRecognizer(
        model, batch_seconds=30.0 * windows_per_batch, max_new_tokens=MAX_NEW_TOKENS, decoding=decoding, **kwargs
    )


def _same(a, b) -> None:
    """Two transcripts agree: strings and segment times exactly, probabilities to float noise.

    Word times come from DTW over cross-attention, which float noise from a different batch
    size (1e-5 in the fixture's sharp random attention) can move by a few 20 ms frames where
    the path is near a tie: most must be equal, all close.
    """
    assert (a.text, a.language) == (b.text, b.language)
    assert [(s.start, s.end, s.text) for s in a.segments] == [(s.start, s.end, s.text) for s in b.segments]
    assert [w.word for w in a.words] == [w.word for w in b.words]
    times_a, times_b = _flat((w.start, w.end) for w in a.words), _flat((w.start, w.end) for w in b.words)
    assert times_a == pytest.approx(times_b, abs=0.25)
    assert sum(x == y for x, y in zip(times_a, times_b)) >= 0.8 * len(times_a)
    assert a.confidence == pytest.approx(b.confidence, rel=1e-4)
    assert (a.language_probability is None) == (b.language_probability is None)
    if a.language_probability is not None:
        assert a.language_probability == pytest.approx(b.language_probability, rel=1e-4)
    for x, y in zip(a.segments, b.segments):
        assert (x.avg_logprob, x.no_speech_prob) == pytest.approx((y.avg_logprob, y.no_speech_prob), rel=1e-4, abs=1e-6)
    assert a.computed_samples == b.computed_samples


def _flat(spans) -> list[float]:
    """``[(start, end, ...), ...]`` -> ``[start, end, ...]`` (times only), for pytest.approx."""
    return [float(t) for span in spans for t in span[:2]]


def test_fixture_has_whisper_large_v3_layout(model):
    config = AutoModelForSpeechSeq2Seq.from_pretrained(model, dtype=torch.float32).config
    generation = GenerationConfig.from_pretrained(model)
    tokenizer = WhisperRecognizer(model).tokenizer
    assert (config.model_type, config.num_mel_bins, config.vocab_size, config.max_source_positions) == (
        "whisper", 128, 51866, 1500,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|ko|>",
                                                             "<|translate|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>")}
    assert ids == {"<|endoftext|>": 50257, "<|startoftranscript|>": 50258, "<|en|>": 50259, "<|ko|>": 50264,
                   "<|translate|>": 50359, "<|notimestamps|>": 50364, "<|0.00|>": 50365, "<|30.00|>": 51865}
    assert len(generation.lang_to_id) == 100 and generation.task_to_id == {"translate": 50359, "transcribe": 50360}
    assert generation.is_multilingual and generation.alignment_heads
    assert AutoFeatureExtractor.from_pretrained(model).n_samples == 30 * RATE


@pytest.mark.parametrize(
    "language, task, timestamps",
    [(None, "transcribe", "none"), ("ko", "transcribe", "segment"), (None, "translate", "segment"), ("en", "transcribe", "word")],
)
def test_batched_equals_one_at_a_time_and_the_transformers_pipeline(model, front_end, clips, language, task, timestamps):
    audios = list(clips.values())[::2]  # en, ko, zh and the 8 kHz stereo clip
    utterances = [front_end.windows(a) for a in audios]
    options = dict(language=language, task=task, timestamps=timestamps)
    batched = _recognizer(model, windows_per_batch=4, **options).transcribe(utterances)
    one = _recognizer(model, **options)
    singles = [one.transcribe([utterance])[0] for utterance in utterances]
    for got, single in zip(batched, singles):
        _same(got, single)

    # The reference: transformers' pipeline, greedy (it defaults to 5 beams), one 30 s window =
    # one generate call (no seeking back to the last timestamp).
    asr = pipeline("automatic-speech-recognition", model=model, dtype=torch.float32)
    kwargs = {"max_new_tokens": MAX_NEW_TOKENS, "num_beams": 1, "force_unique_generate_call": True, "task": task}
    if language:
        kwargs["language"] = language
    stamps = {"none": None, "segment": True, "word": "word"}[timestamps]
    assert sum(len(t.text) for t in singles) > 0  # gibberish, but not nothing
    for got, audio in zip(singles, audios):
        duration = len(audio) / RATE
        if timestamps == "word":
            want = _pipeline_words(asr, audio, kwargs)
        else:
            want = asr({"raw": audio, "sampling_rate": RATE}, generate_kwargs=kwargs, return_timestamps=stamps)
        assert got.text == want["text"].strip()
        if timestamps == "none":  # one segment: the window
            assert [(s.start, s.end, s.text.strip()) for s in got.segments] == ([(0.0, round(duration, 3), got.text)] if got.text else [])
        if timestamps == "segment":
            # The pipeline leaves times past the audio and open ends as the model gave them.
            spans = [(min(c["timestamp"][0], duration), min(c["timestamp"][1] or duration, duration), c["text"])
                     for c in want["chunks"]]
            assert [s.text for s in got.segments] == [text for _, _, text in spans]
            assert _flat((s.start, s.end) for s in got.segments) == pytest.approx(_flat(spans), abs=0.011)
        if timestamps == "word":
            assert [w.word for w in got.words] == [c["text"].strip() for c in want["chunks"]]
            times = [(min(c["timestamp"][0], duration), min(c["timestamp"][1], duration)) for c in want["chunks"]]
            assert _flat((w.start, w.end) for w in got.words) == pytest.approx(_flat(times), abs=0.011)
            assert all(0 <= w.confidence <= 1 for w in got.words)


def _pipeline_words(asr, audio: np.ndarray, generate_kwargs: dict) -> dict:
    """What the pipeline returns for ``return_timestamps="word"``, by its own steps.

    transformers 5.23's pipeline raises IndexError in its postprocessing when word timestamps
    meet ``force_unique_generate_call`` (and without that flag it seeks back and decodes a
    second time, which is not the one-window-one-call reference). So: the pipeline's feature
    extraction, ``generate(return_token_timestamps=True)``, and the pipeline tokenizer's
    ``_decode_asr``, the postprocessing the pipeline itself calls.
    """
    features = asr.feature_extractor(audio, sampling_rate=RATE, return_tensors="pt", return_attention_mask=True)
    out = asr.model.generate(
        features.input_features,
        attention_mask=features.attention_mask,
        return_timestamps=True,
        return_token_timestamps=True,
        **generate_kwargs,
    )
    text, extra = asr.tokenizer._decode_asr(
        [{"tokens": out["sequences"], "token_timestamps": out["token_timestamps"]}],
        return_timestamps="word",
        return_language=False,
        time_precision=0.02,
    )
    return {"text": text, **extra}


def test_language_detection_and_given_languages(model, front_end, clips):
    utterances = [front_end.windows(a) for a in clips.values()]
    detected = _recognizer(model, windows_per_batch=8).transcribe(utterances)
    generation = GenerationConfig.from_pretrained(model)
    hf = AutoModelForSpeechSeq2Seq.from_pretrained(model, dtype=torch.float32)
    features = torch.from_numpy(np.stack([u[0].features for u in utterances]))
    want = [{v: k[2:-2] for k, v in generation.lang_to_id.items()}[i] for i in hf.detect_language(features).tolist()]
    assert [t.language for t in detected] == want  # transformers' own argmax
    assert all(0 < t.language_probability <= 1 for t in detected)
    assert len({t.language for t in detected}) > 1  # the fixture's detection depends on the audio

    given = _recognizer(model, language="Korean").transcribe(utterances[:2], languages=["zh", None])
    assert [(t.language, t.language_probability) for t in given] == [("zh", None), ("ko", None)]
    with pytest.raises(ValueError, match="'xx' is not one this model knows"):
        _recognizer(model).transcribe(utterances[:1], languages=["xx"])


def test_translate_prompts_with_the_translate_task(model, front_end, clips):
    utterance = front_end.windows(clips["ko/001"])
    recognizer = _recognizer(model, language="ko", task="translate", timestamps="none")
    seen = []
    handle = recognizer.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True
    )
    try:
        translated = recognizer.transcribe([utterance])[0]
    finally:
        handle.remove()
    prompts = [ids for ids in seen if len(ids) > 1]
    assert prompts and prompts[0] == [50258, 50264, 50359, 50364]  # sot, ko, translate, notimestamps
    transcribed = _recognizer(model, language="ko", timestamps="none").transcribe([utterance])[0]
    assert translated.text and translated.text != transcribed.text


def test_long_input_walks_30_s_windows_onto_one_timeline(model, front_end, clips):
    speech = np.concatenate(list(clips.values()))
    audio = np.tile(speech, math.ceil(70 * RATE / len(speech)))[: 70 * RATE]
    windows = front_end.windows(audio)
    assert [(w.offset, w.num_samples) for w in windows] == [(0, 30 * RATE), (30 * RATE, 30 * RATE), (60 * RATE, 10 * RATE)]
    assert windows[0].features.shape == (128, 3000)

    got = _recognizer(model, windows_per_batch=2).transcribe([windows])[0]
    assert got.computed_samples == 3 * 30 * RATE
    bounds = [t for s in got.segments for t in (s.start, s.end)]
    assert bounds == sorted(bounds) and bounds[0] >= 0 and bounds[-1] <= 70.0
    # Every window contributed segments in its own stretch of the file.
    assert {int(s.start // 30) for s in got.segments} == {0, 1, 2}
    # The last window on its own (language as detected on the first) gives the same segments.
    alone = _recognizer(model, language=got.language).transcribe([[windows[2]]])[0]
    assert [(s.start, s.end, s.text) for s in alone.segments] == [
        (s.start, s.end, s.text) for s in got.segments if s.start >= 60
    ]


def test_silence_gives_no_text_by_the_no_speech_probability(model, front_end, clips):
    silence = front_end.windows(np.zeros(5 * RATE, np.float32))
    quiet, speech = _recognizer(model, timestamps="word").transcribe([silence, front_end.windows(clips["en/001"])])
    assert (quiet.text, quiet.segments, quiet.words, quiet.confidence) == ("", [], [], None)
    assert speech.text and speech.segments
    # The rule, not the model, emptied it: without the threshold the decoder babbles.
    babble = _recognizer(model, decoding=DecodingOptions(temperature=0.0, no_speech_threshold=1.0)).transcribe([silence])[0]
    assert babble.text and babble.segments[0].no_speech_prob > 0.6 and babble.segments[0].avg_logprob < -1


def test_vad_windows_map_onto_the_original_timeline(model, clips):
    vad_front_end = WhisperFrontEnd(model, vad=True)
    gap = lambda seconds: np.zeros(int(seconds * RATE), np.float32)  # noqa: E731 - a one-line local helper
    first, second = clips["en/001"], clips["ko/001"]
    audio = np.concatenate([gap(5), first, gap(40), second, gap(3)])
    windows = vad_front_end.windows(audio)
    starts = [5 * RATE, 5 * RATE + len(first) + 40 * RATE]
    assert len(windows) == 2  # 40 s apart: one window each
    for window, start, clip in zip(windows, starts, (first, second)):
        assert abs(window.offset - start) < 0.5 * RATE and window.num_samples < len(clip) + RATE

    recognizer = _recognizer(model, language="en", timestamps="word")
    got = recognizer.transcribe([windows])[0]
    assert got.computed_samples == 2 * 30 * RATE and got.segments and got.words
    # Each window is the same speech transcribed on its own, shifted by where it sits in the file.
    plain = WhisperFrontEnd(model)
    expected = []
    for window in windows:
        alone = recognizer.transcribe([plain.windows(audio[window.offset : window.offset + window.num_samples])])[0]
        shift = window.offset / RATE
        expected += [(s.start + shift, s.end + shift, s.text) for s in alone.segments]
    assert [s.text for s in got.segments] == [text for _, _, text in expected]
    assert _flat((s.start, s.end) for s in got.segments) == pytest.approx(_flat(expected), abs=1e-3)
    for s in got.segments:
        inside = [w for w in windows if w.offset / RATE - 1e-3 <= s.start <= s.end <= (w.offset + w.num_samples) / RATE + 1e-3]
        assert inside, f"segment {s} outside every speech window"
    assert all(w.start >= windows[0].offset / RATE - 1e-3 for w in got.words)

    nothing = vad_front_end.windows(gap(8))
    assert nothing == []
    empty = recognizer.transcribe([nothing])[0]
    assert (empty.text, empty.segments, empty.words, empty.computed_samples) == ("", [], [], 0)


def test_registry_and_options(model, checkpoints):
    assert detect_backend(model) == "whisper"
    options = TranscribeOptions(inputs=["x"], output="y", model=model, language="auto", timestamps="word", vad=True)
    assert options.language is None and detect_backend(model, options.asr) == "whisper"
    assert isinstance(load_front_end(model, options.asr), WhisperFrontEnd)
    recognizer = load_recognizer(model, options.model_copy(update={"language": "ko"}).asr, "cpu")
    assert (recognizer.backend, recognizer.language, recognizer.timestamps) == ("whisper", "ko", "word")
    with pytest.raises(ModelError, match="'klingon' is not one this model knows"):
        detect_backend(model, options.model_copy(update={"language": "klingon"}).asr)
    ctc = str(checkpoints["ctc-xlsr"])
    with pytest.raises(ModelError, match=r"task 'translate'.*CTC"):
        detect_backend(ctc, AsrOptions(model=ctc, task="translate"))


def test_default_batches_pack_16_windows_per_model_call_on_cpu(model, clips):
    # Every window costs the encoder 30 s, so the job's units count windows, not audio: with
    # the CPU default (480 s) 20 short files make units of 16 and 4 windows, and the
    # recognizer runs each unit as one generate call.
    options = TranscribeOptions(inputs=["x"], output="y", model=model)
    prepare = transcribe.PrepareUnits(options, detect_model(model))
    assert prepare.budget == 16 * prepare.front_end.window_samples
    audio = list(clips.values())
    items = [Item(f"f{k}", "", windows=prepare.front_end.windows(audio[k % len(audio)])) for k in range(20)]
    assert sorted(len(unit.items) for unit in prepare._pack(items)) == [4, 16]
    assert load_recognizer(model, options.asr, "cpu", run=options.run).batch_size == 16
    assert options.budget_s("ctc") == 10.0  # a CTC model's batches count audio: 10 s on a CPU


@pytest.mark.parametrize("condition", [False, True])
def test_front_end_plans_the_engine_calls_the_recognizer_makes(model, clips, condition):
    # The job plans where it prepares (the front end) and the recognizer runs that plan: both
    # must plan alike, first windows first, one window rank per call when conditioning.
    options = TranscribeOptions(inputs=["x"], output="y", model=model, batch_seconds=60, temperature=0,
                                condition_on_previous_text=condition, max_new_tokens=MAX_NEW_TOKENS)
    front_end, recognizer = load_front_end(model, options.asr), load_recognizer(model, options.asr, "cpu", run=options.run)
    audio = list(clips.values())
    # Files of 1, 3 and 2 windows of 30 s.
    utterances = [front_end.windows(np.tile(audio[k], 1 + 25 * n)[: (30 * n + 5) * RATE]) for k, n in enumerate((0, 2, 1))]
    assert [len(u) for u in utterances] == [1, 3, 2]
    planned = front_end.plan(utterances, int(options.budget_s("whisper") * front_end.sample_rate))
    assert planned == recognizer.plan(utterances, [options.decoding()] * 3)
    calls = [[(0, 0), (1, 0)], [(2, 0)], [(1, 1), (2, 1)], [(1, 2)]] if condition else [
        [(0, 0), (1, 0)], [(2, 0), (1, 1)], [(2, 1), (1, 2)]]
    assert planned == calls
    for got, want in zip(recognizer.transcribe(utterances, batches=planned), recognizer.transcribe(utterances)):
        _same(got, want)
    with pytest.raises(ValueError, match="not each of"):
        recognizer.transcribe(utterances, batches=planned[1:])


def test_cli_refuses_options_the_model_cannot_honour(model, checkpoints, tmp_path, capsys):
    base = ["transcribe", str(SAMPLES), "-o", str(tmp_path / "out")]
    assert cli_main([*base, "--model", model, "--language", "klingon"]) == 2
    assert "language 'klingon' is not one this model knows" in capsys.readouterr().err
    assert cli_main([*base, "--model", str(checkpoints["ctc-xlsr"]), "--task", "translate"]) == 2
    assert "can only transcribe" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_job_gives_one_row_per_input_with_errors_for_bad_files(ray_local, model, clips, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "empty.wav").write_bytes(b"")
    (extra / "not_audio.flac").write_text("this is not audio\n")
    sf.write(extra / "silence.wav", np.zeros(6 * RATE, np.float32), RATE)
    sf.write(extra / "speech.wav", clips["zh/002"], RATE)  # no manifest: language detected
    options = TranscribeOptions(
        inputs=[str(SAMPLES / "manifest.jsonl"), str(extra)],
        output=str(tmp_path / "out"),
        model=model,
        vad=True,
        timestamps="word",
        max_new_tokens=MAX_NEW_TOKENS,
        batch_seconds=60,
        cpus_per_actor=0.5,
        torch_threads=1,
    )
    summary = transcribe.run(options)
    rows = transcribe.read_output(options.output).to_pandas().set_index("id")
    assert (summary.rows, summary.errors) == (14, 2) and len(rows) == 14
    assert rows.loc["empty.wav", "error"] == "empty file (0 bytes)"
    assert "cannot read audio header" in rows.loc["not_audio.flac", "error"]
    ok = rows[rows["error"].isna()]
    assert set(ok["backend"]) == {"whisper"} and set(ok["engine"]) == {"transformers"} and len(ok) == 12
    # Manifest languages reach the model (no detection); the other files are detected.
    manifest = ok.loc[[i for i in ok.index if "/" in i]]
    assert manifest["language"].tolist() == [i.split("/")[0] if not i.startswith("misc") else "en" for i in manifest.index]
    assert manifest["language_probability"].isna().all()
    assert 0 < ok.loc["speech.wav", "language_probability"] <= 1
    # Silence: VAD finds no speech, so no window, no compute and no text.
    assert (ok.loc["silence.wav", "text"], len(ok.loc["silence.wav", "segments"]), ok.loc["silence.wav", "computed_s"]) == ("", 0, 0)
    spoken = ok.drop(index="silence.wav")
    assert (spoken["computed_s"] == 30.0).all() and (spoken["text"].str.len() > 0).sum() >= len(spoken) // 2
    for _, row in spoken.iterrows():
        times = [t for s in row["segments"] for t in (s["start"], s["end"])]
        assert times == sorted(times) and times[0] >= 0 and times[-1] <= row["duration_s"] + 1e-3
        assert all(0 <= w["start"] <= w["end"] <= row["duration_s"] + 1e-3 for w in row["words"])
