"""Per-thread CPU sampler: stat parsing, classification, the probe loop on a fake /proc, summaries."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.hosts.host import LineStream, pipe_stream, shell_line
from harness.results.record.threadclass import CLASSES, classify, classify_thread
from harness.run.sampling import cpu, cpuprobe
from harness.run.sampling.cpu import (
    CpuSample,
    CpuSampler,
    CpuStreamError,
    CpuTrace,
    ThreadTicks,
    parse_stream,
    summarise,
    timeline,
)
from harness.run.sampling.cpuprobe import parse_stat, read_threads, sample_loop

PID = 4242


class FakeProc:
    """A fake /proc holding one process whose threads' ticks the test sets."""

    def __init__(self, root: Path, pid: int = PID, comm: str = "qemu-system-x86") -> None:
        self.root = root
        self.pid = pid
        (root / str(pid) / "task").mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")

    def set(self, tid: int, comm: str, utime: int, stime: int = 0, state: str = "S") -> None:
        d = self.root / str(self.pid) / "task" / str(tid)
        d.mkdir(exist_ok=True)
        # 52 fields as in proc(5); utime/stime are fields 14/15.
        rest = [state, "1", str(self.pid), str(self.pid), "0", "-1", "4194368", "3", "0", "0",
                "0", str(utime), str(stime)] + ["0"] * 37
        (d / "stat").write_bytes(f"{tid} ({comm}) ".encode() + " ".join(rest).encode() + b"\n")
        (d / "comm").write_text(comm + "\n")

    def remove(self, tid: int) -> None:
        d = self.root / str(self.pid) / "task" / str(tid)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def trace(*samples: tuple[float, list[tuple[int, str, int]]], pid: int = PID,
          clk_tck: int = 100) -> CpuTrace:
    return CpuTrace(pid=pid, clk_tck=clk_tck, hz=10.0, process_comm="qemu-system-x86",
                    samples=[CpuSample(t, tuple(ThreadTicks(*th) for th in ths))
                             for t, ths in samples])


# -- stat parsing --------------------------------------------------------------------------

def test_parse_stat_plain_line() -> None:
    line = (b"13960 (CPU 0/TCG) S 13912 13912 7551 0 -1 138412224 9 0 0 0 1234 56 0 0 20 0 "
            b"3 0 100 0 0\n")
    assert parse_stat(line) == ("CPU 0/TCG", "S", 1290)


@pytest.mark.parametrize("comm", ["a b", "x) (y", "))", "(", "a) S 1 2 3 4 5 6 7 8 9 10 11 12"])
def test_parse_stat_comm_with_spaces_and_parentheses(tmp_path: Path, comm: str) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID + 1, comm, utime=70, stime=5)
    data = (tmp_path / str(PID) / "task" / str(PID + 1) / "stat").read_bytes()
    assert parse_stat(data) == (comm, "S", 75)


@pytest.mark.parametrize("data", [b"", b"123 no parens S 1 2", b"1 (x) S 1 2 3", b")( 1 2",
                                  b"1 (x) S 1 2 3 4 5 6 7 8 9 10 ab cd"])
def test_parse_stat_malformed_is_none(data: bytes) -> None:
    assert parse_stat(data) is None


def test_read_threads_lists_live_threads_sorted(tmp_path: Path) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID + 2, "CPU 0/TCG", 300, 20)
    fp.set(PID, "qemu-system-x86", 10, 5)
    fp.set(PID + 1, "call_rcu (z)", 0, 1)
    fp.set(PID + 3, "worker", 4, 0, state="Z")  # an exited thread not reaped yet
    assert read_threads(PID, str(tmp_path)) == [
        (PID, "qemu-system-x86", 15), (PID + 1, "call_rcu (z)", 1), (PID + 2, "CPU 0/TCG", 320)]


def test_read_threads_gone_process_is_none(tmp_path: Path) -> None:
    assert read_threads(1, str(tmp_path)) is None
    fp = FakeProc(tmp_path)
    fp.set(PID, "qemu-system-x86", 10, state="Z")  # exited, parent has not waited yet
    assert read_threads(PID, str(tmp_path)) is None


# -- classification ------------------------------------------------------------------------

QEMU_7 = {
    "qemu-system-x86": "main",
    "live_migration": "migration",
    "return path": "migration",
    "bg_snapshot": "migration",
    "multifd-tls-han": "migration",  # multifd-tls-handshake-worker, truncated
    "compress": "compress",
    "decompress": "decompress",
    "multifdsend_0": "multifd_send",
    "multifdsend_15": "multifd_send",
    "multifdsend_123": "multifd_send",  # 15 bytes, the most that fits
    "multifdrecv_3": "multifd_recv",
    "postcopy/listen": "postcopy",
    "postcopy/fault": "postcopy",
    "fault-default": "postcopy",
    "fault-fast": "postcopy",
    "CPU 0/TCG": "vcpu",
    "CPU 11/KVM": "vcpu",
    "ALL CPUs/TCG": "vcpu",
    "worker": "other",
    "call_rcu": "other",
    "IO iothread0": "other",
    "vnc_worker": "other",
}

QEMU_10 = {
    "mig/src/main": "migration",
    "mig/src/rp-thr": "migration",
    "mig/src/return": "migration",
    "mig/src/tls": "migration",
    "mig/snapshot": "migration",
    "mig/dst/colo": "migration",
    "mig/src/send_0": "multifd_send",
    "mig/src/send_10": "multifd_send",  # 15 bytes
    "mig/dst/recv_7": "multifd_recv",
    "mig/dst/recv_15": "multifd_recv",
    "mig/dst/listen": "postcopy",
    "mig/dst/fault": "postcopy",
    "mig/dst/preempt": "postcopy",
    "CPU 1/TCG": "vcpu",
    "CPU 0/HVF": "vcpu",
    "qemu-system-aar": "main",
    "gmain": "other",
    "pool-spawner": "other",
}


@pytest.mark.parametrize(("comm", "cls"), sorted(QEMU_7.items()))
def test_classify_qemu_7_names(comm: str, cls: str) -> None:
    assert classify(comm) == cls


@pytest.mark.parametrize(("comm", "cls"), sorted(QEMU_10.items()))
def test_classify_qemu_10_names(comm: str, cls: str) -> None:
    assert classify(comm) == cls


def test_classify_every_result_is_a_known_class() -> None:
    for comm in [*QEMU_7, *QEMU_10, "", "CPU", "mig", "compressor"]:
        assert classify(comm) in CLASSES
    assert classify("compressor") == "other"  # exact names, not prefixes, for compress


def test_classify_process_comm_is_main() -> None:
    assert classify("mb-src-1", process_comm="mb-src-1") == "main"
    assert classify("mb-src-1") == "other"


def test_classify_thread_main_is_the_pid() -> None:
    # QEMU's call_rcu starts before debug-threads applies and keeps the process name.
    assert classify_thread(PID, "qemu-system-x86", PID, "qemu-system-x86") == "main"
    assert classify_thread(PID + 1, "qemu-system-x86", PID, "qemu-system-x86") == "other"
    assert classify_thread(PID + 2, "CPU 0/TCG", PID, "qemu-system-x86") == "vcpu"
    assert classify_thread(PID, "renamed", PID, "qemu-system-x86") == "main"


# -- the probe loop on a fake /proc ----------------------------------------------------------

def test_sample_loop_streams_header_samples_trailer_with_threads_coming_and_going(
        tmp_path: Path) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID, "qemu-system-x86", 100)
    fp.set(PID + 1, "CPU 0/TCG", 500)
    def born() -> None:  # before sample 2
        fp.set(PID + 2, "mig/src/main", 3)

    def vcpu_gone() -> None:  # before sample 3
        fp.set(PID + 2, "mig/src/main", 9)
        fp.remove(PID + 1)

    steps: list[Callable[[], None]] = [born, vcpu_gone, lambda: None]
    lines: list[str] = []

    def stop(timeout: float) -> bool:
        if not steps:
            return True
        steps.pop(0)()
        return False

    sample_loop(PID, 10.0, lines.append, proc_root=str(tmp_path), stop=stop)
    head = json.loads(lines[0])
    assert head["pid"] == PID and head["comm"] == "qemu-system-x86" and head["v"] == 1
    assert head["clk_tck"] > 0
    assert json.loads(lines[-1])["reason"] == "stopped"
    assert json.loads(lines[-1])["samples"] == 4
    tr = parse_stream(lines)
    tids = [[th.tid for th in s.threads] for s in tr.samples]
    assert tids == [[PID, PID + 1], [PID, PID + 1, PID + 2], [PID, PID + 2], [PID, PID + 2]]
    assert [th.ticks for th in tr.samples[2].threads] == [100, 9]
    assert tr.end_reason == "stopped" and tr.sampler_cpu_s is not None
    for ln in lines:
        assert "\n" not in ln and ": " not in ln  # one compact line each


def test_sample_loop_ends_when_process_exits(tmp_path: Path) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID, "qemu-system-x86", 1)
    lines: list[str] = []

    def stop(timeout: float) -> bool:
        fp.set(PID, "qemu-system-x86", 1, state="Z")
        return False

    sample_loop(PID, 1000.0, lines.append, proc_root=str(tmp_path), stop=stop)
    assert len(parse_stream(lines).samples) == 1
    assert json.loads(lines[-1])["reason"] == "exited"


def test_sample_loop_missing_process_gives_header_and_trailer(tmp_path: Path) -> None:
    lines: list[str] = []
    sample_loop(999, 10.0, lines.append, proc_root=str(tmp_path), duration=1.0)
    tr = parse_stream(lines)
    assert tr.process_comm is None and tr.samples == [] and tr.end_reason == "exited"


def test_main_cli_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID, "qemu-system-x86", 1)
    assert cpuprobe.main(["--pid", str(PID), "--hz", "50", "--duration", "0.1",
                     "--proc-root", str(tmp_path)]) == 0
    tr = parse_stream(capsys.readouterr().out.splitlines())
    assert 5 <= len(tr.samples) <= 7  # t=0, 20 ms, ... 100 ms
    assert tr.end_reason == "duration"


def test_probe_argv_is_self_contained() -> None:
    argv = cpu.probe_argv(123, 10, duration=60)
    assert argv[:2] == ["python3", "-c"]
    assert argv[3:] == ["--pid", "123", "--hz", "10", "--duration", "60", "--until-eof"]
    # the probe part imports nothing from the harness
    assert "from harness" not in argv[2] and "import harness" not in argv[2]
    assert cpu.probe_argv(1, 2.5, inline=False, until_eof=False)[1].endswith("cpuprobe.py")


# -- CpuSampler ----------------------------------------------------------------------------

def test_sampler_thread_mode_on_fake_proc(tmp_path: Path) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID, "qemu-system-x86", 1)
    with CpuSampler(PID, hz=100, proc_root=str(tmp_path)) as s:
        fp.set(PID + 1, "CPU 0/TCG", 7)
        time.sleep(0.1)
        snap = s.snapshot()
        assert snap is not None and snap.pid == PID
    tr = s.stop()
    assert tr is s.stop()  # idempotent
    assert tr.end_reason == "stopped"
    assert len(tr.samples) >= 3
    assert any(th.comm == "CPU 0/TCG" for th in tr.samples[-1].threads)


def test_sampler_missing_pid(tmp_path: Path) -> None:
    with pytest.raises(ProcessLookupError, match="no process 7"):
        CpuSampler(7, proc_root=str(tmp_path)).start()
    with pytest.raises(ValueError, match="hz"):
        CpuSampler(7, hz=0)


def _through_a_shell(argv: Sequence[str]) -> LineStream:
    """The probe as one quoted command line parsed by a shell, as SshHost.stream sends it."""
    return pipe_stream(["sh", "-c", shell_line(argv)])


@pytest.mark.parametrize("stream", [pipe_stream, _through_a_shell],
                         ids=["subprocess", "quoted-line-like-ssh"])
def test_sampler_subprocess_and_quoted_command_line(
        tmp_path: Path, stream: Callable[[Sequence[str]], LineStream]) -> None:
    fp = FakeProc(tmp_path)
    fp.set(PID, "qemu-system-x86", 1)
    fp.set(PID + 1, "weird ) (name", 2)
    s = CpuSampler(PID, hz=50, proc_root=str(tmp_path), stream=stream, python=sys.executable)
    s.start()
    deadline = time.monotonic() + 10
    while (snap := s.snapshot()) is None or len(snap.samples) < 3:
        assert time.monotonic() < deadline, "probe subprocess produced no samples"
        time.sleep(0.05)
    tr = s.stop()
    assert tr.end_reason == "stopped"  # closed stdin -> trailer written
    assert tr.sampler_cpu_s is not None
    assert {th.comm for th in tr.samples[0].threads} == {"qemu-system-x86", "weird ) (name"}


def test_sampler_bad_remote_reports_stderr(tmp_path: Path) -> None:
    s = CpuSampler(PID, stream=_through_a_shell, python="/nonexistent/python3")
    with pytest.raises(CpuStreamError, match="no output; stderr: .*nonexistent"):
        s.start()
    s.stop_quietly()  # still safe after a failed start


# -- stream parsing --------------------------------------------------------------------------

def test_parse_stream_skips_partial_last_line_and_noise() -> None:
    lines = [
        '{"pid":1,"hz":10,"clk_tck":100,"comm":"q","v":1}',
        "",
        "not json",
        '{"t":1.0,"threads":[{"tid":1,"comm":"q","ticks":5}]}',
        '{"t":1.1,"threads":[{"tid":1}]}',  # malformed sample
        '{"t":1.2,"threads":[{"tid":1,"comm":"q","ti',  # cut by a kill
    ]
    tr = parse_stream(lines)
    assert len(tr.samples) == 1 and tr.end_reason is None


def test_parse_stream_errors() -> None:
    with pytest.raises(CpuStreamError, match="no output"):
        parse_stream([])
    with pytest.raises(CpuStreamError, match="without a header"):
        parse_stream(['{"t":1.0,"threads":[]}'])
    with pytest.raises(CpuStreamError, match="version 9"):
        parse_stream(['{"pid":1,"clk_tck":100,"v":9}'])


def test_to_lines_round_trips() -> None:
    tr = trace((1.0, [(PID, "qemu-system-x86", 5)]), (1.1, [(PID, "qemu-system-x86", 6)]))
    tr.end_reason = "stopped"
    tr.sampler_cpu_s = 0.01
    back = parse_stream(tr.to_lines())
    assert back == tr


# -- summaries -------------------------------------------------------------------------------

def busy_trace() -> CpuTrace:
    """Main 20%, vCPU 100%, a migration thread born at t=1.05, a compress thread dying."""
    return trace(
        (1.0, [(PID, "qemu-system-x86", 100), (PID + 1, "CPU 0/TCG", 1000),
               (PID + 9, "compress", 50)]),
        (1.1, [(PID, "qemu-system-x86", 102), (PID + 1, "CPU 0/TCG", 1010),
               (PID + 2, "mig/src/main", 4), (PID + 9, "compress", 51)]),
        (1.2, [(PID, "qemu-system-x86", 104), (PID + 1, "CPU 0/TCG", 1020),
               (PID + 2, "mig/src/main", 12)]),
        (1.3, [(PID, "qemu-system-x86", 106), (PID + 1, "CPU 0/TCG", 1030),
               (PID + 2, "mig/src/main", 20), (PID + 3, "qemu-system-x86", 1)]),
    )


def test_summarise_whole_trace() -> None:
    s = summarise(busy_trace(), 0.0, 10.0)
    assert s["window_s"] == pytest.approx(0.3)
    assert s["samples"] == 4
    c = s["classes"]
    assert c["main"] == pytest.approx(20.0)
    assert c["vcpu"] == pytest.approx(100.0)
    # born in the first interval: its 4 ticks count there; then 8 + 8 ticks
    assert c["migration"] == pytest.approx(100 * 0.20 / 0.3, abs=0.01)
    # seen twice, then gone: only the interval between its samples counts
    assert c["compress"] == pytest.approx(100 * 0.01 / 0.3, abs=0.01)
    # call_rcu-like thread with the process name is "other", not main
    assert c["other"] == pytest.approx(100 * 0.01 / 0.3, abs=0.01)
    assert list(c) == ["main", "migration", "compress", "vcpu", "other"]  # canonical order
    top = s["threads"][0]
    assert top == {"tid": PID + 1, "comm": "CPU 0/TCG", "class": "vcpu", "pct": 100.0}
    assert set(s) == {"classes", "threads", "window_s", "samples"}


def test_summarise_window_counts_partial_intervals_pro_rata() -> None:
    s = summarise(busy_trace(), 1.15, 1.25)
    assert s["window_s"] == pytest.approx(0.1)
    assert s["samples"] == 1
    assert s["classes"]["vcpu"] == pytest.approx(100.0)
    assert s["classes"]["migration"] == pytest.approx(80.0)
    assert "compress" not in s["classes"]  # no compress thread lived in the window


def test_summarise_outside_and_empty() -> None:
    s = summarise(busy_trace(), 5.0, 6.0)
    assert s == {"classes": {}, "threads": [], "window_s": 0.0, "samples": 0}
    one = trace((1.0, [(PID, "q", 1)]))
    assert summarise(one, 0, 2)["samples"] == 1
    assert summarise(one, 0, 2)["classes"] == {}


def test_summarise_idle_class_is_present_with_zero() -> None:
    tr = trace((1.0, [(PID, "q", 1), (PID + 1, "decompress", 3)]),
               (2.0, [(PID, "q", 1), (PID + 1, "decompress", 3)]))
    assert summarise(tr, 0, 3)["classes"] == {"main": 0.0, "decompress": 0.0}


def test_summarise_tid_reuse_and_clock_ticks() -> None:
    tr = trace((1.0, [(PID, "q", 0), (PID + 5, "multifdsend_0", 900)]),
               (2.0, [(PID, "q", 0), (PID + 5, "multifdsend_1", 30)]), clk_tck=1000)
    s = summarise(tr, 0, 3)
    # ticks went down: a new thread with this tid, 30 ticks at 1000 Hz over 1 s
    assert s["classes"]["multifd_send"] == pytest.approx(3.0)
    assert s["threads"][0]["comm"] == "multifdsend_1"


def test_summarise_top_limit() -> None:
    ths = [(PID + i, f"mig/src/send_{i}", 0) for i in range(20)]
    ths2 = [(PID + i, f"mig/src/send_{i}", i) for i in range(20)]
    s = summarise(trace((1.0, ths), (2.0, ths2)), 0, 3, top=5)
    assert [t["tid"] for t in s["threads"]] == [PID + 19, PID + 18, PID + 17, PID + 16, PID + 15]


def test_timeline_shape() -> None:
    tl = timeline(busy_trace())
    assert [p["t"] for p in tl] == [1.1, 1.2, 1.3]
    assert tl[0]["classes"] == pytest.approx(
        {"main": 20.0, "migration": 40.0, "compress": 10.0, "vcpu": 100.0})
    assert "compress" not in tl[1]["classes"]  # zero classes left out
    assert timeline(busy_trace(), start=1.15, end=1.25) == [tl[1]]
    assert json.dumps(tl)  # plain JSON for storage
