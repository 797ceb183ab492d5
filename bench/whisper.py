"""The Whisper half of ``speech bench asr``: its checkpoint, its CTranslate2 copy, its systems.

Checkpoint: a random-weight ``WhisperForConditionalGeneration`` at whisper-base size (d_model
512, 6 encoder + 6 decoder layers, 8 heads, FFN 2048) with the test fixture's offline tokenizer
(every special token at whisper-large-v3's id) and so large-v3's 128 mel bins (whisper-base has
80: the first convolution differs, 0.1% of the compute). Compute depends on the sizes, not on
trained weights. ``--quick`` uses the tiny ``whisper`` test fixture instead.

The same weights converted by CTranslate2's Transformers converter run faster-whisper.

Equal work: a random decoder rarely ends its output, so every system generates greedily, English,
task transcribe, no timestamps, at most :data:`MAX_NEW_TOKENS` tokens per 30 s window; each
peer counts the tokens it generated (end-of-text excluded), our job's transcripts are compared
with the naive pipeline's, and the report shows the counts.

Systems added to :mod:`bench.systems`' (``naive`` and ``unsorted`` run from there with this
module's options, see :func:`job_options`):

* ``whisper_ours``: our job (``bench.systems.ours``), untouched, its transcripts kept;
* ``faster_whisper``: faster-whisper's ``BatchedInferencePipeline`` on the converted weights;
* ``whisper_ceiling``: encoder + greedy ``generate`` on pre-computed log-mel features, no I/O.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.harness import BenchError, Job, decoded_audio, job_paths
from speech.testing import checkpoints as tiny
from speech.testing import whisper_checkpoint as whisper_fixture

#: Bump when the builders' output changes, so cached copies are rebuilt.
VERSION = "1"
NAME = "bench-whisper-base"

#: Tokens every system may generate per 30 s window (greedy; random weights rarely stop earlier).
MAX_NEW_TOKENS = 48

#: whisper-base sizes (openai/whisper-base: 74M parameters with its 51,865-token vocabulary).
_BASE_SIZES = dict(
    d_model=512,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=2048,
    num_mel_bins=128,
    max_source_positions=1500,
    max_target_positions=448,
)


def base_whisper(cache: Path) -> Path:
    """``cache/bench-whisper-base``, built on first use (about 300 MB)."""
    return tiny.build_cached(Path(cache), NAME, build_base_whisper, VERSION)


def build_base_whisper(out: Path, seed: int = 0) -> Path:
    """Write a whisper-base-size random checkpoint to ``out`` and verify it loads and generates.

    Input: log-mel features float32 ``[batch, 128, 3000]`` (30 s at 16 kHz); output: token ids
    of the large-v3 layout (51,866 tokens). Weights are float32, seeded; the global torch RNG
    state is left as it was. Files as :func:`speech.testing.whisper_checkpoint.build_whisper_checkpoint`
    writes them, including the flat ``preprocessor_config.json`` and ``tokenizer.json`` that the
    CTranslate2 converter reads.
    """
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    with torch.random.fork_rng(devices=[]):
        tokenizer = whisper_fixture.build_whisper_tokenizer(seed)
        tokenizer.pad_token = tokenizer.eos_token  # as the hub's Whisper tokenizers
        feature_extractor = WhisperFeatureExtractor(
            feature_size=128, sampling_rate=tiny.SAMPLING_RATE, hop_length=160, chunk_length=30, n_fft=400
        )
        eos = tokenizer.eos_token_id
        config = WhisperConfig(
            vocab_size=len(tokenizer),
            decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
            pad_token_id=eos,
            bos_token_id=eos,
            eos_token_id=eos,
            begin_suppress_tokens=[220, eos],
            **_BASE_SIZES,
        )
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
        model.generation_config = whisper_fixture.build_whisper_generation_config(tokenizer)
        out.mkdir(parents=True, exist_ok=True)
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
        feature_extractor.save_pretrained(out)
        model.save_pretrained(out)
        whisper_fixture.verify_whisper_checkpoint(out)
    return out


def ct2_copy(cache: Path, model: Path) -> Path:
    """``model`` converted for CTranslate2 / faster-whisper (same weights), cached beside it."""
    return tiny.build_cached(Path(cache), f"{Path(model).name}-ct2", lambda out: convert(model, out), ct2_version(model))


def convert(model: Path, out: Path) -> Path:
    """Convert the Transformers checkpoint ``model`` into a CTranslate2 model directory ``out``.

    The weights keep their stored precision (faster-whisper picks the compute type at load);
    the tokenizer and feature-extractor files are copied so faster-whisper reads the model's
    own, instead of looking for whisper-tiny's on the hub.
    """
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(model), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(out), force=True
    )
    return out


def ct2_version(model: Path) -> str:
    """Cache version of a conversion: this module's, and the source checkpoint's own build."""
    marker = Path(model) / ".complete"
    source = marker.read_text().strip() if marker.exists() else "external"
    return f"{VERSION}/{source}"


# ---------------------------------------------------------------- equal work for every system


def job_options(max_new_tokens: int) -> dict:
    """The :class:`~bench.harness.Job` fields that make every system decode alike.

    Greedy, English, transcribe, no timestamps, ``max_new_tokens`` per window, for our job (as
    ``TranscribeOptions``) and for transformers' pipeline (as ``generate_kwargs``: the pipeline
    would otherwise use the 5 beams transformers 5 defaults Whisper to).
    """
    return {
        # temperature 0 only: a random decoder fails every fallback threshold.
        "transcribe_options": {"language": "en", "task": "transcribe", "timestamps": "none",
                               "max_new_tokens": max_new_tokens, "temperature": [0.0]},
        "generate_kwargs": {"language": "en", "task": "transcribe", "num_beams": 1, "do_sample": False,
                            "max_new_tokens": max_new_tokens},
        "max_new_tokens": max_new_tokens,
    }


def count_generated_tokens(model) -> None:
    """Make ``model.generate`` count the tokens it generates into ``model.generated_tokens[0]``.

    transformers 5's Whisper ``generate`` returns the new tokens only, each row padded after
    its end-of-text; a row's count is its tokens before the first end-of-text.
    """
    generate = model.generate
    eos = model.generation_config.eos_token_id
    model.generated_tokens = [0]

    def counting(*args, **kwargs):
        out = generate(*args, **kwargs)
        sequences = out["sequences"] if isinstance(out, dict) else out
        model.generated_tokens[0] += _tokens_before_eos(sequences.cpu().numpy(), eos)
        return out

    model.generate = counting


def _tokens_before_eos(sequences: np.ndarray, eos: int) -> int:
    """Tokens before each row's first ``eos`` in int ``[batch, length]``, summed."""
    ended = sequences == eos
    return int(np.where(ended.any(axis=1), ended.argmax(axis=1), sequences.shape[1]).sum())


# ---------------------------------------------------------------- the Whisper systems (run in the child)


def whisper_ours(job: Job) -> dict:
    """System 1: :func:`bench.systems.ours` (the ``speech transcribe`` job), untouched.

    Counting our tokens would need a hook in every Ray worker, and a job-wide ``runtime_env``
    costs worker start-up (measured: +30 s on a 40 s run). Instead the job's transcripts are
    written to ``texts.json``, and the report checks them against the naive pipeline's, file by
    file: equal greedy text from the same weights means the same tokens.
    """
    from bench.harness import write_texts
    from bench.systems import ours
    from jobs.transcribe import read_output

    figures = ours(job)
    table = read_output(str(Path(job.work_dir) / "output"), columns=["path", "text"])
    by_path = dict(zip(table["path"].to_pylist(), table["text"].to_pylist()))
    write_texts(job, [by_path[path] for path in job_paths(job)])
    return figures


def faster_whisper(job: Job) -> dict:
    """System 4: faster-whisper's ``BatchedInferencePipeline`` on the converted same weights.

    The pipeline batches the chunks of one audio input. To batch across files as the other
    batched systems do, each call gets ``batch_size`` files (decoded by the project's decoder)
    laid end to end with ``clip_timestamps`` at the file boundaries: one chunk per file, one
    batch per call. Greedy (``beam_size=1``, temperature 0), English, no timestamps, no
    conditioning, no VAD, the checkpoint's own suppressed tokens.

    With ``job.pad_to_window`` each file is padded with zeros to 30 s first. The batched
    pipeline computes log-mel features of a chunk's own length and pads the *features* with
    zeros, as openai-whisper and our CTranslate2 engine do, where transformers and our
    transformers engine pad the *audio* to 30 s and then compute features; the two inputs
    differ in the padded frames, and the decoder answers them differently (measured on the
    quick fixture: 27 tokens against 50). Padded, its encoder sees the transformers engine's
    features (max difference 1e-6). The transcripts go to ``texts.json`` (each segment belongs
    to the file its start falls in).
    """
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from transformers import GenerationConfig

    class Counting(BatchedInferencePipeline):
        """Counts the tokens each batch generates (end-of-text excluded, as CTranslate2 returns them)."""

        tokens = 0

        def generate_segment_batched(self, features, tokenizer, options):
            encoder_output, outputs = super().generate_segment_batched(features, tokenizer, options)
            self.tokens += sum(len(o["tokens"]) for o in outputs)
            return encoder_output, outputs

    from bench.harness import write_texts

    started = time.perf_counter()
    model = WhisperModel(job.ct2_model, device="cpu", compute_type=job.compute_type, cpu_threads=job.threads)
    pipe = Counting(model)
    suppress = list(GenerationConfig.from_pretrained(job.model).suppress_tokens)
    rate = model.feature_extractor.sampling_rate
    loaded = time.perf_counter() - started
    # CTranslate2 4.8.5's Whisper generate() stops at max_length / 2 new tokens (measured), and
    # faster-whisper asks for max_length = prompt (4 tokens) + max_new_tokens: this asks for
    # exactly max_new_tokens new ones. The token counts in the report check it.
    bound = {"max_new_tokens": 2 * job.max_new_tokens - 4} if job.max_new_tokens else {}
    window = model.feature_extractor.n_samples  # 30 s
    audio = list(decoded_audio(job, rate))
    if max(len(a) for a in audio) > window:
        raise BenchError("faster_whisper: the corpus has files over 30 s; this system runs one window per file")
    texts = [""] * len(audio)
    segments = 0
    for begin in range(0, len(audio), job.batch_size):
        group = [np.pad(a, (0, window - len(a))) if job.pad_to_window else a for a in audio[begin : begin + job.batch_size]]
        ends = np.cumsum([len(a) for a in group])
        clips = [{"start": (end - len(a)) / rate, "end": end / rate} for a, end in zip(group, ends)]
        out, _ = pipe.transcribe(
            np.concatenate(group), language="en", task="transcribe", beam_size=1, temperature=0.0,
            without_timestamps=True, condition_on_previous_text=False, vad_filter=False, clip_timestamps=clips,
            batch_size=job.batch_size, suppress_tokens=suppress, **bound,
        )
        starts = (ends - np.array([len(a) for a in group])) / rate
        for segment in out:  # a generator: decoding happens here
            texts[begin + int(np.searchsorted(starts, segment.start + 1e-3, side="right")) - 1] += segment.text
            segments += 1
    wall = time.perf_counter() - started
    write_texts(job, texts)
    return {"files": len(audio), "audio_s": sum(len(a) for a in audio) / rate, "wall_s": wall,
            "startup_s": loaded, "tokens": pipe.tokens, "segments": segments}


def whisper_ceiling(job: Job) -> dict:
    """System 5: encoder + greedy ``generate`` on pre-computed log-mel features, no I/O.

    Features come from the project's Whisper front end (one 30 s window per file here) and are
    stacked before the clock starts. Batch sizes ``budget / 30 s`` for each of ``budgets_s``
    are swept on an even ``sweep_share`` of the corpus; the best is timed on all of it.
    ``wall_s`` is the ``generate`` calls only.
    """
    import torch
    from transformers import AutoModelForSpeechSeq2Seq

    from speech.asr.whisper import WhisperFrontEnd
    from speech.audio import decode

    torch.set_num_threads(job.threads)
    front_end = WhisperFrontEnd(job.model)
    rate = front_end.sample_rate
    windows = [w for p in job_paths(job) for w in front_end.windows(decode(p, rate))]
    features = torch.from_numpy(np.stack([w.features for w in windows]))  # [windows, mels, 3000]
    model = AutoModelForSpeechSeq2Seq.from_pretrained(job.model, dtype=torch.float32).eval()
    count_generated_tokens(model)
    kwargs = {**job_options(job.max_new_tokens)["generate_kwargs"]}

    def timed(rows: torch.Tensor, batch: int) -> tuple[float, int]:
        before = model.generated_tokens[0]
        t = time.perf_counter()
        for i in range(0, len(rows), batch):
            model.generate(input_features=rows[i : i + batch], **kwargs)
        return time.perf_counter() - t, model.generated_tokens[0] - before

    with torch.inference_mode():
        model.generate(input_features=features[:1], **{**kwargs, "max_new_tokens": 2})  # warm-up
        step = max(1, round(1 / job.sweep_share))
        subset = features[::step]
        sweep = {}
        for budget in job.budgets_s:
            batch = max(1, int(budget // 30))
            seconds, tokens = timed(subset, batch)
            sweep[batch] = {"seconds": seconds, "tokens": tokens}
        best = min(sweep, key=lambda b: sweep[b]["seconds"])
        seconds, tokens = (sweep[best]["seconds"], sweep[best]["tokens"]) if step == 1 else timed(features, best)
    audio_s = sum(w.num_samples for w in windows) / rate
    subset_s = sum(w.num_samples for w in windows[::step]) / rate
    return {
        "files": len(windows), "audio_s": audio_s, "wall_s": seconds, "startup_s": 0.0, "tokens": tokens,
        "best_batch": best,
        "sweep": {str(b): {"rtfx": round(subset_s / r["seconds"], 4), "tokens": r["tokens"]} for b, r in sweep.items()},
        "sweep_files": len(subset),
    }


#: Systems of this module, looked up by :func:`bench.systems.main`.
WHISPER_SYSTEMS = {
    "whisper_ours": whisper_ours,
    "faster_whisper": faster_whisper,
    "whisper_ceiling": whisper_ceiling,
}
