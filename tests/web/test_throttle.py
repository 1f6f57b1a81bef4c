"""The failed-authentication throttle, on an injected clock."""

from __future__ import annotations

import threading

import pytest

from provisioner.web.throttle import Throttle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_the_limit_th_failure_locks_out_until_the_oldest_leaves_the_window(clock):
    t = Throttle(limit=3, window=60, clock=clock)
    assert [t.failed("10.0.0.1") for _ in range(2)] == [False, False]
    assert t.retry_after("10.0.0.1") == 0.0
    clock.now += 10
    assert t.failed("10.0.0.1") is True  # the third, 10 s after the first two
    assert t.retry_after("10.0.0.1") == pytest.approx(50.0)
    assert t.retry_after("10.0.0.2") == 0.0  # another address is not affected
    clock.now += 50
    assert t.retry_after("10.0.0.1") == 0.0  # the first two left the window
    assert t.failed("10.0.0.1") is False  # one in the window besides it: 2 of 3


def test_failures_while_locked_out_do_not_extend_it_forever(clock):
    t = Throttle(limit=2, window=60, clock=clock)
    t.failed("a")
    t.failed("a")
    for _ in range(100):  # a client that keeps hammering while refused
        clock.now += 1
        t.failed("a")
    assert t.retry_after("a") <= 60.0  # bounded by the window, whatever it did


def test_success_forgets_the_address(clock):
    t = Throttle(limit=2, window=60, clock=clock)
    t.failed("a")
    t.succeeded("a")
    assert t.failed("a") is False and t.retry_after("a") == 0.0


def test_memory_is_bounded(clock):
    t = Throttle(limit=5, window=60, clock=clock, max_keys=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t._failures) <= 100
    clock.now += 61
    t.failed("fresh")
    assert len(t._failures) == 1  # every stale address dropped at once


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="limit >= 1"):
        Throttle(limit=0)
    with pytest.raises(ValueError, match="window > 0"):
        Throttle(window=0)


def test_threads_count_every_failure(clock):
    t = Throttle(limit=10_000, window=60, clock=clock)
    threads = [threading.Thread(target=lambda: [t.failed("a") for _ in range(500)]) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t._failures["a"]) == 4000
