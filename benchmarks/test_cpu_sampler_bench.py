"""The per-thread CPU sampler's own cost: it must stay under 1% of one core at 10 Hz.

Run: ``.venv/bin/pytest benchmarks/test_cpu_sampler_bench.py``. The target is a Python process
with 10 extra threads (11 tasks, about what an idle 1-vCPU QEMU 10.0 has with multifd).

* ``test_one_sample``: pytest-benchmark times one sample (list the tasks, read and parse every
  stat file, encode the JSON line); 10 of them a second is the cost at 10 Hz.
* ``test_sampler_thread_10hz`` / ``test_probe_subprocess_10hz``: sample for real at 10 Hz for a
  few seconds and divide the CPU time used by the wall time: the in-process thread (thread CPU
  time; the local mode) and the ``python3 -c`` probe (its own loop, from the trailer, and the
  whole child including interpreter start-up, from getrusage; the remote mode).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.hosts.host import pipe_stream
from harness.run.sampling.cpu import CpuSampler
from harness.run.sampling.cpuprobe import read_threads

THREADS = 10
SECONDS = 3.0
BUDGET = 0.01  # of one core

TARGET = f"""
import threading, time
def spin():
    while True:
        time.sleep(0.01)
for _ in range({THREADS}):
    threading.Thread(target=spin, daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def target() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        threads = read_threads(proc.pid)
        assert threads is not None and len(threads) == THREADS + 1
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def report(benchmark: Any, name: str, cpu_s: float, wall_s: float) -> float:
    frac = cpu_s / wall_s
    benchmark.extra_info[name] = round(100 * frac, 4)  # % of one core
    print(f"\n{name}: {cpu_s * 1000:.2f} ms CPU over {wall_s:.2f} s = {100 * frac:.3f}% of a core")
    return frac


def test_one_sample(benchmark: Any, target: int) -> None:
    def one() -> str:
        threads = read_threads(target)
        assert threads is not None
        return json.dumps({"t": time.time(), "threads": [
            {"tid": t, "comm": c, "ticks": k} for t, c, k in threads]}, separators=(",", ":"))

    benchmark(one)
    per_sample = benchmark.stats.stats.mean
    frac = report(benchmark, "one_sample_x10hz_pct", per_sample * 10, 1.0)
    assert frac < BUDGET


def test_sampler_thread_10hz(benchmark: Any, target: int) -> None:
    def run() -> tuple[float, float]:
        t0 = time.monotonic()
        with CpuSampler(target, hz=10) as s:
            time.sleep(SECONDS)
        tr = s.stop()
        wall = time.monotonic() - t0
        assert tr.sampler_cpu_s is not None and len(tr.samples) >= SECONDS * 10 * 0.9
        return tr.sampler_cpu_s, wall

    cpu_s, wall = benchmark.pedantic(run, rounds=3, iterations=1)
    frac = report(benchmark, "thread_10hz_pct", cpu_s, wall)
    assert frac < BUDGET


def test_probe_subprocess_10hz(benchmark: Any, target: int) -> None:
    def run() -> tuple[float, float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        with CpuSampler(target, hz=10, stream=pipe_stream, python=sys.executable) as s:
            time.sleep(SECONDS)
        tr = s.stop()
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        whole = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert tr.sampler_cpu_s is not None and len(tr.samples) >= SECONDS * 10 * 0.8
        return tr.sampler_cpu_s, whole, wall

    loop_s, whole_s, wall = benchmark.pedantic(run, rounds=3, iterations=1)
    loop = report(benchmark, "probe_loop_10hz_pct", loop_s, wall)
    report(benchmark, "probe_with_startup_pct", whole_s, wall)
    assert loop < BUDGET
