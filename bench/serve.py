"""``speech bench serve``: the HTTP app under a bounded load on loopback, batching on vs off.

For each batching setting the app is started the way a user starts it, ``speech serve
--config FILE`` (Ray's ``serve run`` of :func:`serve.app.build_app`), in a subprocess of
its own session with its own local Ray (``RAY_ADDRESS=local``), listening on 127.0.0.1 at
a free port. The config is ``configs/serve.yaml`` resolved by :func:`serve.app.resolve_config`
with the one benchmarked model, one replica per deployment (so only batching differs)
and the Transcriber's ``user_config``:

* ``on``: the config's own batching (16 requests / 160 s of audio per model call, each batch
  formed when the model frees from the requests waiting then);
* ``off``: the same with ``max_batch_size: 1``: every model call holds one request.

This process, which holds no model and no Ray, is the load generator: an asyncio client
(httpx) that sends exactly ``requests`` POSTs to ``/v1/audio/transcriptions`` with at most
``concurrency`` in flight, each uploading one file of the generated corpus (the
``speech bench asr`` corpus, in corpus order, cycled), after ``concurrency`` warm-up requests
that are not counted. Every request must be answered 200; the ``x-batch-size`` header of
each answer says how many requests shared its model call. The server's whole process tree
(driver, Ray daemons, replicas) is sampled for peak memory and stopped afterwards, also
when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import psutil
import yaml

from bench.asr import FULL_FILES, QUICK_FILES
from bench.corpus import Corpus, CorpusSpec, build_corpus
from bench.harness import BenchError
from bench.memory import TreeMemory
from bench.report import load_average, machine, machine_line

#: Load of a full run: each file of the 120-file corpus once (736 s of audio) per setting.
FULL_REQUESTS, FULL_CONCURRENCY = 120, 16
QUICK_REQUESTS, QUICK_CONCURRENCY = 24, 8

ROUTE = "/v1/audio/transcriptions"
SETTINGS = ("on", "off")  # batching settings, run in this order
_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"
_STARTUP_TIMEOUT_S = 600  # Ray start, deploy, model load (the full model takes ~10 s to load)
_REQUEST_TIMEOUT_S = 900  # one request, queueing included
_STOP_TIMEOUT_S = 60  # for `serve run` to shut Serve and Ray down after Ctrl-C
_LOG_TAIL = 3000  # characters of a failed server's log shown in the error
_BODY_TAIL = 500  # characters of a failed answer's body shown in the error


@dataclass(frozen=True)
class ServeBench:
    """Settings of one ``speech bench serve`` run."""

    cache: Path  # checkpoints and corpora are built here once and reused
    quick: bool = False  # tiny model, few requests: checks the benchmark works (CI), measures nothing
    requests: int | None = None  # timed requests per setting; None: FULL_REQUESTS or QUICK_REQUESTS
    concurrency: int | None = None  # requests in flight at most; None: FULL_ or QUICK_CONCURRENCY
    model: str | None = None  # a CTC checkpoint directory; None: the generated (or tiny) one
    threads: int = 2  # torch threads of the model replica (asr_options.torch_threads)
    work: Path | None = None  # configs and server logs; None: a temporary directory, removed afterwards


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    file: str  # uploaded file name
    audio_s: float  # its duration
    latency_s: float  # from sending the request to having the whole answer
    status: int | None  # HTTP status; None when no answer came (connection error, timeout)
    batch_size: int | None  # the answer's x-batch-size: requests in the model call that served it
    detail: str = ""  # body of a non-200 answer, or the client-side error


def run(bench: ServeBench, progress=print) -> dict:
    """Run both batching settings and return the report (keys in docs/benchmarks.md)."""
    load_before = load_average()
    bench = replace(bench, cache=Path(bench.cache).resolve())
    requests = bench.requests or (QUICK_REQUESTS if bench.quick else FULL_REQUESTS)
    concurrency = bench.concurrency or (QUICK_CONCURRENCY if bench.quick else FULL_CONCURRENCY)
    model = Path(bench.model).resolve() if bench.model else default_model(bench)
    configs = {setting: server_config(model, bench.threads, batching=setting == "on") for setting in SETTINGS}
    corpus = build_corpus(bench.cache, CorpusSpec(files=QUICK_FILES if bench.quick else FULL_FILES))
    work = Path(bench.work) if bench.work else Path(tempfile.mkdtemp(prefix="speech-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    uploads = [(Path(p).name, Path(p).read_bytes(), d) for p, d in zip(corpus.paths, corpus.durations_s)]
    started = time.perf_counter()
    results = {}
    for setting, config in configs.items():
        results[setting] = _run_setting(setting, config, uploads, requests, concurrency, work / setting, progress)
    report = _report(bench, model, corpus, configs["on"], results, requests, concurrency, load_before,
                     time.perf_counter() - started)
    if not bench.work:
        shutil.rmtree(work)  # on failure it stays: the error names a log inside it
    return report


def default_model(bench) -> Path:
    """The tiny CTC fixture (``--quick``) or the generated wav2vec2-base-size checkpoint, built in ``bench.cache``."""
    if bench.quick:
        from speech.testing.checkpoints import build_fixtures

        return build_fixtures(bench.cache)["ctc-xlsr"]
    from bench.checkpoint import base_ctc

    return base_ctc(bench.cache)


def server_config(model: Path, threads: int, *, batching: bool) -> dict:
    """``configs/serve.yaml`` serving only ``model`` on 127.0.0.1, one replica per deployment,
    ``threads`` torch threads; ``batching=False`` sets the Transcriber's ``max_batch_size`` to 1
    (its ``user_config``, as an operator would retune it). The port is chosen at start-up."""
    from serve.app import ConfigError, check_models, resolve_config

    try:
        config = resolve_config(_CONFIG, host="127.0.0.1", asr_models=[str(model)])
        check_models(config)  # a model Serve cannot load fails here, in seconds, not after Ray starts
    except ConfigError as err:
        raise BenchError(f"cannot serve {model}: {err}") from err
    (app,) = config["applications"]
    app["args"]["asr_options"] = {**app["args"].get("asr_options", {}), "torch_threads": threads}
    for deployment in app["deployments"]:
        # A fixed single replica: autoscaling would make the two settings differ in more than batching.
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        # Stopped only once every request is answered: no 2 s drain wait (Serve's default) per deployment.
        deployment["graceful_shutdown_wait_loop_s"] = 0.1
        if deployment["name"] == "Transcriber" and not batching:
            deployment["user_config"] = {**deployment.get("user_config", {}), "max_batch_size": 1}
    return config


def _run_setting(setting: str, config: dict, uploads: list, requests: int, concurrency: int, work: Path,
                 progress) -> dict:
    """Start the server with ``config``, warm it up, time the load, stop it; the setting's figures."""
    started = time.perf_counter()
    with serving(config, work) as server:
        # Warm-up: waits for the model replica to be ready and runs the first forwards (not timed).
        _check(setting, asyncio.run(_load(server.base_url, uploads, concurrency, concurrency)), server.log_path)
        startup = time.perf_counter() - started
        progress(f"  batching {setting}: server up in {startup:.1f} s; {requests} requests, {concurrency} in flight")
        load_start = time.perf_counter()
        outcomes = asyncio.run(_load(server.base_url, uploads, requests, concurrency))
        wall = time.perf_counter() - load_start
    _check(setting, outcomes, server.log_path)
    figures = _figures(outcomes, wall)
    figures.update(startup_s=round(startup, 2), peak_rss_mb=round(server.memory.peak_rss_mb, 1),
                   peak_pss_mb=round(server.memory.peak_pss_mb, 1), peak_processes=server.memory.peak_processes,
                   user_config=_transcriber(config).get("user_config", {}), server_pids=server.pids)
    progress(f"  batching {setting}: {figures['throughput_rps']:.2f} requests/s, p50 {figures['latency_ms']['p50']:.0f} ms, "
             f"p99 {figures['latency_ms']['p99']:.0f} ms, batch sizes {figures['batch_sizes']['histogram']}")
    return figures


@dataclass
class Server:
    """A running ``speech serve`` (see :func:`serving`)."""

    base_url: str
    log_path: Path
    memory: TreeMemory  # samples the server's whole process tree
    pids: list[int] = field(default_factory=list)  # the processes stopped at the end


@contextlib.contextmanager
def serving(config: dict, work: Path) -> Iterator[Server]:
    """``speech serve --config`` of ``config`` on a free port, in a session of its own with its own
    local Ray, until the block ends (then it and all it started are stopped, also on failure).
    The server answers ``/health`` when the block begins; logs and config go to ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    config = {**config, "http_options": {**config["http_options"], "port": _free_port()}}
    config_path, log_path = work / "serve.yaml", work / "server.log"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    base_url = f"http://127.0.0.1:{config['http_options']['port']}"
    command = [sys.executable, "-m", "cli", "serve", "--config", str(config_path)]
    with log_path.open("wb") as log:
        # A session of its own: the server and its Ray are stopped as one process group.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_server_env(),
                                   start_new_session=True)
    server = None
    try:
        with TreeMemory(process.pid) as memory:
            server = Server(base_url, log_path, memory)
            _wait_healthy(process, base_url, log_path)
            yield server
    finally:
        pids = _stop(process)
        if server is not None:
            server.pids = pids


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # A local Ray of the server's own: never join a cluster found in the environment or on the machine.
    env["RAY_ADDRESS"] = "local"
    env.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local Ray needs no token files
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, base_url: str, log_path: Path) -> None:
    """Until ``GET /health`` answers 200; a server that exits or never answers is a BenchError."""
    import httpx

    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"speech serve exited with {server.returncode}; end of {log_path}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.5)
    raise BenchError(f"speech serve did not answer /health within {_STARTUP_TIMEOUT_S} s; end of {log_path}:\n"
                     f"{_tail(log_path)}")


async def _load(base_url: str, uploads: list[tuple[str, bytes, float]], requests: int, concurrency: int) -> list[Outcome]:
    """Send ``requests`` transcription requests, at most ``concurrency`` at once; request ``i``
    uploads file ``i % len(uploads)``. Returns every request's outcome, in request order."""
    import httpx

    outcomes: list[Outcome | None] = [None] * requests
    queue = iter(range(requests))  # shared by the workers: each request is taken exactly once
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=_REQUEST_TIMEOUT_S, limits=limits) as client:

        async def worker() -> None:
            for i in queue:
                name, data, seconds = uploads[i % len(uploads)]
                start = time.perf_counter()
                try:
                    response = await client.post(ROUTE, files={"file": (name, data)})
                except httpx.HTTPError as err:
                    outcomes[i] = Outcome(name, seconds, time.perf_counter() - start, None, None, f"{type(err).__name__}: {err}")
                    continue
                latency = time.perf_counter() - start
                ok = response.status_code == 200
                size = response.headers.get("x-batch-size")
                outcomes[i] = Outcome(name, seconds, latency, response.status_code, int(size) if size else None,
                                      "" if ok else response.text[:_BODY_TAIL])

        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return [o for o in outcomes if o is not None]


def _check(setting: str, outcomes: list[Outcome], log_path: Path) -> None:
    """Every request must have been answered 200 with its batch size; else a BenchError naming them."""
    failed = [o for o in outcomes if o.status != 200 or o.batch_size is None]
    if failed:
        first = failed[0]
        raise BenchError(
            f"batching {setting}: {len(failed)} of {len(outcomes)} requests failed; first: {first.file} got "
            f"{first.status or 'no answer'}: {first.detail or 'no x-batch-size header'} (server log: {log_path})"
        )


def _figures(outcomes: list[Outcome], wall: float) -> dict:
    latency_ms = np.array([o.latency_s for o in outcomes]) * 1000
    audio = sum(o.audio_s for o in outcomes)
    sizes = [o.batch_size for o in outcomes]
    return {
        "requests": len(outcomes),
        "errors": sum(o.status != 200 for o in outcomes),
        "wall_s": round(wall, 3),
        "audio_s": round(audio, 2),
        "throughput_rps": round(len(outcomes) / wall, 4),
        "audio_s_per_s": round(audio / wall, 4),
        "latency_ms": {
            "p50": round(float(np.percentile(latency_ms, 50)), 1),
            "p90": round(float(np.percentile(latency_ms, 90)), 1),
            "p99": round(float(np.percentile(latency_ms, 99)), 1),
            "mean": round(float(latency_ms.mean()), 1),
            "max": round(float(latency_ms.max()), 1),
        },
        # Per request: the size of the model call that served it. Calls = sum of 1/size (the
        # warm-up has ended before the timed load starts, so no call mixes the two).
        "batch_sizes": {
            "max": max(sizes),
            "mean_per_request": round(float(np.mean(sizes)), 3),
            "mean_per_call": round(len(sizes) / sum(1 / s for s in sizes), 3),
            "model_calls": round(sum(1 / s for s in sizes), 1),
            "histogram": {str(k): v for k, v in sorted(Counter(sizes).items())},
        },
    }


def _stop(server: subprocess.Popen) -> list[int]:
    """Stop the server and all it started; returns the pids that were stopped.

    Ctrl-C first (``serve run`` then shuts Serve down and the driver stops its local Ray);
    whatever of the tree is still alive after ``_STOP_TIMEOUT_S`` is killed, by process group
    and by pid (Ray workers outlive a killed driver only as orphans of our tree, which the
    listing taken before the Ctrl-C still names).
    """
    processes = []
    try:
        root = psutil.Process(server.pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass  # already gone
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass  # killed below
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        try:
            process.kill()  # psutil checks the pid still names the process we listed
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is empty: everything has exited
    server.wait()
    return sorted(p.pid for p in processes)


def _transcriber(config: dict) -> dict:
    (app,) = config["applications"]
    return next(d for d in app["deployments"] if d["name"] == "Transcriber")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-_LOG_TAIL:]


def _report(bench: ServeBench, model: Path, corpus: Corpus, config: dict, results: dict, requests: int,
            concurrency: int, load_before: dict, seconds: float) -> dict:
    on, off = results["on"], results["off"]
    return {
        "benchmark": "serve",
        "quick": bench.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**machine(), "load_before": load_before, "load_after": load_average()},
        "settings": {
            "model": str(model),
            "torch_threads": bench.threads,
            "requests": requests,
            "concurrency": concurrency,
            "warmup_requests": concurrency,
            "route": ROUTE,
            "corpus": corpus.describe(),
            "deployments": {d["name"]: {k: v for k, v in d.items() if k != "user_config"}
                            for d in config["applications"][0]["deployments"]},
        },
        "batching": results,
        "throughput_ratio": round(on["throughput_rps"] / off["throughput_rps"], 3),
        "p50_ratio": round(on["latency_ms"]["p50"] / off["latency_ms"]["p50"], 3),
        "p99_ratio": round(on["latency_ms"]["p99"] / off["latency_ms"]["p99"], 3),
        "bench_seconds": round(seconds, 1),
    }


def format_table(report: dict) -> str:
    """The report as the Markdown table ``speech bench serve`` prints."""
    lines = [
        "| batching | user_config | requests | in flight | wall s | requests/s | audio s/s | p50 ms | p90 ms | p99 ms "
        "| model calls | mean batch | max batch | peak PSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    s = report["settings"]
    for setting, f in report["batching"].items():
        u = f["user_config"]
        limits = f"{u.get('max_batch_size')} req / {u.get('max_batch_seconds')} s, wait {u.get('batch_wait_timeout_s')} s"
        lat = f["latency_ms"]
        lines.append(
            f"| {setting} | {limits} | {f['requests']} | {s['concurrency']} | {f['wall_s']:.1f} | "
            f"{f['throughput_rps']:.2f} | {f['audio_s_per_s']:.2f} | {lat['p50']:.0f} | {lat['p90']:.0f} | "
            f"{lat['p99']:.0f} | {f['batch_sizes']['model_calls']:.0f} | {f['batch_sizes']['mean_per_call']:.2f} | "
            f"{f['batch_sizes']['max']} | "
            f"{f['peak_pss_mb']:.0f} |"
        )
    m, corpus = report["machine"], s["corpus"]
    lines += [
        "",
        "mean batch: requests per model call (requests / model calls).",
        f"On / off: throughput x{report['throughput_ratio']:.2f}, p50 latency x{report['p50_ratio']:.2f}, "
        f"p99 latency x{report['p99_ratio']:.2f}.",
        f"Model: {Path(s['model']).name}; corpus: {corpus['files']} files, {corpus['audio_s']:.0f} s of audio, "
        f"cycled; {s['warmup_requests']} warm-up requests per setting; torch threads: {s['torch_threads']}; "
        "one replica per deployment.",
        machine_line(m),
    ]
    return "\n".join(lines)
