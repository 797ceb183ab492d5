"""The cluster manifests are valid: KubeRay CRD schemas, Ray's own schemas, and the project's configs.

The KubeRay schemas are subsets of the real CRDs (tests/data/kuberay/README.md says which version
and what was kept). They are applied the way ``kubectl apply`` (strict field validation) applies
the real ones: an unknown field is an error, except inside objects the subset keeps open.
"""

from __future__ import annotations

import copy
import importlib.util
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
CRDS = Path(__file__).parent / "data" / "kuberay"
SERVE_CONFIG = REPO / "configs" / "serve.yaml"
RAYJOBS = ["rayjob-transcribe.yaml", "rayjob-synthesize.yaml", "rayjob-embed.yaml", "rayjob-finetune.yaml"]
MANIFESTS = ["raycluster.yaml", *RAYJOBS, "rayservice.yaml"]
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}
# `speech` subcommand -> the options class its --config file must validate as.
OPTIONS_OF = {"transcribe": "TranscribeOptions", "synthesize": "SynthesizeOptions", "embed": "EmbedOptions",
              "finetune": "FinetuneOptions"}


def _render_module():
    spec = importlib.util.spec_from_file_location("cluster_render", CLUSTER / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _render_module()


def _load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def _strict(schema):
    """``schema`` with unknown properties rejected wherever the CRD does not keep fields open."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        open_ = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
        if "properties" in schema and not open_:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(manifest: dict) -> list[str]:
    validator = _validator(manifest["kind"])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(manifest)]


# --- KubeRay schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_its_kuberay_crd(name):
    manifest = _load(name)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] in CRD_FILES
    assert _errors(manifest) == []


@pytest.mark.parametrize(
    "mistake, expected",
    [
        (lambda m: m["spec"].update(workerGroupSpec=m["spec"].pop("workerGroupSpecs")), "'workerGroupSpec' was unexpected"),
        (lambda m: m["spec"]["workerGroupSpecs"][0].pop("template"), "'template' is a required property"),
        (lambda m: m["spec"]["workerGroupSpecs"][0].update(maxReplicas="8"), "'8' is not of type 'integer'"),
        (lambda m: m["spec"]["autoscalerOptions"].update(upscalingMode="Fast"), "'Fast' is not one of"),
        (lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(cpu="four"),
         "does not match"),
    ],
    ids=["unknown-field", "missing-template", "replicas-type", "upscaling-enum", "bad-quantity"],
)
def test_schema_rejects_broken_clusters(mistake, expected):
    manifest = _load("raycluster.yaml")
    mistake(manifest)
    errors = _errors(manifest)
    assert any(expected in error for error in errors), errors


def test_rayjob_schema_rejects_unknown_spec_fields():
    manifest = _load("rayjob-transcribe.yaml")
    manifest["spec"]["shutdownAfterJobFinish"] = True  # missing "es"
    assert any("'shutdownAfterJobFinish' was unexpected" in e for e in _errors(manifest))


# --- what the cluster must provide -------------------------------------------------------


def test_raycluster_has_a_cpu_head_and_an_autoscaling_gpu_worker_group():
    spec = _load("raycluster.yaml")["spec"]
    assert spec["rayVersion"] == "2.60.0"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head runs no model actors
    gpu = [g for g in spec["workerGroupSpecs"] if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert len(gpu) == 1
    group = gpu[0]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] > group["minReplicas"]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]


def test_every_ray_container_caches_models_per_node_and_gets_shared_memory():
    spec = _load("raycluster.yaml")["spec"]
    for pod in [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]:
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "hostPath" in volumes["hf-cache"]  # per Kubernetes node, shared by its pods
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert env["HF_HOME"] == mounts["hf-cache"]
            assert mounts["dshm"] == "/dev/shm"


@pytest.mark.parametrize("name", [*RAYJOBS, "rayservice.yaml"])
def test_generated_manifests_embed_the_raycluster_spec(name):
    manifest = _load(name)
    key = "rayClusterConfig" if manifest["kind"] == "RayService" else "rayClusterSpec"
    assert manifest["spec"][key] == _load("raycluster.yaml")["spec"]


def test_rendered_manifests_are_up_to_date():
    assert render.main(["--check"]) == 0, "run: python cluster/render.py"


# --- RayJobs: entrypoint, runtime env, configs -------------------------------------------


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_runs_once_and_cleans_up(name):
    spec = _load(name)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "K8sJobMode"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and runtime_env
    from ray.runtime_env import RuntimeEnv

    assert set(runtime_env) <= RuntimeEnv.known_fields, set(runtime_env) - RuntimeEnv.known_fields
    RuntimeEnv(**runtime_env)  # Ray's own checks of the values (env_vars must be str -> str, ...)


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_entrypoint_is_the_cli_with_a_valid_config(name):
    import cli
    from speech import options

    argv = shlex.split(_load(name)["spec"]["entrypoint"])
    assert argv[0] == "speech"
    command = argv[1]
    config_in_image = argv[argv.index("--config") + 1]
    assert config_in_image.startswith(render.IMAGE_APP_DIR + "/configs/")
    config = REPO / Path(config_in_image).relative_to(render.IMAGE_APP_DIR)
    assert config.is_file(), f"{name} references {config_in_image}, but {config.relative_to(REPO)} does not exist"

    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices
    assert command in commands, f"{name} runs `speech {command}`, which the CLI does not have"
    # Parsed by the real CLI, validated by the real loader: flags that map to option fields
    # override the config, as in the command handlers.
    args = parser.parse_args([str(config) if a == config_in_image else a for a in argv[1:]])
    cls = getattr(options, OPTIONS_OF[command])
    from cli.flags import option_values

    overrides = option_values(args, cls)
    loaded = options.load_options(cls, args.config, overrides)
    assert loaded.output == argv[argv.index("-o") + 1]


def test_dockerfile_puts_the_repo_where_the_entrypoints_look():
    text = (CLUSTER / "Dockerfile").read_text()
    assert "FROM rayproject/ray:2.60.0-py311-gpu" in text
    assert f"WORKDIR {render.IMAGE_APP_DIR}" in text
    assert "COPY --chown=ray:users configs ./configs" in text
    # Every package pyproject installs (the `speech` command is cli:main) is copied in to be installed.
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (p.rstrip("*") for p in packages):
        assert f"COPY --chown=ray:users {package} ./{package}" in text, package


# --- RayService --------------------------------------------------------------------------


def test_rayservice_serve_config_is_configs_serve_yaml():
    embedded = _load("rayservice.yaml")["spec"]["serveConfigV2"]
    assert embedded == SERVE_CONFIG.read_text()
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(embedded))


# --- cluster launcher and local cluster --------------------------------------------------


def test_launcher_config_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "launcher" / "aws-gpu.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] < gpu["max_workers"]
    assert config["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"

    config["available_node_types"]["gpu_worker"]["max_workerz"] = 1
    with pytest.raises(jsonschema.ValidationError, match="max_workerz"):
        validate_config(prepare_config(config))


def test_local_cluster_script_parses_and_refuses_unknown_commands():
    script = CLUSTER / "local-cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    wrong = subprocess.run(["bash", str(script), "launch"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "usage:" in wrong.stderr
