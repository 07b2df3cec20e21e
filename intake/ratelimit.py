"""Rate-limit storage for one process: ``memory://`` without a thread per request.

``limits``' ``MemoryStorage`` expires counters lazily on read, and also sweeps old keys out in
a ``threading.Timer`` it starts again whenever the last one (10 ms) has ended: under steady
traffic, a new thread on almost every form sent (measured at ~0.3 ms of CPU each, about a
tenth of a submission's CPU once the pages were cached; bench/README.md). This subclass
sweeps inline instead, at most once a second, on the hit that finds the sweep due. Counting
and expiry are the parent's, unchanged. ``INTAKE_RATELIMIT_STORAGE_URI=memory://`` (the
default) selects it; any other storage (Redis in production) is used as given.
"""

from __future__ import annotations

import time
from typing import Any

from limits.storage import MemoryStorage

SCHEME = "intake-memory"
SWEEP_SECONDS = 1.0


class InlineSweepMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = [SCHEME]  # noqa: RUF012 - limits' registry reads this class attribute

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the private hook
        """Called by the parent on every hit, where it would start a timer thread."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def storage_uri(configured: str) -> str:
    """The URI Flask-Limiter is given for the configured ``INTAKE_RATELIMIT_STORAGE_URI``."""
    if configured == "memory://" or configured.startswith("memory://?"):
        return SCHEME + configured.removeprefix("memory")
    return configured
