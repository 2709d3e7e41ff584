"""Cooperative cancellation: one stop per campaign that every wait of a run wakes on.

Ctrl-C and SIGTERM reach only the main thread, which sets the campaign's :class:`Stop`; each
pair worker notices it at its next wait (every wait in ``run/`` has a deadline and goes through
a Stop), raises :class:`Cancelled`, and unwinds through ``run_migration``'s teardown as it would
for any fault. No exception is pushed into another thread, so a worker is never cut off halfway
through a teardown or a store write: those simply do not wait on the stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Cancelled(BaseException):  # noqa: N818 - named like KeyboardInterrupt, which it stands for
    """The run was stopped (Ctrl-C, SIGTERM).

    A BaseException, like KeyboardInterrupt: the handlers along a run that turn a HarnessError
    or any Exception into a recorded outcome must let it through to the teardowns.
    """


class Stop:
    """A stop request: waits wake on it at once; callbacks registered with :meth:`waking` are
    called when it is set (to cancel a pending QMP command, for instance)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], object]] = []

    def set(self) -> None:
        with self._lock:
            self._event.set()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """:raise Cancelled: the stop is set."""
        if self._event.is_set():
            raise Cancelled("stopped")

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the stop is set.

        :raise Cancelled: the stop is (or becomes) set.
        """
        if self._event.wait(max(0.0, seconds)):
            raise Cancelled("stopped")

    @contextmanager
    def waking(self, wake: Callable[[], object]) -> Iterator[None]:
        """Call ``wake`` if the stop is set while the block runs (at once if it is set now)."""
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._wakers.append(wake)
        if already:
            wake()
        try:
            yield
        finally:
            with self._lock:
                if wake in self._wakers:
                    self._wakers.remove(wake)
