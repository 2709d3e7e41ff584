"""Host interface, SSH host specs, remote process bookkeeping and test bed checks (no network)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import CommandFailed, HostError
from harness.hosts import testbed
from harness.hosts.host import LocalHost, RemoteProcess, SshHost, make_host
from harness.plan.config import load_hosts
from harness.plan.models import HostSpec, QemuBuild
from harness.run.vm import VmConfig, qemu_argv

HOSTILE = ["a b", "it's", '"q"', "$(touch /tmp/mb-pwned)", "; touch /tmp/mb-pwned", "`id`", "*"]


def test_hostspec_ssh_needs_an_address() -> None:
    with pytest.raises(ValueError, match="needs an 'address'"):
        HostSpec(transport="ssh")
    spec = HostSpec(transport="ssh", address="10.0.0.5", identity_file=Path("/k"))
    assert spec.port == 22 and spec.user == "root"


def test_make_host_picks_the_transport() -> None:
    assert isinstance(make_host("source", HostSpec()), LocalHost)
    remote = make_host("destination", HostSpec(transport="ssh", address="h", port=2222))
    assert isinstance(remote, SshHost)
    assert remote.label == "destination (root@h:2222)"
    remote.close()  # never opened: closing is a no-op


def test_local_run_passes_hostile_strings_verbatim(tmp_path: Path) -> None:
    host = LocalHost("source", HostSpec())
    assert host.run(["printf", "%s\\n", *HOSTILE]).splitlines() == HOSTILE
    assert not Path("/tmp/mb-pwned").exists()
    with pytest.raises(CommandFailed, match=r"^source: `false` exited 1"):
        host.run(["false"])
    with pytest.raises(CommandFailed, match="timed out"):
        host.run(["sleep", "5"], timeout=0.2)
    f = tmp_path / "x y"
    f.write_bytes(b"0123456789")
    assert host.read_file(f) == b"0123456789"
    assert host.read_file(f, max_bytes=3) == b"789"
    assert host.exists(f) and not host.exists(tmp_path / "nope")
    with pytest.raises(HostError, match="source: cannot read"):
        host.read_file(tmp_path / "nope")


def test_local_start_with_a_log_path(tmp_path: Path) -> None:
    host = LocalHost("source", HostSpec())
    log = tmp_path / "log"
    proc = host.start(["sh", "-c", "echo hello; echo oops >&2"], log)
    assert proc.wait(5) == 0
    assert log.read_text().split() == ["hello", "oops"]


def test_unreachable_ssh_host_is_one_line_naming_the_host(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    spec = HostSpec(transport="ssh", address="127.0.0.1", port=1, known_hosts=known,
                    identity_file=tmp_path / "id", connect_timeout_s=2)
    with pytest.raises(HostError, match=r"^source \(root@127.0.0.1:1\): unreachable") as exc:
        SshHost("source", spec).run(["true"])
    assert "\n" not in str(exc.value)


def test_missing_known_hosts_is_reported(tmp_path: Path) -> None:
    spec = HostSpec(transport="ssh", address="127.0.0.1", known_hosts=tmp_path / "absent")
    with pytest.raises(HostError, match="cannot read known_hosts"):
        SshHost("source", spec).run(["true"])


class FakeChannel:
    def __init__(self, status: int | None) -> None:
        self.status = status
        self.closed = False

    def exit_status_ready(self) -> bool:
        return self.status is not None

    def recv_exit_status(self) -> int:
        assert self.status is not None
        return self.status

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("status", "code"), [
    (None, None), (0, 0), (1, 1), (128 + 9, -signal.SIGKILL), (-1, -signal.SIGHUP),
])
def test_remote_process_exit_codes_look_like_popen(status: int | None, code: int | None) -> None:
    host: Any = SshHost("source", HostSpec(transport="ssh", address="h"))
    proc = RemoteProcess(host, FakeChannel(status), 1234)
    assert proc.poll() == code
    assert proc.pid == 1234


def test_qemu_argv_serves_qmp_and_console_on_unix_sockets_only() -> None:
    cfg = VmConfig(name="mb-src-x", role="source", build=QemuBuild(binary=Path("/q")),
                   accel="tcg", vcpus=1, memory_mib=256, kernel=Path("/k"), initrd=Path("/i"),
                   append="console=ttyS0", workdir=Path("/w"))
    argv = qemu_argv(cfg)
    assert "unix:/w/qmp.sock,server=on,wait=off" in argv
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev.startswith("socket,id=ser0,path=/w/serial.sock,server=on,wait=off")
    assert "logfile=/w/console.log" in chardev
    assert not any("tcp:" in a or "port=" in a for a in argv)  # no port, loopback included


def test_relay_carries_bytes_both_ways_and_exits_when_nothing_listens(tmp_path: Path) -> None:
    """The remote end of a QMP/console tunnel (SshHost.open_unix_channel), run here."""
    import socket
    import subprocess
    import sys

    from harness.hosts.host import _RELAY_PY

    path = tmp_path / "qmp.sock"
    missing = subprocess.run([sys.executable, "-c", _RELAY_PY, str(path)], capture_output=True,
                             timeout=10)
    assert missing.returncode == 3 and missing.stdout == b""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    relay = subprocess.Popen([sys.executable, "-c", _RELAY_PY, str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        conn, _ = server.accept()
        conn.sendall(b'{"QMP": {}}\n')
        assert relay.stdout is not None and relay.stdin is not None
        assert relay.stdout.readline() == b'{"QMP": {}}\n'
        relay.stdin.write(b'{"execute": "qmp_capabilities"}\n')
        relay.stdin.flush()
        assert conn.recv(100) == b'{"execute": "qmp_capabilities"}\n'
        relay.stdin.close()  # the SSH session closes: the relay leaves
        assert relay.wait(timeout=10) == 0
        assert conn.recv(100) == b""
    finally:
        relay.kill()
        server.close()


@pytest.mark.parametrize("rate", ["fast", "1 gbit", "1gbit; reboot", "10GB"])
def test_testbed_rejects_bad_rates(rate: str) -> None:
    with pytest.raises(testbed.TestbedError, match="--rate"):
        testbed._check_args(rate, None)


def test_testbed_delay_without_netem_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testbed, "netem_available", lambda: False)
    with pytest.raises(testbed.TestbedError, match="needs the sch_netem qdisc") as exc:
        testbed._check_args("1gbit", "1ms")
    assert "\n" not in str(exc.value)
    with pytest.raises(testbed.TestbedError, match="--delay"):
        testbed._check_args("1gbit", "1 ms; rm")
    testbed._check_args("200mbit", None)


def test_testbed_hosts_file_is_a_valid_ssh_pair(tmp_path: Path) -> None:
    repo_hosts = Path(__file__).resolve().parents[2] / "hosts.yaml"
    path = testbed.write_hosts_file(tmp_path, repo_hosts)
    cfg = load_hosts(path)
    pair = cfg.pairs["testbed"]
    assert pair.source.transport == pair.destination.transport == "ssh"
    assert pair.destination.migration_address == "10.250.3.2"
    assert pair.source.known_hosts == tmp_path / "known_hosts"
    assert pair.source.vm_bridge == "br-vm"
    assert cfg.qemu_builds[cfg.default_build].binary.is_absolute()
    assert yaml.safe_load(path.read_text())["pairs"]["testbed"]["source"]["address"] == "10.250.1.2"


def test_testbed_addresses_are_private_and_distinct() -> None:
    addrs = [a for n in testbed.NODES for a in (n.root_ip, n.mgmt_ip, n.mig_ip)]
    addrs.append(testbed.VM_ROOT_IP)
    assert len(set(addrs)) == len(addrs)
    assert all(a.startswith("10.250.") for a in addrs)
    assert all(len(n.root_link) <= 15 for n in testbed.NODES)


# -- the CPU sampler's stream: one SSH stack (paramiko), a pipe here ---------------------------


def test_cpu_sampler_stream_is_in_process_here_and_a_channel_over_ssh() -> None:
    local = LocalHost("source", HostSpec())
    assert local.cpu_sampler_stream() is None  # the sampler reads this machine's /proc itself
    ssh = SshHost("source", HostSpec(transport="ssh", address="10.0.0.5"))
    assert ssh.cpu_sampler_stream() == ssh.stream  # no ssh binary: the host's own connection


def test_ssh_stream_runs_the_quoted_command_on_a_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    host = SshHost("source", HostSpec(transport="ssh", address="10.0.0.5"))
    sent: list[str] = []

    class Chan:
        def exec_command(self, command: str) -> None:
            sent.append(command)

        def makefile(self, mode: str) -> Any:
            import io

            return io.BytesIO(b'{"pid": 1}\n\xff partial')

    class Transport:
        def open_session(self, timeout: float) -> Chan:
            return Chan()

    monkeypatch.setattr(host, "_transport", Transport)
    stream = host.stream(["python3", "-c", "print(1)", "--proc-root=/a b/$(x)"])
    assert sent == ["python3 -c 'print(1)' '--proc-root=/a b/$(x)'"]
    assert list(stream) == ['{"pid": 1}\n', "\ufffd partial"]  # bad bytes do not end it


def test_ssh_stream_refused_host_is_one_host_error(monkeypatch: pytest.MonkeyPatch) -> None:
    host = SshHost("source", HostSpec(transport="ssh", address="10.0.0.5"))

    def refuse() -> Any:
        raise OSError("Connection refused")

    monkeypatch.setattr(host, "_transport", refuse)
    with pytest.raises(HostError, match=r"^source \(root@10.0.0.5:22\): cannot start python3: "
                                        "Connection refused$"):
        host.stream(["python3"])


def test_pipe_stream_lines_input_eof_exit_and_stderr() -> None:
    stream = LocalHost("source", HostSpec()).stream(
        ["sh", "-c", "echo one; printf 'two\\377'; cat >/dev/null; echo bad >&2; exit 3"])
    lines = iter(stream)
    assert next(lines) == "one\n"
    assert stream.wait(0.2) is None  # still reading its stdin
    stream.close_input()
    assert list(lines) == ["two\ufffd"]
    assert stream.wait(5) == 3 and stream.stderr() == "bad\n"
    stream.close()
    killed = LocalHost("source", HostSpec()).stream(["sleep", "30"])
    killed.kill()
    assert killed.wait(5) == -9
    killed.close()


# -- errors name the host; timed-out commands die on the host ------------------------------------


def test_ssh_command_errors_name_the_host_not_only_the_role(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    host = SshHost("source", HostSpec(transport="ssh", address="10.0.0.5", port=2222))
    results: list[tuple[int | None, bytes, bytes]] = []
    monkeypatch.setattr(host, "_exec", lambda command, timeout, stdin=None, cut=None: results.pop(0))
    results.append((3, b"", b"boom\n"))
    with pytest.raises(CommandFailed, match=r"^source \(root@10.0.0.5:2222\): `false` exited 3: "
                                            "boom$") as exc:
        host.run(["false"])
    assert exc.value.host == "source (root@10.0.0.5:2222)"
    results.append((None, b"", b""))
    with pytest.raises(CommandFailed, match=r"^source \(root@10.0.0.5:2222\): `sleep 9` timed "
                                            "out$"):
        host.run(["sleep", "9"], timeout=1)
    results.append((1, b"", b"cat: /x: No such file or directory\n"))
    with pytest.raises(HostError, match=r"^source \(root@10.0.0.5:2222\): cannot read /x: cat: "):
        host.read_file(Path("/x"))
    results.append((None, b"", b""))
    with pytest.raises(HostError, match=r"^source \(root@10.0.0.5:2222\): cannot read /y: timed "
                                        "out$"):
        host.read_file(Path("/y"))


def test_remote_commands_run_under_the_hosts_timeout() -> None:
    import secrets
    import shlex
    import subprocess
    import time

    from harness.hosts.host import KILL_AFTER_S, remote_command

    inner = shlex.join(["printf", "%s\\n", *HOSTILE])
    line = remote_command(inner, 60.25)
    assert shlex.split(line)[-4:] == ["60", "0.250", inner, str(round(KILL_AFTER_S * 10))]
    # Run it here as sshd would (through a shell): quoting survives, and a timed-out command
    # takes its children along.
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10)
    assert out.stdout.splitlines() == HOSTILE and not Path("/tmp/mb-pwned").exists()
    marker = f"mb-exec-{secrets.token_hex(6)}"  # other test sessions may run this test too
    sleeper = shlex.join(["python3", "-c", "import time; time.sleep(30)", marker])
    stubborn = shlex.join(["sh", "-c", "trap '' TERM; while :; do sleep 1; done", marker])
    for command, took in ((f"{sleeper} & {sleeper}", (1, 2.5 + KILL_AFTER_S)),
                          (f"{stubborn} & {sleeper}", (1 + KILL_AFTER_S, 2.5 + KILL_AFTER_S)),
                          ("echo out; echo err >&2; exit 3", (0, 1))):
        started = time.monotonic()
        out = subprocess.run(["sh", "-c", remote_command(command, 1)], capture_output=True,
                             text=True, timeout=10)
        seconds = time.monotonic() - started
        assert took[0] <= seconds < took[1], (command, seconds)
        left = subprocess.run(["pgrep", "-f", "-a", marker], capture_output=True, text=True)
        assert left.stdout == "", command
        if "exit 3" in command:
            assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
        else:
            assert out.returncode == 124, command
    # If the shell that waits for the command dies (its SSH session torn down), the watchdog
    # ends the command within a second instead of at the timeout.
    wrapper = subprocess.Popen(shlex.split(remote_command(sleeper, 60)),
                               stdout=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0
    wrapper.kill()
    wrapper.wait()
    time.sleep(2.5)
    left = subprocess.run(["pgrep", "-a", "-f", marker], capture_output=True, text=True)
    assert left.stdout == ""
    # A command that reads stdin still gets it.
    fed = subprocess.run(["sh", "-c", remote_command("cat", 5)], input="fed\n",
                         capture_output=True, text=True, timeout=10)
    assert fed.stdout == "fed\n"


def test_the_supervisor_kills_its_command_when_the_client_died_while_it_started(
        tmp_path: Path) -> None:
    """The client is gone before the pid line is written (stdout has no reader, stdin is at
    EOF): the supervisor must still kill the command, not die of SIGPIPE and leave it running."""
    import os
    import subprocess
    import time

    from harness.hosts.host import supervise_command

    marker = f"{time.time():.6f}"  # this test's own sleep, found by its argument
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen(["sh", "-c", supervise_command(["sleep", f"1000{marker}"],
                                                           tmp_path / "log")],
                            stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", f"sleep 1000{marker}"], capture_output=True,
                              text=True).stdout.split()
        if not left:
            break
        time.sleep(0.1)
    for pid in left:
        os.kill(int(pid), signal.SIGKILL)
    assert left == []


def test_ssh_transfer_errors_are_one_host_error(monkeypatch: pytest.MonkeyPatch) -> None:
    host = SshHost("source", HostSpec(transport="ssh", address="10.0.0.5"))

    class Conn:
        def put(self, local: str, remote: str) -> None:
            raise OSError("No space left on device")

        def get(self, remote: str, local: str) -> None:
            raise HostError("source (root@10.0.0.5:22): host key mismatch")  # passes unchanged

    monkeypatch.setattr(host, "connection", Conn)
    with pytest.raises(HostError, match=r"^source \(root@10.0.0.5:22\): cannot upload /a to /b: "
                                        "No space left on device$"):
        host.put(Path("/a"), Path("/b"))
    with pytest.raises(HostError, match=r"^source \(root@10.0.0.5:22\): host key mismatch$"):
        host.get(Path("/b"), Path("/a"))
