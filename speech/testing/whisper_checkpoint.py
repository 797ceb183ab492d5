"""The ``whisper`` fixture: WhisperForConditionalGeneration laid out like whisper-large-v3 at toy
width (see :mod:`speech.testing.checkpoints`, which builds and caches every fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from speech.testing.checkpoints import SAMPLING_RATE

__all__ = ["build_whisper_checkpoint", "build_whisper_generation_config", "build_whisper_tokenizer",
           "verify_whisper_checkpoint"]

# Sentences the fixture's byte-level BPE merges are learned from: a few hundred real merges in
# English, Korean and Chinese, so that tokenizing real text exercises multi-byte merges.
_WHISPER_BPE_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things from the store.",
    "It is twenty past seven on a rainy Tuesday morning.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 정말 좋네요.",
    "저는 매일 아침에 커피를 마십니다.",
    "你好，很高兴认识你。今天天气很好，我们去公园散步吧。",
    "我每天早上喝一杯咖啡。",
)
_WHISPER_TEXT_VOCAB = 50_257  # text tokens, ids 0..50256, as in every multilingual Whisper
_WHISPER_TIMESTAMPS = 1_501  # <|0.00|> .. <|30.00|> in 20 ms steps
_WHISPER_D_MODEL = 64
# Heads of the last decoder layer whose cross-attention word timestamps are aligned with.
_WHISPER_ALIGNMENT_HEADS = [[1, 0], [1, 1]]
# Punctuation ids suppressed in generation, the byte tokens of whisper-large-v3's own list
# (ids below 256 are the same bytes in both vocabularies), plus the special tokens it suppresses.
_WHISPER_SUPPRESS = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93]

# Calibration (see _calibrate_whisper): output biases in logits, and the no-speech logit.
_EOS_BIAS = 6.2
_TIMESTAMP_BIAS = 2.5
_TIMESTAMP_RAMP = 0.02  # per 20 ms step: later timestamps are less likely, so time advances slowly
_BIAS_UNIT = 50.0  # value of the decoder's constant hidden unit that carries the biases
_NO_SPEECH_LOGIT = {"silence": 15.0, "sound": 3.0}


def _gpt2_byte_tokens() -> list[str]:
    """The 256 single-byte tokens of a byte-level BPE, in GPT-2's (and Whisper's) id order.

    Printable bytes stand for themselves and come first; the others are mapped to code points
    from U+0100 on, in byte order. So the space byte is ``"Ġ"`` at id 220, as in Whisper.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _whisper_vocabulary(seed: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Text vocabulary (50,257 tokens) and BPE merges at the ids of multilingual Whisper.

    Ids 0-255 are the byte tokens in GPT-2 order, then the merges learned from
    :data:`_WHISPER_BPE_TEXT`, then pseudo-words (``"Ġkato"``, ``"rume"``: never produced by
    encoding, but decodable, so random outputs read as words with spaces), and ``""`` at
    id 50256, which CTranslate2 and faster-whisper look for to call a model multilingual.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_WHISPER_BPE_TEXT, trainer)
    trained = json.loads(bpe.to_str())["model"]
    tokens = _gpt2_byte_tokens()
    known = set(tokens)
    tokens += [t for t, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]) if t not in known]
    known.update(tokens)
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    # 1-3 syllables, 60% with a leading space; drawn in bulk, first occurrences kept.
    count = 4 * _WHISPER_TEXT_VOCAB
    picks, lengths, spaced = rng.integers(0, len(syllables), (count, 3)), rng.integers(1, 4, count), rng.random(count) < 0.6
    for pick, length, space in zip(picks.tolist(), lengths.tolist(), spaced.tolist()):
        word = ("Ġ" if space else "") + "".join(syllables[k] for k in pick[:length])
        if word not in known:
            known.add(word)
            tokens.append(word)
            if len(tokens) == _WHISPER_TEXT_VOCAB - 1:
                break
    else:
        raise RuntimeError("not enough distinct pseudo-words for the whisper vocabulary")
    tokens.append("")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    return {token: i for i, token in enumerate(tokens)}, merges


def build_whisper_tokenizer(seed: int) -> WhisperTokenizer:
    """WhisperTokenizer with every special token at whisper-large-v3's id.

    ``<|endoftext|>`` 50257, ``<|startoftranscript|>`` 50258, the 100 language tokens
    50259-50358, ``<|translate|>`` 50359, ``<|transcribe|>`` 50360, ``<|startoflm|>`` 50361,
    ``<|startofprev|>`` 50362, ``<|nospeech|>`` 50363, ``<|notimestamps|>`` 50364, then the
    1501 timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` (50365-51865; not special, as in Whisper).
    """
    from tokenizers import AddedToken
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab, merges = _whisper_vocabulary(seed)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)  # adds <|endoftext|> at 50257
    specials = [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [AddedToken(t, special=True, normalized=False) for t in specials]}
    )
    tokenizer.add_tokens(
        [AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(_WHISPER_TIMESTAMPS)]
    )
    tokenizer.set_prefix_tokens()  # the prefix ids were looked up before the specials existed
    expected = {"<|endoftext|>": 50257, "<|startoftranscript|>": 50258, "<|en|>": 50259, "<|yue|>": 50358,
                "<|nospeech|>": 50363, "<|notimestamps|>": 50364, "<|0.00|>": 50365, "<|30.00|>": 51865}
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in expected}
    if got != expected or len(tokenizer) != 51866:
        raise RuntimeError(f"whisper tokenizer ids {got}, {len(tokenizer)} tokens; expected {expected}, 51866")
    return tokenizer


def build_whisper_generation_config(tokenizer: WhisperTokenizer) -> GenerationConfig:
    """The generation config a multilingual Whisper ships: languages, tasks, alignment heads."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ids = tokenizer.convert_tokens_to_ids
    config = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
        max_length=448,
        begin_suppress_tokens=[220, ids("<|endoftext|>")],
        # large-v3's specials, plus <|nospeech|> (openai-whisper suppresses it too): the fixture's
        # is calibrated to be likely on silence, and must show in the first step only.
        suppress_tokens=_WHISPER_SUPPRESS
        + [ids(t) for t in ("<|startoftranscript|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>")],
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        is_multilingual=True,
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50,
        alignment_heads=_WHISPER_ALIGNMENT_HEADS,
    )
    # Without this, save_pretrained treats the config as derived from the model config and
    # drops the Whisper-only keys; generate(language=...) then fails on reload.
    config._from_model_config = False
    return config


def _calibration_sounds(seed: int) -> list[np.ndarray]:
    """Non-silent calibration inputs: voiced, syllable-rate modulated harmonic tones and noise.

    Each is float32 ``[n]`` at 16 kHz, 1-30 s long.
    """
    rng = np.random.default_rng(seed)
    sounds = []
    for k in range(16):
        seconds = float(rng.uniform(1.0, 30.0))
        t = np.arange(int(seconds * SAMPLING_RATE), dtype=np.float32) / SAMPLING_RATE
        f0 = rng.uniform(90, 260) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLING_RATE
        voiced = sum(rng.uniform(0, 1) / h * np.sin(h * phase) for h in range(1, 7))
        noise = rng.standard_normal(len(t)) * rng.uniform(0, 0.5)
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6)), 0, None)
        audio = (voiced + noise) * syllables if k % 4 else noise * (1 + syllables)
        sounds.append((0.3 * audio / np.abs(audio).max()).astype(np.float32))
    return sounds


@torch.no_grad()
def _calibrate_whisper(
    model: WhisperForConditionalGeneration, feature_extractor: WhisperFeatureExtractor, tokenizer, seed: int
) -> None:
    """Make the random model behave like a Whisper in the ways the code under test depends on.

    * Inputs matter: the convolutions and the decoder's cross-attention are scaled up, or the
      decoder would attend evenly to a position-dominated encoder output and emit the same
      tokens for every input.
    * Output biases (Whisper's head has none): the last unit of the decoder's final layer norm
      is made a constant, and the last embedding coordinate of a token times it is that token's
      bias. End-of-text gets one such that outputs end after a few to a few dozen tokens, and
      timestamps one that falls with time, so timestamped output has several segments that
      advance slowly instead of jumping to 30 s.
    * No-speech: the ``<|nospeech|>`` embedding is fit (least squares on the decoder state at
      ``<|startoftranscript|>``) so its probability is ~0.95 on digital silence and ~0 on sound.
    """
    encoder, decoder = model.model.encoder, model.model.decoder
    for conv in (encoder.conv1, encoder.conv2):
        conv.weight *= 3.0
    for layer in decoder.layers:
        for proj in (layer.encoder_attn.q_proj, layer.encoder_attn.k_proj, layer.encoder_attn.v_proj, layer.encoder_attn.out_proj):
            proj.weight *= 3.0

    embeddings = decoder.embed_tokens.weight  # tied with the output projection
    decoder.layer_norm.weight[-1] = 0.0
    decoder.layer_norm.bias[-1] = _BIAS_UNIT
    embeddings[:, -1] = 0.0
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    first_timestamp = tokenizer.convert_tokens_to_ids("<|0.00|>")
    steps = torch.arange(_WHISPER_TIMESTAMPS, dtype=embeddings.dtype)
    embeddings[eos, -1] = _EOS_BIAS / _BIAS_UNIT
    embeddings[first_timestamp:, -1] = (_TIMESTAMP_BIAS - _TIMESTAMP_RAMP * steps) / _BIAS_UNIT

    silence = [np.zeros(SAMPLING_RATE // 2, np.float32), np.zeros(30 * SAMPLING_RATE, np.float32)]
    sounds = _calibration_sounds(seed)
    features = torch.from_numpy(
        np.concatenate([feature_extractor(a, sampling_rate=SAMPLING_RATE, return_tensors="np").input_features for a in silence + sounds])
    )
    sot = torch.full((len(features), 1), model.generation_config.decoder_start_token_id)
    states = model.model(input_features=features, decoder_input_ids=sot).last_hidden_state[:, -1]  # [n, d_model]
    targets = torch.tensor([_NO_SPEECH_LOGIT["silence"]] * len(silence) + [_NO_SPEECH_LOGIT["sound"]] * len(sounds))
    no_speech = tokenizer.convert_tokens_to_ids("<|nospeech|>")
    embeddings[no_speech] = torch.linalg.lstsq(states, targets[:, None]).solution[:, 0]


def build_whisper_checkpoint(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random-weight WhisperForConditionalGeneration checkpoint in ``out_dir``.

    The architecture of whisper-large-v3 at toy width: 128 mel bins, 30 s windows (3000 mel
    frames, 1500 encoder positions), 51,866 tokens with every special token at large-v3's id,
    2 encoder and 2 decoder layers of width 64 (3.6M parameters, most in the tied embedding),
    weights stored as float16 like the real checkpoints (about 7 MB). The generation config
    carries ``lang_to_id``, ``task_to_id``, ``alignment_heads`` and the timestamp ids, so
    ``generate(language=..., task=..., return_timestamps=..., return_token_timestamps=...)``
    work as with a hub checkpoint. Random outputs are calibrated (see
    :func:`_calibrate_whisper`): they depend on the input, end after a varying number of
    tokens, contain timestamp segments, and ``<|nospeech|>`` is likely on digital silence.

    The directory gets ``config.json``, ``generation_config.json``, ``model.safetensors``,
    ``tokenizer.json``, ``tokenizer_config.json``, ``processor_config.json`` and a flat
    ``preprocessor_config.json``. The result is reloaded through the Auto classes and run
    (``generate(language="ko", task="translate")``) before returning; ``RuntimeError`` if
    anything is off. The global torch RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        return _build_whisper_checkpoint(Path(out_dir), seed=seed)


def _build_whisper_checkpoint(out: Path, *, seed: int) -> Path:
    tokenizer = build_whisper_tokenizer(seed)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=30, n_fft=400
    )
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=128,
        d_model=_WHISPER_D_MODEL,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * _WHISPER_D_MODEL,
        decoder_ffn_dim=2 * _WHISPER_D_MODEL,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        begin_suppress_tokens=[220, tokenizer.eos_token_id],
        init_std=0.2,  # the default 0.02 leaves a toy-width model nearly blind to its input
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = build_whisper_generation_config(tokenizer)
    _calibrate_whisper(model, feature_extractor, tokenizer, seed)

    out.mkdir(parents=True, exist_ok=True)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    feature_extractor.save_pretrained(out)
    model.to(torch.float16).save_pretrained(out)
    verify_whisper_checkpoint(out)
    return out


def verify_whisper_checkpoint(path: Path) -> None:
    """Reload ``path`` as a hub id would be loaded and generate with language and task set."""
    model = AutoModelForSpeechSeq2Seq.from_pretrained(path, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(path)
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    if feature_extractor.feature_size != 128 or processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>") != 50364:
        raise RuntimeError(f"{path}: reloaded feature extractor or tokenizer differs from whisper-large-v3's layout")
    t = np.arange(3 * SAMPLING_RATE) / SAMPLING_RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)).astype(np.float32)
    features = feature_extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
    ids = model.generate(features, language="ko", task="translate", max_new_tokens=8)
    if ids.shape[0] != 1 or ids.shape[1] < 1:
        raise RuntimeError(f"{path}: generate(language='ko', task='translate') returned {tuple(ids.shape)}")
