"""A CTranslate2 Whisper model -> a transformers ``WhisperForConditionalGeneration`` checkpoint.

CTranslate2's transformers converter (``ctranslate2.converters.transformers.WhisperLoader``)
maps each transformers parameter onto a ``WhisperSpec`` variable; this module runs that mapping
backwards. Per layer, with ``e``/``d`` the encoder/decoder scope and ``N`` the layer:

================================================  ====================================================
CTranslate2 variable                              transformers parameter
================================================  ====================================================
``e/conv1``, ``e/conv2`` (weight, bias)           ``model.encoder.conv1``, ``conv2``
``e/position_encodings/encodings``                ``model.encoder.embed_positions.weight``
``{e,d}/layer_N/self_attention/layer_norm``       ``layers.N.self_attn_layer_norm`` (gamma/beta = weight/bias)
``{e,d}/layer_N/self_attention/linear_0``         ``self_attn.q_proj``, ``k_proj``, ``v_proj`` fused by rows
``{e,d}/layer_N/self_attention/linear_1``         ``self_attn.out_proj``
``d/layer_N/attention/layer_norm``                ``layers.N.encoder_attn_layer_norm``
``d/layer_N/attention/linear_0``                  ``encoder_attn.q_proj``
``d/layer_N/attention/linear_1``                  ``encoder_attn.k_proj``, ``v_proj`` fused by rows
``d/layer_N/attention/linear_2``                  ``encoder_attn.out_proj``
``{e,d}/layer_N/ffn/layer_norm``                  ``layers.N.final_layer_norm``
``{e,d}/layer_N/ffn/linear_0``, ``linear_1``      ``fc1``, ``fc2``
``{e,d}/layer_norm``                              ``model.{encoder,decoder}.layer_norm``
``d/embeddings/weight``                           ``model.decoder.embed_tokens.weight``
``d/position_encodings/encodings``                ``model.decoder.embed_positions.weight``
``d/projection/weight`` (an alias of embeddings)  ``proj_out.weight`` (tied to the embeddings)
================================================  ====================================================

Whisper's key projections have no bias; CTranslate2 stores a fused bias with a zero block in
their place, which is dropped (a key bias adds ``q . b`` to every score of a query, which the
softmax cancels, so dropping it is exact whatever it holds). Rank-0 variables (head counts,
activation, pre-norm and embedding flags) are checked against what Whisper is. Every stored
variable must be used and every transformers parameter filled, or :class:`ConversionError`
names the ones left over. Weights are widened to float32.

Beside the weights the checkpoint gets what CTranslate2 keeps in ``config.json`` and
``tokenizer.json``: the tokenizer (plus the 1,501 timestamp tokens ``<|0.00|>``..``<|30.00|>``,
which CTranslate2 handles by id and Systran's ``tokenizer.json`` lacks), the feature extractor
(mel bins read from the first convolution), and a generation config with languages, tasks,
suppressed tokens and alignment heads, so ``generate(language=..., task=..., return_timestamps=
...)`` work offline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken
from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

from speech.convert.ct2_format import Ct2FormatError, Ct2Model, read_model

SPEC = "WhisperSpec"
#: Whisper's fixed audio front end: 16 kHz, 10 ms hop, 25 ms FFT window, 30 s windows.
SAMPLING_RATE, HOP_LENGTH, N_FFT, CHUNK_LENGTH = 16_000, 160, 400, 30
#: Timestamp tokens <|0.00|> .. <|30.00|> in 20 ms steps.
TIMESTAMPS = 1501
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU


class ConversionError(ValueError):
    """The CTranslate2 model cannot be converted; one line says what is wrong."""


def check_whisper(model_dir: str | Path) -> Ct2Model:
    """The index of ``model_dir/model.bin``, checked to be a CTranslate2 Whisper model.

    Raises:
        ConversionError: not a model file, truncated, or a CTranslate2 model of another kind.
    """
    try:
        model = read_model(model_dir)
    except Ct2FormatError as err:
        raise ConversionError(str(err)) from err
    if model.spec != SPEC:
        raise ConversionError(f"{model.path} is a CTranslate2 {model.spec or 'unnamed'} model, not Whisper ({SPEC})")
    return model


def n_mels(model: Ct2Model) -> int:
    """Mel bins the model takes: the input channels of its first convolution."""
    return model.variables["encoder/conv1/weight"].shape[1]


def feature_extractor(model: Ct2Model) -> WhisperFeatureExtractor:
    """The log-mel front end of ``model`` (Whisper's is fixed but for the number of mel bins)."""
    return WhisperFeatureExtractor(
        feature_size=n_mels(model), sampling_rate=SAMPLING_RATE, hop_length=HOP_LENGTH, chunk_length=CHUNK_LENGTH, n_fft=N_FFT
    )


def tokenizer(model_dir: str | Path) -> WhisperTokenizer:
    """A transformers ``WhisperTokenizer`` from ``model_dir/tokenizer.json``, with timestamps.

    The byte-level BPE and the special tokens keep their ids; the timestamp tokens follow the
    last special token as plain (non-special) tokens, as in the hub's Whisper tokenizers.
    """
    path = Path(model_dir) / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        bpe = data["model"]
        vocab, merges = bpe["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
        added = sorted(data["added_tokens"], key=lambda token: token["id"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConversionError(f"{path}: not a Whisper tokenizer.json ({type(err).__name__}: {err})") from err
    result = WhisperTokenizer(vocab=vocab, merges=merges)  # holds <|endoftext|>
    specials = [t["content"] for t in added if t["content"] != "<|endoftext|>"]
    result.add_special_tokens({"extra_special_tokens": [AddedToken(t, special=True, normalized=False) for t in specials]})
    result.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(TIMESTAMPS)])
    result.pad_token = result.eos_token
    result.set_prefix_tokens()  # the prefix ids were looked up before the specials existed
    moved = [t["content"] for t in added if result.convert_tokens_to_ids(t["content"]) != t["id"]]
    if moved:
        raise ConversionError(f"{path}: special tokens would change ids: {', '.join(moved[:5])}")
    return result


def convert(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the transformers checkpoint of the CTranslate2 Whisper model in ``ct2_dir`` to ``out_dir``.

    ``out_dir`` gets ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32),
    the tokenizer files, ``processor_config.json`` and a flat ``preprocessor_config.json``.

    Raises:
        ConversionError: naming the file, variable or parameter that does not fit.
    """
    ct2_dir, out = Path(ct2_dir), Path(out_dir)
    model = check_whisper(ct2_dir)
    settings = _ct2_config(ct2_dir)
    tok = tokenizer(ct2_dir)
    config = whisper_config(model, tok, settings)
    weights = state_dict(model, config)
    with torch.device("meta"):
        network = WhisperForConditionalGeneration(config)
    network.load_state_dict(weights, strict=True, assign=True)
    network.tie_weights()
    network.generation_config = generation_config(tok, config, settings)
    out.mkdir(parents=True, exist_ok=True)
    extractor = feature_extractor(model)
    from transformers import WhisperProcessor

    WhisperProcessor(feature_extractor=extractor, tokenizer=tok).save_pretrained(out)
    extractor.save_pretrained(out)  # flat preprocessor_config.json, read by tools that skip processor_config
    network.eval().save_pretrained(out)
    return out


def _ct2_config(ct2_dir: Path) -> dict:
    path = ct2_dir / "config.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing (CTranslate2 keeps the suppressed tokens and languages there)") from None
    except ValueError as err:
        raise ConversionError(f"{path}: not JSON ({err})") from err
    missing = [key for key in ("suppress_ids", "suppress_ids_begin", "lang_ids") if key not in settings]
    if missing:
        raise ConversionError(f"{path}: no {', '.join(missing)}; is it a CTranslate2 Whisper config?")
    return settings


def _layers(model: Ct2Model, scope: str) -> int:
    indices = {int(m.group(1)) for name in model.variables if (m := re.match(rf"{scope}/layer_(\d+)/", name))}
    if indices != set(range(len(indices))) or not indices:
        raise ConversionError(f"{model.path}: {scope} layers {sorted(indices)} are not numbered 0..N-1")
    return len(indices)


def whisper_config(model: Ct2Model, tok: WhisperTokenizer, settings: dict) -> WhisperConfig:
    """The transformers config whose shapes are the stored ones; flags checked to be Whisper's."""
    flags = {
        "decoder/activation": _GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
        "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0,
    }
    for name, expected in flags.items():
        if name in model.variables and model.scalar(name) != expected:
            raise ConversionError(f"{model.path}: {name} is {model.scalar(name)}, Whisper's is {expected}")
    shape = {name: v.shape for name, v in model.variables.items()}
    vocab, d_model = shape["decoder/embeddings/weight"]
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=n_mels(model),
        d_model=d_model,
        encoder_layers=_layers(model, "encoder"),
        decoder_layers=_layers(model, "decoder"),
        encoder_attention_heads=int(model.scalar("encoder/num_heads")),
        decoder_attention_heads=int(model.scalar("decoder/num_heads")),
        encoder_ffn_dim=shape["encoder/layer_0/ffn/linear_0/weight"][0],
        decoder_ffn_dim=shape["decoder/layer_0/ffn/linear_0/weight"][0],
        max_source_positions=shape["encoder/position_encodings/encodings"][0],
        max_target_positions=shape["decoder/position_encodings/encodings"][0],
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        suppress_tokens=list(settings["suppress_ids"]),
        begin_suppress_tokens=list(settings["suppress_ids_begin"]),
        tie_word_embeddings=True,
        scale_embedding=False,
    )


def state_dict(model: Ct2Model, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """Every parameter of ``WhisperForConditionalGeneration(config)``, float32, from ``model``.

    Raises:
        ConversionError: a stored variable left unused, or a parameter left unfilled or of the
            wrong shape (each named).
    """
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        stored = model.resolve(name)
        if stored not in model.variables:
            raise ConversionError(f"{model.path}: variable {name} is missing")
        used.add(name)
        used.add(stored)
        value = model.array(name)
        if value.dtype.kind != "f":
            raise ConversionError(f"{model.path}: {name} is {value.dtype} (a quantized model); convert a float16 or float32 one")
        return value.astype(np.float32)

    out: dict[str, np.ndarray] = {}
    d = config.d_model

    def linear(ct2: str, hf: str) -> None:
        out[f"{hf}.weight"], out[f"{hf}.bias"] = get(f"{ct2}/weight"), get(f"{ct2}/bias")

    def norm(ct2: str, hf: str) -> None:
        out[f"{hf}.weight"], out[f"{hf}.bias"] = get(f"{ct2}/gamma"), get(f"{ct2}/beta")

    def fused(ct2: str, hf: str, parts: tuple[str, ...]) -> None:
        weight, bias = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        if weight.shape[0] != d * len(parts):
            raise ConversionError(f"{model.path}: {ct2}/weight has {weight.shape[0]} rows, expected {d * len(parts)}")
        for i, part in enumerate(parts):
            out[f"{hf}.{part}.weight"] = weight[i * d : (i + 1) * d]
            if part != "k_proj":  # Whisper's key projection has no bias (see the module docstring)
                out[f"{hf}.{part}.bias"] = bias[i * d : (i + 1) * d]

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        for i in range(getattr(config, f"{side}_layers")):
            ct2, hf = f"{side}/layer_{i}", f"{prefix}.layers.{i}"
            norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
            linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
                linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
                linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{side}/layer_norm", f"{prefix}.layer_norm")
        out[f"{prefix}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    if model.resolve("decoder/projection/weight") != model.resolve("decoder/embeddings/weight"):
        projection = get("decoder/projection/weight")
        if not np.array_equal(projection, out["model.decoder.embed_tokens.weight"]):
            raise ConversionError(f"{model.path}: the output projection is not tied to the embeddings, as Whisper's is")
    used.add("decoder/projection/weight")

    scalars = {name for name, v in model.variables.items() if v.shape == ()}
    unused = sorted(set(model.variables) - used - scalars)
    if unused:
        raise ConversionError(f"{model.path}: {len(unused)} variables have no transformers parameter: {', '.join(unused[:6])}")
    _check_complete(out, config, model)
    weights = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in out.items()}
    weights["proj_out.weight"] = weights["model.decoder.embed_tokens.weight"]  # one tensor, tied
    return weights


def _check_complete(out: dict[str, np.ndarray], config: WhisperConfig, model: Ct2Model) -> None:
    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in WhisperForConditionalGeneration(config).state_dict().items()}
    expected.pop("proj_out.weight")  # tied to model.decoder.embed_tokens.weight
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    wrong = sorted(name for name in set(expected) & set(out) if tuple(out[name].shape) != expected[name])
    if missing or extra or wrong:
        problems = [f"{label}: {', '.join(names[:6])}" for label, names in
                    (("unfilled", missing), ("unknown", extra), ("wrong shape", wrong)) if names]
        raise ConversionError(f"{model.path}: parameters do not match WhisperForConditionalGeneration: " + "; ".join(problems))


def generation_config(tok: WhisperTokenizer, config: WhisperConfig, settings: dict) -> GenerationConfig:
    """What ``generate`` needs for language detection, translate and timestamps, offline."""
    ids = tok.convert_tokens_to_ids
    languages = {tok.convert_ids_to_tokens(i): i for i in settings["lang_ids"]}
    heads = settings.get("alignment_heads") or []
    result = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(settings["suppress_ids"]),
        begin_suppress_tokens=list(settings["suppress_ids_begin"]),
        lang_to_id=languages,
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        is_multilingual=bool(languages),
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50,  # the first timestamp at most 1 s in, as openai-whisper
        alignment_heads=[list(h) for h in heads],
        return_timestamps=False,
        # Without a task, generate() after language detection would prompt with no task token
        # (the hub's configs say the same with the older forced_decoder_ids [[1, None], [2, transcribe]]).
        task="transcribe",
    )
    # Without this, save_pretrained treats the config as derived from the model config and
    # drops the Whisper-only keys; generate(language=...) then fails on reload.
    result._from_model_config = False
    return result


def verify(ct2_dir: str | Path, checkpoint: str | Path, features: np.ndarray, *, tolerance: float = 1e-2) -> float:
    """Check the converted ``checkpoint`` against CTranslate2 running ``ct2_dir`` (float32).

    ``features``: float32 log-mel ``[batch, n_mels, 3000]``. CTranslate2 decodes greedily
    (English, transcribe, at most 24 tokens) and returns each step's logits; the checkpoint
    is run teacher-forced on the same tokens. Comparing logits (not argmax) checks every
    weight on the decoding path without depending on near-ties. Returns the largest absolute
    logit difference over the tokens CTranslate2 did not suppress.

    Raises:
        ConversionError: a difference above ``tolerance`` (float32 arithmetic differs by ~1e-4).
    """
    import ctranslate2
    from transformers import AutoModelForSpeechSeq2Seq, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    prompt = tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    engine = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    results = engine.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32)), [prompt] * len(features),
        beam_size=1, max_length=len(prompt) + 24, return_logits_vocab=True,
    )
    model = AutoModelForSpeechSeq2Seq.from_pretrained(checkpoint, dtype=torch.float32).eval()
    worst = 0.0
    for row, result in enumerate(results):
        tokens = result.sequences_ids[0]
        expected = np.stack([np.asarray(step) for step in result.logits[0]])  # [steps, vocab]
        with torch.inference_mode():
            got = model(
                input_features=torch.from_numpy(features[row : row + 1]).float(),
                decoder_input_ids=torch.tensor([prompt + tokens]),
            ).logits[0, len(prompt) - 1 :][: len(expected)].numpy()
        kept = expected > -1e30  # CTranslate2 writes the float minimum into suppressed tokens
        worst = max(worst, float(np.abs(expected[kept] - got[kept]).max()))
    if worst > tolerance:
        raise ConversionError(f"{checkpoint}: logits differ from CTranslate2's by {worst:.3g} (tolerance {tolerance:g})")
    return worst
