"""``speech serve`` fits the machine it runs on, and says so when a deployment cannot be placed.

The rules are unit-tested on configs/serve.yaml itself; two runs of the real command on the
session's 2-CPU Ray check the two outcomes a user sees: the app with one ASR and one TTS
deployment at the config's own resources becomes healthy and answers both, and an app whose
replica cannot be scheduled ends with exit 2 and one line instead of hanging.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import httpx
import pytest
import yaml
from conftest import REPO, SAMPLES, free_port, speech_serve

from serve.placement import fit_cpus, never_placeable

CONFIG = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())


def _app() -> dict:
    (app,) = copy.deepcopy(CONFIG)["applications"]
    return app


def _cpus(app: dict) -> dict[str, float]:
    return {d["name"]: d["ray_actor_options"]["num_cpus"] for d in app["deployments"]}


def test_the_config_fits_two_cpus_as_it_is():
    app = _app()
    assert fit_cpus(app, 2.0) is None
    assert _cpus(app) == _cpus(_app())


def test_on_one_cpu_the_model_deployments_share_it():
    app = _app()
    note = fit_cpus(app, 1.0)
    assert note is not None and "the cluster has 1" in note
    cpus = _cpus(app)
    assert cpus["Gateway"] == 0 and cpus["Transcriber"] == cpus["Synthesizer"] == 0.5
    assert sum(cpus.values()) <= 1.0


def test_a_gpu_replica_on_a_cpu_cluster_is_refused_at_once():
    app = _app()
    app["deployments"][1]["ray_actor_options"]["num_gpus"] = 1
    reason = never_placeable(app, {"CPU": 2.0})
    assert reason is not None and "deployment Transcriber" in reason and "GPU 1" in reason
    assert never_placeable(_app(), {"CPU": 2.0}) is None


def _config(tmp_path):
    """configs/serve.yaml as it is (resources included)."""
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def models(checkpoints):
    from conftest import FIXTURES_DIR

    from speech.testing.tts_checkpoints import build_tts_fixtures

    return checkpoints["ctc-xlsr"], build_tts_fixtures(FIXTURES_DIR)["tts-vits"]


def test_one_asr_and_one_tts_deployment_at_the_configs_resources_serve_both(ray_local, models, tmp_path):
    asr_model, tts_model = models
    flags = ["--asr-model", str(asr_model), "--tts-model", str(tts_model)]
    with speech_serve(ray_local, _config(tmp_path), flags, tmp_path) as base_url, httpx.Client(base_url=base_url, timeout=120) as http:
        sample = sorted(SAMPLES.glob("*/*.wav"))[0]
        transcribed = http.post("/v1/audio/transcriptions", files={"file": (sample.name, sample.read_bytes())})
        assert transcribed.status_code == 200, transcribed.text
        spoken = http.post("/v1/audio/speech", json={"input": "Hello there.", "voice": "default", "response_format": "wav"})
        assert spoken.status_code == 200, spoken.text
        assert spoken.content[:4] == b"RIFF"


def test_a_replica_that_cannot_be_scheduled_ends_the_command_with_one_line(ray_local, models, tmp_path):
    """Other work holds 1.5 of the cluster's 2 CPUs: the Synthesizer's 1 CPU passes the driver's
    checks (the cluster has 2 in total) but is never free. Serve marks the deployment waiting
    after its slow-start warning (30 s); the command then ends with exit 2 and one line."""
    from ray import serve
    from ray.util.placement_group import placement_group, remove_placement_group

    _, tts_model = models
    held = placement_group([{"CPU": 1.5}])
    ray_local.get(held.ready(), timeout=60)
    command = [sys.executable, "-m", "cli", "serve", "--config", str(_config(tmp_path)), "--port", str(free_port()),
               "--placement-timeout-s", "1", "--tts-model", str(tts_model)]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    try:
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        serve.shutdown()
        remove_placement_group(held)
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "deployment Synthesizer could not be placed" in last, last
    assert "each replica asks for" in last and "CPU" in last, last
