"""QEMU processes: argv building (pure) and the lifecycle of one VM, on a local or SSH host.

Follows QEMUMachine's shape: the constructor only records settings, :meth:`Vm.launch` acts, and
:meth:`Vm.shutdown` is the one idempotent cleanup path (QMP ``quit``, then SIGTERM, then SIGKILL),
which a ``with`` block always runs. A failed launch reports argv, exit code and the log's tail.

Everything that differs between a local and an SSH host is the host's (:class:`Host`): where
the work and socket folders are (:meth:`Host.vm_dirs`; on an SSH host a short private folder,
no open port), how the harness reaches QMP and the console (:meth:`Host.reach_sockets`: the
sockets themselves, or tunnels), and what is left on the host afterwards
(:meth:`Host.discard_vm_dirs`). So the QMP and console code is the same for both kinds of host.
On an SSH host QEMU runs under a small supervisor that kills it when the SSH channel closes: a
lost connection or a dead harness leaves no QEMU behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, VmError
from harness.hosts.host import Host, Process, SocketLinks
from harness.plan.models import QemuBuild
from harness.results.record.scalars import Role
from harness.run.cancel import Stop
from harness.run.qmp import QmpSession
from harness.run.sampling.console import Console


@dataclass(frozen=True)
class VmConfig:
    name: str  # QEMU -name, also shows as the process name in thread listings
    role: Role
    build: QemuBuild
    accel: str
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    append: str
    workdir: Path
    incoming: bool = False  # -incoming defer
    start_paused: bool = False  # -S
    extra_args: tuple[str, ...] = ()
    dirty_ring_size: int = 0  # KVM dirty ring entries per vCPU (dirty-limit needs it); 0: off
    # Where QMP and the console sockets live, if not in ``workdir``: a unix socket path must
    # be shorter than 108 bytes, which a deep remote workdir is not.
    socket_dir: Path | None = None

    @property
    def qmp_path(self) -> Path:
        return (self.socket_dir or self.workdir) / "qmp.sock"

    @property
    def serial_path(self) -> Path:
        return (self.socket_dir or self.workdir) / "serial.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"


def qemu_argv(cfg: VmConfig) -> list[str]:
    """The full QEMU command line for ``cfg`` (pure).

    QMP and the serial console are unix sockets in ``socket_dir``, else the work folder (on the
    VM's own host).
    """
    qmp = f"unix:{cfg.qmp_path},server=on,wait=off"
    serial = f"socket,id=ser0,path={cfg.serial_path}"
    argv = [str(cfg.build.binary)]
    for d in cfg.build.datadirs:
        argv += ["-L", str(d)]
    argv += [
        "-name", f"{cfg.name},debug-threads=on",
        "-machine", "pc",
        "-accel", (f"kvm,dirty-ring-size={cfg.dirty_ring_size}"
                   if cfg.accel == "kvm" and cfg.dirty_ring_size else cfg.accel),
        "-cpu", "host" if cfg.accel == "kvm" else "qemu64",
        "-smp", str(cfg.vcpus),
        "-m", f"{cfg.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(cfg.kernel),
        "-initrd", str(cfg.initrd),
        "-append", cfg.append,
        "-qmp", qmp,
        "-chardev", f"{serial},server=on,wait=off,logfile={cfg.console_log}",
        "-serial", "chardev:ser0",
    ]
    if cfg.start_paused:
        argv.append("-S")
    if cfg.incoming:
        argv += ["-incoming", "defer"]
    argv += list(cfg.extra_args)
    return argv


@dataclass
class Vm:
    """One QEMU process with its QMP session and serial console, on ``host``.

    Every wait of its launch, QMP and console wakes on ``stop``; :meth:`shutdown` does not."""

    host: Host
    cfg: VmConfig
    stop: Stop = field(default_factory=Stop)
    qmp: QmpSession = field(init=False)
    console: Console = field(init=False)
    argv: list[str] = field(init=False)
    proc: Process | None = field(default=None, init=False)
    exit_code: int | None = field(default=None, init=False)
    launched_at: float = field(default=0.0, init=False)
    _links: SocketLinks | None = field(default=None, init=False, repr=False)
    _log_tail: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.argv = qemu_argv(self.cfg)
        self.qmp = QmpSession(self.cfg.role, str(self.cfg.qmp_path), self.stop)
        self.console = Console(self.cfg.role, str(self.cfg.serial_path), stop=self.stop)

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, timeout: float = 20.0) -> None:
        """Start QEMU, connect QMP and the console.

        :raise VmError: QEMU exited or did not answer; the message has argv, exit code, log tail.
        :raise HostError: the host cannot be reached.
        """
        self.spawn()
        self.connect(timeout)

    def spawn(self) -> None:
        """Start the QEMU process and return at once: :meth:`connect` waits for it. In between
        the caller may start another QEMU (two start-ups overlap, not in a thread: a QEMU dies
        with the thread that started it, see harness.hosts.host).

        :raise VmError: the binary cannot be started.
        :raise HostError: the host cannot be reached.
        """
        env = {}
        if self.cfg.build.moduledir is not None:
            env["QEMU_MODULE_DIR"] = str(self.cfg.build.moduledir)
        self._prepare()
        self.launched_at = time.time()
        try:
            self.proc = self.host.start(self.argv, self.cfg.qemu_log, env)
        except OSError as exc:
            raise VmError(f"{self.cfg.role}: cannot start {self.argv[0]}: {exc.strerror}") from exc

    def connect(self, timeout: float = 20.0) -> None:
        """Connect QMP and the console of the QEMU :meth:`spawn` started.

        :raise VmError: QEMU exited or did not answer; the message has argv, exit code, log tail.
        """
        try:
            self.qmp.connect(timeout)
            self.console.connect(timeout)
        except (HarnessError, OSError) as exc:
            self.stop.sleep(0.2)  # QEMU may be exiting: let its exit code and log show
            raise VmError(self._failure(f"did not come up ({exc})")) from exc

    def _prepare(self) -> None:
        """Make the work folder, learn where the sockets live, and reach them from here."""
        socket_dir = self.host.vm_dirs(self.cfg.workdir, self.cfg.build.binary,
                                       (self.cfg.qmp_path, self.cfg.serial_path))
        if socket_dir is not None:
            self.cfg = dataclasses.replace(self.cfg, socket_dir=socket_dir)
            self.argv = qemu_argv(self.cfg)
        self._links = self.host.reach_sockets((self.cfg.qmp_path, self.cfg.serial_path),
                                              self.cfg.role[:3])
        qmp, serial = self._links.paths
        self.qmp = QmpSession(self.cfg.role, str(qmp), self.stop)
        self.console = Console(self.cfg.role, str(serial), stop=self.stop)

    def log_tail(self, lines: int = 20) -> str:
        """The tail of QEMU's own log (stdout/stderr), wherever QEMU runs."""
        text = self._log_tail
        if text is None:
            try:
                text = self.host.read_file(self.cfg.qemu_log, max_bytes=16384).decode(
                    "utf-8", "replace")
            except HarnessError:
                return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        code = self.proc.poll() if self.proc is not None else None
        status = f"exit code {code}" if code is not None else "still running"
        log = self.log_tail(5).replace("\n", " | ")
        return (f"{self.cfg.role} QEMU{self.host.where} {what}; {status}; argv: {shlex.join(self.argv)}; "
                f"log: {log}")

    def status(self) -> str:
        return str(self.qmp.execute("query-status")["status"])

    def kill(self) -> None:
        """SIGKILL QEMU at once (used by fault-injection tests and as a last resort)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Soft ``quit``, then SIGTERM, then SIGKILL; always closes QMP, console and tunnels.

        Never raises for an unreachable host: closing the SSH channel makes the remote
        supervisor kill QEMU.
        """
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None and self.qmp.connected:
                try:
                    self.qmp.execute("quit", timeout=2.0, wake_on_stop=False)
                except HarnessError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            self.qmp.close()
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        except (HarnessError, subprocess.TimeoutExpired):
            pass
        finally:
            self.qmp.close()
            if proc is not None:
                self.exit_code = proc.poll()
                close = getattr(proc, "close", None)
                if close is not None:
                    close()
            self.console.close()
            self._release()

    def _release(self) -> None:
        if self._links is not None:
            self._links.close()
            self._links = None
        if self._log_tail is None and self.proc is not None:
            # Keep QEMU's log tail for the record before the host may remove its folder.
            with contextlib.suppress(HarnessError):
                self._log_tail = self.host.read_file(self.cfg.qemu_log, 16384).decode(
                    "utf-8", "replace")
        self.host.discard_vm_dirs(self.cfg.workdir if self.proc is not None else None,
                                  self.cfg.socket_dir)

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.cfg.role,
            "host": self.host.name,
            "argv": self.argv,
            "pid": self.pid,
            "exit_code": self.exit_code if self.exit_code is not None else (
                self.proc.poll() if self.proc is not None else None),
            "qemu_log_tail": self.log_tail(40),
        }
