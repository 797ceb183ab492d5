"""Fitting the Serve app to the cluster it runs on, and saying so when it cannot be placed.

Ray schedules a replica only where its ``ray_actor_options`` fit, and a replica that never fits
waits forever: the app never becomes healthy and nothing tells the user why. Three rules keep
``speech serve`` from hanging silently:

* :func:`fit_cpus` (before deploying): when the deployments' minimum replicas ask for more CPUs
  than the whole cluster has, the model deployments' ``num_cpus`` are scaled down to fit (the
  Gateway keeps its share, which configs/serve.yaml sets to 0: it only parses HTTP and awaits
  the models). A CPU request only reserves a scheduling slot; torch's threads are set
  separately, so a smaller share changes where replicas go, not how fast one runs alone.
* :func:`never_placeable` (before deploying): a replica asking for more of a resource than the
  cluster has in total (a GPU on a CPU-only cluster, a custom resource no node declares) is an
  error at once.
* :class:`PlacementWatch` (after deploying): a replica Serve reports as not scheduled for longer
  than ``timeout_s`` (resources taken by other work) ends the command with that deployment's
  request and what the cluster has.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Ray's own resource names in ``ray_actor_options`` (the rest are custom ``resources``).
_CPU, _GPU = "num_cpus", "num_gpus"
#: Serve's status message for replicas it could not place (ray.serve._private.deployment_state).
_NOT_SCHEDULED = re.compile(r"to be scheduled")


class PlacementError(RuntimeError):
    """A deployment cannot be placed on the cluster; the message names it and the resources."""


@dataclass(frozen=True)
class Demand:
    """What one deployment asks of the cluster at its minimum replica count."""

    name: str
    replicas: int
    per_replica: dict[str, float]  # Ray resource name ("CPU", "GPU", custom) -> amount

    def total(self, resource: str) -> float:
        return self.replicas * self.per_replica.get(resource, 0.0)


def demands(app: Mapping[str, Any]) -> list[Demand]:
    """The requests of an application entry's ``deployments``, with Serve's defaults for what an
    entry leaves out (1 replica, 1 CPU, no GPU)."""
    out = []
    for deployment in app.get("deployments") or []:
        options = deployment.get("ray_actor_options") or {}
        scaling = deployment.get("autoscaling_config") or {}
        replicas = int(scaling.get("min_replicas", deployment.get("num_replicas", 1)) or 0)
        per_replica = {"CPU": float(options.get(_CPU, 1.0)), "GPU": float(options.get(_GPU, 0.0))}
        per_replica.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
        out.append(Demand(deployment.get("name", "?"), replicas, per_replica))
    return out


def fit_cpus(app: dict[str, Any], cluster_cpus: float, *, fixed: tuple[str, ...] = ("Gateway",)) -> str | None:
    """Scale the ``num_cpus`` of the deployments not in ``fixed`` so the minimum replicas of
    every deployment fit in ``cluster_cpus``; edits ``app`` in place.

    Returns a line saying what changed, or None when the app fits as configured.
    """
    asked = sum(d.total("CPU") for d in demands(app))
    if asked <= cluster_cpus + 1e-9:
        return None
    kept = sum(d.total("CPU") for d in demands(app) if d.name in fixed)
    scalable = asked - kept
    room = cluster_cpus - kept
    if scalable <= 0 or room <= 0:
        return None  # nothing to scale; never_placeable or the watch will say why
    factor = room / scalable
    changed = []
    for deployment in app.get("deployments") or []:
        options = deployment.setdefault("ray_actor_options", {})
        if deployment.get("name") in fixed or float(options.get(_CPU, 1.0)) == 0:
            continue
        # Rounded down to 1/100 CPU so the sum never exceeds the cluster by a rounding residue.
        options[_CPU] = int(float(options.get(_CPU, 1.0)) * factor * 100) / 100
        changed.append(f"{deployment.get('name')} {options[_CPU]:g}")
    return (
        f"the deployments ask for {asked:g} CPUs at their minimum replicas and the cluster has {cluster_cpus:g}: "
        f"running with num_cpus {', '.join(changed)} (set ray_actor_options.num_cpus in the config to choose)"
    )


def never_placeable(app: Mapping[str, Any], cluster_total: Mapping[str, float]) -> str | None:
    """Why a replica of some deployment can never be placed (it asks for more of a resource than
    the whole cluster has), or None."""
    for demand in demands(app):
        for resource, amount in demand.per_replica.items():
            if amount > cluster_total.get(resource, 0.0) + 1e-9:
                return (
                    f"deployment {demand.name} cannot be placed: each replica asks for {resource} {amount:g}, "
                    f"and the cluster has {cluster_total.get(resource, 0.0):g} in total "
                    f"(ray_actor_options in the config)"
                )
    return None


class PlacementWatch:
    """Watches an application after it is deployed; calls ``on_stuck(message)`` once if one of
    its deployments has had replicas waiting to be scheduled for ``timeout_s`` seconds.

    Serve marks such a deployment's status message after its slow-start warning (30 s by
    default); the message holds the resources each replica asks for and what is available.
    ``timeout_s`` 0 disables the watch (an autoscaling cluster may add the nodes later).
    """

    def __init__(self, app_name: str, timeout_s: float, on_stuck: Callable[[str], None], *, poll_s: float = 1.0):
        self.app_name, self.timeout_s, self.on_stuck, self.poll_s = app_name, timeout_s, on_stuck, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speech-placement-watch", daemon=True)

    def start(self) -> PlacementWatch:
        if self.timeout_s > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from ray import serve

        started = time.monotonic()
        while not self._stop.wait(self.poll_s):
            try:
                app = serve.status().applications.get(self.app_name)
            except Exception as err:  # noqa: BLE001 - the controller may be starting; logged, retried
                log.debug("serve.status() failed: %s", err)
                continue
            if app is None:
                continue
            if app.status == "RUNNING":
                return
            stuck = [(name, d.message) for name, d in app.deployments.items() if _NOT_SCHEDULED.search(d.message or "")]
            if stuck and time.monotonic() - started >= self.timeout_s:
                name, message = stuck[0]
                self.on_stuck(
                    f"deployment {name} could not be placed within {self.timeout_s:g} s: {_resources(message)} "
                    "(lower ray_actor_options in the config, free the cluster, or add nodes; "
                    "--placement-timeout-s 0 waits forever)"
                )
                return


def _resources(message: str) -> str:
    """The resource part of Serve's not-scheduled message, else the whole message."""
    found = re.search(r"Resources required for each replica: (.*?), total resources available: (.*?)\. ", message)
    if not found:
        return message
    return f"each replica asks for {found.group(1)}, the cluster has {found.group(2)} available"
