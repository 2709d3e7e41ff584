"""The CPU probe: per-thread CPU ticks of a process from /proc, as a stream of JSON lines.

It runs *on the host that runs QEMU*, which for a remote host means over SSH without migbench
installed there, so this file uses the standard library only and runs unchanged as
``python3 cpuprobe.py --pid N --hz 10`` or as ``python3 -c "$(cat cpuprobe.py)" --pid N --hz 10``
(:func:`harness.run.sampling.cpu.probe_argv`). It reads ``/proc/PID/task/*/stat`` at a fixed
rate and prints compact JSON lines: one header, one line per sample, one trailer::

    {"pid":123,"hz":10.0,"clk_tck":100,"comm":"qemu-system-x86","v":1}
    {"t":1712345678.1234,"threads":[{"tid":123,"comm":"qemu-system-x86","ticks":5123}, ...]}
    {"end":1712345690.0,"reason":"exited","cpu_s":0.031,"samples":118}

The thread name comes from the stat line itself (the kernel prints the same ``task->comm`` there
as in ``/proc/PID/task/TID/comm``), which halves the reads and keeps name and ticks consistent.
It is the text between the first ``(`` and the *last* ``)``: names may contain spaces and
parentheses. ``--until-eof`` stops the probe when its stdin closes, which is how the harness
stops a remote probe through SSH (EOF on its channel's stdin) and still gets the trailer.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

STREAM_VERSION = 1
DEFAULT_HZ = 10.0



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


def dumps(obj: Any) -> str:
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
    emit(dumps({"pid": pid, "hz": hz, "clk_tck": os.sysconf("SC_CLK_TCK"),
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
        emit(dumps({"t": round(time.time(), 4), "threads": [
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
    emit(dumps({"end": round(time.time(), 4), "reason": reason,
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
    except BrokenPipeError:  # the reader went away (channel closed): nothing left to tell anyone
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
