"""SSH tunnels: a local unix socket that reaches a unix socket on a remote host.

QEMU on a remote host serves QMP and its serial console on unix sockets in a private folder there
(see :meth:`harness.run.vm.Vm._prepare_remote`); the harness talks to them through a :class:`Tunnel`
whose local end is a unix socket in a private local folder. Each local connection becomes one
SSH session running a small relay on the remote (python3, which every host needs for the probe)
that connects to the socket, so nothing listens on any port, loopback included. The local code
(``QmpSession``, ``Console``) sees the same kind of address as for a local QEMU.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any

from harness.errors import HostError
from harness.hosts.host import SshHost


class Tunnel:
    """Forwards connections on the local unix socket ``path`` to the unix socket ``remote`` on
    ``host``.

    ``open()`` starts it; ``close()`` stops it and closes every forwarded connection (idempotent).
    """

    def __init__(self, host: SshHost, remote: Path, path: Path) -> None:
        self.host = host
        self.remote = remote
        self.path = path
        self._server: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Tunnel:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        os.chmod(self.path, 0o600)
        server.listen(4)
        server.settimeout(0.2)
        self._server = server
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"tunnel-{self.host.name}-{self.remote.name}")
        self._thread.start()

    def _accept(self) -> None:
        server = self._server
        assert server is not None
        while not self._closed.is_set():
            try:
                local, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                chan = self.host.open_unix_channel(self.remote)
            except HostError:
                local.close()  # the client sees EOF and retries (QEMU may not listen yet)
                continue
            with self._lock:
                if self._closed.is_set():
                    local.close()
                    chan.close()
                    break
                self._pairs.append((local, chan))
            threading.Thread(target=self._pump, args=(local, chan), daemon=True,
                             name=f"tunnel-pump-{self.remote.name}").start()

    def _pump(self, local: socket.socket, chan: Any) -> None:
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([local, chan], [], [], 0.5)
                if local in ready:
                    data = local.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    local.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            _close(local, chan)
            with self._lock:
                if (local, chan) in self._pairs:
                    self._pairs.remove((local, chan))

    def close(self) -> None:
        self._closed.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for local, chan in pairs:
            _close(local, chan)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _close(local: socket.socket, chan: Any) -> None:
    for obj in (local, chan):
        with contextlib.suppress(Exception):
            obj.close()
