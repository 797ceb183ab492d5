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
:func:`ctc_vocabulary`), about 32k tokens, which makes the output layer most of each model's
1.1M parameters (about 4.9 MB on disk per fixture).

``whisper``
    WhisperForConditionalGeneration laid out like whisper-large-v3 (128 mel bins, 30 s windows,
    every special token at large-v3's id, a generation config with languages, tasks and
    alignment heads) at toy width; random outputs calibrated to end, carry timestamp segments
    and flag digital silence as no-speech (built by
    :func:`speech.testing.whisper_checkpoint.build_whisper_checkpoint`). About 8 MB.
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
    AutoProcessor,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
    pipeline,
)

__all__ = [
    "FIXTURES_VERSION", "SAMPLING_RATE", "build_cached", "build_ctc_checkpoint", "build_feature_extractor",
    "build_fixtures", "build_tokenizer", "calibrate_blank", "calibration_audio", "ctc_vocabulary",
    "verify_ctc_checkpoint",
]

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


def ctc_vocabulary() -> list[str]:
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


def build_tokenizer(vocabulary: list[str] | None = None) -> Wav2Vec2CTCTokenizer:
    """Build the character-level CTC tokenizer over ``vocabulary`` (default :func:`ctc_vocabulary`).

    A custom vocabulary must start with the same five special tokens (``<pad>`` first).
    """
    vocab = {token: i for i, token in enumerate(vocabulary or ctc_vocabulary())}
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


def build_feature_extractor(attention_mask: bool) -> Wav2Vec2FeatureExtractor:
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


def calibration_audio(seed: int) -> np.ndarray:
    """Return seeded white noise, float32 of shape ``(2 s * 16000,)``."""
    n = int(_CALIBRATION_SECONDS * SAMPLING_RATE)
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@torch.no_grad()
def calibrate_blank(
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


def verify_ctc_checkpoint(path: Path, *, attention_mask: bool, audio: np.ndarray) -> None:
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
    tokenizer = build_tokenizer()
    feature_extractor = build_feature_extractor(attention_mask)
    config = _build_config(
        attention_mask=attention_mask, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config).eval()
    audio = calibration_audio(seed)
    calibrate_blank(model, feature_extractor, audio)

    out.mkdir(parents=True, exist_ok=True)
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
    feature_extractor.save_pretrained(out)
    model.save_pretrained(out)

    verify_ctc_checkpoint(out, attention_mask=attention_mask, audio=audio)
    return out


def _whisper_checkpoint(out: Path) -> Path:
    from speech.testing.whisper_checkpoint import build_whisper_checkpoint  # its module imports this one

    return build_whisper_checkpoint(out)


#: Every fixture :func:`build_fixtures` makes: name -> builder taking the output directory.
_FIXTURES: dict[str, Callable[[Path], Path]] = {
    "ctc-xlsr": partial(build_ctc_checkpoint, attention_mask=True),
    "ctc-base": partial(build_ctc_checkpoint, attention_mask=False),
    "whisper": _whisper_checkpoint,
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
