"""The run's stop: waits wake on it at once, and wakers registered while it is unset are called."""

from __future__ import annotations

import threading
import time

import pytest

from harness.run.cancel import Cancelled, Stop
from harness.run.sampling.console import Console


def _set_later(stop: Stop, after: float) -> None:
    threading.Timer(after, stop.set).start()


def test_sleep_wakes_at_once_when_stopped() -> None:
    stop = Stop()
    stop.sleep(0.01)  # not set: just sleeps
    _set_later(stop, 0.1)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        stop.sleep(30.0)
    assert time.monotonic() - started < 2.0
    with pytest.raises(Cancelled):
        stop.check()


def test_wakers_are_called_once_set_and_not_after_their_block() -> None:
    stop = Stop()
    calls: list[str] = []
    with stop.waking(lambda: calls.append("inside")):
        assert calls == []
        stop.set()
        assert calls == ["inside"]
    with stop.waking(lambda: calls.append("late")):  # already set: called at once
        pass
    assert calls == ["inside", "late"]
    other = Stop()
    with other.waking(lambda: calls.append("gone")):
        pass
    other.set()
    assert "gone" not in calls


def test_console_wait_wakes_on_the_stop() -> None:
    """A console wait with a long deadline ends as soon as the run is stopped."""
    stop = Stop()
    console = Console("source", "/nonexistent", stop=stop)
    assert console.wait_for("boot", 0.05) is None  # the deadline, when nobody stops it
    _set_later(stop, 0.1)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        console.wait_for("boot", 60.0)
    assert time.monotonic() - started < 2.0


def test_no_exception_is_pushed_into_another_thread() -> None:
    """Cancellation is cooperative: no module raises inside another thread."""
    from pathlib import Path

    harness = Path(__file__).resolve().parents[2] / "harness"
    users = [p.relative_to(harness).as_posix() for p in harness.rglob("*.py")
             if "SetAsyncExc" in p.read_text()]
    assert users == []
