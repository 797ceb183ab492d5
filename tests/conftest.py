"""Session-wide fixtures: one local Ray, offline checkpoints built once and cached."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    from speech.cli import main

    path = out / "bench.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["bench", *args, "--json", str(path), "--cache", str(FIXTURES_DIR), "--work", str(out / "work")]) == 0
    return json.loads(path.read_text()), printed.getvalue()


@pytest.fixture
def one_torch_thread():
    """Compared runs use one thread: near-tied random logits can flip between thread counts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def speech_serve(ray_local, config: Path, flags: list[str], log: Path, timeout_s: float = 300) -> Iterator[str]:
    """``speech serve --config CONFIG FLAGS`` on a free loopback port, on the session's Ray, as a
    user starts it; yields its base URL once the app is RUNNING. Stopped with Ctrl-C (Ray's
    ``serve run`` then shuts Serve down), then killed if it lingers."""
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "speech.cli", "serve", "--config", str(config), "--port", str(port), *flags]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_running(process, base_url, log, timeout_s)
        yield base_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        serve.shutdown()


def _wait_until_running(process: subprocess.Popen, base_url: str, log: Path, timeout_s: float) -> None:
    import httpx
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"speech serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
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
    pytest.fail(f"the app was not running after {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
