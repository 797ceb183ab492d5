"""Session-wide fixtures: one local Ray, offline checkpoints built once and cached; helpers that
start the Serve app as a user does and run the transcription job's own stages."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
# Built once per machine and reused: the builders are deterministic and versioned.
FIXTURES_DIR = Path(os.environ.get("SPEECH_FIXTURES_DIR", REPO / ".cache" / "fixtures"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token files for a throwaway local Ray
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the hub in tests


@pytest.fixture(scope="session")
def checkpoints() -> dict[str, Path]:
    """``{name: directory}`` of the tiny offline checkpoints (see speech.testing.checkpoints)."""
    from speech.testing.checkpoints import build_fixtures

    return build_fixtures(FIXTURES_DIR)


@pytest.fixture(scope="session")
def real_whisper() -> dict[str, Path]:
    """``{"whisper-base-ct2": dir, "whisper-base": dir}``: the real Whisper base from the
    ``real`` extra, joined and converted once (see speech.testing.real_whisper)."""
    from speech.testing.real_whisper import build_real_whisper

    return build_real_whisper(FIXTURES_DIR)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray for the whole session (starting one takes seconds)."""
    import ray

    # address="local": always a Ray of this session's own, never a cluster that `ray start`
    # left running on the machine (another checkout's tests, tests/test_cluster.py).
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def run_bench(out: Path, *args: str) -> tuple[dict, str]:
    """``speech bench ARGS --json --cache --work`` in this process, writing under ``out``:
    ``(report from the JSON file, printed table)``; the command must exit 0."""
    from cli import main

    path = out / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["bench", *args, "--json", str(path), "--cache", str(FIXTURES_DIR), "--work", str(out / "work")]) == 0
    return json.loads(path.read_text()), printed.getvalue()


def kill_session(pid: int) -> None:
    """SIGKILL a driver started with ``start_new_session=True``, then every process of the
    session it led (its local Ray: gcs, raylet, workers, agents), and nothing else."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline:
        left = [p for p in _session_pids(pid) if p != pid]
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        if not left:
            return
        time.sleep(0.5)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


@pytest.fixture
def one_torch_thread():
    """Compared runs use one thread: near-tied random logits can flip between thread counts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the Serve app, started as a user starts it ------------------------------------------------

TEST_API_KEY = "test-key-123"
TEST_KEY_ENV = "SPEECH_TEST_API_KEY"
SERVE_STARTUP_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_test_config(path: Path, args: dict, *, batch_wait_s: float) -> dict:
    """configs/serve.yaml shrunk to two cores (one replica per deployment), requiring
    TEST_API_KEY, with ``args`` merged into the app's args (dict values merged one level deep)
    every batch queue waiting ``batch_wait_s`` and replicas stopping without Serve's 2 s drain
    wait; written to ``path``."""
    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    (app,) = config["applications"]
    app["runtime_env"] = {"env_vars": {TEST_KEY_ENV: TEST_API_KEY}}
    app["args"]["api_key_env"] = TEST_KEY_ENV
    for key, value in args.items():
        app["args"][key] = {**app["args"].get(key, {}), **value} if isinstance(value, dict) else value
    cpus = {"Gateway": 0.25, "Transcriber": 0.5, "Synthesizer": 0.25}
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = cpus[deployment["name"]]
        # One replica each, so that replica facts (batching, loaded models) are the app's.
        deployment["autoscaling_config"].update(min_replicas=1, max_replicas=1)
        if "user_config" in deployment:
            deployment["user_config"]["batch_wait_timeout_s"] = batch_wait_s
        # A stopping replica sleeps this long before it checks for ongoing requests, and Serve
        # stops an app's deployments one after the other: Serve's 2 s default costs ~2 s per
        # deployment at every app stop. No test stops an app with requests in flight.
        deployment["graceful_shutdown_wait_loop_s"] = 0.1
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


#: The Serve handles :func:`describe_deployment` made to the running app, by id.
_HANDLES: dict[int, object] = {}


def describe_deployment(deployment: str) -> dict:
    """``describe()`` of ``deployment`` of the app :func:`speech_serve` runs (its replica's
    batches, loaded models and batching settings), through a handle shut down when it stops.

    Each handle runs a router in this process that keeps reporting to Serve's controller. Ray
    2.60's ``serve.shutdown()`` shuts the cached handles down only while the controller lives, and
    ``speech serve`` is stopped by Ctrl-C first, so a handle left open would go on reporting after
    the session's Ray is gone (and Ray's auto-init would try to start a new one at exit).
    """
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name="speech")
    _HANDLES[id(handle)] = handle
    return handle.describe.remote().result()


@contextlib.contextmanager
def speech_serve(ray, config_path: Path, model_flags: list[str], work: Path) -> Iterator[str]:
    """``speech serve --config config_path MODEL_FLAGS`` on a free port, deployed on the session's
    Ray; yields the base URL once the app runs, and stops it with Ctrl-C (then Serve) at exit."""
    from ray import serve

    port = free_port()
    command = [sys.executable, "-m", "cli", "serve", "--config", str(config_path), "--port", str(port),
               *model_flags]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    log_path = work / "speech-serve.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                   start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_running(process, base_url, log_path)
        print(f"\n[serve] app up in {time.perf_counter() - started:.1f} s")
        yield base_url
    finally:
        for handle in _HANDLES.values():  # while the controller still answers
            handle.shutdown()
        _HANDLES.clear()
        # Ctrl-C, as a user stops it: Ray's `serve run` then shuts Serve down.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        serve.shutdown()


def _wait_until_running(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    import httpx
    from ray import serve

    deadline = time.monotonic() + SERVE_STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"speech serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            healthy = httpx.get(f"{base_url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            healthy = False
        status = serve.status().applications.get("speech") if healthy else None
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            pytest.fail(f"the app failed to deploy: {status.message}")
        time.sleep(1)
    pytest.fail(f"the app was not running after {SERVE_STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


def job_texts(inputs: list[str], model: Path, output: Path, **options) -> dict[str, str]:
    """``{path: text}`` from the transcription job's own stages run in this process (what
    ``speech transcribe`` writes for ``inputs`` with these options); every row must succeed."""
    import pyarrow as pa

    from jobs.transcribe import PrepareUnits, RecognizeUnits, probe_batch
    from speech.asr import detect_model
    from speech.inputs import resolve_inputs
    from speech.options import TranscribeOptions

    options = TranscribeOptions(inputs=inputs, output=str(output), model=str(model), cpus_per_actor=0.5, **options)
    table = probe_batch(resolve_inputs(options.inputs))
    kind = detect_model(options.model, options.asr)
    recognize = RecognizeUnits(options, kind)
    prepare = PrepareUnits(options, kind)
    rows = pa.concat_tables([recognize(unit) for unit in prepare(table)]).to_pylist()
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
    return {r["path"]: r["text"] for r in rows}


@pytest.fixture
def stalled_url():
    """``http://127.0.0.1:PORT/stalled.wav``: a server that accepts every connection and never
    answers, until the test ends (then it closes them, so abandoned reads finish)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/stalled.wav"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def silent_flac(seconds: int, *, with_length: bool = True) -> bytes:
    """``seconds`` (a multiple of 600) of silence as a 1 kHz FLAC: three hours fit in 35 KB, a
    decompression bomb. ``with_length=False`` zeroes STREAMINFO's sample count, as a streaming
    encoder leaves it, so the header gives no length."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 1000, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(seconds // 600):
            f.write(np.zeros(600 * 1000, np.int16))
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC"
    if not with_length:  # the low 36 bits of STREAMINFO's bytes 10-17 are the sample count
        data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)
