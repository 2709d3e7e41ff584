"""QEMU processes: argv building (pure) and the lifecycle of one VM.

Follows QEMUMachine's shape: the constructor only records settings, :meth:`Vm.launch` acts, and
:meth:`Vm.shutdown` is the one idempotent cleanup path (QMP ``quit``, then SIGTERM, then SIGKILL),
which a ``with`` block always runs. A failed launch reports argv, exit code and the log's tail.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessError, VmError
from harness.host import LocalHost
from harness.models import QemuBuild
from harness.qmp import QmpSession
from harness.sampling.console import Console


@dataclass(frozen=True)
class VmConfig:
    name: str  # QEMU -name, also shows as the process name in thread listings
    role: str  # "source" | "destination"
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

    @property
    def qmp_path(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def serial_path(self) -> Path:
        return self.workdir / "serial.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"


def qemu_argv(cfg: VmConfig) -> list[str]:
    """The full QEMU command line for ``cfg`` (pure)."""
    argv = [str(cfg.build.binary)]
    for d in cfg.build.datadirs:
        argv += ["-L", str(d)]
    argv += [
        "-name", f"{cfg.name},debug-threads=on",
        "-machine", "pc",
        "-accel", cfg.accel,
        "-cpu", "host" if cfg.accel == "kvm" else "qemu64",
        "-smp", str(cfg.vcpus),
        "-m", f"{cfg.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(cfg.kernel),
        "-initrd", str(cfg.initrd),
        "-append", cfg.append,
        "-qmp", f"unix:{cfg.qmp_path},server=on,wait=off",
        "-chardev",
        f"socket,id=ser0,path={cfg.serial_path},server=on,wait=off,logfile={cfg.console_log}",
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
    """One QEMU process with its QMP session and serial console."""

    host: LocalHost
    cfg: VmConfig
    qmp: QmpSession = field(init=False)
    console: Console = field(init=False)
    argv: list[str] = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    exit_code: int | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    launched_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.argv = qemu_argv(self.cfg)
        self.qmp = QmpSession(self.cfg.role, str(self.cfg.qmp_path))
        self.console = Console(self.cfg.role, str(self.cfg.serial_path))

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
        """
        self.cfg.workdir.mkdir(parents=True, exist_ok=True)
        for p in (self.cfg.qmp_path, self.cfg.serial_path):
            p.unlink(missing_ok=True)
        env = {}
        if self.cfg.build.moduledir is not None:
            env["QEMU_MODULE_DIR"] = str(self.cfg.build.moduledir)
        self._log = open(self.cfg.qemu_log, "wb")  # noqa: SIM115 - closed in shutdown()
        self.launched_at = time.time()
        try:
            self.proc = self.host.start(self.argv, self._log, env)
        except OSError as exc:
            raise VmError(f"{self.cfg.role}: cannot start {self.argv[0]}: {exc.strerror}") from exc
        try:
            self.qmp.connect(timeout)
            self.console.connect(timeout)
        except (HarnessError, OSError) as exc:
            time.sleep(0.2)
            raise VmError(self._failure(f"did not come up ({exc})")) from exc

    def _failure(self, what: str) -> str:
        code = self.proc.poll() if self.proc is not None else None
        status = f"exit code {code}" if code is not None else "still running"
        log = tail(self.cfg.qemu_log, 5).replace("\n", " | ")
        return f"{self.cfg.role} QEMU {what}; {status}; argv: {shlex.join(self.argv)}; log: {log}"

    def status(self) -> str:
        return str(self.qmp.execute("query-status")["status"])

    def kill(self) -> None:
        """SIGKILL QEMU at once (used by fault-injection tests and as a last resort)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Soft ``quit``, then SIGTERM, then SIGKILL; always closes QMP and the console."""
        proc = self.proc
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
        if proc is not None:
            self.exit_code = proc.returncode
        self.console.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.cfg.role,
            "argv": self.argv,
            "pid": self.pid,
            "exit_code": self.exit_code if self.exit_code is not None else (
                self.proc.poll() if self.proc is not None else None),
            "qemu_log_tail": tail(self.cfg.qemu_log, 40),
        }
