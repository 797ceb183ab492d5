"""ChatTTS backend (the ``ChatTTS`` package, 0.2.x): GPT -> DVAE decoder -> Vocos, 24 kHz.

A checkpoint directory has the layout of the 2Noise/ChatTTS hub repository (``asset/gpt``,
``asset/tokenizer``, ``asset/*.safetensors``). The package's ``Chat.load`` insists on the
released files' SHA-256 sums, so the checkpoint is loaded with the loader below it
(``Chat._load``) and explicit paths; an optional ``chattts-config.json`` overrides sizes of
the package's ``Config`` (tiny test checkpoints; absent for the released model).

Voices are speaker embeddings: ``seed:N`` draws one from the model's speaker statistics
with seed ``N`` (a row without a voice uses ``seed:<row seed>``); any other value is an
embedding string as ``Chat.sample_random_speaker()`` returns. Prosody markers such as
``[uv_break]``, ``[laugh]`` and ``[lbreak]`` pass through to the model.

The GPT samples one utterance at a time (its sampler draws from one generator for the whole
batch, so batching would make a row's audio depend on its batch-mates); the decoder and the
vocoder, which are deterministic, run batched with exact per-clip lengths.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speech.text import TextError
from speech.text.validate import describe_unsayable, unsayable_characters
from speech.tts.base import Utterance, Voice
from speech.tts.vocoder import VocosVocoder

#: Optional file of a checkpoint directory: overrides of ``ChatTTS.config.Config`` (nested JSON).
CHATTTS_CONFIG_FILE = "chattts-config.json"

_MARKER = re.compile(r"\[\w+\]")
_SEED_VOICE = re.compile(r"seed:(\d+)")


def is_chattts_checkpoint(path: str | Path) -> bool:
    return (Path(path) / "asset" / "gpt" / "config.json").is_file()


def load_config(model: str | Path):
    """The package's ``Config`` with the checkpoint's overrides applied."""
    from ChatTTS.config import Config

    overrides_file = Path(model) / CHATTTS_CONFIG_FILE
    if not overrides_file.is_file():
        return Config()
    return apply_overrides(Config(), json.loads(overrides_file.read_text(encoding="utf-8")))


def apply_overrides(obj, overrides: dict):
    """A copy of the dataclass tree ``obj`` with ``overrides`` (nested dicts) applied.

    ``Config`` shares its nested default instances between all ``Config`` objects, so it
    is copied with ``dataclasses.replace``, never mutated.
    """
    changes = {}
    for key, value in overrides.items():
        current = getattr(obj, key)  # AttributeError names an unknown key
        changes[key] = apply_overrides(current, value) if dataclasses.is_dataclass(current) else value
    return dataclasses.replace(obj, **changes)


def _is_sayable(char: str) -> bool:
    # What ChatTTS's normalizer keeps (it silently deletes every other letter or digit).
    return "\u4e00" <= char <= "\u9fff" or ("a" <= char.lower() <= "z" and char.isascii())


class ChatTtsFrontEnd:
    """Marker-aware checks and ChatTTS's own normalizer (homophones, punctuation); no weights."""

    backend = "chattts"
    markers = _MARKER

    def __init__(self, model: str, *, max_piece_chars: int = 120):
        import ChatTTS
        from ChatTTS.model import Speaker
        from ChatTTS.norm import Normalizer

        config = load_config(model)
        self.normalizer = Normalizer(os.path.join(os.path.dirname(ChatTTS.__file__), "res", "homophones_map.json"))
        self.speaker_dim = config.gpt.hidden_size
        self.speaker = Speaker(config.gpt.hidden_size, config.spk_stat)
        self.max_piece_chars = max_piece_chars

    def resolve_voice(self, voice: str | None, seed: int) -> str:
        if voice in (None, ""):
            return f"seed:{seed}"
        if _SEED_VOICE.fullmatch(voice):
            return voice
        try:
            size = self.speaker._decode(voice).size
        except Exception as err:  # any decoding failure means "not an embedding"
            raise TextError(f"unknown voice {voice[:40]!r}: expected 'seed:N' or a ChatTTS speaker embedding") from err
        if size != self.speaker_dim:
            raise TextError(f"unknown voice: speaker embedding has {size} values, this model takes {self.speaker_dim}")
        return voice

    def strip_markers(self, text: str) -> str:
        return _MARKER.sub(" ", text)

    def sayable(self, char: str, *, voice: str, language: str | None) -> bool:
        return _is_sayable(char)

    def voices(self) -> list[Voice]:
        return [
            Voice("seed:N", "zh, en", "any N >= 0: a speaker drawn from the model's speaker statistics with seed N"),
            Voice("<embedding>", "zh, en", "a speaker embedding string, as Chat.sample_random_speaker() returns"),
        ]

    def encode(self, piece: str, *, voice: str, language: str | None) -> tuple[str, int]:
        missing = unsayable_characters(self.strip_markers(piece), _is_sayable)
        if missing:
            raise TextError(describe_unsayable(missing, self.backend))
        lang = language if language in ("zh", "en") else None  # None: the normalizer detects it
        text = self.normalizer(piece, True, True, lang)
        return text, len(text)


class ChatTts:
    """A ChatTTS model replica: per-utterance GPT sampling, batched decoder + Vocos."""

    backend = "chattts"
    sample_rate = 24_000

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        batch_size: int = 8,
        refine_text: bool = False,
        temperature: float = 0.3,
        top_p: float = 0.7,
        top_k: int = 20,
        max_new_tokens: int = 2048,
    ):
        import logging

        from ChatTTS import Chat

        self.device = torch.device(device)
        chat = Chat(logging.getLogger("ChatTTS"))
        chat.config = load_config(model)
        paths = {key: os.path.join(model, value) for key, value in dataclasses.asdict(chat.config.path).items()}
        if not chat._load(device=self.device, compile=False, **paths):
            raise ValueError(f"ChatTTS checkpoint {model} is incomplete (see the log for the missing part)")
        self.chat = chat
        self.vocoder = VocosVocoder(chat.vocos, self.device)
        self.sample_rate = self.vocoder.sample_rate
        self.batch_size = batch_size
        self.refine_text = refine_text
        self.sampling = dict(temperature=temperature, top_P=top_p, top_K=top_k)
        self.max_new_tokens = max_new_tokens

    def synthesize(self, utterances: Sequence[Utterance]) -> list[np.ndarray]:
        hiddens = [self._generate(u) for u in utterances]
        waveforms: list[np.ndarray | None] = [None] * len(utterances)
        order = sorted(range(len(hiddens)), key=lambda i: (hiddens[i].shape[0], i))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, waveform in zip(batch, self._decode([hiddens[i] for i in batch])):
                waveforms[i] = waveform
        return waveforms

    @torch.no_grad()
    def _generate(self, utterance: Utterance) -> torch.Tensor:
        """GPT hidden states ``[tokens, hidden]`` of one utterance, sampled with its seed."""
        chat = self.chat
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(utterance.seed)
            text = utterance.inputs
            if self.refine_text:
                text = self._refine(text)
            params = chat.InferCodeParams(
                spk_emb=self._speaker(utterance.voice),
                max_new_token=self.max_new_tokens,
                show_tqdm=False,
                **self.sampling,
            )
            result = next(chat._infer_code([text], False, self.device, True, params))
        hidden = result.hiddens[0]
        if hidden.shape[0] == 0:
            raise RuntimeError(f"the GPT produced no audio tokens for {utterance.text[:40]!r}")
        return hidden

    def _refine(self, text: str) -> str:
        chat = self.chat
        params = chat.RefineTextParams(show_tqdm=False, **self.sampling)
        refined = chat._refine_text([text], self.device, params)
        ids = [i[i.less(chat.tokenizer.break_0_ids)] for i in refined.ids]
        return chat.tokenizer.decode(ids)[0]

    def _speaker(self, voice: str) -> str | torch.Tensor:
        match = _SEED_VOICE.fullmatch(voice)
        if match is None:
            return voice
        speaker = self.chat.speaker
        generator = torch.Generator().manual_seed(int(match.group(1)))
        sample = torch.randn(speaker.dim, generator=generator, dtype=torch.float32)
        return (sample * speaker.std.float().cpu() + speaker.mean.float().cpu()).to(speaker.std.dtype)

    @torch.inference_mode()
    def _decode(self, hiddens: list[torch.Tensor]) -> list[np.ndarray]:
        """Hidden states -> mel (DVAE decoder, masked) -> waveforms (Vocos, masked)."""
        decoder = self.chat.decoder
        tokens = torch.tensor([h.shape[0] for h in hiddens], device=self.device)
        batch = torch.zeros(len(hiddens), hiddens[0].shape[1], int(tokens.max()), device=self.device)
        for row, hidden in zip(batch, hiddens):
            row[:, : hidden.shape[0]] = hidden.T
        # As DVAE.forward: each token's hidden state is two mel frames of hidden/2 channels.
        x = batch.view(batch.size(0), 2, batch.size(1) // 2, batch.size(2)).permute(0, 2, 3, 1).flatten(2)
        frames = 2 * tokens
        mask = (torch.arange(x.shape[-1], device=self.device)[None, :] < frames[:, None])[:, None, :].float()
        mel = self._masked_decoder(decoder, x, mask) * decoder.coef
        return self.vocoder.decode([m[:, :n] for m, n in zip(mel, frames.tolist())])

    @staticmethod
    def _masked_decoder(dvae, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``DVAE.decoder`` then ``out_conv`` with padding frames zeroed before each convolution,
        so a padded clip sees exactly the zeros a single decode's convolution padding gives."""
        net = dvae.decoder
        conv_a, activation, conv_b = net.conv_in
        y = conv_b(activation(conv_a(x)) * mask)
        for block in net.decoder_block:
            y = block(y * mask)
        y = net.conv_out(y)  # kernel 1: frame-wise
        return dvae.out_conv(y * mask)
