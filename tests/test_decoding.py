"""Whisper decoding options: the fallback rules (speech.asr.decoding) and both engines honouring them.

The rules are checked on attempts made up for the purpose (what the engines return is the
input of this logic); the engines are then run for real on the tiny random Whisper fixture,
whose decoder fails every threshold (it babbles), and on its CTranslate2 conversion.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SAMPLES

from speech.asr import decoding
from speech.asr.decoding import Attempt, Request
from speech.asr.whisper import WhisperFrontEnd, WhisperRecognizer
from speech.audio import decode
from speech.options import DEFAULT_TEMPERATURES, DecodingOptions, OptionsError, TranscribeOptions, load_options

RATE = 16_000


def _attempt(tokens: int = 5, avg_logprob: float = -0.2, no_speech: float = 0.01) -> Attempt:
    return Attempt(np.arange(tokens), np.full(tokens, avg_logprob, np.float32), avg_logprob, no_speech)


# ---------------------------------------------------------------- the rules


def test_options_defaults_and_validation():
    options = DecodingOptions()
    assert (options.beam_size, options.best_of, options.temperature) == (1, 5, DEFAULT_TEMPERATURES)
    assert (options.compression_ratio_threshold, options.logprob_threshold, options.no_speech_threshold) == (2.4, -1.0, 0.6)
    assert options.condition_on_previous_text is False and options.initial_prompt is None
    job = load_options(TranscribeOptions, None, {"inputs": ["x"], "output": "y", "model": "m", "temperature": "0,0.5,1",
                                                 "logprob_threshold": "none", "beam_size": 3})
    assert job.decoding() == DecodingOptions(temperature=(0.0, 0.5, 1.0), logprob_threshold=None, beam_size=3)
    for bad, field in (({"temperature": "0.5,0.2"}, "temperature"), ({"temperature": "2"}, "temperature"),
                       ({"beam_size": 0}, "beam_size"), ({"no_speech_threshold": 1.5}, "no_speech_threshold")):
        with pytest.raises(OptionsError, match=field):
            load_options(TranscribeOptions, None, {"inputs": ["x"], "output": "y", "model": "m", **bad})


def test_compression_ratio_flags_loops():
    assert decoding.compression_ratio("the quick brown fox jumps over the lazy dog") < 1.5
    assert decoding.compression_ratio("thank you. " * 30) > 2.4
    assert decoding.compression_ratio("") == 0.0


def test_fallback_retries_only_failing_windows_hotter_and_keeps_the_best():
    options = DecodingOptions(temperature=(0.0, 0.5, 1.0))
    loop = "thank you. " * 30
    # (window, temperature) -> (text, mean log-probability); windows: 0 clear at once, 1 loops
    # until 1.0, 2 fails at every temperature, 3 is silence (likely <|nospeech|>, unlikely text).
    script = {
        (0, 0.0): ("a clear sentence", -0.2),
        (1, 0.0): (loop, -0.1), (1, 0.5): (loop, -0.3), (1, 1.0): ("finally some words", -0.4),
        (2, 0.0): (loop, -0.1), (2, 0.5): ("unlikely but varied words", -1.5), (2, 1.0): (loop, -0.05),
        (3, 0.0): ("thank you", -2.0),
    }
    texts: list[str] = []
    calls = []

    def decode(requests, temperature):
        calls.append((temperature, [r.row for r in requests]))
        out = []
        for r in requests:
            text, logprob = script[(r.row, temperature)]
            texts.append(text)
            out.append(Attempt(np.array([len(texts) - 1]), np.zeros(1, np.float32), logprob, 0.9 if r.row == 3 else 0.01))
        return out

    requests = [Request(row, "en", (), options) for row in range(4)]
    results = decoding.decode_with_fallback(requests, decode, lambda tokens: texts[tokens[0]])
    assert calls == [(0.0, [0, 1, 2, 3]), (0.5, [1, 2]), (1.0, [1, 2])]  # silence (3) is not retried
    assert [(r.temperature, r.failed) for r in results] == [(0.0, False), (1.0, False), (0.5, True), (0.0, False)]
    # Window 2 failed everywhere: the likeliest attempt that did not loop is kept (not the
    # likelier loops), and it says so.
    assert texts[results[2].attempt.tokens[0]] == "unlikely but varied words" and results[2].compression_ratio < 2.4
    assert decoding.is_silence(results[3].attempt, options)


def test_fallback_groups_requests_with_their_own_schedules():
    seen = []

    def decode(requests, temperature):
        seen.append((temperature, sorted(r.row for r in requests), {r.context for r in requests}))
        return [_attempt(avg_logprob=-2.0) for _ in requests]  # always too unlikely

    short = DecodingOptions(temperature=0.0)
    long = DecodingOptions(temperature=(0.0, 0.4))
    requests = [Request(0, "en", (), short), Request(1, "en", (), long), Request(2, "en", (9, 1), long)]
    results = decoding.decode_with_fallback(requests, decode, lambda tokens: "some words")
    assert seen == [(0.0, [0, 1], {()}), (0.0, [2], {(9, 1)}), (0.4, [1], {()}), (0.4, [2], {(9, 1)})]
    assert [r.failed for r in results] == [True, True, True]


def test_prompt_context_layout():
    encode = lambda text: [ord(c) for c in text.strip()]  # noqa: E731 - one token per character
    options = DecodingOptions(hotwords="ab")
    assert decoding.context(DecodingOptions(), [], encode, 7, 10) == ()
    assert decoding.context(DecodingOptions(), [1, 2, 3], encode, 7, 10) == (7, 1, 2, 3)
    assert decoding.context(options, [], encode, 7, 10) == (7, 97, 98)
    # Hotwords first, then the most recent previous text, within the limit.
    assert decoding.context(options, list(range(20)), encode, 7, 6) == (7, 97, 98, 17, 18, 19)
    assert decoding.initial_tokens(DecodingOptions(initial_prompt="hi"), encode) == [104, 105]


# ---------------------------------------------------------------- the engines honour them


@pytest.fixture(scope="module")
def tiny(checkpoints) -> str:
    return str(checkpoints["whisper"])


@pytest.fixture(scope="module")
def tiny_ct2(tiny, tmp_path_factory) -> str:
    from ctranslate2.converters import TransformersConverter

    out = tmp_path_factory.mktemp("tiny-ct2") / "model"
    TransformersConverter(tiny, copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(out))
    return str(out)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    row = json.loads((SAMPLES / "manifest.jsonl").read_text().splitlines()[0])
    return decode(str(SAMPLES / row["path"]), RATE)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _prompts_seen(recognizer: WhisperRecognizer, utterances, **kwargs) -> tuple[list, list[list[int]]]:
    """Transcripts, and the decoder inputs of every multi-token (prompt) call."""
    seen = []
    handle = recognizer.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kw: seen.append(kw["input_ids"][0].tolist()), with_kwargs=True
    )
    try:
        return recognizer.transcribe(utterances, **kwargs), [ids for ids in seen if len(ids) > 1]
    finally:
        handle.remove()


@pytest.mark.parametrize("engine", ["transformers", "ctranslate2"])
def test_a_babbling_window_is_retried_hotter_and_flagged(engine, tiny, tiny_ct2, clip):
    from speech.asr.whisper_ct2 import Ct2WhisperRecognizer

    options = DecodingOptions(temperature=(0.0, 0.5), best_of=2)
    if engine == "transformers":
        recognizer = WhisperRecognizer(tiny, language="en", max_new_tokens=24, decoding=options)
    else:
        recognizer = Ct2WhisperRecognizer(tiny_ct2, language="en", max_new_tokens=24, decoding=options)
    front_end = WhisperFrontEnd(tiny)
    got = recognizer.transcribe([front_end.windows(clip)])[0]
    # The random decoder is far below logprob_threshold whatever the temperature.
    assert got.thresholds_failed is True
    assert got.segments and {s.temperature for s in got.segments} <= {0.0, 0.5}
    assert all(s.compression_ratio > 0 for s in got.segments)
    calm = recognizer.transcribe([front_end.windows(clip)], options=[DecodingOptions(temperature=0.0, logprob_threshold=None,
                                                                                        compression_ratio_threshold=None)])[0]
    assert calm.thresholds_failed is False and {s.temperature for s in calm.segments} == {0.0}


def test_initial_prompt_hotwords_and_conditioning_reach_the_decoder(tiny, clip):
    front_end = WhisperFrontEnd(tiny)
    recognizer = WhisperRecognizer(tiny, language="en", max_new_tokens=8, timestamps="none")
    encode = lambda text: recognizer.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731 - a one-line local helper
    sot_prev, sot = 50362, 50258
    two_windows = front_end.windows(np.concatenate([clip, np.zeros(30 * RATE - len(clip), np.float32), clip]))
    assert len(two_windows) == 2

    greedy = DecodingOptions(temperature=0.0)
    prompted = greedy.model_copy(update={"initial_prompt": "Stella", "hotwords": "fox"})
    _, prompts = _prompts_seen(recognizer, [two_windows], options=[prompted])
    first, second = prompts
    assert first[: first.index(sot)] == [sot_prev, *encode(" fox"), *encode(" Stella")]
    assert second[: second.index(sot)] == [sot_prev, *encode(" fox")]  # no conditioning: the prompt was the first window's

    conditioned = greedy.model_copy(update={"condition_on_previous_text": True})
    _got, prompts = _prompts_seen(recognizer, [two_windows], options=[conditioned])
    first, second = prompts
    assert first[0] == sot
    text_tokens = list(second[1 : second.index(sot)])
    assert second[0] == sot_prev and text_tokens and recognizer.tokenizer.decode(text_tokens).strip()


def test_beam_search_runs_in_both_engines(tiny, tiny_ct2, clip):
    from speech.asr.whisper_ct2 import Ct2WhisperRecognizer

    front_end = WhisperFrontEnd(tiny)
    beams = DecodingOptions(beam_size=3, temperature=0.0)
    hf = WhisperRecognizer(tiny, language="en", max_new_tokens=12, timestamps="word", decoding=beams)
    ours = hf.transcribe([front_end.windows(clip)])[0]
    features = torch.from_numpy(front_end.windows(clip)[0].features[None])
    want = hf.model.generate(features, language="en", num_beams=3, max_new_tokens=12, return_timestamps=True,
                             force_unique_generate_call=True)  # one window, one call (no seeking)
    assert ours.text == hf.tokenizer.decode(want[0], skip_special_tokens=True).strip()
    assert all(0 <= w.confidence <= 1 for w in ours.words) and ours.words
    ct2 = Ct2WhisperRecognizer(tiny_ct2, language="en", max_new_tokens=12, timestamps="word", decoding=beams)
    assert ct2.transcribe([front_end.windows(clip)])[0].words


def test_openai_fields_map_onto_the_servers_options():
    from serve.asr import request_decoding

    served = DecodingOptions(beam_size=2, hotwords="Stella")
    assert request_decoding(served, 0.0, None) == served  # OpenAI's default keeps the server's schedule
    hot = request_decoding(served, 0.3, "Names: Stella.")
    assert hot.temperature == (0.3, 0.5, 0.7, 0.9)  # openai-whisper's steps of 0.2 up to 1
    assert (hot.initial_prompt, hot.beam_size, hot.hotwords) == ("Names: Stella.", 2, "Stella")
    assert request_decoding(served, 1.0, "").temperature == (1.0,)
