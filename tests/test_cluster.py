"""A real two-node Ray cluster on this machine, driven the way users drive a cluster.

``cluster/local-cluster.sh start`` runs ``ray start --head`` and a second ``ray start
--address=HEAD`` node (each node declares the custom resource ``model_slots: 1``); the
transcription job is submitted through Ray's Jobs API with nothing but a config file, and Ray's
state API then tells on which nodes the model actors ran. The cluster lives in its own temp dir
on free ports, so it never touches another Ray on the machine, and the script's ``stop`` ends
exactly the process groups it started; the test checks that none of their processes is left.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from jobs.output import SUMMARY_FILE
from jobs.transcribe import read_output

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SCRIPT = REPO / "cluster" / "local-cluster.sh"
BIN = Path(sys.executable).parent  # the venv whose `ray` and `speech` the cluster runs
RECOGNIZER = "RecognizeUnits"  # the model actors' callable class in jobs/transcribe.py
JOB_TIMEOUT_S = 300


@dataclass(frozen=True)
class LocalCluster:
    directory: Path
    address: str  # GCS address, for the state API
    dashboard: str  # Jobs API URL
    process_groups: tuple[int, ...]  # one per node, as started by the script


def _script(command: str, directory: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY": str(BIN / "ray"), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), command, "--dir", str(directory), *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def _live(pgid: int) -> list[int]:
    """Pids of the processes still in process group ``pgid``."""
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture(scope="module")
def cluster():
    # Short path: Ray's Unix sockets live under it and must stay below 108 characters.
    directory = Path(tempfile.mkdtemp(prefix="spc", dir="/tmp"))
    groups: list[int] = []
    try:
        started = _script("start", directory, "--workers", "1", "--cpus", "2", "--slots", "1",
                          "--object-store-mb", "512", timeout=180)
        groups = [int(p.read_text()) for p in sorted(directory.glob("*.pid"))]
        assert started.returncode == 0, f"cluster start failed:\n{started.stdout}\n{started.stderr}"
        yield LocalCluster(
            directory=directory,
            address=(directory / "address").read_text().strip(),
            dashboard=(directory / "dashboard").read_text().strip(),
            process_groups=tuple(groups),
        )
    finally:
        # Idempotent: the test stops the cluster itself; this covers failures before that.
        _script("stop", directory, timeout=120)
        for pgid in groups:
            if _live(pgid):
                os.killpg(pgid, signal.SIGKILL)
        # Failures carry the job's log (and a failed start the node's log), so nothing here is needed.
        shutil.rmtree(directory, ignore_errors=True)


def _alive_nodes(address: str, expected: int) -> list:
    from ray.util.state import list_nodes

    deadline = time.monotonic() + 60
    while True:
        nodes = [n for n in list_nodes(address=address, detail=True) if n.state == "ALIVE"]
        if len(nodes) >= expected or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def _wait(client, submission_id: str) -> str:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (status := client.get_job_status(submission_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(submission_id)
            pytest.fail(f"job did not finish in {JOB_TIMEOUT_S} s; logs:\n{client.get_job_logs(submission_id)}")
        time.sleep(1)
    return status


def test_transcription_job_runs_model_actors_on_both_nodes(cluster, checkpoints, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_tasks

    nodes = _alive_nodes(cluster.address, expected=2)
    assert len(nodes) == 2, f"expected 2 alive nodes, got {[(n.node_id, n.state) for n in nodes]}"
    assert all(n.resources_total.get("model_slots") == 1 for n in nodes)
    head = next(n.node_id for n in nodes if n.is_head_node)
    worker = next(n.node_id for n in nodes if not n.is_head_node)

    # Only config differs from a single-machine run: two model actors, each needing the one
    # model slot a node has (as a GPU actor needs a node's GPU), so one lands on each node; and
    # a separate prepare stage, as on a cluster with CPUs to spare (this 2-node cluster on one
    # small machine would otherwise get `prepare: auto`'s fused path and no RecognizeUnits actor).
    config = tmp_path / "two-nodes.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(checkpoints["ctc-xlsr"]),
        "actors": 2,
        "cpus_per_actor": 0.5,
        "resources_per_actor": {"model_slots": 1},
        "prepare": "separate",
        "prepare_actors": 1,
        "cpus_per_prepare": 0.5,
        "batch_seconds": 3,
    }))
    output = tmp_path / "out"
    entrypoint = shlex.join([str(BIN / "speech"), "transcribe", str(SAMPLES / "manifest.jsonl"),
                             "-o", str(output), "--config", str(config)])
    client = JobSubmissionClient(cluster.dashboard)
    submission_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={"env_vars": {
            "HF_HUB_OFFLINE": "1",
            # Ray Data starts pool actors asynchronously and a 10-file corpus is done before a
            # second actor finishes loading; waiting for the pool makes placement observable.
            "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120",
        }},
    )
    status = _wait(client, submission_id)
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, f"job {status}; logs:\n{logs}"

    # Every input row is in the output, with a transcript.
    expected_ids = [json.loads(line)["id"] for line in (SAMPLES / "manifest.jsonl").read_text().splitlines() if line.strip()]
    table = read_output(str(output))
    assert sorted(table["id"].to_pylist()) == sorted(expected_ids)
    assert table["error"].null_count == table.num_rows, table.filter(table["error"].is_valid())["error"].to_pylist()
    assert json.loads((output / SUMMARY_FILE).read_text())["ok"] == len(expected_ids)

    # The model actors of this job: one on each node, each created successfully (its
    # __init__, which loads the model, finished) and holding its model slot.
    job_id = client.get_job_info(submission_id).job_id
    actors = [a for a in list_actors(address=cluster.address, filters=[("job_id", "=", job_id)], detail=True, limit=1000)
              if RECOGNIZER in a.class_name]
    assert sorted(a.node_id for a in actors) == sorted([head, worker]), [(a.class_name, a.node_id, a.state) for a in actors]
    assert all(a.required_resources.get("model_slots") == 1 for a in actors)
    created = {t.actor_id for t in list_tasks(address=cluster.address, filters=[("job_id", "=", job_id)], detail=True, limit=10000)
               if t.type == "ACTOR_CREATION_TASK" and t.state == "FINISHED"}
    assert {a.actor_id for a in actors} <= created

    # Stopping ends every process the two `ray start` nodes ran, job workers included.
    stopped = _script("stop", cluster.directory, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert {pgid: _live(pgid) for pgid in cluster.process_groups} == {pgid: [] for pgid in cluster.process_groups}
