"""The CTC vocabulary against the training text: what is missing, and adding it.

A CTC tokenizer maps each character to a token (a space to the word delimiter); a character it
lacks becomes ``<unk>``, which the model would learn to emit for every such sound. So the
driver lists them first (:func:`unknown_characters`), and ``--extend-vocab`` appends them to
the vocabulary and the output layer (:func:`extend_vocabulary`).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import PreTrainedModel, Wav2Vec2CTCTokenizer


def unknown_characters(tokenizer, texts: Iterable[str]) -> dict[str, int]:
    """``{character: rows containing it}`` for the characters of ``texts`` the tokenizer maps
    to ``<unk>``, as the tokenizer sees them (e.g. upper-cased by a ``do_lower_case`` one)."""
    unk, vocab = tokenizer.unk_token, tokenizer.get_vocab()
    rows: Counter[str] = Counter()
    for text in texts:
        rows.update({token for token in tokenizer.tokenize(text) if token not in vocab and token != unk})
    return dict(sorted(rows.items(), key=lambda item: (-item[1], item[0])))


def describe_unknown(unknown: dict[str, int], limit: int = 10) -> str:
    """One line: the most frequent unknown characters with their row counts."""
    shown = ", ".join(f"{char!r} ({count} rows)" for char, count in list(unknown.items())[:limit])
    more = f" and {len(unknown) - limit} more" if len(unknown) > limit else ""
    return f"{len(unknown)} characters are not in the tokenizer's vocabulary: {shown}{more}"


def extend_vocabulary(model: PreTrainedModel, tokenizer, characters: Iterable[str], *, seed: int = 0):
    """Append ``characters`` to a CTC tokenizer and rows for them to ``model``'s output layer.

    Existing token ids and their output rows are kept, so what the model knew stays; new rows
    start like the existing ones on average (their mean) plus small noise seeded by ``seed``, so
    new characters begin as plausible but undecided. Returns the new tokenizer (the model is
    changed in place, ``config.vocab_size`` included).
    """
    if not isinstance(tokenizer, Wav2Vec2CTCTokenizer):
        raise TypeError(f"--extend-vocab needs a Wav2Vec2CTCTokenizer, got {type(tokenizer).__name__}")
    vocab = tokenizer.get_vocab()
    new = [c for c in dict.fromkeys(characters) if c not in vocab]
    if not new:
        return tokenizer
    extended = {**vocab, **{char: len(vocab) + i for i, char in enumerate(new)}}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(extended, ensure_ascii=False), encoding="utf-8")
        grown = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
            unk_token=tokenizer.unk_token,
            pad_token=tokenizer.pad_token,
            word_delimiter_token=tokenizer.word_delimiter_token,
            do_lower_case=tokenizer.do_lower_case,
        )
    _grow_output_layer(model, len(extended), seed)
    return grown


@torch.no_grad()
def _grow_output_layer(model: PreTrainedModel, size: int, seed: int) -> None:
    old = model.lm_head
    grown = torch.nn.Linear(old.in_features, size, bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device)
    count = old.out_features
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(size - count, old.in_features, generator=generator) * old.weight.std()
    grown.weight[:count] = old.weight
    grown.weight[count:] = old.weight.mean(dim=0) + noise.to(old.weight)
    if old.bias is not None:
        grown.bias[:count] = old.bias
        grown.bias[count:] = old.bias.mean()
    model.lm_head = grown
    model.config.vocab_size = size
