"""The run's stop: waits wake on it at once, and wakers registered while it is unset are called."""

from __future__ import annotations

import ast
import contextlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.hosts.host import LocalHost, SshHost, pipe_stream
from harness.plan.models import HostSpec
from harness.run.cancel import Cancelled, Stop
from harness.run.sampling.console import Console
from harness.run.sampling.cpu import CpuSampler


def _set_later(stop: Stop, after: float) -> None:
    threading.Timer(after, stop.set).start()


def test_sleep_wakes_at_once_when_stopped() -> None:
    stop = Stop()
    stop.sleep(0.01)  # not set: just sleeps
    _set_later(stop, 0.1)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        stop.sleep(30.0)
    assert time.monotonic() - started < 2.0
    with pytest.raises(Cancelled):
        stop.check()


def test_wakers_are_called_once_set_and_not_after_their_block() -> None:
    stop = Stop()
    calls: list[str] = []
    with stop.waking(lambda: calls.append("inside")):
        assert calls == []
        stop.set()
        assert calls == ["inside"]
    with stop.waking(lambda: calls.append("late")):  # already set: called at once
        pass
    assert calls == ["inside", "late"]
    other = Stop()
    with other.waking(lambda: calls.append("gone")):
        pass
    other.set()
    assert "gone" not in calls


def test_console_wait_wakes_on_the_stop() -> None:
    """A console wait with a long deadline ends as soon as the run is stopped."""
    stop = Stop()
    console = Console("source", "/nonexistent", stop=stop)
    assert console.wait_for("boot", 0.05) is None  # the deadline, when nobody stops it
    _set_later(stop, 0.1)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        console.wait_for("boot", 60.0)
    assert time.monotonic() - started < 2.0


def test_no_exception_is_pushed_into_another_thread() -> None:
    """Cancellation is cooperative: no module raises inside another thread."""
    harness = Path(__file__).resolve().parents[2] / "harness"
    users = [p.relative_to(harness).as_posix() for p in harness.rglob("*.py")
             if "SetAsyncExc" in p.read_text()]
    assert users == []


def _cancelled_within(seconds: float, work: Callable[[], object], stop: Stop) -> float:
    """Run ``work`` in a thread, set ``stop`` 0.2 s in; it must raise Cancelled within
    ``seconds`` (a thread, so that a wait that ignores the stop fails the test, not hangs it)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    _set_later(stop, 0.2)
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting {seconds} s after the stop"
    assert raised and isinstance(raised[0], Cancelled), raised
    return time.monotonic() - started


def _gone(marker: str) -> bool:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1


def test_a_local_host_command_is_killed_on_the_stop() -> None:
    marker = f"mb-cancel-{secrets.token_hex(6)}"
    host = LocalHost("source", HostSpec())
    stop = Stop()
    assert host.run(["echo", "ok"], stop=stop) == "ok\n"  # unset: an ordinary command
    took = _cancelled_within(5.0, lambda: host.run(
        ["python3", "-c", "import time; time.sleep(60)", marker], timeout=120, stop=stop), stop)
    assert took < 3.0 and _gone(marker)


def test_an_ssh_host_command_stops_waiting_on_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel of a command that never ends is closed as soon as the run stops."""
    host = SshHost("source", HostSpec(transport="ssh", address="10.0.0.5"))
    closed: list[bool] = []

    class Chan:
        status_event = threading.Event()

        def settimeout(self, t: float) -> None: ...
        def exec_command(self, command: str) -> None: ...
        def shutdown_write(self) -> None: ...
        def recv_ready(self) -> bool: return False
        def recv_stderr_ready(self) -> bool: return False
        def exit_status_ready(self) -> bool: return False
        def close(self) -> None: closed.append(True)

    class Transport:
        def open_session(self, timeout: float) -> Chan:
            return Chan()

    monkeypatch.setattr(host, "_transport", Transport)
    stop = Stop()
    took = _cancelled_within(5.0, lambda: host.run(["sleep", "600"], timeout=600, stop=stop),
                             stop)
    assert took < 2.0 and closed == [True]


def test_the_ram_hasher_is_killed_on_the_stop(tmp_path: Path) -> None:
    """``integrity: ram``: the hasher of a dump (here a FIFO nobody writes: it blocks in open)
    ends when the run stops, not after its 300 s timeout."""
    from harness.run.migration import _ram_digests

    fifo = tmp_path / "ram.dump"
    os.mkfifo(fifo)
    stop = Stop()
    vm = SimpleNamespace(host=LocalHost("source", HostSpec()), stop=stop)
    try:
        took = _cancelled_within(5.0, lambda: _ram_digests(vm, fifo), stop)  # type: ignore[arg-type]
        assert took < 3.0
    finally:  # a hasher still blocked in open (the bug) gets its EOF and ends
        with contextlib.suppress(OSError):  # ENXIO: no reader left, as it should be
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_the_cpu_sampler_start_wakes_on_the_stop() -> None:
    """A probe that never sends a sample (here ``cat``, silent until its input ends) holds
    ``start`` for its 20 s timeout unless the run stops."""
    stop = Stop()
    sampler = CpuSampler(os.getpid(), stream=lambda argv: pipe_stream(["cat"]), stop=stop)
    took = _cancelled_within(5.0, lambda: sampler.start(timeout=20.0), stop)
    assert took < 3.0
    assert sampler.snapshot() is None


#: A host command in the run stage may ignore the stop only if it is short: its timeout a
#: number of at most this many seconds (a longer or computed one must pass ``stop=``).
SHORT_S = 60


def long_host_commands_without_stop(found: list[tuple[str, ast.Module]]) -> list[str]:
    out = []
    for where, tree in found:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "run" and ast.unparse(node.func.value) != "subprocess"):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            timeout = kw.get("timeout")
            if timeout is None or "stop" in kw:
                continue
            if isinstance(timeout, ast.Constant) and isinstance(timeout.value, (int, float)) \
                    and timeout.value <= SHORT_S:
                continue
            out.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
    return out


def test_every_long_host_command_of_a_run_wakes_on_the_stop() -> None:
    harness = Path(__file__).resolve().parents[2] / "harness"
    found = [(p.relative_to(harness).as_posix(), ast.parse(p.read_text()))
             for p in sorted((harness / "run").rglob("*.py"))]
    assert long_host_commands_without_stop(found) == []
    planted = ast.parse("host.run(['sync'], timeout=SAVE_TIMEOUT_S)\n"
                        "host.run(['x'], timeout=300)\nhost.run(['rm'], timeout=30)\n"
                        "host.run(['y'], timeout=t, stop=ctx.stop)\n"
                        "subprocess.run(['git'], timeout=t)\n")
    assert len(long_host_commands_without_stop([("x.py", planted)])) == 2


def test_the_service_load_preload_wakes_on_the_stop() -> None:
    """A service that never answers (a closed port: the preload retries until its deadline)
    holds the run for the preload's whole timeout unless the run stops."""
    from harness.plan.models import RedisSpec
    from harness.run.sampling.service import ServiceLoad

    stop = Stop()
    load = ServiceLoad("redis", "127.0.0.1", 1, RedisSpec(clients=1, rate_ops=10, keys=10),
                       stop=stop)
    try:
        took = _cancelled_within(5.0, lambda: load.preload(60.0), stop)
        assert took < 3.0
    finally:
        load.close()
