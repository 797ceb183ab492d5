"""``speech bench serve --realtime``: live transcription latency over ``/v1/realtime``.

One server - ``speech serve`` of configs/serve.yaml with the benchmarked CTC model, the config's
batching, one replica per deployment and a local Ray of its own (:func:`bench.serve.serving`)
- and ``sessions`` concurrent WebSocket sessions of OpenAI's Realtime API with server VAD, each
streaming clips as a microphone would: 24 kHz 16-bit PCM in 100 ms appends paced in real time,
every clip followed by ``silence_s`` of silence so that the VAD closes its turn. The clips are the
repository's samples/ (real speech; Silero finds none in the generated corpus of ``speech bench
asr``), session ``k`` starting at clip ``k`` and cycling. A warm-up session, not counted, loads
the model first.

Per turn (one clip), on the client:

* **first partial**: from sending the append that holds the clip's first speech sample (found
  offline by Silero) to receiving the first ``...input_audio_transcription.delta`` of its item;
* **final**: from sending the append that holds its last speech sample to receiving its
  ``...input_audio_transcription.completed``. It includes the VAD's ``silence_duration_ms``
  (a turn ends after that much quiet; 500 ms, OpenAI's default), reported beside it.

Every turn of every session must complete, with no ``error`` event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.harness import BenchError
from bench.report import load_average, machine, machine_line
from bench.serve import default_model, server_config, serving
from speech.asr.vad import speech_spans
from speech.audio import decode

RATE = 24_000  # the Realtime API's PCM rate
CHUNK = RATE // 10  # samples per append (100 ms)
SILENCE_MS = 500  # server_vad silence_duration_ms: OpenAI's default
FULL_SESSIONS, FULL_CLIPS = 4, 6  # sessions at once, clips per session
QUICK_SESSIONS, QUICK_CLIPS = 2, 2
_SAMPLES = Path(__file__).resolve().parents[1] / "samples"
_TURN_TIMEOUT_S = 300  # a session's last event must come this long after its last append at most


@dataclass(frozen=True)
class RealtimeBench:
    """Settings of one ``speech bench serve --realtime`` run."""

    cache: Path  # checkpoints are built here once and reused
    quick: bool = False  # tiny model, few sessions: checks the benchmark works (CI), measures nothing
    sessions: int | None = None  # concurrent sessions; None: FULL_ or QUICK_SESSIONS
    clips: int | None = None  # clips each session streams; None: FULL_ or QUICK_CLIPS
    silence_s: float = 1.0  # silence streamed after every clip (must exceed SILENCE_MS)
    model: str | None = None  # a CTC checkpoint directory; None: the generated (or tiny) one
    threads: int = 2  # torch threads of the model replica
    work: Path | None = None  # config and server log; None: a temporary directory, removed afterwards


@dataclass(frozen=True)
class Clip:
    name: str
    pcm: np.ndarray  # int16 [n] at 24 kHz
    speech: tuple[int, int]  # first and one-past-last speech sample


def run(bench: RealtimeBench, progress=print) -> dict:
    """Stream the sessions against one server; the report (keys in docs/benchmarks.md)."""
    load_before = load_average()
    bench = replace(bench, cache=Path(bench.cache).resolve())
    sessions = bench.sessions or (QUICK_SESSIONS if bench.quick else FULL_SESSIONS)
    per_session = bench.clips or (QUICK_CLIPS if bench.quick else FULL_CLIPS)
    if bench.silence_s * 1000 <= SILENCE_MS:
        raise BenchError(f"silence_s ({bench.silence_s}) must exceed the VAD's {SILENCE_MS} ms, or turns never close")
    model = Path(bench.model).resolve() if bench.model else default_model(bench)
    config = server_config(model, bench.threads, batching=True)
    clips = _clips()
    work = Path(bench.work) if bench.work else Path(tempfile.mkdtemp(prefix="speech-bench-realtime-"))
    started = time.perf_counter()
    with serving(config, work) as server:
        asyncio.run(_session(server.base_url, clips[:1], bench.silence_s))  # warm-up
        startup = time.perf_counter() - started
        progress(f"  realtime: server up in {startup:.1f} s; {sessions} sessions of {per_session} clips")
        plans = [[clips[(k + i) % len(clips)] for i in range(per_session)] for k in range(sessions)]
        results = asyncio.run(_sessions(server.base_url, plans, bench.silence_s))
    turns = [turn for result in results for turn in result]
    report = {
        "benchmark": "serve-realtime",
        "quick": bench.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "settings": {
            "model": str(model), "torch_threads": bench.threads, "sessions": sessions, "clips_per_session": per_session,
            "chunk_ms": 1000 * CHUNK // RATE, "silence_s": bench.silence_s,
            "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS},
            "clips": [c.name for c in clips],
        },
        "turns": len(turns),
        "first_partial_ms": _percentiles([t["first_partial_s"] for t in turns]),
        "final_ms": _percentiles([t["final_s"] for t in turns]),
        "startup_s": round(startup, 2),
        "peak_pss_mb": round(server.memory.peak_pss_mb, 1),
        "server_pids": server.pids,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    progress(f"  realtime: first partial p50 {report['first_partial_ms']['p50']:.0f} ms, "
             f"final p50 {report['final_ms']['p50']:.0f} ms over {len(turns)} turns")
    if not bench.work:
        shutil.rmtree(work)  # on failure it stays: the error names the server log inside it
    return report


def _clips() -> list[Clip]:
    """The samples/ clips at 24 kHz, in manifest order, with their speech found offline."""
    manifest = _SAMPLES / "manifest.jsonl"
    if not manifest.exists():
        raise BenchError(f"the realtime benchmark streams the repository's sample clips; {manifest} is missing")
    clips = []
    for line in manifest.read_text().splitlines():
        path = _SAMPLES / json.loads(line)["path"]
        audio = decode(str(path), RATE)
        spans = speech_spans(audio, RATE, pad_s=0.0)
        if spans:
            pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
            clips.append(Clip(path.name if path.parent == _SAMPLES else f"{path.parent.name}/{path.name}", pcm,
                              (spans[0].start, spans[-1].end)))
    return clips


async def _sessions(base_url: str, plans: list[list[Clip]], silence_s: float) -> list[list[dict]]:
    return await asyncio.gather(*(_session(base_url, plan, silence_s) for plan in plans))


async def _session(base_url: str, clips: list[Clip], silence_s: float) -> list[dict]:
    """Stream ``clips`` in one session; per clip, its two latencies (seconds)."""
    from websockets.asyncio.client import connect

    silence = np.zeros(round(silence_s * RATE), "<i2")
    stream = np.concatenate([part for clip in clips for part in (clip.pcm, silence)])
    starts = np.cumsum([0] + [len(c.pcm) + len(silence) for c in clips])
    url = base_url.replace("http://", "ws://", 1) + "/v1/realtime?intent=transcription"
    sent: list[float] = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": RATE},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS}}}}}))
        receiver = asyncio.create_task(_receive(ws, len(clips)))
        begin = time.perf_counter()
        for i in range(0, len(stream), CHUNK):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(stream[i : i + CHUNK].tobytes()).decode()}))
            sent.append(time.perf_counter())
            await asyncio.sleep(max(0.0, begin + (i // CHUNK + 1) * CHUNK / RATE - time.perf_counter()))
        try:
            events = await asyncio.wait_for(receiver, _TURN_TIMEOUT_S)
        except TimeoutError as err:
            raise BenchError(f"a session got no transcript for all of its {len(clips)} turns within "
                             f"{_TURN_TIMEOUT_S} s of its last audio") from err
    items = [e["item_id"] for _, e in events if e["type"] == "input_audio_buffer.speech_started"]
    if len(items) != len(clips):
        raise BenchError(f"the server VAD found {len(items)} turns in a session of {len(clips)} clips "
                         f"({', '.join(c.name for c in clips)})")
    turns = []
    for clip, start, item in zip(clips, starts, items):
        texts = [(t, e["type"]) for t, e in events if e.get("item_id") == item and "transcription." in e["type"]]
        done = min(t for t, kind in texts if kind.endswith(".completed"))
        first = min(t for t, _ in texts)  # a turn without partial text shows its text first when it completes
        turns.append({
            "clip": clip.name,
            "first_partial_s": first - sent[(start + clip.speech[0]) // CHUNK],
            "final_s": done - sent[min(len(sent) - 1, (start + clip.speech[1] - 1) // CHUNK)],
        })
    return turns


async def _receive(ws, turns: int) -> list[tuple[float, dict]]:
    """Events with their arrival times until ``turns`` transcripts completed; an error event fails."""
    events, completed = [], 0
    while completed < turns:
        event = json.loads(await ws.recv())
        events.append((time.perf_counter(), event))
        if event["type"] in ("error", "conversation.item.input_audio_transcription.failed"):
            raise BenchError(f"the server sent {event['type']}: {event.get('error')}")
        completed += event["type"] == "conversation.item.input_audio_transcription.completed"
    return events


def _percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"min": round(float(ms.min()), 1), "p50": round(float(np.percentile(ms, 50)), 1),
            "p90": round(float(np.percentile(ms, 90)), 1), "p99": round(float(np.percentile(ms, 99)), 1),
            "mean": round(float(ms.mean()), 1), "max": round(float(ms.max()), 1)}


def format_table(report: dict) -> str:
    """The report as the Markdown table ``speech bench serve --realtime`` prints."""
    s, first, final = report["settings"], report["first_partial_ms"], report["final_ms"]
    lines = [
        "| sessions | turns | first partial p50 / p90 / p99 ms | final p50 / p90 / p99 ms | peak PSS MiB |",
        "|---:|---:|---:|---:|---:|",
        f"| {s['sessions']} | {report['turns']} | {first['p50']:.0f} / {first['p90']:.0f} / {first['p99']:.0f} | "
        f"{final['p50']:.0f} / {final['p90']:.0f} / {final['p99']:.0f} | {report['peak_pss_mb']:.0f} |",
        "",
        f"Model: {Path(s['model']).name}; {s['clips_per_session']} clips per session from samples/, 100 ms appends in "
        f"real time, {s['silence_s']:g} s of silence after each; server VAD (a turn ends after "
        f"{s['turn_detection']['silence_duration_ms']} ms of quiet, included in 'final'); torch threads: "
        f"{s['torch_threads']}; one replica per deployment.",
        machine_line(report["machine"]),
    ]
    return "\n".join(lines)
