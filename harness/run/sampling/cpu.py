"""Per-thread CPU usage of a QEMU process: running the /proc probe, its stream, and summaries.

* **The probe** (:mod:`harness.run.sampling.cpuprobe`, standard library only) runs on the host
  that runs QEMU and streams per-thread ticks as JSON lines.
* **The harness side** (:class:`CpuSampler`, :func:`parse_stream`, :func:`probe_argv`) runs the probe
  in a background thread of this process (local QEMU, cheapest) or as a stream a host starts
  (:meth:`harness.hosts.host.Host.stream`: a channel of the host's SSH connection for a remote
  QEMU, a subprocess here), and returns a :class:`CpuTrace`.
* **Pure analysis** (:func:`summarise`, :func:`timeline`): CPU% per thread class
  (:mod:`harness.results.record.threadclass`) over a window, where 100% is one core.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from harness.hosts.host import LineStream
from harness.results.record.threadclass import CLASSES, classify_thread
from harness.run.cancel import Stop
from harness.run.sampling import cpuprobe
from harness.run.sampling.cpuprobe import DEFAULT_HZ, STREAM_VERSION, process_comm, sample_loop

# --------------------------------------------------------------------------------------------
# Harness side: parse the stream, run the probe in a thread or as a host's stream (SSH).
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
        lines = [cpuprobe.dumps({"pid": self.pid, "hz": self.hz, "clk_tck": self.clk_tck,
                         "comm": self.process_comm, "v": STREAM_VERSION})]
        for s in self.samples:
            lines.append(cpuprobe.dumps({"t": s.t, "threads": [
                {"tid": th.tid, "comm": th.comm, "ticks": th.ticks} for th in s.threads]}))
        if self.end_reason is not None:
            lines.append(cpuprobe.dumps({"end": self.samples[-1].t if self.samples else 0.0,
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
    """The probe's source (:mod:`cpuprobe`), for ``python3 -c`` on a host without migbench."""
    return Path(cpuprobe.__file__).read_text()


def probe_argv(pid: int, hz: float = DEFAULT_HZ, *, python: str = "python3",
               duration: float | None = None, until_eof: bool = True,
               inline: bool = True, proc_root: str = "/proc") -> list[str]:
    """The probe's argv: ``python3 -c SOURCE --pid N --hz H [...]`` (or ``python3 cpuprobe.py ...``).

    Over SSH, the host joins it into the one remote command line (``host.shell_line``).
    """
    argv = [python, "-c", probe_source()] if inline else [python, cpuprobe.__file__]
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
    ``CpuSampler(pid, stream=host.cpu_sampler_stream())`` runs the same loop as ``python3 -c``
    through that stream (an SSH host: a channel of its connection; ``pipe_stream``: a local
    subprocess), reads it line by line in a thread, and stops it by closing its stdin (the
    probe writes its trailer and exits), or, if it has not ended ``timeout`` s later, by killing
    the stream (closing the channel ends the remote probe). Like a QEMUMachine: the constructor
    records, ``start`` acts, ``stop`` is idempotent and always safe; as a context manager,
    ``with`` stops it and ``stop()`` afterwards returns the trace. ``max_duration`` is the probe's own deadline,
    so a lost harness never leaves it running. Sample times are the *sampled* host's clock: for
    a remote host, windows given to :func:`summarise` are only as good as the hosts' NTP sync.
    ``stop`` (the run's): :meth:`start`'s wait for the first sample wakes on it, stops the
    probe and raises :class:`~harness.run.cancel.Cancelled`.
    """

    def __init__(self, pid: int, hz: float = DEFAULT_HZ, *, proc_root: str = "/proc",
                 stream: Callable[[Sequence[str]], LineStream] | None = None,
                 python: str = "python3",
                 max_duration: float = 3600.0, stop: Stop | None = None) -> None:
        if not 0 < hz <= 1000:
            raise ValueError(f"hz must be in (0, 1000], got {hz}")
        self.pid = pid
        self.hz = hz
        self.proc_root = proc_root
        self.start_stream = stream
        self.python = python
        self.max_duration = max_duration
        self.cancel = stop
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()  # first sample (or end of stream) arrived
        self._stderr = ""
        self._thread: threading.Thread | None = None
        self._stream: LineStream | None = None
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
        :raise OSError: (subprocess) the probe could not be started.
        :raise HostError: (SSH) the host is unreachable or its key is not the pinned one.
        :raise CpuStreamError: the probe gave no sample within ``timeout`` s or exited first;
            the message carries its stderr (the shell's or python's complaint).
        :raise Cancelled: the run's stop was set first (the probe is stopped).
        """
        if self._thread is not None:
            return
        if self.start_stream is None:
            if process_comm(self.pid, self.proc_root) is None:
                raise ProcessLookupError(f"cpu sampler: no process {self.pid} under "
                                         f"{self.proc_root}")
            self._thread = threading.Thread(target=self._run_local, name=f"cpu-{self.pid}",
                                            daemon=True)
        else:
            cmd = probe_argv(self.pid, self.hz, python=self.python,
                             duration=self.max_duration, proc_root=self.proc_root)
            self._stream = self.start_stream(cmd)
            self._thread = threading.Thread(target=self._read_stream, args=(self._stream,),
                                            name=f"cpu-{self.pid}", daemon=True)
        self._thread.start()
        cancel = self.cancel
        with cancel.waking(self._ready.set) if cancel else contextlib.nullcontext():
            ready = self._ready.wait(timeout)
        if cancel is not None and cancel.is_set():
            self.stop_quietly()
            cancel.check()
        if not ready:
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

    def _read_stream(self, stream: LineStream) -> None:
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
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close_input()  # --until-eof: the probe writes its trailer and exits
            if stream.wait(timeout) is None:
                stream.kill()
                stream.wait(timeout)
            self._stderr = stream.stderr()[-2000:]
        if self._thread is not None:
            self._thread.join(timeout)
        if stream is not None:
            stream.close()

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

