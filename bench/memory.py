"""Peak memory of a whole process tree (a system's process plus everything it starts).

A local Ray job is a driver plus Ray's own daemons (GCS, raylet, agents) plus worker
processes, all descendants of the driver, so a single process's ``ru_maxrss`` would miss
most of it. :class:`TreeMemory` samples the tree in a background thread and keeps the peak
of two sums over the live processes:

* **RSS**: resident pages of each process, summed. Shared pages (the torch and CUDA
  libraries every worker maps, Ray's shared-memory object store) count once per process,
  so this overstates a many-process system.
* **PSS**: each shared page divided among the processes that map it, summed: the memory the
  tree really holds. This is the fair figure between one-process and many-process systems.

RSS comes from ``/proc/<pid>/statm`` (cheap) every sample; PSS from ``/proc/<pid>/smaps_rollup``
(Linux), whose read makes the kernel walk the process's page tables: about 0.1 s of CPU for a
Ray job's tree, so it is read only every ``pss_every`` samples to keep the sampler from
slowing the system it measures. In between, each process's PSS is carried forward by its
change in RSS since its last PSS read: what a process allocates or frees (a model's
activations, a batch) is private memory, which PSS counts in full, so the tree's PSS is
followed at the RSS rate. Reading PSS alone every 3 s missed most of a model actor's
short peaks (one forward's activations, under a second): the more batches a run had, the
likelier one was caught, which made a 10x corpus look like growth it did not have.

It also keeps each process's own peaks, labelled by role (:func:`role`: driver, raylet, GCS,
model actor, prepare actor, Ray's agents, idle workers ...), so that growth of the tree can be
attributed to a process (:meth:`TreeMemory.by_role`). A process's peak RSS is the kernel's own
high-water mark (``VmHWM`` in ``/proc/<pid>/status``), exact whatever the sampling rate.
Each process's CPU seconds (user + system) are kept too, as last read: which process took the
cores from the model, in CPU time rather than a ``top`` snapshot (a process that exits loses at
most its last ``interval_s`` of CPU).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import psutil

_KB = 1024

#: Ray Data actor classes of this project's jobs -> the role shown in reports.
_ACTOR_ROLES = {
    "FusedUnits": "model actor (fused prepare)",
    "RecognizeUnits": "model actor",
    "EmbedUnits": "model actor",
    "PrepareUnits": "prepare actor",
}
#: Ray's own processes: their executable, script or ``ray::`` title -> role.
_RAY_ROLES = {
    "raylet": "raylet",
    "gcs_server": "GCS",
    "log_monitor.py": "log monitor",
    "monitor.py": "autoscaler monitor",
    "dashboard.py": "dashboard head",
    "default_worker.py": "worker (starting)",
    "ray::DashboardAgent": "dashboard agent",
    "agent.py": "dashboard agent",  # before it sets its title
    "ray::RuntimeEnvAgent": "runtime env agent",
    "main.py": "runtime env agent",  # ray/_private/runtime_env/agent/main.py, before its title
    "ray::IDLE": "idle worker",
}


def role(command: list[str], is_root: bool = False) -> str:
    """The role of a process from its command line (Ray workers set theirs to ``ray::TITLE``)."""
    if is_root:
        return "driver"
    line = " ".join(command)
    actor = re.search(r"MapWorker\(.*?(\w+)\)+", line)
    if actor:
        return _ACTOR_ROLES.get(actor.group(1), f"actor {actor.group(1)}")
    # The title (a worker), the executable (raylet, GCS), else the script a Python runs.
    names = [line.split(" ")[0]] + [part.rsplit("/", 1)[-1] for part in command[:3]]
    for name in names:
        if name in _RAY_ROLES:
            return _RAY_ROLES[name]
    if line.startswith("ray::"):  # an actor's title gains ".method" while a method runs
        return f"ray worker {line.split()[0][5:].split('.')[0]}"
    scripts = [part.rsplit("/", 1)[-1] for part in command if part.endswith(".py")]
    return scripts[0] if scripts else " ".join(names[1:3]) or "other"  # e.g. "python -c" (a dashboard helper)


#: Roles a process leaves: a worker is re-read until it becomes something (its first task or
#: actor), then keeps that role when it idles again.
_TRANSIENT = ("idle worker", "worker (starting)")


def _final(name: str) -> bool:
    """Whether a role is settled: not an idle or starting worker, and not a fallback (a process
    seen between fork and exec still shows its parent's command line)."""
    known = {*_RAY_ROLES.values(), *_ACTOR_ROLES.values(), "driver"}
    return name not in _TRANSIENT and (name in known or name.startswith(("ray worker ", "actor ")))


@dataclass
class ProcessPeak:
    """One process's peaks (MiB), its CPU seconds so far (``cpu_s``: user + system, at its last
    sample) and its role (the last one seen: a Ray worker starts idle).

    ``pss_mb`` and ``rss_at_pss_mb``: its last PSS read and its RSS then (None before the first),
    from which its PSS is carried forward between reads.
    """

    role: str
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    pss_mb: float | None = None
    rss_at_pss_mb: float = 0.0
    cpu_s: float = 0.0

    def pss_now(self, rss_mb: float) -> float:
        """The PSS (MiB) at RSS ``rss_mb``: the last read plus the private pages gained since
        (RSS, until the first read: an upper bound)."""
        return rss_mb if self.pss_mb is None else max(0.0, self.pss_mb + rss_mb - self.rss_at_pss_mb)


def empty_role() -> dict:
    """A role with no process: the entry :meth:`TreeMemory.by_role` sums each process into."""
    return {"processes": 0, "peak_rss_mb": 0.0, "peak_pss_mb": 0.0, "cpu_s": 0.0}


class TreeMemory:
    """Sample the memory of ``pid`` and its descendants every ``interval_s`` seconds until stopped.

    Use as a context manager around the process's lifetime; read :attr:`peak_rss_mb` and
    :attr:`peak_pss_mb` (MiB) afterwards. ``samples`` counts the samples taken.
    """

    def __init__(self, pid: int, interval_s: float = 0.25, pss_every: int = 12):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.pss_every = pss_every
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        self.peak_processes = 0
        self.samples = 0
        self.processes: dict[int, ProcessPeak] = {}  # pid -> its own peaks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        """Take one sample now (the sampling thread calls this; also usable directly)."""
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return  # the root has exited: nothing left to measure
        with_pss = self.samples % self.pss_every == 0
        rss = pss = 0.0
        for process in processes:
            try:
                own_rss = process.memory_info().rss / 2**20
                cpu = process.cpu_times()
                peak = self._peak_of(process, refresh=with_pss)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # exited between listing and reading: its memory is gone
            if with_pss:
                read = _pss(process.pid)
                if read is not None:
                    peak.pss_mb, peak.rss_at_pss_mb = read / 2**20, own_rss
            own_pss = peak.pss_now(own_rss)
            rss += own_rss
            pss += own_pss
            peak.peak_rss_mb = max(peak.peak_rss_mb, own_rss, _high_water_mark(process.pid) / 2**20)
            peak.peak_pss_mb = max(peak.peak_pss_mb, own_pss)
            peak.cpu_s = cpu.user + cpu.system
        self.samples += 1
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        self.peak_pss_mb = max(self.peak_pss_mb, pss)
        self.peak_processes = max(self.peak_processes, len(processes))

    def _peak_of(self, process: psutil.Process, refresh: bool) -> ProcessPeak:
        """The record of ``process``; its role is read when new, and again when ``refresh``
        while it is transient (Ray retitles a worker after the task or actor it runs)."""
        peak = self.processes.get(process.pid)
        if peak is None or (refresh and not _final(peak.role)):
            name = role(process.cmdline() or [process.name()], is_root=process.pid == self.root.pid)
            if peak is None:
                peak = self.processes[process.pid] = ProcessPeak(name)
            peak.role = name
        return peak

    def by_role(self) -> dict[str, dict]:
        """Per role, largest first by PSS: ``processes`` (how many had it), the sums of their
        own peaks, ``peak_rss_mb`` and ``peak_pss_mb`` (each process's peak, whenever it was), and
        of their CPU seconds, ``cpu_s``."""
        roles: dict[str, dict] = {}
        for peak in self.processes.values():
            entry = roles.setdefault(peak.role, empty_role())
            entry["processes"] += 1
            entry["peak_rss_mb"] += peak.peak_rss_mb
            entry["peak_pss_mb"] += peak.peak_pss_mb
            entry["cpu_s"] += peak.cpu_s
        ordered = sorted(roles.items(), key=lambda kv: -kv[1]["peak_pss_mb"])
        return {name: {k: round(v, 1) for k, v in entry.items()} for name, entry in ordered}


def _pss(pid: int) -> int | None:
    """Proportional set size of a live process in bytes; None if it has just exited."""
    return _proc_field(pid, "smaps_rollup", "Pss:")


def _high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of a live process in bytes (``VmHWM``); 0 if it has just exited."""
    return _proc_field(pid, "status", "VmHWM:") or 0


def _proc_field(pid: int, name: str, key: str) -> int | None:
    """The ``key: N kB`` line of ``/proc/<pid>/<name>`` in bytes; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * _KB
    except (FileNotFoundError, ProcessLookupError):
        pass  # exited between listing and reading: its memory is gone
    return None
