"""QMP sessions on top of ``qemu.qmp`` with deadlines and a synchronous facade.

``qemu.qmp`` is asyncio-only. The harness is synchronous (one migration is a simple state machine),
so all QMP clients share one private event loop running in a daemon thread; every public method
here submits a coroutine to that loop and waits for it with a timeout, and wakes on the run's
:class:`~harness.run.cancel.Stop` (a pending command is then cancelled). Events arrive through a
``qemu.qmp`` :class:`EventListener`, are stamped with the host's wall clock on receipt as well as
QEMU's own timestamp (so STOP/RESUME times do not depend on anyone waiting), and wake the
coroutines awaiting one of them: :meth:`QmpSession.wait_event` does not poll.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError

from harness.errors import QmpError, VmError
from harness.run.cancel import Cancelled, Stop

T = TypeVar("T")

# qemu.qmp logs every refused connection attempt at ERROR; we retry and report failures ourselves.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    """Return the shared background loop, starting its thread on first use."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="migbench-qmp-loop", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def _run(coro: Coroutine[Any, Any, T], timeout: float, stop: Stop | None = None) -> T:
    """Run ``coro`` on the shared loop; wait at most ``timeout`` s.

    :raise TimeoutError: ``timeout`` passed (the coroutine is cancelled).
    :raise Cancelled: ``stop`` was set (the coroutine is cancelled).
    """
    fut = asyncio.run_coroutine_threadsafe(coro, _event_loop())
    waking = stop.waking(fut.cancel) if stop is not None else contextlib.nullcontext()
    with waking:
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise
        except concurrent.futures.CancelledError:
            if stop is not None and stop.is_set():
                raise Cancelled("stopped") from None
            raise


@dataclass(frozen=True)
class QmpEvent:
    """One QMP event, with QEMU's timestamp and the time the harness received it (both epoch s)."""

    name: str
    data: dict[str, Any]
    qemu_time: float
    host_time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.name,
            "data": self.data,
            "qemu_time": self.qemu_time,
            "host_time": self.host_time,
        }


@dataclass
class QmpSession:
    """A connected QMP session to one QEMU process.

    ``label`` names the VM in error messages ("source", "destination"); every wait wakes on
    ``stop`` (but for the commands of a teardown, see :meth:`execute`).
    """

    label: str
    address: str
    stop: Stop = field(default_factory=Stop)
    _client: QMPClient | None = field(default=None, init=False, repr=False)
    _events: list[QmpEvent] = field(default_factory=list, init=False, repr=False)
    _events_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pump: Any = field(default=None, init=False, repr=False)
    # Notified on the loop each time an event is collected (made on the loop, in _aconnect).
    _arrived: asyncio.Condition | None = field(default=None, init=False, repr=False)

    def connect(self, timeout: float = 15.0) -> None:
        """Connect (retrying while the socket appears) and negotiate capabilities.

        :raise VmError: when QEMU does not accept a QMP connection before ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                _run(self._aconnect(), max(0.5, deadline - time.monotonic()), self.stop)
                return
            except (ConnectError, OSError, TimeoutError) as exc:
                last = exc
                self.stop.sleep(0.01)  # a QEMU starting up: its socket is due within ~0.1 s
        raise VmError(f"{self.label}: no QMP connection on {self.address} within {timeout:.0f} s: {last}")

    async def _aconnect(self) -> None:
        client = QMPClient(f"migbench-{self.label}")
        listener = EventListener()
        client.register_listener(listener)
        await client.connect(self.address)
        self._client = client
        self._arrived = asyncio.Condition()
        self._pump = asyncio.ensure_future(self._collect(listener))

    async def _collect(self, listener: EventListener) -> None:
        async for msg in listener:
            raw: dict[str, Any] = dict(msg)
            ts = raw.get("timestamp") or {}
            qemu_time = float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6
            ev = QmpEvent(
                name=str(raw["event"]),
                data=dict(raw.get("data") or {}),
                qemu_time=qemu_time,
                host_time=time.time(),
            )
            with self._events_lock:
                self._events.append(ev)
            if self._arrived is not None:
                async with self._arrived:
                    self._arrived.notify_all()

    @property
    def connected(self) -> bool:
        return self._client is not None

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 10.0, wake_on_stop: bool = True) -> Any:
        """Run one QMP command and return its value.

        ``wake_on_stop=False`` for the commands of a teardown (``quit``), which must run after
        the stop too; their ``timeout`` bounds them.

        :raise QmpError: when QEMU returns an error (the message carries QEMU's text).
        :raise VmError: when the session is closed, the connection drops, or ``timeout`` passes.
        :raise Cancelled: the stop was set first.
        """
        client = self._client
        if client is None:
            raise VmError(f"{self.label}: QMP session is not connected")
        try:
            return _run(client.execute(command, arguments), timeout,
                        self.stop if wake_on_stop else None)
        except ExecuteError as exc:
            raise QmpError(f"{self.label}: {command}: {exc}") from exc
        except TimeoutError as exc:
            raise VmError(f"{self.label}: QMP {command} got no answer within {timeout} s") from exc
        except (QMPError, OSError, EOFError) as exc:
            raise VmError(f"{self.label}: QMP {command} failed: connection lost ({exc!r})") from exc

    def events(self, name: str | None = None) -> list[QmpEvent]:
        """A snapshot of the events received so far, optionally only those named ``name``."""
        with self._events_lock:
            return [e for e in self._events if name is None or e.name == name]

    def _first(self, name: str, after: float) -> QmpEvent | None:
        return next((ev for ev in self.events(name) if ev.host_time >= after), None)

    def wait_event(self, name: str, timeout: float, after: float = 0.0) -> QmpEvent | None:
        """Wait until an event ``name`` with ``host_time >= after`` arrives; None on timeout.

        :raise Cancelled: the stop was set first.
        """
        self.stop.check()
        arrived = self._arrived
        if arrived is None:  # never connected: nothing will arrive
            return self._first(name, after)

        async def arrival() -> QmpEvent | None:
            # On the loop, where events are collected: none can slip between check and wait.
            async with arrived:
                await arrived.wait_for(lambda: self._first(name, after) is not None)
            return self._first(name, after)

        try:
            return _run(arrival(), timeout, self.stop)
        except TimeoutError:
            return self._first(name, after)

    def close(self) -> None:
        """Disconnect; idempotent and never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            _run(client.disconnect(), timeout=5.0)
        except Exception:  # noqa: BLE001 - cleanup must not raise
            pass
        pump, self._pump = self._pump, None
        if pump is not None:
            _event_loop().call_soon_threadsafe(pump.cancel)
