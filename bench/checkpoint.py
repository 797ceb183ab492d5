"""The benchmark's CTC model: a wav2vec2-base-size checkpoint with random weights, built offline.

Compute depends on the architecture's sizes, not on trained weights, so a random model of
the real size costs what the real one costs. The checkpoint is written with
``save_pretrained`` and loaded by every system through ``from_pretrained``, like a hub id.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Processor

from speech.testing import checkpoints as tiny

#: Bump when the builder's output changes, so cached copies are rebuilt.
VERSION = "1"
NAME = "bench-ctc-base"

#: wav2vec2-base sizes (94M parameters with a 32-token head). The layer-normalized feature
#: encoder and pre-norm transformer (the XLSR / large-lv60 style) take an attention mask, so
#: padded batches give the same frames as single inputs and every system may batch freely.
#: A group-norm base model would only be batched with equal lengths by our job (strict_padding).
_BASE_SIZES = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    feat_extract_activation="gelu",
)

#: The 32 tokens of English character CTC models (wav2vec2-base-960h has 32): the five
#: specials, the apostrophe and a-z.
_ENGLISH_TOKENS = 32


def base_ctc(cache: Path) -> Path:
    """``cache/bench-ctc-base``, built on first use (about 380 MB, ~30 s)."""
    return tiny.build_cached(Path(cache), NAME, build_base_ctc, VERSION)


def build_base_ctc(out: Path, seed: int = 0) -> Path:
    """Write a wav2vec2-base-size ``Wav2Vec2ForCTC`` checkpoint to ``out`` and verify it loads.

    Input: 16 kHz mono float audio ``[batch, samples]``; output logits ``[batch, frames, 32]``,
    one frame per 320 samples. The blank bias is calibrated as in the test fixtures, so about
    half the frames of noise-like input are blank and CTC decoding does realistic work.
    """
    with torch.random.fork_rng(devices=[]):
        tokenizer = tiny.build_tokenizer(tiny.ctc_vocabulary()[:_ENGLISH_TOKENS])
        feature_extractor = tiny.build_feature_extractor(attention_mask=True)
        config = Wav2Vec2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_BASE_SIZES)
        torch.manual_seed(seed)
        model = Wav2Vec2ForCTC(config).eval()
        audio = tiny.calibration_audio(seed)
        tiny.calibrate_blank(model, feature_extractor, audio)
        out.mkdir(parents=True, exist_ok=True)
        Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
        feature_extractor.save_pretrained(out)
        model.save_pretrained(out)
        tiny.verify_ctc_checkpoint(out, attention_mask=True, audio=audio)
    return out
