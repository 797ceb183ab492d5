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
slowing the system it measures. Memory of a streaming job moves slowly; the PSS peak may
still miss a spike shorter than ``pss_every * interval_s``.
"""

from __future__ import annotations

import threading

import psutil

_KB = 1024


class TreeMemory:
    """Sample the memory of ``pid`` and its descendants every ``interval_s`` seconds until stopped.

    Use as a context manager around the process's lifetime; read :attr:`peak_rss_mb` and
    :attr:`peak_pss_mb` (MiB) afterwards. ``samples`` counts the samples taken.
    """

    def __init__(self, pid: int, interval_s: float = 0.5, pss_every: int = 6):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.pss_every = pss_every
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        self.peak_processes = 0
        self.samples = 0
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
        rss = pss = 0
        for process in processes:
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue  # exited between listing and reading: its memory is gone
            if with_pss:
                pss += _pss(process.pid)
        self.samples += 1
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
        if with_pss:
            self.peak_pss_mb = max(self.peak_pss_mb, pss / 2**20)
        self.peak_processes = max(self.peak_processes, len(processes))


def _pss(pid: int) -> int:
    """Proportional set size of a live process in bytes; 0 if it has just exited."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * _KB
    except (FileNotFoundError, ProcessLookupError):
        pass  # exited between listing and reading: its memory is gone
    return 0
