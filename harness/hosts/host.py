"""Hosts that run QEMU: facts about them and how to run and start processes there.

One small interface, :class:`Host`, two implementations:

* :class:`LocalHost` runs on this machine with :mod:`subprocess` (the ``local`` transport).
* :class:`SshHost` runs on a machine reached over SSH with a Fabric ``Connection`` (``ssh``).
  The connection is opened lazily, reopened when it drops, and closed by ``close()`` / ``with``.
  Host keys are checked against the pinned ``known_hosts`` named in hosts.yaml (or the user's
  own); an unknown or changed key is rejected, never added.

One SSH stack: paramiko (through Fabric for the connection and file transfers). Commands,
started processes, unix-socket tunnels and the CPU sampler's stream (:meth:`Host.stream`) are
all channels of the one connection, whose host key was checked once against the pinned file.
Why paramiko and not the OpenSSH client, which once ran the sampler's stream: the tunnels, the
per-command channels with their exit statuses and the supervisor's EOF-on-close need channels
in this process (a child ``ssh`` is one command per process, seen only through pipes); and it
reads its own configuration and option syntax, so it needed a sanitiser of its own
(``-F none``, ``%``-escaped quoted key paths, users and addresses that must not look like
options) and checked host keys a second time by its own rules. One stack means one place where
keys are pinned and no ssh binary or ssh_config is needed on the machine running the harness.

Commands are argv lists. Locally they never meet a shell; over SSH they are joined by
:func:`shell_line` (:func:`shlex.join`, the one quoting helper) so every value is quoted. A shell
script of our own is a fixed text run by :func:`sh_script` with the values as ``"$1"``...: no
value is ever spliced into shell text. Errors name the host: :class:`HostError` for an
unreachable host, wrong key or host key mismatch, :class:`CommandFailed` for a command that
exited non-zero or timed out (with output tails).
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from harness.errors import CommandFailed, HarnessError, HostError, VmError
from harness.plan.models import HostSpec

PVM_MODULE = Path("/sys/module/kvm_pvm")

# paramiko logs refused tunnel channels (QEMU not listening yet, retried) through logging's
# last-resort handler onto stderr; our errors carry what matters.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def shell_line(argv: Sequence[str]) -> str:
    """``argv`` as one POSIX shell command line, every element quoted (:func:`shlex.join`).

    The only way a command line is built from values here. A NUL byte is refused: no command
    line can carry one, and the remote side would cut the line short at it.

    :raise HostError: an element contains a NUL byte.
    """
    for i, arg in enumerate(argv):
        if "\0" in str(arg):
            raise HostError(f"argument {i} of `{shlex.join(map(str, argv))[:200]!r}` contains "
                            "a NUL byte, which no command line can carry")
    return shlex.join(map(str, argv))


def sh_script(script: str, *args: str | Path) -> list[str]:
    """The argv that runs the fixed shell text ``script`` with ``args`` as ``"$1"``, ``"$2"``...

    Values reach the script only as positional parameters, never as part of its text, so
    nothing in them (``$(...)``, quotes, newlines) is ever parsed by the shell.
    """
    return ["sh", "-c", script, "sh", *map(str, args)] if args else ["sh", "-c", script]


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


# The same decision as detect_accel, made on the host itself (prints "accel reason").
_ACCEL_SH = (
    'if [ ! -e /dev/kvm ]; then echo "tcg /dev/kvm is absent"; '
    'elif [ -e /sys/module/kvm_pvm ]; then '
    'echo "tcg /dev/kvm is the PVM nested hypervisor (/sys/module/kvm_pvm)"; '
    'elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then '
    'echo "tcg /dev/kvm is not accessible to this user"; '
    'else echo "kvm /dev/kvm is usable"; fi'
)


_FACTS_SH = "hostname; uname -r; nproc; grep -m1 '^model name' /proc/cpuinfo || true"


def _cpu_model_from(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _cpu_model() -> str:
    try:
        return _cpu_model_from(Path("/proc/cpuinfo").read_text())
    except OSError:
        return platform.processor() or "unknown"


_libc: Any = None


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the harness dies (no orphaned QEMU)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Process(Protocol):
    """A background process on some host: the subset of :class:`subprocess.Popen` we use."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


_P = TypeVar("_P", bound=Process)


class Interrupt(Protocol):
    """What cuts a host command short: the run stage's stop (``harness.run.cancel.Stop``).

    :meth:`waking` calls ``wake`` once the stop is set while its block runs; :meth:`check`
    raises the stop's own exception (``Cancelled``), which this package need not know."""

    def waking(self, wake: Callable[[], object]) -> contextlib.AbstractContextManager[None]: ...

    def check(self) -> None: ...


class LineStream(Protocol):
    """A command started by :meth:`Host.stream`: its output line by line, its end."""

    def __iter__(self) -> Iterator[str]:
        """Output lines (decoded, invalid bytes replaced) until the command's output ends."""
        ...

    def close_input(self) -> None:
        """End the command's stdin (``--until-eof`` programs then finish)."""

    def wait(self, timeout: float) -> int | None:
        """Its exit status, or None if it still runs after ``timeout`` s."""

    def kill(self) -> None:
        """End it now (SSH: close the channel; the remote command loses its pipes)."""

    def stderr(self) -> str:
        """What it wrote to stderr (read once it has exited or been killed)."""

    def close(self) -> None:
        """Release the pipes or the channel."""


class PipeStream:
    """:class:`LineStream` of a local subprocess."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace",
                                     bufsize=1)

    def __iter__(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):  # closed under us by close()
            yield from self.proc.stdout

    def close_input(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def stderr(self) -> str:
        err = self.proc.stderr
        if err is None or err.closed:
            return ""
        text = err.read()
        err.close()
        return text

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def pipe_stream(argv: Sequence[str]) -> PipeStream:
    """``argv`` as a local subprocess with pipes (no shell).

    :raise OSError: the program cannot be started.
    """
    return PipeStream(argv)


class SocketLinks:
    """Local addresses of unix sockets on a host, in the order asked; ``close()`` stops reaching
    them (idempotent). A local host's sockets are their own addresses."""

    def __init__(self, paths: Sequence[Path], close: Callable[[], None] | None = None) -> None:
        self.paths = list(paths)
        self._close = close

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()


class Host(abc.ABC):
    """A machine that runs commands and QEMU. ``name`` labels it in errors and results."""

    transport = "abstract"

    def __init__(self, name: str, spec: HostSpec) -> None:
        self.name = name
        self.spec = spec
        self._started: list[Process] = []  # by start(), while they run (see stop_processes)
        self._started_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _track(self, proc: _P) -> _P:
        with self._started_lock:
            self._started = [p for p in self._started if p.poll() is None] + [proc]
        return proc

    def stop_processes(self, grace_s: float = 3.0) -> list[int]:
        """Stop every process started through this host that still runs: SIGTERM, then SIGKILL
        after ``grace_s``. Returns their pids. For when whoever started them cannot clean up
        (the runner's Ctrl-C with a pair still busy); never raises."""
        with self._started_lock:
            live = [p for p in self._started if p.poll() is None]
        for proc in live:
            with contextlib.suppress(Exception):
                proc.terminate()
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in live:
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(5)
        return [p.pid for p in live]

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_local(self) -> bool:
        return self.transport == "local"

    @property
    def label(self) -> str:
        """How errors name this host: ``source (local)``, ``destination (root@h:22)``."""
        return f"{self.name} (local)"

    @property
    def identity(self) -> str:
        """Which machine this is, for caches keyed by host (no secrets)."""
        return "local"

    def stream(self, argv: Sequence[str]) -> LineStream:
        """Start ``argv`` on the host with pipes; its output comes back line by line.

        :raise HostError: (SSH) the host cannot be reached or its key is not the pinned one.
        :raise OSError: (local) the program cannot be started.
        """
        return pipe_stream(argv)

    def cpu_sampler_stream(self) -> Callable[[Sequence[str]], LineStream] | None:
        """How the CPU sampler runs its probe here: None, in a thread of this process (it reads
        this machine's /proc, the cheapest); else what starts the probe's argv as a stream."""
        return self.stream

    #: The Python that runs our small scripts there (``python3 -c SCRIPT ARGS``).
    python = "python3"

    @property
    def where(self) -> str:
        """`` on <label>`` for messages about what runs on another machine; empty here."""
        return ""

    def absolute(self, path: Path) -> Path:
        """``path`` as the host reads it: locally against this process's working folder; over
        SSH as given (the remote shell resolves a relative path against the login folder)."""
        return path

    @abc.abstractmethod
    def vm_dirs(self, workdir: Path, binary: Path, sockets: Sequence[Path]) -> Path | None:
        """Make a VM's work folder and return a folder for its unix sockets, or None to keep
        ``sockets`` where they are (which it then frees of stale sockets).

        :raise VmError: the QEMU binary is missing there (checked where starting it cannot say).
        :raise HostError: the host cannot be reached.
        """

    @abc.abstractmethod
    def reach_sockets(self, paths: Sequence[Path], tag: str) -> SocketLinks:
        """Local addresses that reach the unix sockets ``paths`` on the host (``tag`` names
        the local folder); close the result to stop reaching them."""

    def discard_vm_dirs(self, workdir: Path | None, socket_dir: Path | None) -> None:
        """Remove a finished VM's folders on the host once its logs are read. Here they stay:
        the runner removes a run's local folders (or keeps them for a failed run's logs)."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True,
            stop: Interrupt | None = None) -> str:
        """Run a command, wait for it, return its stdout.

        With ``stop``, the wait ends as soon as the stop is set: the command is killed (over
        SSH its channel is closed: it dies at its next write, or by the host's watchdog at
        ``timeout``) and ``stop.check()`` raises.

        :raise CommandFailed: non-zero exit (with ``check``) or timeout, with output tails.
        :raise HostError: the host cannot be reached.
        """

    @abc.abstractmethod
    def start(self, argv: Sequence[str], log: IO[bytes] | Path,
              env: Mapping[str, str] | None = None) -> Process:
        """Start a background process whose output goes to ``log`` (a path on the host).

        The process dies with the harness (locally) or with the SSH connection (remotely).
        """

    @abc.abstractmethod
    def put(self, local: Path, remote: Path) -> None:
        """Copy a local file to ``remote`` on the host."""

    @abc.abstractmethod
    def get(self, remote: Path, local: Path) -> None:
        """Copy ``remote`` on the host to a local file."""

    @abc.abstractmethod
    def read_file(self, path: Path, max_bytes: int | None = None) -> bytes:
        """The contents of a file on the host (the last ``max_bytes`` if given).

        :raise HostError: the file cannot be read.
        """

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to ``pid`` on the host; False if there was no such process.

        A pid of 0 or below (a process group, or every process) is never signalled: it would
        come from a garbled supervisor answer, not from a process we started.
        """
        if int(pid) <= 0:
            return False
        try:
            self.run(["kill", f"-{int(sig)}", str(int(pid))], timeout=15)
        except CommandFailed:
            return False
        return True

    def exists(self, path: Path) -> bool:
        return self._exit_ok(["test", "-e", str(path)])

    def _exit_ok(self, argv: Sequence[str]) -> bool:
        try:
            self.run(argv, timeout=15)
        except CommandFailed:
            return False
        return True

    def mkdir(self, path: Path) -> None:
        self.run(["mkdir", "-p", "--", str(path)], timeout=15)

    def remove_tree(self, path: Path) -> None:
        self.run(["rm", "-rf", "--", str(path)], timeout=60, check=False)

    @abc.abstractmethod
    def free_port(self, address: str) -> int:
        """A TCP port that is free on ``address`` of this host right now."""

    def accel(self) -> AccelChoice:
        """The accelerator QEMU should use on this host (see :func:`detect_accel`)."""
        if self.spec.accel in ("kvm", "tcg"):
            return AccelChoice(self.spec.accel, "set in hosts.yaml")
        accel, _, reason = self.run(sh_script(_ACCEL_SH), timeout=15).strip().partition(" ")
        return AccelChoice(accel, reason)

    def facts(self) -> dict[str, Any]:
        """Host facts recorded with every result (nothing secret: no keys, no user names)."""
        out = self.run(sh_script(_FACTS_SH), timeout=30).splitlines() + ["", "", "", ""]
        accel = self.accel()
        facts: dict[str, Any] = {
            "name": self.name,
            "transport": self.transport,
            "hostname": out[0].strip(),
            "kernel": out[1].strip(),
            "cpu_model": _cpu_model_from(out[3]),
            "cpus": int(out[2]) if out[2].strip().isdigit() else None,
            "accel": accel.accel,
            "accel_reason": accel.reason,
        }
        if self.spec.address:
            facts["address"] = self.spec.address
        return facts

    def clock_samples(self, count: int = 10) -> list[tuple[float, float, float]]:
        """``count`` readings of the host's clock: (local send time, host time, local receive
        time), epoch seconds. This machine's own clock here; see :meth:`SshHost.clock_samples`.
        """
        out = []
        for _ in range(count):
            t0 = time.time()
            t = float(self.run(["date", "+%s.%N"], timeout=20).strip())
            out.append((t0, t, time.time()))
        return out

    def close(self) -> None:
        """Release connections; idempotent."""


class LocalHost(Host):
    """This machine. The CPU sampler runs in a thread of this process."""

    def cpu_sampler_stream(self) -> Callable[[Sequence[str]], LineStream] | None:
        return None

    transport = "local"
    python = sys.executable

    def absolute(self, path: Path) -> Path:
        return path.absolute()

    def vm_dirs(self, workdir: Path, binary: Path, sockets: Sequence[Path]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        for p in sockets:
            p.unlink(missing_ok=True)
        return None

    def reach_sockets(self, paths: Sequence[Path], tag: str) -> SocketLinks:
        return SocketLinks(paths)

    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True,
            stop: Interrupt | None = None) -> str:
        command = shell_line(argv)  # for messages; refuses a NUL byte as SshHost.run does
        try:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True)
        except FileNotFoundError as exc:
            raise CommandFailed(self.name, command, 127, "", str(exc)) from exc
        with proc, stop.waking(proc.kill) if stop else contextlib.nullcontext():
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                if stop:
                    stop.check()
                raise CommandFailed(self.name, command, None, out, err) from None
        if stop:
            stop.check()  # killed by the stop, not failed
        if check and proc.returncode != 0:
            raise CommandFailed(self.name, command, proc.returncode, out, err)
        return out

    def start(self, argv: Sequence[str], log: IO[bytes] | Path,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        if isinstance(log, Path):
            with open(log, "wb") as f:  # the child keeps its own descriptor
                return self._track(self._popen(argv, f, full_env))
        return self._track(self._popen(argv, log, full_env))

    @staticmethod
    def _popen(argv: Sequence[str], log: IO[bytes], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, preexec_fn=_die_with_parent, start_new_session=True,
        )

    def put(self, local: Path, remote: Path) -> None:
        if Path(local).resolve() != Path(remote).resolve():
            shutil.copyfile(local, remote)

    def get(self, remote: Path, local: Path) -> None:
        self.put(remote, local)

    def read_file(self, path: Path, max_bytes: int | None = None) -> bytes:
        try:
            with open(path, "rb") as f:
                if max_bytes is not None:
                    f.seek(max(0, os.path.getsize(path) - max_bytes))
                return f.read()
        except OSError as exc:
            raise HostError(f"{self.name}: cannot read {path}: {exc.strerror}") from exc

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> bool:
        if int(pid) <= 0:  # see Host.kill
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def clock_samples(self, count: int = 10) -> list[tuple[float, float, float]]:
        out = []
        for _ in range(count):
            t0 = time.time()
            t = time.time()
            out.append((t0, t, time.time()))
        return out

    def free_port(self, address: str) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
            return int(s.getsockname()[1])

    def accel(self) -> AccelChoice:
        return detect_accel(self.spec.accel)

    def facts(self) -> dict[str, Any]:
        accel = self.accel()
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


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data or "")


# ---------------------------------------------------------------------------------------------
# SSH


# Runs the real command in the background with output to a log file, reports its pid, and kills
# it when our stdin reaches EOF: the SSH channel closed, because the harness closed it, died, or
# lost the connection. Exits with the command's own status. "$1" is the log, the rest the argv.
# SIGPIPE is ignored once the command runs: a client that died while it started (a SIGKILLed
# lab worker) leaves no reader for the pid line, and the shell killed by that write would leave
# the command running with no one to stop it (seen: QEMUs outliving their worker).
_SUPERVISE = r'''
log=$1; shift
"$@" >"$log" 2>&1 </dev/null &
pid=$!
trap '' PIPE
echo "pid $pid"
exec 3<&0
{ while read -r _ <&3; do :; done; kill -TERM "$pid" 2>/dev/null; sleep 3; kill -KILL "$pid" 2>/dev/null; } &
wait "$pid"
'''


KILL_AFTER_S = 2.0  # a remote command still running this long after SIGTERM gets SIGKILL

# Runs the command "$3" in its own session (so in its own process group) with a watchdog that,
# "$1" + "$2" seconds later, sends SIGTERM to that whole group and SIGKILL if any of it is left
# after "$4" tenths of a second; then the exit status is 124. Closing our channel alone would
# leave a timed-out command (and whatever it started) running on the host; coreutils `timeout`
# stops at its direct child, so a grandchild that ignores SIGTERM would outlive it. If this
# shell dies first (its session torn down), the watchdog ends the command within a second.
_WITH_TIMEOUT = r'''
fired=
trap 'fired=1' USR1
exec 3<&0
setsid sh -c "$3" <&3 3<&- &
pid=$!
exec 3<&- </dev/null >/dev/null 2>&1
setsid sh -c 'sleep "$1"; s=0
    while [ $s -lt "$2" ] && kill -0 "$3" 2>/dev/null; do sleep 1; s=$((s + 1)); done
    kill -USR1 "$3" 2>/dev/null; kill -TERM -"$4" 2>/dev/null || exit 0; n=0
    while kill -0 -"$4" 2>/dev/null && [ $n -lt "$5" ]; do sleep 0.1; n=$((n + 1)); done
    kill -KILL -"$4" 2>/dev/null' watchdog "$2" "$1" $$ "$pid" "$4" &
dog=$!
while :; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done
if [ -n "$fired" ]; then wait "$dog"; exit 124; fi
kill -TERM -"$dog"
exit "$code"
'''


def remote_command(command: str, timeout: float) -> str:
    """The shell command line that runs ``command`` (a quoted shell command) on a host, killed
    with everything it started after ``timeout`` seconds (exit status 124; pure)."""
    seconds = max(timeout, 0.001)
    return shell_line(["sh", "-c", _WITH_TIMEOUT, "migbench", str(int(seconds)),
                       f"{seconds - int(seconds):.3f}", command, str(round(KILL_AFTER_S * 10))])


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def supervise_command(argv: Sequence[str], log: Path,
                      env: Mapping[str, str] | None = None) -> str:
    """The shell command line that runs ``argv`` on a host under :data:`_SUPERVISE` with its
    output in ``log`` and ``env`` set (pure).

    :raise HostError: an environment variable name that ``env`` would read as an option or as
        part of the command (it must be a shell name), or a NUL byte anywhere.
    """
    bad = [k for k in (env or {}) if not _ENV_NAME.match(k)]
    if bad:
        raise HostError(f"environment variable name {bad[0]!r} is not a name (letters, digits, "
                        "'_', not starting with a digit)")
    prefix = ["env", *[f"{k}={v}" for k, v in (env or {}).items()]] if env else []
    return shell_line(["sh", "-c", _SUPERVISE, "migbench", str(log), *prefix, *argv])


def read_argv(path: Path, max_bytes: int | None = None) -> list[str]:
    """The command that prints ``path`` (its last ``max_bytes`` if given); ``--`` so that a
    path starting with ``-`` is a file name, not an option (pure)."""
    if max_bytes:
        return ["tail", "-c", str(int(max_bytes)), "--", str(path)]
    return ["cat", "--", str(path)]


def relay_command(path: Path) -> str:
    """The command line of the relay to the unix socket ``path`` (see
    :meth:`SshHost.open_unix_channel`; pure)."""
    return shell_line(["python3", "-c", _RELAY_PY, str(path)])


class RemoteProcess:
    """A process started by :meth:`SshHost.start`; its SSH channel reports when it exits."""

    def __init__(self, host: SshHost, channel: Any, pid: int) -> None:
        self.host = host
        self.channel = channel
        self.pid = pid
        self.returncode: int | None = None

    def __repr__(self) -> str:
        return f"RemoteProcess({self.host.name}, pid={self.pid})"

    def poll(self) -> int | None:
        if self.returncode is None and self.channel.exit_status_ready():
            status = self.channel.recv_exit_status()
            if status == -1:  # the connection dropped: the supervisor killed the process
                self.returncode = -signal.SIGHUP
            elif status > 128:  # sh reports death by signal N as 128+N; Popen says -N
                self.returncode = -(status - 128)
            else:
                self.returncode = status
            self.channel.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"{self.host.name}:{self.pid}", timeout or 0)
            time.sleep(0.02)

    def _signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        try:
            self.host.kill(self.pid, sig)
        except HostError:
            # Unreachable: closing our channel makes the supervisor kill it once it notices.
            self.channel.close()

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Close the channel: the supervisor then kills the process if it still runs."""
        self.channel.close()


class ChannelStream:
    """:class:`LineStream` of a command on an SSH session channel.

    :meth:`kill` closes the channel: sshd then closes the command's pipes, so a command that
    reads its stdin (the CPU probe's ``--until-eof``) ends with it, and one that writes gets
    EPIPE; a lost connection does the same.
    """

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self._out = chan.makefile("rb")  # bytes: a stray invalid byte must not end the stream

    def __iter__(self) -> Iterator[str]:
        with contextlib.suppress(OSError, EOFError):  # socket.timeout, a dropped transport
            for line in self._out:
                yield line.decode("utf-8", "replace")

    def close_input(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.chan.shutdown_write()

    def wait(self, timeout: float) -> int | None:
        if not self.chan.status_event.wait(timeout):
            return None
        return int(self.chan.recv_exit_status())

    def kill(self) -> None:
        self.chan.close()

    def stderr(self) -> str:
        err = bytearray()
        with contextlib.suppress(OSError, EOFError):
            while self.chan.recv_stderr_ready():
                data = self.chan.recv_stderr(1 << 16)
                if not data:
                    break
                err += data
        return _text(bytes(err))

    def close(self) -> None:
        self.chan.close()


class SshHost(Host):
    """A host reached over SSH through a Fabric ``Connection`` (opened lazily)."""

    transport = "ssh"

    def __init__(self, name: str, spec: HostSpec) -> None:
        super().__init__(name, spec)
        self._conn: Any = None
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"{self.name} ({self.spec.user}@{self.spec.address}:{self.spec.port})"

    @property
    def identity(self) -> str:
        return f"ssh:{self.spec.user}@{self.spec.address}:{self.spec.port}"

    @property
    def where(self) -> str:
        return f" on {self.label}"

    # -- VM folders and sockets ---------------------------------------------------------------

    def vm_dirs(self, workdir: Path, binary: Path, sockets: Sequence[Path]) -> Path:
        """Checks the binary, makes the work folder private and returns a new private socket
        folder: QMP and the console live in a short folder (mktemp makes it mode 700, and a unix
        socket path must be shorter than 108 bytes, which a deep workdir is not), so only its
        owner can reach them and no port is open."""
        out = self.run(sh_script(_VM_DIRS_SH, binary, workdir), timeout=30).strip()
        if out == "missing":
            raise VmError(f"{self.label}: QEMU binary {binary} not found or not executable "
                          "(run `migbench provision`, or fix qemu_builds in hosts.yaml)")
        return Path(out)

    def reach_sockets(self, paths: Sequence[Path], tag: str) -> SocketLinks:
        """Tunnels (:class:`harness.hosts.remote.Tunnel`) from unix sockets in a private local
        folder."""
        from harness.hosts.remote import Tunnel

        folder = Path(tempfile.mkdtemp(prefix=f"mb-tun-{tag}-"))
        tunnels: list[Tunnel] = []

        def close() -> None:
            for tunnel in tunnels:
                tunnel.close()
            shutil.rmtree(folder, ignore_errors=True)

        try:
            for remote in paths:
                tunnel = Tunnel(self, remote, folder / remote.name)
                tunnel.open()
                tunnels.append(tunnel)
        except BaseException:
            close()
            raise
        return SocketLinks([t.path for t in tunnels], close)

    def discard_vm_dirs(self, workdir: Path | None, socket_dir: Path | None) -> None:
        for d in (workdir, socket_dir):
            if d is not None:
                with contextlib.suppress(HarnessError):
                    self.remove_tree(d)

    # -- connection ---------------------------------------------------------------------------

    def connection(self) -> Any:
        """The open Fabric ``Connection``; (re)connects when needed.

        :raise HostError: unreachable, authentication failed, unknown or changed host key.
        """
        with self._lock:
            conn = self._conn
            if conn is not None and conn.transport is not None and conn.transport.is_active():
                return conn
            if conn is not None:
                _quiet_close(conn)
                self._conn = None
            self._conn = self._open()
            return self._conn

    def _open(self) -> Any:
        import paramiko
        from fabric import Config, Connection

        spec = self.spec
        kwargs: dict[str, Any] = {"allow_agent": False, "look_for_keys": False,
                                  "banner_timeout": spec.connect_timeout_s,
                                  "auth_timeout": spec.connect_timeout_s}
        if spec.identity_file is not None:
            kwargs["key_filename"] = [str(spec.identity_file)]
        else:
            kwargs["look_for_keys"] = True
        config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": True}})
        conn = Connection(host=str(spec.address), user=spec.user, port=spec.port, config=config,
                          connect_timeout=spec.connect_timeout_s, connect_kwargs=kwargs)
        # Fabric's default policy adds unknown keys silently: pin them instead.
        client = paramiko.SSHClient()
        known = spec.known_hosts or Path.home() / ".ssh" / "known_hosts"
        try:
            client.load_host_keys(str(known))
        except OSError as exc:
            raise HostError(f"{self.label}: cannot read known_hosts {known}: {exc.strerror}"
                            ) from exc
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client = client
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostError(f"{self.label}: host key mismatch: the server's "
                            f"{exc.key.get_name()} key is not the one pinned in {known} "
                            "(possible man-in-the-middle; fix known_hosts if the host was "
                            "reinstalled)") from None
        except paramiko.AuthenticationException:
            raise HostError(f"{self.label}: authentication failed with identity file "
                            f"{spec.identity_file or '(default keys)'}") from None
        except paramiko.SSHException as exc:
            msg = str(exc)
            if "not found in known_hosts" in msg:
                raise HostError(f"{self.label}: unknown host key: not in {known} (add the "
                                "host's key to known_hosts after checking it)") from None
            raise HostError(f"{self.label}: SSH failed: {msg}") from None
        except (OSError, EOFError) as exc:
            raise HostError(f"{self.label}: unreachable: {_reason(exc)}") from None
        # Small request/response messages (QMP, channel opens): no Nagle/delayed-ACK stalls.
        try:
            conn.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        conn.transport.set_keepalive(5)
        return conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _quiet_close(conn)

    def _transport(self) -> Any:
        return self.connection().transport

    # -- commands -----------------------------------------------------------------------------

    def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True,
            stop: Interrupt | None = None) -> str:
        command = shell_line(argv)
        cut = threading.Event()
        with stop.waking(cut.set) if stop else contextlib.nullcontext():
            code, raw_out, raw_err = self._exec(command, timeout, cut=cut)
        if stop:
            stop.check()  # the channel was closed on the stop, not by the command
        out, err = _text(raw_out), _text(raw_err)
        if code is None:
            raise CommandFailed(self.label, command, None, out, err)
        if check and code != 0:
            raise CommandFailed(self.label, command, code, out, err)
        return out

    def _exec(self, command: str, timeout: float, stdin: bytes | None = None,
              cut: threading.Event | None = None) -> tuple[int | None, bytes, bytes]:
        """Run ``command`` (already quoted) on a fresh session channel; (code, stdout, stderr).

        The code is None on timeout, or once ``cut`` is set (the channel is then closed). The
        command runs under a watchdog on the host (see :func:`remote_command`) that kills it and
        what it started when the time is up; if the host stops answering, we give up a few
        seconds after that. Plain paramiko: Fabric's
        runner polls its streams every 10 ms, which dominates a short command's cost here.
        """
        try:
            chan = self._transport().open_session(timeout=self.spec.connect_timeout_s)
        except Exception as exc:
            if isinstance(exc, HostError):
                raise
            raise HostError(f"{self.label}: cannot open a session: {_reason(exc)}") from None
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(0.2)
            started = time.monotonic()
            chan.exec_command(remote_command(command, timeout))
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            deadline = started + timeout + KILL_AFTER_S + 5.0
            while True:
                progressed = False
                while chan.recv_ready():
                    out += chan.recv(1 << 20)
                    progressed = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 20)
                    progressed = True
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    code = chan.recv_exit_status()
                    if code == -1 and not self._transport_alive():
                        raise HostError(f"{self.label}: connection lost while running "
                                        f"`{command[:200]}`")
                    if code == 124 and time.monotonic() - started >= timeout:
                        return None, bytes(out), bytes(err)
                    return code, bytes(out), bytes(err)
                if time.monotonic() > deadline or (cut is not None and cut.is_set()):
                    return None, bytes(out), bytes(err)
                if not progressed:
                    chan.status_event.wait(0.005)
        finally:
            chan.close()

    def _transport_alive(self) -> bool:
        conn = self._conn
        return conn is not None and conn.transport is not None and conn.transport.is_active()

    def start(self, argv: Sequence[str], log: IO[bytes] | Path,
              env: Mapping[str, str] | None = None) -> RemoteProcess:
        if not isinstance(log, Path):
            raise TypeError("SshHost.start needs the log as a path on the remote host")
        command = supervise_command(argv, log, env)
        with self._failing(f"start {argv[0]}"):
            chan = self._transport().open_session(timeout=self.spec.connect_timeout_s)
            chan.exec_command(command)
            f = chan.makefile("r")
            chan.settimeout(20.0)
            line = f.readline()
        chan.settimeout(None)
        if not line.startswith("pid "):
            chan.close()
            raise HostError(f"{self.label}: cannot start {argv[0]}: supervisor said {line!r}")
        return self._track(RemoteProcess(self, chan, int(line.split()[1])))

    def stream(self, argv: Sequence[str]) -> ChannelStream:
        """``argv`` on a session channel of the pinned connection; see :class:`ChannelStream`.

        :raise HostError: unreachable, unknown or changed host key, or no session.
        """
        command = shell_line(argv)
        with self._failing(f"start {argv[0]}"):
            chan = self._transport().open_session(timeout=self.spec.connect_timeout_s)
            chan.exec_command(command)
        return ChannelStream(chan)

    def put(self, local: Path, remote: Path) -> None:
        with self._failing(f"upload {local} to {remote}"):
            self.connection().put(str(local), remote=str(remote))

    def get(self, remote: Path, local: Path) -> None:
        with self._failing(f"download {remote}"):
            self.connection().get(str(remote), local=str(local))

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Any error of the block but a HostError becomes one line: ``LABEL: cannot WHAT:
        reason`` (paramiko's and Fabric's exceptions are many, and their texts vary)."""
        try:
            yield
        except HostError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"{self.label}: cannot {what}: {_reason(exc)}") from None

    def read_file(self, path: Path, max_bytes: int | None = None) -> bytes:
        code, out, err = self._exec(shell_line(read_argv(path, max_bytes)), 60)
        if code != 0:
            raise HostError(f"{self.label}: cannot read {path}: "
                            + ("timed out" if code is None else _text(err).strip() or str(code)))
        return out

    def facts(self) -> dict[str, Any]:
        """As :meth:`Host.facts`; an unreachable host gives its error instead of raising, so the
        run that records it still becomes a recorded outcome."""
        try:
            return super().facts()
        except HostError as exc:
            return {"name": self.name, "transport": self.transport,
                    "address": self.spec.address, "error": str(exc)}

    def clock_samples(self, count: int = 10) -> list[tuple[float, float, float]]:
        """As :meth:`Host.clock_samples`, over one open channel to a tiny echo loop on the host,
        so each reading costs one network round trip, not an SSH session."""
        with self._failing("read the clock"):
            chan = self._transport().open_session(timeout=self.spec.connect_timeout_s)
            chan.settimeout(20.0)
            chan.exec_command(shell_line(["python3", "-u", "-c", _CLOCK_PY]))
            f = chan.makefile("r")
            out = []
            for _ in range(count):
                t0 = time.time()
                chan.sendall(b"\n")
                line = f.readline()
                t1 = time.time()
                out.append((t0, float(line), t1))
            chan.close()
            return out

    def free_port(self, address: str) -> int:
        return int(self.run(["python3", "-c", _FREE_PORT_PY, address], timeout=20).strip())

    def open_unix_channel(self, path: Path) -> Any:
        """An SSH session relaying to the unix socket ``path`` on the host (no port is opened:
        a small python3 relay connects to the socket; it exits when either side closes).

        :raise HostError: the session could not be opened.
        """
        with self._failing(f"open a tunnel to {path}"):
            chan = self._transport().open_session(timeout=self.spec.connect_timeout_s)
            chan.exec_command(relay_command(path))
            return chan


# Runs before a remote QEMU starts: "missing" unless "$1" (the binary) is executable; else makes
# the work folder "$2" private and prints a new private socket folder (see SshHost.vm_dirs).
_VM_DIRS_SH = ('test -x "$1" || { echo "missing"; exit 0; }; '
               'mkdir -p -- "$2" && chmod 700 -- "$2" && mktemp -d /tmp/mb-vm.XXXXXXXX')
# Prints the host's clock for each line read (see SshHost.clock_samples).
_CLOCK_PY = "import sys,time\nfor _ in sys.stdin: print(repr(time.time()), flush=True)"
# Prints a free TCP port on the address sys.argv[1] (see SshHost.free_port).
_FREE_PORT_PY = ("import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); "
                 "print(s.getsockname()[1])")

# Relays stdin/stdout to a unix socket (see SshHost.open_unix_channel); no output and exit 3
# when nothing listens there yet, so the local client sees EOF and tries again.
_RELAY_PY = r"""
import os, select, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError:
    sys.exit(3)
out = sys.stdout.buffer
while True:
    ready = select.select([0, s], [], [])[0]
    if s in ready:
        data = s.recv(65536)
        if not data:
            break
        out.write(data)
        out.flush()
    if 0 in ready:
        data = os.read(0, 65536)
        if not data:
            break
        s.sendall(data)
"""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _quiet_close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - cleanup must not raise
        pass


def make_host(name: str, spec: HostSpec) -> Host:
    """The host object for ``spec``'s transport. ``name`` labels it ("source", "destination")."""
    if spec.transport == "ssh":
        return SshHost(name, spec)
    return LocalHost(name, spec)
