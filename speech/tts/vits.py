"""VITS backend: transformers ``VitsModel`` (MMS-TTS checkpoints such as facebook/mms-tts-kor).

VITS is end to end (text -> waveform, its own HiFi-GAN decoder), so no vocoder is involved.
The tokenizer's own normalization runs in the front end: lower-casing, ``uroman``
romanization for checkpoints trained on romanized text (Korean, for one), phonemization
where the checkpoint asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, VitsModel
from transformers.models.vits.tokenization_vits import has_non_roman_characters

from speech.text import TextError
from speech.text.validate import describe_unsayable, unsayable_characters
from speech.tts.base import Utterance, Voice

_DEFAULT_VOICE = "default"

# uroman turns Han numerals back into Arabic digits (十二 -> 12), which MMS vocabularies do not
# have and uroman has no switch against: their pinyin goes in first (a table, by hand).
_HAN_NUMERALS = str.maketrans({c: f" {p} " for c, p in zip(
    "零〇一二两三四五六七八九十百千万亿幺",
    "ling ling yi er liang san si wu liu qi ba jiu shi bai qian wan yi yao".split(), strict=True)})


class VitsFrontEnd:
    """Text -> token ids with the checkpoint's ``VitsTokenizer``; loads no weights."""

    backend = "vits"

    def __init__(self, model: str, *, max_piece_chars: int = 200):
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        # transformers builds a new Uroman (seconds of table loading) on every call; romanize
        # here with one instance instead, so the tokenizer sees Latin text and skips it.
        self.uroman = _uroman() if getattr(self.tokenizer, "is_uroman", False) else None
        self.num_speakers = int(AutoConfig.from_pretrained(model).num_speakers)
        self.max_piece_chars = max_piece_chars
        self._sayable: dict[str, bool] = {}

    markers = None  # VITS has no prosody markers

    def resolve_voice(self, voice: str | None, seed: int) -> str:
        return resolve_speaker(voice, self.num_speakers)

    def strip_markers(self, text: str) -> str:
        return text

    def sayable(self, char: str, *, voice: str, language: str | None) -> bool:
        """Whether ``char``, romanized and normalized as the tokenizer will, is in the vocabulary."""
        if char not in self._sayable:
            prepared = self._prepare(char)
            self._sayable[char] = bool(prepared.strip()) and not unsayable_characters(prepared, self._known)
        return self._sayable[char]

    def voices(self) -> list[Voice]:
        language = getattr(self.tokenizer, "language", None) or "?"
        if self.num_speakers <= 1:
            return [Voice(_DEFAULT_VOICE, language)]
        return [Voice(str(i), language, "speaker index") for i in range(self.num_speakers)]

    def _known(self, char: str) -> bool:
        return char in self.tokenizer.encoder

    def _romanize(self, text: str) -> str:
        if self.uroman is not None and has_non_roman_characters(text):
            return self.uroman.romanize_string(text.translate(_HAN_NUMERALS))
        return text

    def _prepare(self, text: str) -> str:
        """What the tokenizer will see: romanized, lower-cased or phonemized, before it silently
        drops what is not in its vocabulary."""
        tokenizer = self.tokenizer
        return tokenizer.prepare_for_tokenization(tokenizer.normalize_text(self._romanize(text)), normalize=False)[0]

    def encode(self, piece: str, *, voice: str, language: str | None) -> tuple[list[int], int]:
        tokenizer = self.tokenizer
        piece = self._romanize(piece)
        # Letters the tokenizer would drop are an error (the unknown_chars policy has handled
        # the row's characters; romanizing a whole piece can still differ from single letters).
        prepared = self._prepare(piece)
        missing = unsayable_characters(prepared, self._known)
        if missing:
            raise TextError(describe_unsayable(missing, self.backend))
        ids = tokenizer(piece).input_ids
        if not any(i != tokenizer.pad_token_id for i in ids):
            raise TextError(f"no tokens the vits model knows in {piece[:40]!r}")
        return ids, len(ids)


def _uroman():
    try:
        import uroman
    except ImportError:
        return None  # the tokenizer warns; unromanized letters are then reported as unsayable
    return uroman.Uroman()


def resolve_speaker(voice: str | None, num_speakers: int) -> str:
    """A VITS voice: ``"default"`` for single-speaker checkpoints, else a speaker index."""
    if num_speakers <= 1:
        if voice in (None, "", _DEFAULT_VOICE):
            return _DEFAULT_VOICE
        raise TextError(f"unknown voice {voice!r}: this vits model has one voice ({_DEFAULT_VOICE!r})")
    if voice in (None, ""):
        return "0"
    if not voice.isdigit() or int(voice) >= num_speakers:
        raise TextError(f"unknown voice {voice!r}: this vits model has speakers 0..{num_speakers - 1}")
    return str(int(voice))


class VitsTts:
    """``VitsModel`` on a device; one utterance per forward pass (see :meth:`synthesize`)."""

    backend = "vits"

    def __init__(self, model: str, *, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = VitsModel.from_pretrained(model).to(self.device).eval()
        self.sample_rate = int(self.model.config.sampling_rate)

    @torch.inference_mode()
    def synthesize(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        """Waveforms at ``sample_rate``. VITS samples its durations and latents from the
        global generator over the whole batch tensor, so in a batch a row's noise would
        depend on its batch-mates; one seeded call per utterance keeps every row the
        same whatever it is grouped with."""
        waveforms = []
        for utterance in utterances:
            kwargs = {}
            if utterance.voice != _DEFAULT_VOICE:
                kwargs["speaker_id"] = int(utterance.voice)
            if utterance.speed is not None:
                kwargs["speaking_rate"] = utterance.speed  # durations scaled by 1 / speed
            ids = torch.tensor([utterance.inputs], device=self.device)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(utterance.seed)
                waveform = self.model(input_ids=ids, **kwargs).waveform[0]
            waveforms.append(waveform.float().cpu().numpy())
        return waveforms
