"""Session-wide fixtures: one local Ray, offline checkpoints built once and cached."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


def kill_session(pid: int) -> None:
    """SIGKILL a driver started with ``start_new_session=True``, then every process of the
    session it led (its local Ray: gcs, raylet, workers, agents), and nothing else."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline:
        left = [p for p in _session_pids(pid) if p != pid]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
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
