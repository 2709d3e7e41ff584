"""Hosts that run QEMU: facts about them and how to start processes there.

Only the ``local`` transport exists so far; it runs on this machine without SSH. The interface
(``run``, ``start``, ``facts``) is what a Fabric-backed host implements too.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.errors import CommandFailed
from harness.models import HostSpec

PVM_MODULE = Path("/sys/module/kvm_pvm")


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" | "tcg"
    reason: str


def detect_accel(requested: str, dev_kvm: Path = Path("/dev/kvm"),
                 pvm_module: Path = PVM_MODULE) -> AccelChoice:
    """Pick the accelerator: KVM on a real hypervisor, TCG where KVM is absent or is PVM.

    ``/dev/kvm`` on this kind of machine is a paravirtual nested hypervisor (kvm_pvm) on which a
    stock guest kernel boots about 100x slower than under TCG, so "auto" treats it as absent.
    """
    if requested in ("kvm", "tcg"):
        return AccelChoice(requested, "set in hosts.yaml")
    if not dev_kvm.exists():
        return AccelChoice("tcg", f"{dev_kvm} is absent")
    if pvm_module.exists():
        return AccelChoice("tcg", f"{dev_kvm} is the PVM nested hypervisor ({pvm_module})")
    if not os.access(dev_kvm, os.R_OK | os.W_OK):
        return AccelChoice("tcg", f"{dev_kvm} is not accessible to this user")
    return AccelChoice("kvm", f"{dev_kvm} is usable")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_libc: Any = None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the harness dies (no orphaned QEMU)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class LocalHost:
    """This machine. ``name`` labels it in errors and results ("source", "destination")."""

    def __init__(self, name: str, spec: HostSpec) -> None:
        self.name = name
        self.spec = spec

    def __repr__(self) -> str:
        return f"LocalHost({self.name!r})"

    def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> str:
        """Run a command and return its stdout.

        :raise CommandFailed: non-zero exit (with ``check``) or timeout, with output tails.
        """
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(self.name, shlex.join(argv), None,
                                str(exc.stdout or ""), str(exc.stderr or "")) from exc
        except FileNotFoundError as exc:
            raise CommandFailed(self.name, shlex.join(argv), 127, "", str(exc)) from exc
        if check and proc.returncode != 0:
            raise CommandFailed(self.name, shlex.join(argv), proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def start(self, argv: Sequence[str], log: IO[bytes], env: Mapping[str, str] | None = None,
              ) -> subprocess.Popen[bytes]:
        """Start a background process tied to the harness's life, output to ``log``."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=full_env, preexec_fn=_die_with_parent, start_new_session=True,
        )

    def facts(self) -> dict[str, Any]:
        """Host facts recorded with every result."""
        accel = detect_accel(self.spec.accel)
        return {
            "name": self.name,
            "transport": "local",
            "hostname": platform.node(),
            "kernel": platform.release(),
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "accel": accel.accel,
            "accel_reason": accel.reason,
        }
