"""Tiny random-weight checkpoints of the real TTS architectures, for offline tests.

Like :mod:`speech.testing.checkpoints` for ASR: each fixture is written in the file layout of
the real hub repository and loaded by the same code path a real download takes, so file
layout, config parsing, tokenizers, G2P, voice packs and every network's shapes are exercised
for real. The audio is noise by construction; tests compare code paths (batched vs one at a
time, run vs rerun), never against a reference waveform.

``tts-vits``
    transformers ``VitsModel`` in the MMS-TTS style of facebook/mms-tts-kor: a ``VitsTokenizer``
    over lower-case Latin letters with ``is_uroman=True``, so Korean text is romanized by
    ``uroman`` before tokenizing, as with the real checkpoint. 16 kHz.
``tts-vocos``
    Vocos in the layout of charactr/vocos-mel-24khz (``config.yaml`` + ``pytorch_model.bin``):
    mel features, ``VocosBackbone``, ``ISTFTHead``; 24 kHz, 100 mels, hop 256. Layers shrunk.
``tts-chattts``
    ChatTTS 0.2.5 in the layout of 2Noise/ChatTTS (``asset/gpt``, ``asset/tokenizer``,
    ``asset/{Embed,DVAE,Decoder,Vocos}.safetensors``) plus ``chattts-config.json``, the
    size overrides of the package's ``Config`` (absent from a real download, which uses the
    package defaults). The text vocabulary covers a-z, digits, the CJK basic block and the
    real special and prosody tokens (``[uv_break]``, ``[laugh]``, ``[spk_emb]``, ...).
``tts-kokoro`` (large: built only by :func:`build_kokoro_fixture`)
    Kokoro-82M's ``KModel`` (``config.json``, ``kokoro-v1_0.pth``, ``voices/*.pt``). Its decoder
    hard-codes 512/1024 channels, so the smallest random model has about 59M parameters
    (about 235 MB); it is built once into the fixtures cache and never committed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from speech.testing.checkpoints import build_cached

__all__ = [
    "KOKORO_VOICES",
    "TTS_FIXTURES_VERSION",
    "build_chattts_checkpoint",
    "build_kokoro_checkpoint",
    "build_kokoro_fixture",
    "build_tts_fixtures",
    "build_vits_checkpoint",
    "build_vocos_checkpoint",
]

#: Bump whenever a builder's output changes, so cached fixture directories are rebuilt.
TTS_FIXTURES_VERSION = "tts-1"

#: Voice packs written into the Kokoro fixture; the first letter is Kokoro's language code.
KOKORO_VOICES = ("af_alpha", "ef_beta")


def build_tts_fixtures(root: str | Path) -> dict[str, Path]:
    """Build the small TTS fixtures into ``root/<name>`` (cached) and return ``{name: dir}``.

    Names: ``tts-vits``, ``tts-vocos``, ``tts-chattts``. The large Kokoro fixture is separate
    (:func:`build_kokoro_fixture`) so that only the tests that need it pay for it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    builders = {
        "tts-vits": build_vits_checkpoint,
        "tts-vocos": build_vocos_checkpoint,
        "tts-chattts": build_chattts_checkpoint,
    }
    return {name: build_cached(root, name, build, TTS_FIXTURES_VERSION) for name, build in builders.items()}


def build_kokoro_fixture(root: str | Path) -> Path:
    """Build (once, cached) the ~235 MB Kokoro fixture into ``root/tts-kokoro``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return build_cached(root, "tts-kokoro", build_kokoro_checkpoint, TTS_FIXTURES_VERSION)


# --- VITS ---------------------------------------------------------------------------------


def build_vits_checkpoint(out: Path, seed: int = 0) -> Path:
    """A ~200k-parameter ``VitsModel`` + ``VitsTokenizer`` (MMS style, uroman) in ``out``."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # MMS vocabularies: id 0 is the blank interleaved between characters (add_blank).
    symbols = ["<pad>", " ", "'", "-", *map(chr, range(ord("a"), ord("z") + 1)), "<unk>"]
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding="utf-8")
    tokenizer = VitsTokenizer(
        str(vocab_file), language="kor", add_blank=True, normalize=True, phonemize=False, is_uroman=True
    )
    config = VitsConfig(
        vocab_size=len(symbols),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=8,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[8, 8, 2, 2],
        upsample_kernel_sizes=[16, 16, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=1,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        depth_separable_num_layers=1,
        sampling_rate=16_000,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VitsModel(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- Vocos --------------------------------------------------------------------------------


def _vocos_hparams(dim: int = 32, intermediate_dim: int = 64, num_layers: int = 2) -> dict:
    """charactr/vocos-mel-24khz's config.yaml with the backbone shrunk."""
    return {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {"input_channels": 100, "dim": dim, "intermediate_dim": intermediate_dim, "num_layers": num_layers},
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "center"},
        },
    }


def build_vocos_checkpoint(out: Path, seed: int = 0) -> Path:
    """Vocos (mel) with random weights: ``config.yaml`` + ``pytorch_model.bin`` in ``out``."""
    import yaml
    from vocos import Vocos

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(_vocos_hparams()), encoding="utf-8")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vocos = Vocos.from_hparams(str(out / "config.yaml"))
    torch.save(vocos.state_dict(), out / "pytorch_model.bin")
    return out


# --- ChatTTS ------------------------------------------------------------------------------

#: The real tokenizer's special and control tokens that the package or users refer to.
_CHATTTS_SPECIAL = [
    "[Stts]", "[Ptts]", "[spk_emb]", "[empty_spk]", "[Sbreak]", "[Pbreak]", "[Ebreak]",
    *(f"[break_{i}]" for i in range(8)), "[uv_break]", "[v_break]", "[lbreak]",
    *(f"[laugh_{i}]" for i in range(3)), "[laugh]",
    *(f"[speed_{i}]" for i in range(10)), *(f"[oral_{i}]" for i in range(10)),
]

#: Sizes of the tiny ChatTTS, as overrides of ``ChatTTS.config.Config`` (hidden size 32).
_CHATTTS_HIDDEN = 32


def _chattts_overrides(num_text_tokens: int) -> dict:
    import pybase16384 as b14

    hidden = _CHATTTS_HIDDEN
    half = hidden // 2
    small = {"hidden": 16, "n_layer": 1, "bn_dim": 8}
    # Speaker statistics (std, then mean, float16): standard normal speaker embeddings.
    spk_stat = np.concatenate([np.ones(hidden), np.zeros(hidden)]).astype(np.float16)
    return {
        "gpt": {
            "hidden_size": hidden,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "max_position_embeddings": 1024,
            "num_text_tokens": num_text_tokens,
        },
        "embed": {"hidden_size": hidden, "num_text_tokens": num_text_tokens},
        # The decoder turns each GPT hidden state into two mel frames (hidden/2 channels each).
        "decoder": {"idim": half, "odim": half, **small},
        "dvae": {
            "encoder": {"idim": half, "odim": hidden, **small},
            "decoder": {"idim": half, "odim": half, **small},
            "vq": {"dim": hidden},
        },
        "vocos": {
            "backbone": {"init_args": {"dim": 32, "intermediate_dim": 64, "num_layers": 2}},
            "head": {"init_args": {"dim": 32}},
        },
        "spk_stat": b14.encode_to_string(spk_stat.tobytes()),
    }


def _chattts_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    words = [*map(chr, range(ord("a"), ord("z") + 1)), *map(str, range(10))]
    vocab = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
        *",.?!'，。、？！",
        *words,
        *(f"##{w}" for w in words),
        *map(chr, range(0x4E00, 0x9FFF + 1)),
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"additional_special_tokens": _CHATTTS_SPECIAL})
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_chattts_checkpoint(out: Path, seed: int = 0, sizes: dict | None = None) -> Path:
    """A tiny ChatTTS (GPT -> Decoder -> Vocos, plus the DVAE encoder) in ``out``.

    ``sizes``: overrides of ``ChatTTS.config.Config`` (nested dicts) used instead of the tiny
    sizes, e.g. ``{}`` for the released model's sizes (benchmarks); the text vocabulary size
    is always this tokenizer's.
    """
    from ChatTTS.config import Config
    from ChatTTS.model import DVAE, Embed
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaModel
    from vocos import Vocos
    from vocos.pretrained import instantiate_class

    from speech.tts.chattts import CHATTTS_CONFIG_FILE, apply_overrides

    out = Path(out)
    asset = out / "asset"
    tokenizer = _chattts_tokenizer(asset / "tokenizer")
    if sizes is None:
        overrides = _chattts_overrides(len(tokenizer))
    else:
        vocab = {"num_text_tokens": len(tokenizer)}
        overrides = {**sizes, "gpt": {**sizes.get("gpt", {}), **vocab}, "embed": {**sizes.get("embed", {}), **vocab}}
    (out / CHATTTS_CONFIG_FILE).write_text(json.dumps(overrides, indent=2), encoding="utf-8")
    config = apply_overrides(Config(), overrides)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gpt_fields = dataclasses.asdict(config.gpt)
        llama = LlamaModel(LlamaConfig(**{**gpt_fields, "vocab_size": 8}))
        llama.save_pretrained(asset / "gpt")
        embed = Embed(config.embed.hidden_size, config.embed.num_audio_tokens, config.embed.num_text_tokens, config.embed.num_vq)
        _save(embed, asset / "Embed.safetensors", save_file)
        dvae = DVAE(
            decoder_config=dataclasses.asdict(config.dvae.decoder),
            encoder_config=dataclasses.asdict(config.dvae.encoder),
            vq_config=dataclasses.asdict(config.dvae.vq),
            dim=config.dvae.decoder.idim,
        )
        _save(dvae, asset / "DVAE.safetensors", save_file)
        decoder = DVAE(decoder_config=dataclasses.asdict(config.decoder), dim=config.decoder.idim)
        _save(decoder, asset / "Decoder.safetensors", save_file)
        parts = {name: instantiate_class(args=(), init=dataclasses.asdict(getattr(config.vocos, name)))
                 for name in ("feature_extractor", "backbone", "head")}
        _save(Vocos(**parts), asset / "Vocos.safetensors", save_file)
    return out


def _save(module: torch.nn.Module, path: Path, save_file) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


# --- Kokoro -------------------------------------------------------------------------------


def _kokoro_vocab() -> dict[str, int]:
    """Phoneme symbol -> id, covering what misaki's espeak G2P emits (id 0 is the pad)."""
    symbols = [
        *';:,.!?¡¿—…"«»“” ()',
        *map(chr, range(ord("A"), ord("Z") + 1)),
        *map(chr, range(ord("a"), ord("z") + 1)),
        *map(chr, range(0x0250, 0x02B0)),  # IPA extensions
        *"ʰʲʷˈˌːˑ˞ᵊᵻæçðøŋœθβχʔ↓→↗↘",
    ]
    unique = list(dict.fromkeys(symbols))
    return {s: i + 1 for i, s in enumerate(unique)}


def _kokoro_config(vocab: dict[str, int]) -> dict:
    """Kokoro-82M's config.json with every size that is not hard-coded shrunk."""
    return {
        "istftnet": {
            "upsample_kernel_sizes": [20, 12],
            "upsample_rates": [10, 6],
            "gen_istft_hop_size": 5,
            "gen_istft_n_fft": 20,
            "resblock_dilation_sizes": [[1, 3, 5]],
            "resblock_kernel_sizes": [3],
            "upsample_initial_channel": 512,  # must match the decoder's hard-coded 512
        },
        "dim_in": 64,
        "dropout": 0.2,
        "hidden_dim": 512,  # the decoder's asr_res convolution hard-codes 512 input channels
        "max_conv_dim": 512,
        "max_dur": 6,  # frames per phoneme at most: keeps random-weight audio short
        "multispeaker": True,
        "n_layer": 1,
        "n_mels": 80,
        "n_token": max(vocab.values()) + 1,
        "style_dim": 128,  # voice packs are 256 = 2 x style_dim wide
        "text_encoder_kernel_size": 5,
        "plbert": {
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 512,
            "num_hidden_layers": 1,
            "dropout": 0.1,
        },
        "vocab": vocab,
    }


def build_kokoro_checkpoint(out: Path, seed: int = 0) -> Path:
    """Kokoro's ``KModel`` with random weights plus voice packs ``voices/<name>.pt`` in ``out``."""
    from kokoro import KModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = _kokoro_config(_kokoro_vocab())
    (out / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
    weights = out / KOKORO_WEIGHTS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # KModel loads each part present in the weights file: an empty file leaves the
        # freshly initialized random weights in place.
        torch.save({}, weights)
        model = KModel(repo_id="hexgrad/Kokoro-82M", config=str(out / "config.json"), model=str(weights))
        parts = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
        torch.save({name: getattr(model, name).state_dict() for name in parts}, weights)
        (out / "voices").mkdir()
        for name in KOKORO_VOICES:
            # A pack holds one style vector per phoneme count (1..510): [510, 1, 256].
            torch.save(torch.randn(510, 1, 2 * config["style_dim"]) * 0.1, out / "voices" / f"{name}.pt")
    return out


#: Weights file name of Kokoro-82M v1.0.
KOKORO_WEIGHTS = "kokoro-v1_0.pth"
