"""The guest's serial console: a line reader that stamps each line on arrival, and its parser.

Guest workloads print ``@mb <kind> key=value ...`` lines (see workloads/README.md). Under TCG the
guest's clock stops while the VM is stopped, so the host's arrival time of each line is kept beside
whatever time the guest itself printed: stalls are measured on both clocks.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness.run.cancel import Stop

PANIC_MARKERS = ("Kernel panic", "BUG: ", "Oops: ", "general protection fault", "segfault at")


@dataclass(frozen=True)
class ConsoleLine:
    host_time: float  # epoch seconds when the harness received the line
    text: str

    @property
    def mb(self) -> GuestRecord | None:
        return parse_line(self.text, self.host_time)


@dataclass(frozen=True)
class GuestRecord:
    kind: str
    fields: dict[str, str]
    host_time: float

    def num(self, key: str, default: float = 0.0) -> float:
        try:
            return float(self.fields[key])
        except (KeyError, ValueError):
            return default


def parse_line(text: str, host_time: float = 0.0) -> GuestRecord | None:
    """Parse one ``@mb`` line; None for anything else (kernel messages, noise)."""
    idx = text.find("@mb ")
    if idx < 0:
        return None
    parts = text[idx + 4:].split()
    if not parts:
        return None
    fields: dict[str, str] = {}
    for tok in parts[1:]:
        k, sep, v = tok.partition("=")
        if sep:
            fields[k] = v
    return GuestRecord(kind=parts[0], fields=fields, host_time=host_time)


@dataclass
class Console:
    """Connects to QEMU's serial chardev socket, collects lines, and can type into the guest.

    Its waits wake on ``stop`` (and raise :class:`~harness.run.cancel.Cancelled`)."""

    label: str
    path: str
    lines: list[ConsoleLine] = field(default_factory=list)
    stop: Stop = field(default_factory=Stop)
    _sock: socket.socket | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def connect(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                self.stop.sleep(0.05)
        self._sock = sock
        self._thread = threading.Thread(target=self._reader, name=f"console-{self.label}",
                                        daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.time()
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                text = raw.decode("utf-8", "replace").rstrip("\r")
                with self._lock:
                    self.lines.append(ConsoleLine(now, text))
        if buf:
            with self._lock:
                self.lines.append(ConsoleLine(time.time(), buf.decode("utf-8", "replace")))

    def snapshot(self) -> list[ConsoleLine]:
        with self._lock:
            return list(self.lines)

    def records(self, kind: str | None = None, after: float = 0.0) -> list[GuestRecord]:
        out = []
        for line in self.snapshot():
            if line.host_time < after:
                continue
            rec = line.mb
            if rec is not None and (kind is None or rec.kind == kind):
                out.append(rec)
        return out

    def wait_for(self, kind: str, timeout: float, after: float = 0.0) -> GuestRecord | None:
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records(kind, after)
            if recs:
                return recs[0]
            if time.monotonic() >= deadline:
                return None
            self.stop.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def panic_lines(self) -> list[str]:
        return [ln.text for ln in self.snapshot() if any(m in ln.text for m in PANIC_MARKERS)]

    def send(self, text: str) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(text.encode())
            except OSError:
                pass

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def to_list(self, limit: int = 20000) -> list[dict[str, Any]]:
        return [{"t": ln.host_time, "line": ln.text} for ln in self.snapshot()[-limit:]]
