"""The default rate-limit storage counts like limits' memory storage, without a thread per hit."""

from __future__ import annotations

import threading

import pytest
from flask import Flask
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from intake import ratelimit
from intake.extensions import limiter
from intake.ratelimit import InlineSweepMemoryStorage, storage_uri


def test_the_default_memory_uri_selects_the_inline_sweeping_storage(app: Flask) -> None:
    with app.app_context():
        assert isinstance(limiter.storage, InlineSweepMemoryStorage)


@pytest.mark.parametrize(
    ("configured", "given"),
    [
        ("memory://", "intake-memory://"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("memcached://127.0.0.1:11211", "memcached://127.0.0.1:11211"),
    ],
)
def test_only_memory_is_replaced(configured: str, given: str) -> None:
    assert storage_uri(configured) == given


def test_hits_start_no_thread_and_limits_still_bite(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_from_string("intake-memory://")
    assert isinstance(storage, InlineSweepMemoryStorage)
    storage.timer.join()  # the one timer the parent starts at creation has ended

    def no_thread(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a hit started a timer thread")

    monkeypatch.setattr(threading, "Timer", no_thread)
    limiter_ = FixedWindowRateLimiter(storage)
    limit = parse("10 per minute")
    allowed = [limiter_.hit(limit, "198.51.100.7") for _ in range(25)]
    assert allowed == [True] * 10 + [False] * 15
    assert limiter_.hit(limit, "203.0.113.9")  # another address still gets through


def test_expired_counters_are_swept_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = InlineSweepMemoryStorage("intake-memory://")
    now = [1_000_000.0]
    monkeypatch.setattr("limits.storage.memory.time.time", lambda: now[0])
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    for address in ("a", "b", "c"):
        storage.incr(address, expiry=60)
    assert set(storage.storage) == {"a", "b", "c"}
    now[0] += 61  # every counter has expired; the next hit on any key sweeps them all
    storage.incr("d", expiry=60)
    assert set(storage.storage) == {"d"}
    assert storage.get("a") == 0
