"""Per-thread CPU usage of a QEMU process: the /proc sampler, thread classes, and summaries.

Three layers, one file, because the sampling loop must run *on the host that runs QEMU*, which for
a remote host means over SSH without migbench installed there:

* **The probe** (:func:`read_threads`, :func:`sample_loop`, :func:`main`) uses the standard library
  only, so this file runs unchanged as ``python3 cpu.py --pid N --hz 10`` or as
  ``python3 -c "$(cat cpu.py)" --pid N --hz 10``. It reads ``/proc/PID/task/*/stat`` at a fixed
  rate and prints compact JSON lines: one header, one line per sample, one trailer::

      {"pid":123,"hz":10.0,"clk_tck":100,"comm":"qemu-system-x86","v":1}
      {"t":1712345678.1234,"threads":[{"tid":123,"comm":"qemu-system-x86","ticks":5123}, ...]}
      {"end":1712345690.0,"reason":"exited","cpu_s":0.031,"samples":118}

  The thread name comes from the stat line itself (the kernel prints the same ``task->comm`` there
  as in ``/proc/PID/task/TID/comm``), which halves the reads and keeps name and ticks consistent.
  It is the text between the first ``(`` and the *last* ``)``: names may contain spaces and
  parentheses. ``--until-eof`` stops the probe when its stdin closes, which is how the harness
  stops a remote probe through SSH (closing ssh's stdin) and still gets the trailer.

* **The harness side** (:class:`CpuSampler`, :func:`parse_stream`, :func:`probe_argv`) runs the probe
  in a background thread of this process (local QEMU, cheapest) or as a subprocess whose argv may
  be prefixed with ``ssh HOST`` (remote QEMU), and returns a :class:`CpuTrace`.

* **Pure analysis** (:func:`classify`, :func:`classify_thread`, :func:`summarise`,
  :func:`timeline`): CPU% per thread class over a window, where 100% is one core.

Thread classes (QEMU with ``-name NAME,debug-threads=on``; names truncated by the kernel to 15
bytes)::

    main          the main loop thread (tid == pid); it keeps the process name. On the
                  destination it also runs the incoming precopy stream (a coroutine).
    migration     live_migration / mig/src/main, the source return path (return path,
                  mig/src/rp-thr, mig/src/return), TLS handshake, bg snapshot, COLO, other mig/*
    postcopy      destination postcopy threads: postcopy/listen, postcopy/fault, fault-default,
                  fault-fast (7.x-8.x); mig/dst/listen, mig/dst/fault, mig/dst/preempt (9.0+)
    compress      legacy multithread compression (<= 9.0): compress
    decompress    decompress
    multifd_send  multifdsend_N (<= 8.2), mig/src/send_N (9.0+)
    multifd_recv  multifdrecv_N (<= 8.2), mig/dst/recv_N (9.0+)
    vcpu          CPU n/TCG, CPU n/KVM (any accelerator), ALL CPUs/TCG (single-threaded TCG)
    other         everything else: worker, call_rcu, IO threads, vnc, helper threads
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is 3.11+; the probe also runs on older remote pythons
    from typing import Self

STREAM_VERSION = 1
DEFAULT_HZ = 10.0

MAIN = "main"
MIGRATION = "migration"
POSTCOPY = "postcopy"
COMPRESS = "compress"
DECOMPRESS = "decompress"
MULTIFD_SEND = "multifd_send"
MULTIFD_RECV = "multifd_recv"
VCPU = "vcpu"
OTHER = "other"
CLASSES = (MAIN, MIGRATION, POSTCOPY, COMPRESS, DECOMPRESS, MULTIFD_SEND, MULTIFD_RECV, VCPU,
           OTHER)

# Exact names first, then prefixes. Prefixes tolerate the kernel's 15-byte truncation
# ("multifdsend_123", "mig/src/send_10", "multifd-tls-han").
_EXACT = {
    "live_migration": MIGRATION,
    "return path": MIGRATION,
    "bg_snapshot": MIGRATION,
    "COLO incoming": MIGRATION,
    "compress": COMPRESS,
    "decompress": DECOMPRESS,
    "postcopy/listen": POSTCOPY,
    "postcopy/fault": POSTCOPY,
    "fault-default": POSTCOPY,
    "fault-fast": POSTCOPY,
    "mig/dst/listen": POSTCOPY,
    "mig/dst/fault": POSTCOPY,
    "mig/dst/preempt": POSTCOPY,
    "ALL CPUs/TCG": VCPU,
}
_PREFIXES = (
    ("multifdsend_", MULTIFD_SEND),
    ("mig/src/send_", MULTIFD_SEND),
    ("multifdrecv_", MULTIFD_RECV),
    ("mig/dst/recv_", MULTIFD_RECV),
    ("multifd-tls", MIGRATION),
    ("mig/", MIGRATION),  # mig/src/main, mig/src/rp-thr, mig/src/return, mig/src/tls, ...
    ("qemu-system-", MAIN),  # the unnamed process name, e.g. "qemu-system-x86" (15 bytes)
)
_VCPU = re.compile(r"CPU \d+/")


def classify(comm: str, process_comm: str | None = None) -> str:
    """The class of a QEMU thread from its name alone (pure).

    A name equal to ``process_comm`` (the process's own comm, i.e. the main thread's) or starting
    with ``qemu-system-`` is "main". Prefer :func:`classify_thread` when the tid is known: QEMU's
    ``call_rcu`` thread starts before ``debug-threads`` takes effect and also keeps the process
    name.
    """
    if process_comm is not None and comm == process_comm:
        return MAIN
    cls = _EXACT.get(comm)
    if cls is not None:
        return cls
    if _VCPU.match(comm):
        return VCPU
    for prefix, cls in _PREFIXES:
        if comm.startswith(prefix):
            return cls
    return OTHER


def classify_thread(tid: int, comm: str, pid: int, process_comm: str | None = None) -> str:
    """The class of thread ``tid`` of process ``pid`` (pure): main is exactly tid == pid.

    Any other thread that carries the process name (call_rcu, library threads that never named
    themselves) is "other".
    """
    if tid == pid:
        return MAIN
    cls = classify(comm, process_comm)
    return OTHER if cls == MAIN else cls


# --------------------------------------------------------------------------------------------
# The probe: standard library only, also run as a script on remote hosts.
# --------------------------------------------------------------------------------------------

def parse_stat(data: bytes) -> tuple[str, str, int] | None:
    """``(comm, state, utime + stime)`` from one ``/proc/.../stat`` line; None if malformed.

    comm sits between the first ``(`` and the last ``)`` and may itself hold spaces, parentheses
    and even newlines; the numeric fields follow the last ``)``: state is field 3, utime and
    stime are fields 14 and 15 (proc(5)).
    """
    lp = data.find(b"(")
    rp = data.rfind(b")")
    if lp < 0 or rp < lp:
        return None
    rest = data[rp + 1:].split()
    if len(rest) < 13:
        return None
    try:
        ticks = int(rest[11]) + int(rest[12])
    except ValueError:
        return None
    return data[lp + 1:rp].decode("utf-8", "replace"), rest[0].decode("ascii", "replace"), ticks


def _read(path: str) -> bytes | None:
    # os.open/os.read: a third of the cost of open().read() for these tiny files, and the
    # sampler's own CPU is the budget (< 1% of a core).
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # thread or process exited between listing and reading
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_threads(pid: int, proc_root: str = "/proc") -> list[tuple[int, str, int]] | None:
    """``[(tid, comm, ticks)]`` of every live thread of ``pid``; None once the process is gone.

    Gone includes "exited but not yet reaped": only zombie (Z) or dead (X) threads are left.
    """
    task_dir = f"{proc_root}/{pid}/task"
    try:
        names = os.listdir(task_dir)
    except OSError:
        return None
    out = []
    for name in names:
        if not name.isdigit():
            continue
        data = _read(f"{task_dir}/{name}/stat")
        if data is None:
            continue
        parsed = parse_stat(data)
        if parsed is not None and parsed[1] not in ("Z", "X", "x"):
            out.append((int(name), parsed[0], parsed[2]))
    if not out:
        return None
    out.sort()
    return out


def process_comm(pid: int, proc_root: str = "/proc") -> str | None:
    """The process's comm (the main thread's name); None if it does not exist."""
    data = _read(f"{proc_root}/{pid}/comm")
    if data is None:
        return None
    return data.decode("utf-8", "replace").rstrip("\n")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))  # ASCII: safe under any remote locale


def sample_loop(pid: int, hz: float, emit: Callable[[str], None], *,
                proc_root: str = "/proc", duration: float | None = None,
                stop: Callable[[float], bool] | None = None) -> None:
    """Sample ``pid`` at ``hz`` and ``emit`` the JSON lines (header, samples, trailer).

    Ends when the process is gone ("exited"), after ``duration`` seconds ("duration"), or when
    ``stop(timeout)`` returns True ("stopped"); ``stop`` also does the waiting between samples,
    so a stop request is seen at once. Samples are scheduled on absolute monotonic deadlines:
    a late sample does not shift the ones after it, and missed slots are skipped, not bunched.
    """
    period = 1.0 / hz
    cpu0 = time.thread_time()
    pcomm = process_comm(pid, proc_root)
    emit(_dumps({"pid": pid, "hz": hz, "clk_tck": os.sysconf("SC_CLK_TCK"),
                 "comm": pcomm, "v": STREAM_VERSION}))
    start = time.monotonic()
    end = start + duration if duration is not None else None
    n = 0
    reason = "exited"
    slot = 0
    while True:
        threads = read_threads(pid, proc_root) if pcomm is not None else None
        if threads is None:
            break
        emit(_dumps({"t": round(time.time(), 4), "threads": [
            {"tid": tid, "comm": comm, "ticks": ticks} for tid, comm, ticks in threads]}))
        n += 1
        now = time.monotonic()
        slot = max(slot + 1, int((now - start) / period) + 1)
        wake = start + slot * period
        if end is not None and wake > end:
            reason = "duration"
            break
        timeout = max(0.0, wake - now)
        if stop is not None:
            if stop(timeout):
                reason = "stopped"
                break
        else:
            time.sleep(timeout)
    emit(_dumps({"end": round(time.time(), 4), "reason": reason,
                 "cpu_s": round(time.thread_time() - cpu0, 6), "samples": n}))


def _stdin_closed(timeout: float) -> bool:
    """Wait up to ``timeout`` s; True once stdin reaches EOF (the harness closed the pipe)."""
    ready, _, _ = select.select([sys.stdin.buffer], [], [], timeout)
    if not ready:
        return False
    return os.read(sys.stdin.fileno(), 4096) == b""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the probe; see the module docstring for the stream format."""
    ap = argparse.ArgumentParser(description="Stream per-thread CPU ticks of a process as JSON.")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--hz", type=float, default=DEFAULT_HZ)
    ap.add_argument("--duration", type=float, default=None,
                    help="stop after this many seconds (a deadline for unattended runs)")
    ap.add_argument("--until-eof", action="store_true",
                    help="stop when stdin closes (how the harness stops a remote probe)")
    ap.add_argument("--proc-root", default="/proc")
    args = ap.parse_args(argv)
    if not 0 < args.hz <= 1000:
        ap.error("--hz must be in (0, 1000]")
    out = sys.stdout

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    try:
        sample_loop(args.pid, args.hz, emit, proc_root=args.proc_root, duration=args.duration,
                    stop=_stdin_closed if args.until_eof else None)
    except BrokenPipeError:  # the reader went away (ssh closed): nothing left to tell anyone
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130
    return 0


# --------------------------------------------------------------------------------------------
# Harness side: parse the stream, run the probe locally or through a command prefix (ssh).
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThreadTicks:
    tid: int
    comm: str
    ticks: int  # utime + stime, in clock ticks since the thread started


@dataclass(frozen=True)
class CpuSample:
    t: float  # epoch seconds on the sampled host
    threads: tuple[ThreadTicks, ...]


@dataclass
class CpuTrace:
    """What one probe run produced: the header's facts, the samples, the trailer's facts."""

    pid: int
    clk_tck: int
    hz: float
    process_comm: str | None
    samples: list[CpuSample] = field(default_factory=list)
    end_reason: str | None = None  # exited | duration | stopped; None if the stream was cut
    sampler_cpu_s: float | None = None  # the probe's own CPU time, from the trailer

    def to_lines(self) -> list[str]:
        """The trace as the probe's JSON lines (for storage; :func:`parse_stream` reads it)."""
        lines = [_dumps({"pid": self.pid, "hz": self.hz, "clk_tck": self.clk_tck,
                         "comm": self.process_comm, "v": STREAM_VERSION})]
        for s in self.samples:
            lines.append(_dumps({"t": s.t, "threads": [
                {"tid": th.tid, "comm": th.comm, "ticks": th.ticks} for th in s.threads]}))
        if self.end_reason is not None:
            lines.append(_dumps({"end": self.samples[-1].t if self.samples else 0.0,
                                 "reason": self.end_reason, "cpu_s": self.sampler_cpu_s,
                                 "samples": len(self.samples)}))
        return lines


class CpuStreamError(ValueError):
    """The probe's output is not a stream this version understands (no header, wrong version)."""


def parse_stream(lines: Iterable[str]) -> CpuTrace:
    """Build a :class:`CpuTrace` from the probe's output lines.

    A malformed line is skipped: the last line of a stream cut by a kill is often partial, and
    one lost sample costs one interval, not the run.

    :raise CpuStreamError: no header line, or a stream version this harness does not know.
    """
    trace: CpuTrace | None = None
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if trace is None:
            if "pid" not in obj or "clk_tck" not in obj:
                raise CpuStreamError(f"cpu probe stream starts without a header: {raw[:120]!r}")
            if obj.get("v") != STREAM_VERSION:
                raise CpuStreamError(f"cpu probe stream version {obj.get('v')!r}, "
                                     f"this harness reads {STREAM_VERSION}")
            trace = CpuTrace(pid=int(obj["pid"]), clk_tck=int(obj["clk_tck"]),
                             hz=float(obj.get("hz", DEFAULT_HZ)), process_comm=obj.get("comm"))
        elif "t" in obj:
            try:
                threads = tuple(ThreadTicks(int(d["tid"]), str(d["comm"]), int(d["ticks"]))
                                for d in obj["threads"])
                trace.samples.append(CpuSample(float(obj["t"]), threads))
            except (KeyError, TypeError, ValueError):
                continue
        elif "end" in obj:
            trace.end_reason = str(obj.get("reason"))
            cpu = obj.get("cpu_s")
            trace.sampler_cpu_s = float(cpu) if cpu is not None else None
    if trace is None:
        raise CpuStreamError("cpu probe produced no output (is python3 on the host, the pid alive?)")
    return trace


def probe_source() -> str:
    """This file's text, for ``python3 -c`` on a host where migbench is not installed."""
    return Path(__file__).read_text()


def probe_argv(pid: int, hz: float = DEFAULT_HZ, *, python: str = "python3",
               duration: float | None = None, until_eof: bool = True,
               inline: bool = True, proc_root: str = "/proc") -> list[str]:
    """The probe's argv: ``python3 -c SOURCE --pid N --hz H [...]`` (or ``python3 cpu.py ...``).

    For SSH, join it with :func:`shlex.join` into the one remote command string.
    """
    argv = [python, "-c", probe_source()] if inline else [python, str(Path(__file__))]
    argv += ["--pid", str(pid), "--hz", f"{hz:g}"]
    if duration is not None:
        argv += ["--duration", f"{duration:g}"]
    if until_eof:
        argv.append("--until-eof")
    if proc_root != "/proc":
        # One word: argparse would take a separate value starting with '-' for an option.
        argv.append(f"--proc-root={proc_root}")
    return argv


class CpuSampler:
    """Samples a QEMU process's threads in the background; :meth:`stop` returns the trace.

    ``CpuSampler(pid)`` runs the probe loop in a thread of this process (local QEMU).
    ``CpuSampler(pid, remote=["ssh", "-o", "BatchMode=yes", "host"])`` runs the same loop as
    ``python3 -c`` behind that command prefix and stops it by closing its stdin. ``remote=[]``
    runs the probe as a local subprocess. With a prefix, the probe command is passed as one
    shell-quoted string, as ``ssh`` expects. Like a QEMUMachine: the constructor records,
    ``start`` acts, ``stop`` is idempotent and always safe; as a context manager, ``with`` stops
    it and ``stop()`` afterwards returns the trace. ``max_duration`` is the probe's own deadline,
    so a lost harness never leaves it running. Sample times are the *sampled* host's clock: for
    a remote host, windows given to :func:`summarise` are only as good as the hosts' NTP sync.
    """

    def __init__(self, pid: int, hz: float = DEFAULT_HZ, *, proc_root: str = "/proc",
                 remote: Sequence[str] | None = None, python: str = "python3",
                 max_duration: float = 3600.0) -> None:
        if not 0 < hz <= 1000:
            raise ValueError(f"hz must be in (0, 1000], got {hz}")
        self.pid = pid
        self.hz = hz
        self.proc_root = proc_root
        self.remote = list(remote) if remote is not None else None
        self.python = python
        self.max_duration = max_duration
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()  # first sample (or end of stream) arrived
        self._stderr = ""
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._trace: CpuTrace | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_quietly()

    def _emit(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
        if line.startswith(('{"t"', '{"end"')):
            self._ready.set()

    def start(self, timeout: float = 20.0) -> None:
        """Begin sampling; returns once the first sample is in, so a window that starts
        after ``start()`` is covered.

        :raise ProcessLookupError: (local) there is no process ``pid``.
        :raise OSError: (subprocess/remote) the command prefix could not be started.
        :raise CpuStreamError: the probe gave no sample within ``timeout`` s or exited first;
            the message carries its stderr (ssh's or python's complaint).
        """
        if self._thread is not None:
            return
        if self.remote is None:
            if process_comm(self.pid, self.proc_root) is None:
                raise ProcessLookupError(f"cpu sampler: no process {self.pid} under "
                                         f"{self.proc_root}")
            self._thread = threading.Thread(target=self._run_local, name=f"cpu-{self.pid}",
                                            daemon=True)
        else:
            cmd = probe_argv(self.pid, self.hz, python=self.python,
                             duration=self.max_duration, proc_root=self.proc_root)
            argv = [*self.remote, shlex.join(cmd)] if self.remote else cmd
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, bufsize=1)
            self._thread = threading.Thread(target=self._read_proc, args=(self._proc.stdout,),
                                            name=f"cpu-{self.pid}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop_quietly()
            raise CpuStreamError(f"cpu probe for pid {self.pid} gave no sample in {timeout:g} s"
                                 + self._stderr_tail())
        if self.snapshot() is None:  # the probe exited without a header
            self.stop_quietly()
            raise CpuStreamError(f"cpu probe for pid {self.pid} produced no output"
                                 + self._stderr_tail())

    def _run_local(self) -> None:
        sample_loop(self.pid, self.hz, self._emit, proc_root=self.proc_root,
                    duration=self.max_duration, stop=self._stop.wait)

    def _read_proc(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._emit(line)
        self._ready.set()  # EOF: the probe is gone, whatever it said

    def _stderr_tail(self) -> str:
        err = self._stderr.strip()
        return f"; stderr: {err}" if err else ""

    def snapshot(self) -> CpuTrace | None:
        """The samples so far (None before the header arrived)."""
        with self._lock:
            lines = list(self._lines)
        try:
            return parse_stream(lines)
        except CpuStreamError:
            return None

    def _halt(self, timeout: float) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None:
            try:
                if proc.stdin is not None and not proc.stdin.closed:
                    proc.stdin.close()  # --until-eof: the probe writes its trailer and exits
                proc.wait(timeout)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait(timeout)
            if proc.stderr is not None and not proc.stderr.closed:
                self._stderr = proc.stderr.read()[-2000:]
                proc.stderr.close()
        if self._thread is not None:
            self._thread.join(timeout)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def stop_quietly(self, timeout: float = 5.0) -> None:
        """Stop without building a trace (cleanup paths); idempotent."""
        self._halt(timeout)

    def stop(self, timeout: float = 5.0) -> CpuTrace:
        """Stop sampling and return the trace; idempotent.

        :raise CpuStreamError: the probe produced no usable stream; the message has its stderr.
        """
        if self._trace is not None:
            return self._trace
        self._halt(timeout)
        with self._lock:
            lines = list(self._lines)
        try:
            self._trace = parse_stream(lines)
        except CpuStreamError as exc:
            raise CpuStreamError(f"{exc}{self._stderr_tail()}") from None
        return self._trace


# --------------------------------------------------------------------------------------------
# Pure analysis.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """CPU seconds each thread used between two consecutive samples."""

    t0: float
    t1: float
    cpu_s: dict[int, float]  # tid -> CPU seconds in (t0, t1]
    comm: dict[int, str]  # tid -> name at t1


def intervals(trace: CpuTrace) -> list[Interval]:
    """Per-interval CPU seconds of every thread (pure).

    A thread absent from the earlier sample was born inside the interval, so all its ticks
    count there; a thread absent from the later sample died inside it, and the ticks it used
    since the earlier sample are lost (the kernel keeps no record). Ticks that go down mean a
    reused tid: a new thread, counted from zero.
    """
    out = []
    tck = float(trace.clk_tck)
    for a, b in zip(trace.samples, trace.samples[1:]):
        if b.t <= a.t:
            continue
        before = {th.tid: th.ticks for th in a.threads}
        cpu: dict[int, float] = {}
        comm: dict[int, str] = {}
        for th in b.threads:
            prev = before.get(th.tid, 0)
            delta = th.ticks - prev if th.ticks >= prev else th.ticks
            cpu[th.tid] = delta / tck
            comm[th.tid] = th.comm
        out.append(Interval(a.t, b.t, cpu, comm))
    return out


def summarise(trace: CpuTrace, start: float, end: float, top: int = 16) -> dict[str, Any]:
    """CPU% per class and the busiest threads over ``[start, end]`` (epoch s; pure).

    100% is one core. Intervals straddling an edge count pro rata. ``window_s`` is the part of
    the window the samples cover (what the percentages are averaged over); ``samples`` counts
    samples taken inside the window. Every class that had a thread in the window appears, so
    ``compress: 0.0`` (present, idle) differs from no ``compress`` key (no such threads).
    """
    covered = 0.0
    per_tid: dict[int, float] = {}
    names: dict[int, str] = {}
    for iv in intervals(trace):
        lo, hi = max(iv.t0, start), min(iv.t1, end)
        if hi <= lo:
            continue
        frac = (hi - lo) / (iv.t1 - iv.t0)
        covered += hi - lo
        for tid, cpu in iv.cpu_s.items():
            per_tid[tid] = per_tid.get(tid, 0.0) + cpu * frac
            names[tid] = iv.comm[tid]
    classes: dict[str, float] = {}
    threads: list[dict[str, Any]] = []
    for tid, cpu in per_tid.items():
        cls = classify_thread(tid, names[tid], trace.pid, trace.process_comm)
        pct = 100.0 * cpu / covered if covered > 0 else 0.0
        classes[cls] = classes.get(cls, 0.0) + pct
        threads.append({"tid": tid, "comm": names[tid], "class": cls, "pct": round(pct, 2)})
    threads.sort(key=lambda d: (-float(d["pct"]), int(d["tid"])))
    return {
        "classes": {c: round(classes[c], 2) for c in CLASSES if c in classes},
        "threads": threads[:top],
        "window_s": round(covered, 3),
        "samples": sum(1 for s in trace.samples if start <= s.t <= end),
    }


def timeline(trace: CpuTrace, start: float | None = None,
             end: float | None = None) -> list[dict[str, Any]]:
    """CPU% per class for each interval, for storage (pure): ``[{"t": epoch, "classes": {}}]``.

    ``t`` is the interval's end; classes at 0% are left out to keep it compact. ``start`` /
    ``end`` keep only intervals ending inside that range.
    """
    out = []
    for iv in intervals(trace):
        if (start is not None and iv.t1 < start) or (end is not None and iv.t1 > end):
            continue
        dt = iv.t1 - iv.t0
        classes: dict[str, float] = {}
        for tid, cpu in iv.cpu_s.items():
            if cpu <= 0:
                continue
            cls = classify_thread(tid, iv.comm[tid], trace.pid, trace.process_comm)
            classes[cls] = classes.get(cls, 0.0) + 100.0 * cpu / dt
        out.append({"t": round(iv.t1, 3),
                    "classes": {c: round(classes[c], 1) for c in CLASSES if c in classes}})
    return out


if __name__ == "__main__":
    sys.exit(main())
