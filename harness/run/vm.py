"""QEMU processes: argv building (pure) and the lifecycle of one VM, on a local or SSH host.

Follows QEMUMachine's shape: the constructor only records settings, :meth:`Vm.launch` acts, and
:meth:`Vm.shutdown` is the one idempotent cleanup path (QMP ``quit``, then SIGTERM, then SIGKILL),
which a ``with`` block always runs. A failed launch reports argv, exit code and the log's tail.

On an SSH host QEMU serves QMP and the serial console on unix sockets in a short private folder
(``mktemp -d``, mode 700: no open port, nobody else on that host can reach them), and the harness
reaches both through :class:`harness.hosts.remote.Tunnel` (local unix sockets), so the QMP and console
code is the same for both kinds of host. QEMU runs under a small supervisor that kills it
when the SSH channel closes: a lost connection or a dead harness leaves no QEMU behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, VmError
from harness.hosts.host import Host, Process, SshHost, sh_script
from harness.plan.models import QemuBuild
from harness.results.record.scalars import Role
from harness.run.qmp import QmpSession
from harness.run.sampling.console import Console

# Runs on an SSH host before QEMU starts: "missing" unless "$1" (the binary) is executable; else
# makes the work folder "$2" private and prints a new private socket folder.
_PREPARE_SH = ('test -x "$1" || { echo "missing"; exit 0; }; '
               'mkdir -p -- "$2" && chmod 700 -- "$2" && mktemp -d /tmp/mb-vm.XXXXXXXX')


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


def tail(path: Path, lines: int = 20) -> str:
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


@dataclass
class Vm:
    """One QEMU process with its QMP session and serial console, on ``host``."""

    host: Host
    cfg: VmConfig
    qmp: QmpSession = field(init=False)
    console: Console = field(init=False)
    argv: list[str] = field(init=False)
    proc: Process | None = field(default=None, init=False)
    exit_code: int | None = field(default=None, init=False)
    launched_at: float = field(default=0.0, init=False)
    _tunnels: list[Any] = field(default_factory=list, init=False, repr=False)
    _tunnel_dir: Path | None = field(default=None, init=False, repr=False)
    _log_tail: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.argv = qemu_argv(self.cfg)
        self.qmp = QmpSession(self.cfg.role, str(self.cfg.qmp_path))
        self.console = Console(self.cfg.role, str(self.cfg.serial_path))

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def remote(self) -> bool:
        return isinstance(self.host, SshHost)

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
        env = {}
        if self.cfg.build.moduledir is not None:
            env["QEMU_MODULE_DIR"] = str(self.cfg.build.moduledir)
        if isinstance(self.host, SshHost):
            self._prepare_remote()
        else:
            self.cfg.workdir.mkdir(parents=True, exist_ok=True)
            for p in (self.cfg.qmp_path, self.cfg.serial_path):
                p.unlink(missing_ok=True)
        self.launched_at = time.time()
        try:
            self.proc = self.host.start(self.argv, self.cfg.qemu_log, env)
        except OSError as exc:
            raise VmError(f"{self.cfg.role}: cannot start {self.argv[0]}: {exc.strerror}") from exc
        try:
            self.qmp.connect(timeout)
            self.console.connect(timeout)
        except (HarnessError, OSError) as exc:
            time.sleep(0.2)
            raise VmError(self._failure(f"did not come up ({exc})")) from exc

    def _prepare_remote(self) -> None:
        """Check the binary, make the (private) work folder, open the tunnels to its sockets."""
        host = self.host
        assert isinstance(host, SshHost)
        from harness.hosts.remote import Tunnel

        binary = str(self.cfg.build.binary)
        # QMP and the console live in a short private folder (mktemp makes it mode 700): only
        # its owner can reach them, and no port is open. The work folder (logs, console output)
        # is private too.
        out = host.run(sh_script(_PREPARE_SH, binary, self.cfg.workdir), timeout=30).strip()
        if out == "missing":
            raise VmError(f"{host.label}: QEMU binary {binary} not found or not executable "
                          "(run `migbench provision`, or fix qemu_builds in hosts.yaml)")
        self.cfg = dataclasses.replace(self.cfg, socket_dir=Path(out))
        self.argv = qemu_argv(self.cfg)
        self._tunnel_dir = Path(tempfile.mkdtemp(prefix=f"mb-tun-{self.cfg.role[:3]}-"))
        for remote, name in ((self.cfg.qmp_path, "qmp.sock"), (self.cfg.serial_path, "serial.sock")):
            tunnel = Tunnel(host, remote, self._tunnel_dir / name)
            tunnel.open()
            self._tunnels.append(tunnel)
        self.qmp = QmpSession(self.cfg.role, str(self._tunnel_dir / "qmp.sock"))
        self.console = Console(self.cfg.role, str(self._tunnel_dir / "serial.sock"))

    def log_tail(self, lines: int = 20) -> str:
        """The tail of QEMU's own log (stdout/stderr), wherever QEMU runs."""
        if self._log_tail is not None:
            return "\n".join(self._log_tail.splitlines()[-lines:])
        if not self.remote:
            return tail(self.cfg.qemu_log, lines)
        try:
            data = self.host.read_file(self.cfg.qemu_log, max_bytes=16384)
        except HarnessError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        code = self.proc.poll() if self.proc is not None else None
        status = f"exit code {code}" if code is not None else "still running"
        log = self.log_tail(5).replace("\n", " | ")
        where = f" on {self.host.label}" if isinstance(self.host, SshHost) else ""
        return (f"{self.cfg.role} QEMU{where} {what}; {status}; argv: {shlex.join(self.argv)}; "
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
                    self.qmp.execute("quit", timeout=2.0)
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
            self._close_remote()

    def _close_remote(self) -> None:
        for tunnel in self._tunnels:
            tunnel.close()
        self._tunnels = []
        if self._tunnel_dir is not None:
            shutil.rmtree(self._tunnel_dir, ignore_errors=True)
            self._tunnel_dir = None
        if isinstance(self.host, SshHost) and self._log_tail is None and self.proc is not None:
            # Keep QEMU's log tail for the record, then remove this VM's remote work folder.
            with contextlib.suppress(HarnessError):
                self._log_tail = self.host.read_file(self.cfg.qemu_log, 16384).decode(
                    "utf-8", "replace")
            with contextlib.suppress(HarnessError):
                self.host.remove_tree(self.cfg.workdir)
        if isinstance(self.host, SshHost) and self.cfg.socket_dir is not None:
            with contextlib.suppress(HarnessError):
                self.host.remove_tree(self.cfg.socket_dir)

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
