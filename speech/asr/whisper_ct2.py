"""The CTranslate2 Whisper engine: a model directory holding a CTranslate2 ``model.bin``.

Such a directory (faster-whisper's format: ``model.bin``, ``config.json`` with the suppressed
tokens, languages and alignment heads, ``tokenizer.json``) is run with
``ctranslate2.models.Whisper`` directly, under the same shared loop as the transformers engine
(:class:`~speech.asr.whisper_base.WhisperBase`): the same front end and features, batches of
windows of many files, language detection with its probability, translate, segment and word
timestamps, and the same decoding options. Weights run at ``compute_type`` (``int8`` on a CPU
ran whisper-base 1.3x as fast as float32; see docs/whisper.md).

CTranslate2 reports each step's logits (``return_logits_vocab``), from which each chosen
token's log-probability is taken, as the transformers engine records it; word times come from
its ``align`` (cross-attention of the alignment heads and DTW, in C++).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech.asr.base import Window
from speech.asr.decoding import Attempt, Request
from speech.asr.whisper_base import (
    SpecialTokens,
    Task,
    Timestamps,
    WhisperBase,
    average_logprob,
    check_request,
    load_feature_extractor,
)
from speech.convert import ct2_whisper
from speech.options import DecodingOptions

#: openai-whisper's median filter width for word alignment (transformers' default too).
MEDIAN_FILTER_WIDTH = 7


def read_special_tokens(model: str) -> SpecialTokens:
    """The special token ids of a CTranslate2 Whisper directory, from its JSON files only.

    Raises:
        ValueError: ``config.json`` or ``tokenizer.json`` missing or not Whisper's.
    """
    directory = Path(model)
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        added = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
        ids = {token["content"]: token["id"] for token in added}
        names = {token["id"]: token["content"] for token in added}
        return SpecialTokens(
            eos=ids["<|endoftext|>"],
            sot=ids["<|startoftranscript|>"],
            sot_prev=ids["<|startofprev|>"],
            no_timestamps=ids["<|notimestamps|>"],
            tasks={task: ids[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in ids},
            languages={names[i]: i for i in config.get("lang_ids") or []},
        )
    except FileNotFoundError as err:
        raise ValueError(f"model {model!r}: {Path(err.filename).name} is missing beside model.bin") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"model {model!r}: config.json or tokenizer.json is not a Whisper one ({type(err).__name__}: {err})"
        ) from err


def check_model(model: str, *, language: str | None, task: Task, compute_type: str | None, device: str) -> None:
    """Raise ``ValueError`` if the CTranslate2 model in ``model`` cannot do what is asked.

    Reads the model.bin header and the JSON files only, so the driver can check before any
    actor starts: a truncated or foreign model.bin, a CTranslate2 model of another kind, a
    language or task the model lacks, a compute type CTranslate2 cannot run on ``device``.
    """
    ct2_whisper.check_whisper(model)
    tokens = read_special_tokens(model)
    check_request(model, tokens.multilingual, tokens.languages, language=language, task=task)
    # A GPU is only known where the model runs (a server validates its config as if on one).
    if compute_type is not None and device == "cpu":
        import ctranslate2

        supported = sorted(ctranslate2.get_supported_compute_types(device))
        if compute_type not in supported:
            raise ValueError(
                f"compute_type {compute_type!r} is not supported by CTranslate2 on {device} here; "
                f"supported: {', '.join(supported)}"
            )


@dataclass(frozen=True)
class _Encoded:
    states: np.ndarray  # [batch, frames, d_model] encoder output, on the host


class Ct2WhisperRecognizer(WhisperBase):
    """Runs a CTranslate2 Whisper model over windows of many files in batches.

    Args:
        model: directory holding the CTranslate2 ``model.bin``, ``config.json`` and ``tokenizer.json``.
        device: ``"cpu"`` or ``"cuda"``.
        compute_type: ``float32``, ``float16``, ``int8`` or ``int8_float32``; None: the stored
            precision where the device runs it (float16 weights run as float32 on a CPU).
        threads: CTranslate2 intra-op threads.
        batch_seconds, language, task, timestamps, max_new_tokens, decoding, pack: as
            :class:`~speech.asr.whisper.WhisperRecognizer`'s. CTranslate2 generates at most
            half its maximum length: 224 new tokens per window for every released Whisper.
    """

    engine = "ctranslate2"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        compute_type: str | None = None,
        threads: int = 1,
        batch_seconds: float = 30.0,
        language: str | None = None,
        task: Task = "transcribe",
        timestamps: Timestamps = "segment",
        max_new_tokens: int | None = None,
        decoding: DecodingOptions | None = None,
        pack: bool = False,
    ):
        import ctranslate2

        self._ct2 = ctranslate2
        spec = ct2_whisper.check_whisper(model)
        feature_extractor = load_feature_extractor(model)
        if feature_extractor.feature_size != ct2_whisper.n_mels(spec):
            raise ValueError(f"model {model!r}: preprocessor_config.json has {feature_extractor.feature_size} mel bins, "
                             f"model.bin takes {ct2_whisper.n_mels(spec)}")
        self.model = ctranslate2.models.Whisper(model, device=device, compute_type=compute_type or "default", intra_threads=threads)
        self._setup(
            model=model, tokenizer=ct2_whisper.tokenizer(model), tokens=read_special_tokens(model),
            feature_extractor=feature_extractor, batch_seconds=batch_seconds, language=language, task=task,
            timestamps=timestamps, max_new_tokens=max_new_tokens,
            context_tokens=spec.variables["decoder/position_encodings/encodings"].shape[0], decoding_options=decoding, pack=pack,
        )

    def _rows(self, encoded: _Encoded, rows: list[int]):
        return self._ct2.StorageView.from_array(np.ascontiguousarray(encoded.states[rows]))

    def _encode(self, windows: list[Window]) -> _Encoded:
        features = self._ct2.StorageView.from_array(np.ascontiguousarray(np.stack([w.features for w in windows]), np.float32))
        return _Encoded(np.array(self.model.encode(features, to_cpu=True)))

    def _detect(self, encoded: _Encoded, rows: list[int]) -> list[tuple[str, float]]:
        return [(ranked[0][0][2:-2], float(ranked[0][1])) for ranked in self.model.detect_language(self._rows(encoded, rows))]

    def _decode(self, encoded: _Encoded, requests: list[Request], temperature: float, windows: list[Window]) -> list[Attempt]:
        options = requests[0].options
        prompts = [self._prompt(r) for r in requests]
        prompt = len(prompts[0])
        new = max(1, min(self.max_new_tokens, self.context_tokens - prompt))
        beam = temperature == 0 and options.beam_size > 1
        if temperature > 0:  # best_of samples from the whole distribution, as faster-whisper
            search = {"beam_size": 1, "num_hypotheses": options.best_of, "sampling_topk": 0, "sampling_temperature": temperature}
        else:
            search = {"beam_size": options.beam_size}
        rows = [r.row for r in requests]
        results = self.model.generate(
            self._rows(encoded, rows), prompts,
            # CTranslate2 4.8 generates at most min(max_length // 2, max_length - len(prompt) + 1)
            # tokens (measured); this asks for `new`, within the decoder's positions.
            max_length=min(self.context_tokens, max(2 * new, new + prompt - 1)),
            # Beam search returns no per-step logits: its tokens are scored by `align` below.
            return_scores=True, return_logits_vocab=not beam, return_no_speech_prob=True, **search,
        )
        if beam:
            return self._beam_attempts(encoded, requests, results, windows)
        attempts = []
        for result in results:
            candidates = [
                self._attempt(tokens, steps, result.no_speech_prob) for tokens, steps in zip(result.sequences_ids, result.logits)
            ]
            attempts.append(max(candidates, key=lambda a: a.avg_logprob))  # best_of: the likeliest
        return attempts

    def _beam_attempts(self, encoded: _Encoded, requests: list[Request], results, windows: list[Window]) -> list[Attempt]:
        """Attempts of beam search: the mean log-probability from CTranslate2's score (the sum
        over the tokens and end-of-text, divided by the token count), each text token's from
        the teacher-forced pass of ``align`` (timestamp tokens: 0, unused)."""
        attempts = []
        for result in results:
            tokens = np.asarray(result.sequences_ids[0], np.int64)
            total = result.scores[0] * max(1, len(tokens))  # length_penalty 1: score = sum / length
            unscored = np.zeros(len(tokens), np.float32)
            attempts.append(Attempt(tokens, unscored, total / (len(tokens) + 1), float(result.no_speech_prob)))
        scored = []
        for attempt, (positions, alignment) in zip(attempts, self._alignments(encoded, requests, attempts, windows)):
            logprobs = attempt.logprobs.copy()
            if alignment is not None:
                logprobs[positions] = np.log(np.maximum(np.asarray(alignment.text_token_probs[: len(positions)]), 1e-12))
            scored.append(Attempt(attempt.tokens, logprobs, attempt.avg_logprob, attempt.no_speech_prob))
        return scored

    def _attempt(self, tokens: list[int], steps: list, no_speech_prob: float) -> Attempt:
        """An attempt from a hypothesis' tokens and its per-step logits (the suppressed ones at
        the float minimum): each chosen token's log-probability, end-of-text included."""
        logits = np.stack([np.asarray(step) for step in steps]).astype(np.float64)  # [steps, vocab]
        chosen = [*tokens, self.tokens.eos][: len(logits)]
        peak = logits.max(axis=1, keepdims=True)
        normalizer = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        logprobs = (logits[np.arange(len(chosen)), chosen] - normalizer[: len(chosen)]).astype(np.float32)
        length = len(tokens)
        return Attempt(np.asarray(tokens, np.int64), logprobs[:length], average_logprob(logprobs, length), float(no_speech_prob))

    def _alignments(self, encoded: _Encoded, requests: list[Request], attempts: list[Attempt], windows: list[Window]):
        """Per attempt: the positions of its text tokens and CTranslate2's ``align`` result for
        them (after the window's ``<|startoftranscript|>`` sequence), None without text."""
        out: list = [([j for j, t in enumerate(a.tokens) if t < self.tokens.eos], None) for a in attempts]
        by_language: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            if out[i][0]:
                by_language.setdefault(request.language, []).append(i)
        for language, members in by_language.items():
            start = self._prompt(Request(0, language, (), requests[members[0]].options))
            if start[-1] == self.tokens.no_timestamps:
                start = start[:-1]
            texts = [[int(attempts[i].tokens[j]) for j in out[i][0]] for i in members]
            frames = [math.ceil(windows[requests[i].row].num_samples / self.hop_length) for i in members]
            results = self.model.align(self._rows(encoded, [requests[i].row for i in members]), start, texts, frames,
                                       median_filter_width=MEDIAN_FILTER_WIDTH)
            for i, result in zip(members, results):
                out[i] = (out[i][0], result)
        return out

    def _align(self, encoded: _Encoded, requests: list[Request], attempts: list[Attempt], windows: list[Window]) -> list[np.ndarray]:
        """Token bounds from CTranslate2's ``align`` (cross-attention of the alignment heads and
        DTW), mapped back onto the attempt's token positions."""
        bounds = [np.zeros(len(a.tokens) + 1) for a in attempts]
        for i, (positions, result) in enumerate(self._alignments(encoded, requests, attempts, windows)):
            if result is None:
                continue
            text_indices, time_indices = np.array(result.alignments, dtype=np.int64).reshape(-1, 2).T
            jumps = np.diff(text_indices, prepend=-1).astype(bool)
            times = time_indices[jumps] * self.time_precision  # the start of each text token, then the end
            times = np.concatenate([times, np.full(max(0, len(positions) + 1 - len(times)), times[-1] if len(times) else 0.0)])
            for k, j in enumerate(positions):
                bounds[i][j], bounds[i][j + 1] = times[k], times[k + 1]
        return bounds
