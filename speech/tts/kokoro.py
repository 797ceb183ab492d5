"""Kokoro backend: Kokoro-82M's ``KModel`` with its voice packs, 24 kHz.

A checkpoint directory has the layout of the hexgrad/Kokoro-82M hub repository:
``config.json`` (with the phoneme vocabulary), one ``*.pth`` weights file and
``voices/<name>.pt`` voice packs. A voice's first letter is Kokoro's language code
(``a`` American English, ``b`` British English, ``e`` Spanish, ``f`` French, ``h`` Hindi,
``i`` Italian, ``p`` Brazilian Portuguese, ``j`` Japanese, ``z`` Mandarin).

A voice may be a blend of packs, ``af_heart:0.7+am_adam:0.3``: the packs' weighted average
with the weights normalized to sum to 1 (``af_heart+am_adam`` weighs them equally, which is
what ``KPipeline.load_voice("af_heart,am_adam")`` does: ``torch.mean`` of the stacked packs).
A blend speaks the language of its first voice.

G2P runs in the front end (CPU): misaki's own front end for the language where it is
installed, otherwise espeak-ng through misaki's ``EspeakG2P`` (misaki's English front end
needs the spaCy model ``en_core_web_sm``, which it would try to download; it is only used
when already installed). ``KModel`` takes one utterance per call, so there is no batching.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speech.text import TextError
from speech.tts.base import Utterance, Voice
from speech.tts.frontend import PieceTooLong

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000  # Kokoro's decoder is built for 24 kHz

# Kokoro language code -> espeak-ng voice, for languages whose G2P is espeak (as KPipeline
# does) or falls back to it.
_ESPEAK = {"a": "en-us", "b": "en-gb", "e": "es", "f": "fr-fr", "h": "hi", "i": "it", "p": "pt-br", "j": "ja", "z": "cmn"}
# Row ``language`` values -> Kokoro language code.
_LANGUAGES = {"en": "a", "en-us": "a", "en-gb": "b", "es": "e", "fr": "f", "fr-fr": "f", "hi": "h", "it": "i",
              "pt": "p", "pt-br": "p", "ja": "j", "zh": "z", "cmn": "z"}


#: Kokoro language code -> the language a voice of it speaks, as ``speech voices`` lists it.
_VOICE_LANGUAGES = {"a": "en-us", "b": "en-gb", "e": "es", "f": "fr", "h": "hi", "i": "it", "p": "pt-br", "j": "ja",
                    "z": "zh"}


def parse_blend(voice: str) -> list[tuple[str, float]]:
    """``"af_heart:0.7+am_adam:0.3"`` -> ``[("af_heart", 0.7), ("am_adam", 0.3)]``, weights
    normalized to sum to 1 (a voice without ``:weight`` weighs 1). Raises ``TextError``."""
    parts = []
    for part in voice.split("+"):
        name, _, weight = part.strip().partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if not name or not value > 0 or value == float("inf"):
            raise TextError(f"voice {voice!r}: expected NAME or NAME:WEIGHT+NAME:WEIGHT with positive weights")
        parts.append((name, value))
    total = sum(weight for _, weight in parts)
    return [(name, weight / total) for name, weight in parts]


def _voices(model: str | Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((Path(model) / "voices").glob("*.pt"))}


def _vocab(model: str | Path) -> tuple[dict[str, int], int]:
    config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    return config["vocab"], int(config["plbert"]["max_position_embeddings"])


class VoicePacks:
    """A Kokoro checkpoint's voice packs, loaded on first use; both engines style utterances with it."""

    def __init__(self, model: str | Path):
        self.files = _voices(model)
        self.packs: dict[str, torch.Tensor] = {}

    def style(self, voice: str, phonemes: int) -> torch.Tensor:
        """The style vector ``[1, 256]`` of ``voice`` for an utterance of ``phonemes`` phonemes:
        a pack holds one vector per phoneme count, as Kokoro's KPipeline indexes it."""
        return self.pack(voice)[phonemes - 1]

    def pack(self, voice: str) -> torch.Tensor:
        """The voice's pack ``[510, 1, 256]``; a blend's is the weighted sum of its packs."""
        if voice not in self.packs:
            blend = parse_blend(voice)
            if len(blend) == 1:
                self.packs[voice] = torch.load(self.files[voice], map_location="cpu", weights_only=True)
            else:
                self.packs[voice] = sum(weight * self.pack(name) for name, weight in blend)
        return self.packs[voice]


class KokoroFrontEnd:
    """Voice packs by name, G2P per language, phoneme checks against the model's vocabulary."""

    backend = "kokoro"

    def __init__(self, model: str, *, max_piece_chars: int = 300, default_voice: str | None = None):
        self.names = sorted(_voices(model))
        if not self.names:
            raise ValueError(f"no voice packs in {Path(model) / 'voices'}")
        self.vocab, context = _vocab(model)
        self.max_phonemes = context - 2  # KModel adds a boundary token at each end
        self.default_voice = default_voice or ("af_heart" if "af_heart" in self.names else self.names[0])
        self.max_piece_chars = max_piece_chars
        self._g2p: dict[str, object] = {}
        self._sayable: dict[tuple[str, str], bool] = {}

    markers = None  # Kokoro has no prosody markers

    def resolve_voice(self, voice: str | None, seed: int) -> str:
        """A pack name, or a blend in canonical form (normalized weights: ``a:0.7+b:0.3``)."""
        blend = parse_blend(voice or self.default_voice)
        for name, _ in blend:
            if name not in self.names:
                shown = ", ".join(self.names[:10]) + (" ..." if len(self.names) > 10 else "")
                raise TextError(f"unknown voice {name!r}; this kokoro model has: {shown}")
        if len(blend) == 1:
            return blend[0][0]
        return "+".join(f"{name}:{weight:.6g}" for name, weight in blend)

    def strip_markers(self, text: str) -> str:
        return text

    def sayable(self, char: str, *, voice: str, language: str | None) -> bool:
        """Whether the G2P of the row's language turns ``char`` alone into phonemes of the vocabulary."""
        code = self._code(voice, language)
        key = (code, char)
        if key not in self._sayable:
            phonemes = (self.g2p(code)(char)[0] or "").strip()
            self._sayable[key] = bool(phonemes) and all(p in self.vocab for p in phonemes)
        return self._sayable[key]

    def voices(self) -> list[Voice]:
        return [Voice(name, _VOICE_LANGUAGES.get(name[0], "?")) for name in self.names]

    @staticmethod
    def _code(voice: str, language: str | None) -> str:
        return _LANGUAGES.get((language or "").lower(), voice[0])

    def encode(self, piece: str, *, voice: str, language: str | None) -> tuple[str, int]:
        code = self._code(voice, language)
        phonemes, _ = self.g2p(code)(piece)
        phonemes = (phonemes or "").strip()
        unknown = sorted({p for p in phonemes if p not in self.vocab})
        if unknown:
            shown = ", ".join(repr(p) for p in unknown[:10])
            raise TextError(f"characters the kokoro model cannot say: {piece[:40]!r} gives phonemes {shown}")
        if not phonemes:
            raise TextError(f"the {_ESPEAK.get(code, code)} G2P gives no phonemes for {piece[:40]!r}")
        if len(phonemes) > self.max_phonemes:
            raise PieceTooLong(f"{len(phonemes)} phonemes, the model takes {self.max_phonemes}")
        return phonemes, len(phonemes)

    def g2p(self, code: str):
        """The G2P of Kokoro language ``code`` (built once per front end)."""
        if code not in self._g2p:
            self._g2p[code] = _build_g2p(code)
        return self._g2p[code]


def _build_g2p(code: str):
    from misaki import espeak

    if code not in _ESPEAK:
        raise TextError(f"unknown kokoro language code {code!r}; known: {', '.join(_ESPEAK)}")
    if code in "ab":
        import spacy

        if spacy.util.is_package("en_core_web_sm"):
            from misaki import en

            fallback = espeak.EspeakFallback(british=code == "b")
            return en.G2P(trf=False, british=code == "b", fallback=fallback, unk="")
        log.warning("spaCy model en_core_web_sm is not installed: English G2P falls back to espeak-ng")
    elif code in "jz":
        try:
            if code == "j":
                from misaki import ja

                return ja.JAG2P()
            from misaki import zh

            return zh.ZHG2P()
        except ImportError as err:
            log.warning("misaki's %s front end is not installed (%s): G2P falls back to espeak-ng", code, err)
    return espeak.EspeakG2P(language=_ESPEAK[code])


class KokoroTts:
    """A ``KModel`` replica with lazily loaded voice packs; one utterance per forward pass."""

    backend = "kokoro"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: str, *, device: str = "cpu"):
        from kokoro import KModel

        weights = sorted(Path(model).glob("*.pth"))
        if len(weights) != 1:
            raise ValueError(f"expected one *.pth weights file in {model}, found {len(weights)}")
        self.device = torch.device(device)
        # With both config and weights given, KModel reads only local files.
        self.model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(Path(model) / "config.json"), model=str(weights[0]))
        self.model = self.model.to(self.device).eval()
        self.packs = VoicePacks(model)

    @torch.no_grad()
    def synthesize(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        """Waveforms at 24 kHz. The decoder's harmonic source draws noise from the global
        generator, so each call is seeded with its utterance's seed."""
        waveforms = []
        for utterance in utterances:
            # A pack holds one style vector per phoneme count, as KPipeline indexes it.
            style = self.packs.style(utterance.voice, len(utterance.inputs))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(utterance.seed)
                audio = self.model(utterance.inputs, style, 1.0 if utterance.speed is None else utterance.speed)
            waveforms.append(audio.float().cpu().numpy().reshape(-1))
        return waveforms

