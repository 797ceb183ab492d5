"""What every benchmark shares: a system's job, its failure, and running it in a subprocess.

:func:`run_system` starts ``python -m MODULE JOB.json RESULT.json`` for one system (the ASR
systems of :mod:`bench.systems` and :mod:`bench.whisper`, the TTS ones of
:mod:`bench.tts_systems`), samples the memory of its whole process tree meanwhile
(:class:`~bench.memory.TreeMemory`) and returns the child's figures plus ``peak_rss_mb`` /
``peak_pss_mb`` (and per role of process, ``processes``). A fresh process per system keeps peak memory per system and stops one
system's caches from warming another's. Also the corpus helpers the systems share.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench.memory import TreeMemory

_LOG_TAIL = 3000  # characters of a failed system's log shown in the error


class BenchError(RuntimeError):
    """A system failed or gave an incomplete result; the message says which and why."""


@dataclass(frozen=True)
class Job:
    """What one system run gets (JSON-serialized to the subprocess)."""

    system: str  # a key of SYSTEMS
    model: str  # checkpoint directory
    manifest: str  # JSONL with 'id' and 'path' per file
    threads: int  # torch intra-op threads, the same for every system
    work_dir: str  # scratch space of this run (outputs, logs)
    batch_size: int = 16  # the unsorted batched pipeline's batch size
    batch_seconds: float | None = None  # our job's budget; None: its default for the device
    budgets_s: list[float] = field(default_factory=lambda: [0.0, 10.0, 20.0])  # ceiling sweep; 0: one at a time
    sweep_share: float = 0.25  # share of the corpus the ceiling sweep runs on (1: sweep is the result)
    # Whisper (bench.whisper): what makes every system do the same decoding work.
    transcribe_options: dict = field(default_factory=dict)  # extra TranscribeOptions of our job
    generate_kwargs: dict = field(default_factory=dict)  # the pipelines' generate_kwargs
    max_new_tokens: int | None = None  # tokens per 30 s window for the Whisper-only systems; None: until end of text
    ct2_model: str = ""  # the model converted for CTranslate2 (faster-whisper)
    compute_type: str = "float32"  # faster-whisper's CTranslate2 compute type
    # faster-whisper: pad each file's audio to 30 s first, so its features equal transformers'
    # (the random-weight bench compares with our transformers engine; see faster_whisper()).
    pad_to_window: bool = True


TEXTS_FILE = "texts.json"


def run_system(job: Job, timeout_s: float = 7200, module: str = "bench.systems") -> dict:
    """Run ``job.system`` in a subprocess and return its figures plus peak tree memory (MiB).

    ``module`` is the child's entry point (``python -m MODULE JOB.json RESULT.json``); other
    benchmarks pass their own module and job dataclass (with ``system``, ``threads``, ``work_dir``).
    """
    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    spec, result, log_path = work / "job.json", work / "result.json", work / "log.txt"
    spec.write_text(json.dumps(asdict(job)))
    result.unlink(missing_ok=True)
    env = _child_env(job.threads)
    with log_path.open("w") as log:
        # A session of its own, so a timeout can stop the child with all it started.
        child = subprocess.Popen(
            [sys.executable, "-m", module, str(spec), str(result)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        with TreeMemory(child.pid) as memory:
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_tree(child)
                raise BenchError(f"{job.system}: no result after {timeout_s:.0f} s; log: {log_path}") from None
    if code != 0 or not result.exists():
        tail = log_path.read_text(errors="replace")[-_LOG_TAIL:]
        raise BenchError(f"{job.system} failed (exit {code}); end of {log_path}:\n{tail}")
    figures = json.loads(result.read_text())
    figures.update(
        peak_rss_mb=round(memory.peak_rss_mb, 1),
        peak_pss_mb=round(memory.peak_pss_mb, 1),
        peak_processes=memory.peak_processes,
        processes=memory.by_role(),  # each role's processes and the sums of their own peaks
    )
    return figures


def round_order(names: list[str], round_: int) -> list[str]:
    """The systems in the order round ``round_`` runs them: every odd round reversed.

    Load drifts on a shared machine; reversing every other round pairs each system's early slot
    with a late one, so the ratio of two systems over a pair of rounds is not biased by which ran first.
    """
    return list(names) if round_ % 2 == 0 else list(names)[::-1]


def schedule(names: list[str], repeat: int) -> list[tuple[str, int]]:
    """``(system, round)`` in run order: ``repeat`` rounds, each in :func:`round_order`."""
    return [(name, r) for r in range(repeat) for name in round_order(names, r)]


def paired_ratios(systems: dict[str, dict], numerator: str) -> dict[str, list[float]]:
    """``numerator``'s RTFx over each other system's, round by round (``rtfx_runs`` of
    :func:`best_run`, in round order), for the systems that ran every round."""
    ours = systems[numerator]["rtfx_runs"]
    return {
        name: [round(a / b, 3) for a, b in zip(ours, figures["rtfx_runs"], strict=True)]
        for name, figures in systems.items()
        if name != numerator and len(figures.get("rtfx_runs", ())) == len(ours)
    }


def format_paired(report: dict, numerator: str = "ours") -> str:
    """One line per system: the round-by-round ratios (empty when there was one round)."""
    paired = report.get("paired_ratios") or {}
    if report.get("repeat", 1) < 2:
        return ""
    rows = [f"- {numerator} / {name}: {', '.join(f'{r:.2f}' for r in ratios)}" for name, ratios in paired.items()]
    return "\nPaired rounds (odd rounds ran in reverse order), RTFx ratio per round:\n" + "\n".join(rows) + "\n"


def best_run(runs: list[dict]) -> dict:
    """The fastest of a system's runs, with every run's RTFx and the highest peak memory of all."""
    best = dict(max(runs, key=lambda f: f["rtfx"]))
    best["rtfx_runs"] = [f["rtfx"] for f in runs]
    best["peak_rss_mb"] = max(f["peak_rss_mb"] for f in runs)
    best["peak_pss_mb"] = max(f["peak_pss_mb"] for f in runs)
    return best


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # Every system starts its own local Ray (if any); never join a cluster found in the environment.
    env.pop("RAY_ADDRESS", None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _stop_tree(child: subprocess.Popen) -> None:
    """Stop the child and every process it started (only those: we list them first)."""
    try:
        tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    child.wait()


# ---------------------------------------------------------------- helpers of the systems (in the child)


def job_paths(job: Job) -> list[str]:
    from speech.inputs import read_manifest

    return read_manifest(job.manifest)["path"].to_pylist()


def decoded_audio(job: Job, rate: int):
    """Each file of the corpus, decoded by the project's one decoder (the same for all systems)."""
    from speech.audio import decode

    for path in job_paths(job):
        yield decode(path, rate)


def write_texts(job: Job, texts: list[str]) -> None:
    """A Whisper run's transcripts, in manifest order, as ``WORK_DIR/texts.json`` (compared by the report)."""
    (Path(job.work_dir) / TEXTS_FILE).write_text(json.dumps([text.strip() for text in texts]))
