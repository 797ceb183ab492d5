"""Fault injection for reliability tests: the documented test hook of the model actors.

Set ``faults`` in the transcription options (YAML or ``TranscribeOptions``) to make
model actors fail on purpose; see docs/reliability.md. Never set it in production.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from speech.options import Faults


class InjectedFault(RuntimeError):
    """Raised in place of a model failure for a poisoned id."""


def maybe_crash(faults: Faults | None, ids: Sequence[str]) -> None:
    """Kill this process the first time a model call holds ``faults.crash_on_id``.

    "First" is tracked by ``faults.crash_marker``, a file created just before dying, so
    that the actor Ray restarts gets through the retried call.
    """
    if faults is None or faults.crash_on_id not in ids or not faults.crash_marker:
        return
    marker = Path(faults.crash_marker)
    if not marker.exists():
        marker.touch()
        os._exit(17)


def maybe_poison(faults: Faults | None, ids: Sequence[str]) -> None:
    """Raise :class:`InjectedFault` if a model call holds one of ``faults.poison_ids``."""
    poisoned = sorted(set(faults.poison_ids) & set(ids)) if faults else []
    if poisoned:
        raise InjectedFault(f"injected model failure for {', '.join(poisoned)}")
