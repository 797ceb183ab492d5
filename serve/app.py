"""The Serve application: a typed builder for ``serve run``/``serve deploy``/KubeRay, and ``speech serve``.

``configs/serve.yaml`` is a Ray Serve config file whose application has
``import_path: serve.app:build_app`` and :class:`ServeArgs` as ``args``. Serve's controller
validates ``args`` into :class:`ServeArgs` (the builder's annotation) and calls
:func:`build_app`, which finds each model's backend from its checkpoint and binds:

* ``Transcriber`` (:mod:`serve.asr`) when there are ASR models,
* ``Synthesizer`` (:mod:`serve.tts`) when there are TTS models,
* ``Gateway`` (:mod:`serve.http`), the HTTP ingress, with handles to both.

The config's ``deployments`` entries tune them by those names (replicas, autoscaling,
``ray_actor_options``, ``user_config`` for batching). ``speech serve`` is the same config with
command-line overrides, run through Ray's own ``serve run``.
"""

# No `from __future__ import annotations` here: Serve validates `args` into the builder's
# parameter annotation only when that annotation is a class at run time, not a string.
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray.serve import Application

from serve import asr, http, placement, tts
from speech.options import OptionsError, StreamOptions, read_config

log = logging.getLogger(__name__)

APP_NAME = "speech"
IMPORT_PATH = "serve.app:build_app"
_KEY_SEPARATORS = ("#",)  # used inside multiplexed model ids (serve.asr)


class ConfigError(ValueError):
    """The Serve config or the app's args are invalid; the message names the field."""


class ServeArgs(BaseModel):
    """``args`` of the application (see configs/serve.yaml for a commented example)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Hub ids or local checkpoint directories; a request's `model` names one of them by its id
    # or directory name, and the first of each kind is the default.
    asr_models: list[str] = Field(default_factory=list)
    tts_models: list[str] = Field(default_factory=list)
    # Job options every model runs with (the fields of AsrOptions / TtsOptions, the rows parts of
    # the jobs' options, and a model's batching and threads), so answers equal the batch jobs'
    # with the same options.
    asr_options: dict[str, Any] = Field(default_factory=dict)
    tts_options: dict[str, Any] = Field(default_factory=dict)
    # Live transcription (/v1/realtime): StreamOptions fields (CTC windows, Whisper partials,
    # turn and session limits).
    stream_options: dict[str, Any] = Field(default_factory=dict)
    max_models_per_replica: int = Field(2, ge=1)  # multiplexed models kept per replica (LRU)
    max_upload_mb: float = Field(25.0, gt=0)  # largest upload (MiB); larger ones get 413
    # Audio seconds a Transcriber replica holds decoded at once (uploads being decoded, waiting
    # for or in a batch); more requests wait. 14400 s at 16 kHz is ~0.9 GiB of float32 samples.
    max_decoded_seconds: float = Field(14400.0, gt=0)
    body_timeout_s: float = Field(60.0, gt=0)  # a request body must arrive whole within this; else 408
    api_key_env: str | None = None  # environment variable with the API key; None: no key needed

    @model_validator(mode="after")
    def _consistent(self) -> "ServeArgs":
        if not self.asr_models and not self.tts_models:
            raise ValueError("no models to serve: give asr_models and/or tts_models")
        names = [served_name(m) for m in [*self.asr_models, *self.tts_models]]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"model names must be unique (a directory is named by its last part): {repeated}")
        for name in names:
            if any(sep in name for sep in _KEY_SEPARATORS):
                raise ValueError(f"model name {name!r} must not contain {' or '.join(_KEY_SEPARATORS)}")
        # Bad option names or values fail here, at deploy time, naming the field.
        _check_options(lambda: asr.transcribe_options("<model>", self.asr_options, gpus=1.0), "asr_options")
        _check_options(lambda: tts.synthesize_options("<model>", self.tts_options), "tts_options")
        _check_options(lambda: StreamOptions.model_validate(self.stream_options), "stream_options")
        return self


def served_name(source: str) -> str:
    """What requests call a model: a local directory by its name, a hub id as it is."""
    path = Path(source)
    return path.name if path.is_dir() else source


def _check_options(build, field: str) -> None:
    try:
        build()
    except ValidationError as err:
        problems = [f"{field}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ValueError("; ".join(problems)) from None


def served_models(args: ServeArgs) -> tuple[http.ServedModel, ...]:
    """Each model with its backend, read from its checkpoint config (no weights).

    Raises ``ValueError`` naming the model that cannot be served, or an option it cannot honour.
    """
    from speech.asr import ModelError as AsrModelError
    from speech.asr import detect_backend as asr_backend
    from speech.tts import ModelError as TtsModelError
    from speech.tts import check_options as tts_check

    models = []
    for source in args.asr_models:
        # gpus=1.0: validate as if on a GPU; the replica builds the options for its own device.
        try:
            backend = asr_backend(source, asr.transcribe_options(source, args.asr_options, gpus=1.0)[0], "cuda")
        except AsrModelError as err:
            raise ValueError(f"asr_models: {err}") from err
        try:
            asr_backend(source, asr.transcribe_options(source, args.asr_options, task="translate", gpus=1.0)[0], "cuda")
            translates = True
        except AsrModelError:
            translates = False
        models.append(http.ServedModel(served_name(source), source, "transcription", backend, translates=translates))
    for source in args.tts_models:
        options, _ = tts.synthesize_options(source, args.tts_options)
        try:
            backend = tts_check(options)  # also: options the backend cannot honour (speed for chattts)
        except TtsModelError as err:
            raise ValueError(f"tts_models: {err}") from err
        models.append(http.ServedModel(served_name(source), source, "speech", backend))
    return tuple(models)


def check_api_key(api_key_env: str | None, env_vars: dict[str, str] | None = None) -> None:
    """ConfigError if ``api_key_env`` names a variable that is unset or empty, in this process's
    environment and in ``env_vars`` (the app's ``runtime_env.env_vars``): a server told to
    require a key must not start without one."""
    if api_key_env is None:
        return
    if not (os.environ.get(api_key_env) or (env_vars or {}).get(api_key_env)):
        raise ConfigError(f"api_key_env names {api_key_env!r}, which is not set (or empty); set it to the API key, "
                          "or set api_key_env to null to serve without a key")


def build_app(args: ServeArgs) -> Application:
    """The application: Gateway -> (Transcriber, Synthesizer), for ``serve run`` and ``serve.run``.

    Serve runs this with the app's ``runtime_env``, so its ``env_vars`` are in ``os.environ`` here.
    """
    check_api_key(args.api_key_env)
    models = served_models(args)
    transcriber = synthesizer = None
    if args.asr_models:
        sources = {m.name: m.source for m in models if m.kind == "transcription"}
        transcriber = asr.Transcriber.bind(sources, args.asr_options, args.max_models_per_replica,
                                           args.max_decoded_seconds, args.stream_options)
    if args.tts_models:
        sources = {m.name: m.source for m in models if m.kind == "speech"}
        synthesizer = tts.Synthesizer.bind(sources, args.tts_options, args.max_models_per_replica)
    settings = http.GatewaySettings(
        models=models, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), api_key_env=args.api_key_env,
        stream_options=StreamOptions.model_validate(args.stream_options),
        body_timeout_s=args.body_timeout_s,
    )
    return http.Gateway.bind(settings, transcriber, synthesizer)


def resolve_config(
    path: str | Path,
    *,
    host: str | None = None,
    port: int | None = None,
    asr_models: list[str] | None = None,
    tts_models: list[str] | None = None,
) -> dict[str, Any]:
    """The Serve config at ``path`` with command-line overrides, validated.

    Model flags replace both model lists (the given models are exactly what is served), and
    a kind left without models loses its deployment's entry (Serve refuses options for a
    deployment the app does not have). Raises ``ConfigError``.
    """
    try:
        config = read_config(path)
    except OptionsError as err:
        raise ConfigError(str(err)) from err
    app = _speech_app(config, str(path))
    args = dict(app.get("args") or {})
    if asr_models or tts_models:
        args.update(asr_models=list(asr_models or []), tts_models=list(tts_models or []))
    app["args"] = args
    parsed = app_args(app, source=str(path))
    absent = {asr.DEPLOYMENT} if not parsed.asr_models else set()
    absent |= {tts.DEPLOYMENT} if not parsed.tts_models else set()
    app["deployments"] = [d for d in app.get("deployments") or [] if d.get("name") not in absent]
    http_options = config.setdefault("http_options", {})
    if host is not None:
        http_options["host"] = host
    if port is not None:
        http_options["port"] = port
    _check_serve_schema(config, str(path))
    return config


def check_models(config: dict[str, Any]) -> tuple[http.ServedModel, ...]:
    """The served models of a resolved config, checked as Serve's build step will (models,
    and the API key's variable: set here or in the app's ``runtime_env.env_vars``); or ``ConfigError``."""
    app = _speech_app(config, "config")
    args = app_args(app)
    check_api_key(args.api_key_env, (app.get("runtime_env") or {}).get("env_vars"))
    try:
        return served_models(args)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _speech_app(config: dict[str, Any], source: str) -> dict[str, Any]:
    apps = [a for a in config.get("applications") or [] if isinstance(a, dict) and a.get("import_path") == IMPORT_PATH]
    if len(apps) != 1:
        raise ConfigError(f"{source}: expected one application with import_path {IMPORT_PATH!r}, found {len(apps)}")
    return apps[0]


def app_args(app: dict[str, Any], source: str = "config") -> ServeArgs:
    """The ``args`` of an application entry as :class:`ServeArgs`, or ``ConfigError``."""
    try:
        return ServeArgs.model_validate(app.get("args") or {})
    except ValidationError as err:
        problems = [f"args.{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"invalid application args in {source}: " + "; ".join(problems)) from None


def _check_serve_schema(config: dict[str, Any], source: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{source} is not a valid Ray Serve config: " + "; ".join(problems)) from None


def run(config: dict[str, Any], *, placement_timeout_s: float = 90.0) -> None:
    """Deploy ``config`` with Ray's own ``serve run`` and block until Ctrl-C (then shut Serve down).

    Connects to ``RAY_ADDRESS`` when set, else starts a local Ray, as ``serve run`` does; first
    fits the deployments to the cluster (:mod:`serve.placement`). Raises ``PlacementError`` when
    a deployment can never be placed, or has not been placed ``placement_timeout_s`` seconds
    after Serve reports it waiting. ``placement_timeout_s`` 0 takes the config as it is and
    waits forever (an autoscaling cluster adds nodes for pending replicas).
    """
    import signal
    import threading

    import ray
    from ray.serve.scripts import cli

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, namespace="serve")
    if placement_timeout_s > 0:  # else the cluster may grow (an autoscaler): take the config as it is
        app = _speech_app(config, "config")
        note = placement.fit_cpus(app, float(ray.cluster_resources().get("CPU", 0.0)))
        if note:
            log.warning("%s", note)
        reason = placement.never_placeable(app, ray.cluster_resources())
        if reason:
            raise placement.PlacementError(reason)
    stuck: list[str] = []

    def give_up(message: str) -> None:
        stuck.append(message)
        # As Ctrl-C: `serve run` shuts Serve down on KeyboardInterrupt (a signal also wakes its sleep).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    watch = placement.PlacementWatch(APP_NAME, placement_timeout_s, give_up).start()
    try:
        with tempfile.TemporaryDirectory(prefix="speech-serve-") as tmp:
            path = Path(tmp) / "serve.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            cli.main(args=["run", str(path)], prog_name="serve", standalone_mode=False)
    except (KeyboardInterrupt, SystemExit):
        if not stuck:
            raise
    finally:
        watch.stop()
    if stuck:
        raise placement.PlacementError(stuck[0])
