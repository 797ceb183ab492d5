"""Tiny random-weight checkpoints of real ``transformers`` architectures, for offline tests.

No machine this project is tested on can reach the Hugging Face hub, yet the code under test
loads models the way a user's hub id is loaded: ``from_pretrained(name_or_directory)``. So the
tests build checkpoints of the *real* architectures - the same model classes, config fields,
feature extractors and tokenizers, written to disk by ``save_pretrained`` in the same file
layout as a hub repository - with random weights and tiny layer sizes, and pass the directory
wherever a hub id would go. Everything that depends on the architecture rather than on trained
weights is exercised for real: file layout and config parsing, feature extraction, attention
masks, the 320-sample (20 ms) CTC frame stride, tokenizer decoding. The transcripts are
gibberish by construction; tests can compare them between code paths (batched vs one at a
time, for instance) but never against a reference text.

The fixtures, as built by :func:`build_fixtures`:

``ctc-xlsr``
    Wav2Vec2ForCTC in the XLSR / wav2vec2-large-lv60 style: layer-normalized feature encoder,
    pre-norm ("stable layer norm") transformer, and a feature extractor that returns an
    ``attention_mask``, so padded batches give the same frames as single inputs.
``ctc-base``
    Wav2Vec2ForCTC in the wav2vec2-base style: group-normalized feature encoder, post-norm
    transformer, and a feature extractor that returns no ``attention_mask``. Such models are
    not padding-invariant (padding changes the group-norm statistics), as with the real ones.

Both share one character vocabulary covering English, Korean and Chinese (see
:func:`_ctc_vocabulary`), about 32k tokens, which makes the output layer most of each model's
1.1M parameters (about 4.9 MB on disk per fixture).

``whisper``
    WhisperForConditionalGeneration laid out like whisper-large-v3 (128 mel bins, 30 s windows,
    every special token at large-v3's id, a generation config with languages, tasks and
    alignment heads) at toy width; random outputs calibrated to end, carry timestamp segments
    and flag digital silence as no-speech (see :func:`build_whisper_checkpoint`). About 8 MB.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    GenerationConfig,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
    pipeline,
)

__all__ = ["FIXTURES_VERSION", "build_cached", "build_ctc_checkpoint", "build_fixtures", "build_whisper_checkpoint"]

#: Version of what the builders produce. Bump it whenever a builder's output changes, so that
#: fixture directories cached by :func:`build_fixtures` are rebuilt.
FIXTURES_VERSION = "2"

#: Sampling rate every fixture's feature extractor expects, in Hz.
SAMPLING_RATE = 16_000

# The real wav2vec2 feature encoder: 7 convolutions whose strides multiply to 320 input
# samples per output frame (20 ms at 16 kHz). Only the channel count is shrunk.
_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
_CONV_DIM = (16,) * len(_CONV_KERNEL)

# Special tokens, in the order (and so with the ids) of facebook/wav2vec2-base-960h.
_PAD, _BOS, _EOS, _UNK, _WORD_DELIMITER = "<pad>", "<s>", "</s>", "<unk>", "|"

# Share of frames the calibrated output layer assigns to the CTC blank on white noise.
_TARGET_BLANK_SHARE = 0.5
_CALIBRATION_SECONDS = 2.0

_COMPLETE_MARKER = ".complete"


def _ctc_vocabulary() -> list[str]:
    """Return the character vocabulary, index = token id.

    ``<pad>`` (id 0, also the CTC blank), ``<s>``, ``</s>``, ``<unk>``, the word delimiter
    ``|``, then the apostrophe, ``a``-``z``, ``0``-``9``, every precomposed Hangul syllable
    (U+AC00..U+D7A3, 11,172 tokens) and every CJK Unified Ideograph of the basic block
    (U+4E00..U+9FFF, 20,992 tokens): 32,206 tokens in all.
    """
    return [
        _PAD,
        _BOS,
        _EOS,
        _UNK,
        _WORD_DELIMITER,
        "'",
        *(chr(c) for c in range(ord("a"), ord("z") + 1)),
        *(str(d) for d in range(10)),
        *(chr(c) for c in range(0xAC00, 0xD7A3 + 1)),
        *(chr(c) for c in range(0x4E00, 0x9FFF + 1)),
    ]


def _build_tokenizer(vocabulary: list[str] | None = None) -> Wav2Vec2CTCTokenizer:
    """Build the character-level CTC tokenizer over ``vocabulary`` (default :func:`_ctc_vocabulary`).

    A custom vocabulary must start with the same five special tokens (``<pad>`` first).
    """
    vocab = {token: i for i, token in enumerate(vocabulary or _ctc_vocabulary())}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            bos_token=_BOS,
            eos_token=_EOS,
            unk_token=_UNK,
            pad_token=_PAD,
            word_delimiter_token=_WORD_DELIMITER,
            do_lower_case=False,
        )
    if len(tokenizer) != len(vocab) or tokenizer.pad_token_id != 0:
        raise RuntimeError(
            f"tokenizer has {len(tokenizer)} tokens and pad id {tokenizer.pad_token_id}; "
            f"expected {len(vocab)} and 0"
        )
    return tokenizer


def _build_feature_extractor(attention_mask: bool) -> Wav2Vec2FeatureExtractor:
    """Build the raw-waveform feature extractor: 16 kHz mono, zero-mean unit-variance."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=attention_mask,
    )


def _build_config(*, attention_mask: bool, vocab_size: int, pad_token_id: int) -> Wav2Vec2Config:
    """Build a tiny Wav2Vec2 config; ``attention_mask`` selects the XLSR or the base style."""
    if attention_mask:
        style = dict(feat_extract_norm="layer", do_stable_layer_norm=True, feat_extract_activation="gelu")
    else:
        style = dict(feat_extract_norm="group", do_stable_layer_norm=False, feat_extract_activation="gelu")
    return Wav2Vec2Config(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=_CONV_DIM,
        conv_kernel=_CONV_KERNEL,
        conv_stride=_CONV_STRIDE,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        **style,
    )


def _calibration_audio(seed: int) -> np.ndarray:
    """Return seeded white noise, float32 of shape ``(2 s * 16000,)``."""
    n = int(_CALIBRATION_SECONDS * SAMPLING_RATE)
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@torch.no_grad()
def _calibrate_blank(
    model: Wav2Vec2ForCTC, feature_extractor: Wav2Vec2FeatureExtractor, audio: np.ndarray
) -> None:
    """Shift the blank's output bias so that about half of ``audio``'s frames are blank.

    With default initialization a random CTC head never picks the blank (one of 32k classes),
    so transcripts have about one character per 20 ms frame and blank removal is never
    exercised. After this shift the output on noise is half blank and, measured on the
    espeak-ng sample corpus, 30-75% blank: transcript-like, and still not empty.
    """
    inputs = feature_extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    logits = model(inputs.input_values).logits[0]  # (frames, vocab)
    blank = model.config.pad_token_id
    others = torch.cat([logits[:, :blank], logits[:, blank + 1 :]], dim=1)
    margin = others.max(dim=1).values - logits[:, blank]  # > 0 where a non-blank wins
    model.lm_head.bias[blank] += torch.quantile(margin, _TARGET_BLANK_SHARE)


def _verify_ctc_checkpoint(path: Path, *, attention_mask: bool, audio: np.ndarray) -> None:
    """Load ``path`` the way a hub id is loaded and check it transcribes ``audio`` to some text.

    Raises ``RuntimeError`` describing the first check that fails.
    """
    model = AutoModelForCTC.from_pretrained(path)
    AutoProcessor.from_pretrained(path)
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)

    ratio = model.config.inputs_to_logits_ratio
    if ratio != 320:
        raise RuntimeError(f"{path}: inputs_to_logits_ratio is {ratio}, expected 320 (20 ms frames)")
    features = feature_extractor(audio, sampling_rate=SAMPLING_RATE)
    if ("attention_mask" in features) != attention_mask:
        raise RuntimeError(f"{path}: feature extractor attention_mask output is not {attention_mask}")

    asr = pipeline("automatic-speech-recognition", model=str(path))
    text = asr({"raw": audio, "sampling_rate": SAMPLING_RATE})["text"]
    if not text.strip():
        raise RuntimeError(f"{path}: greedy CTC decoding of noise gave an empty transcript")


def build_ctc_checkpoint(out_dir: str | Path, *, attention_mask: bool = True, seed: int = 0) -> Path:
    """Build a tiny random-weight Wav2Vec2ForCTC checkpoint in ``out_dir`` and return its path.

    ``attention_mask=True`` gives the XLSR style (layer-norm feature encoder, stable layer norm,
    feature extractor returning an attention mask), ``False`` the wav2vec2-base style (group
    norm, no attention mask). The model takes 16 kHz mono float audio, shape ``(batch,
    samples)``, and emits logits of shape ``(batch, frames, 32206)`` with one frame per 320
    samples (20 ms); token 0 (``<pad>``) is the CTC blank.

    The directory gets ``config.json``, ``model.safetensors``, ``vocab.json``,
    ``tokenizer_config.json``, ``processor_config.json`` (the processor, which transformers 5
    saves nested in one file) and a flat ``preprocessor_config.json`` for tools that read the
    feature extractor on its own. Weights are a deterministic function of ``seed``; the global
    torch RNG state is left as it was. The result is reloaded through ``AutoModelForCTC``,
    ``AutoProcessor``, ``AutoFeatureExtractor`` and an ASR ``pipeline`` before returning, and
    ``RuntimeError`` is raised if it does not load or transcribes noise to nothing.
    """
    # Initialization, loading and the pipeline all draw from the global torch RNG.
    with torch.random.fork_rng(devices=[]):
        return _build_ctc_checkpoint(Path(out_dir), attention_mask=attention_mask, seed=seed)


def _build_ctc_checkpoint(out: Path, *, attention_mask: bool, seed: int) -> Path:
    tokenizer = _build_tokenizer()
    feature_extractor = _build_feature_extractor(attention_mask)
    config = _build_config(
        attention_mask=attention_mask, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config).eval()
    audio = _calibration_audio(seed)
    _calibrate_blank(model, feature_extractor, audio)

    out.mkdir(parents=True, exist_ok=True)
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    feature_extractor.save_pretrained(out)
    model.save_pretrained(out)

    _verify_ctc_checkpoint(out, attention_mask=attention_mask, audio=audio)
    return out


# --- whisper -----------------------------------------------------------------------------------

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


def _build_whisper_tokenizer(seed: int) -> WhisperTokenizer:
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


def _build_whisper_generation_config(tokenizer: WhisperTokenizer) -> GenerationConfig:
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
    tokenizer = _build_whisper_tokenizer(seed)
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
    model.generation_config = _build_whisper_generation_config(tokenizer)
    _calibrate_whisper(model, feature_extractor, tokenizer, seed)

    out.mkdir(parents=True, exist_ok=True)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    feature_extractor.save_pretrained(out)
    model.to(torch.float16).save_pretrained(out)
    _verify_whisper_checkpoint(out)
    return out


def _verify_whisper_checkpoint(path: Path) -> None:
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


#: Every fixture :func:`build_fixtures` makes: name -> builder taking the output directory.
_FIXTURES: dict[str, Callable[[Path], Path]] = {
    "ctc-xlsr": partial(build_ctc_checkpoint, attention_mask=True),
    "ctc-base": partial(build_ctc_checkpoint, attention_mask=False),
    "whisper": build_whisper_checkpoint,
}


def _is_complete(path: Path, version: str = FIXTURES_VERSION) -> bool:
    """Whether ``path`` holds a fixture fully built by builders of ``version``."""
    try:
        return (path / _COMPLETE_MARKER).read_text(encoding="utf-8").strip() == version
    except OSError:
        return False


def _install(built: Path, final: Path, version: str = FIXTURES_VERSION) -> None:
    """Move the finished directory ``built`` to ``final``, replacing a stale one if present.

    ``built`` must be on the same file system (a sibling), so each rename is atomic: ``final``
    is at every moment absent, the old directory, or the complete new one.
    """
    try:
        os.rename(built, final)  # succeeds if ``final`` is absent or an empty directory
        return
    except OSError:
        if not final.exists():
            raise
    if _is_complete(final, version):  # a concurrent build finished first: keep its result
        shutil.rmtree(built)
        return
    stale = final.with_name(f".{final.name}.stale-{uuid.uuid4().hex}")
    os.rename(final, stale)
    os.rename(built, final)
    shutil.rmtree(stale, ignore_errors=True)


def build_fixtures(root: str | Path) -> dict[str, Path]:
    """Build every fixture into ``root/<name>`` and return ``{name: directory}``.

    Names: ``"ctc-xlsr"`` and ``"ctc-base"`` (see the module docstring). A fixture whose
    ``.complete`` marker holds the current :data:`FIXTURES_VERSION` is reused untouched;
    anything else is rebuilt in a temporary sibling directory, marked complete there, and only
    then renamed into place, so an interrupted build never leaves a directory that passes for
    a finished one. Leftover ``.<name>.*.tmp`` directories of a killed build can be deleted.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {name: build_cached(root, name, build) for name, build in _FIXTURES.items()}


def build_cached(root: Path, name: str, build: Callable[[Path], object], version: str = FIXTURES_VERSION) -> Path:
    """Return ``root/name``, first building it with ``build(directory)`` unless a complete
    build of ``version`` is there (see :func:`build_fixtures` for the atomic-rename discipline)."""
    final = root / name
    if not _is_complete(final, version):
        root.mkdir(parents=True, exist_ok=True)  # a fresh clone has no cache directory yet
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the fixture may be a shared cache
            build(tmp)
            (tmp / _COMPLETE_MARKER).write_text(version + "\n", encoding="utf-8")
            _install(tmp, final, version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
