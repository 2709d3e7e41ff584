"""Per-thread CPU sampler against a real QEMU 10.0 booting the guest image under TCG.

Sampled in this process (local host) and, through a real sshd on 127.0.0.1, as the
``python3 -c`` probe a remote host runs, on a channel of the host's paramiko connection.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import HostError
from harness.guest.image import GuestImage
from harness.hosts.host import SshHost
from harness.plan.models import HostsConfig, HostSpec
from harness.run.sampling.cpu import CpuSampler, CpuTrace, probe_argv, summarise, timeline

pytestmark = pytest.mark.integration

NAME = "mb-cpu-test"


@pytest.fixture
def qemu(hosts: HostsConfig, image: GuestImage, tmp_path: Path) -> Iterator[int]:
    """A QEMU 10.0 booting the guest kernel (busy vCPU); killed in finally."""
    build = hosts.qemu_builds["10.0"]
    argv = [str(build.binary)]
    for d in build.datadirs:
        argv += ["-L", str(d)]
    argv += ["-name", f"{NAME},debug-threads=on", "-accel", "tcg", "-m", "256",
             "-nodefaults", "-no-user-config", "-display", "none",
             "-kernel", str(image.kernel), "-initrd", str(image.initrd),
             "-append", "console=ttyS0 panic=0"]
    env = dict(os.environ)
    if build.moduledir is not None:
        env["QEMU_MODULE_DIR"] = str(build.moduledir)
    log = tmp_path / "qemu.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 10
        while not any("CPU" in p.read_text()
                      for p in Path(f"/proc/{proc.pid}/task").glob("*/comm")):
            assert proc.poll() is None, f"QEMU exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, "QEMU created no vCPU thread in 10 s"
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def check_trace(tr: CpuTrace, pid: int, seconds: float) -> dict[str, object]:
    assert tr.pid == pid
    assert tr.process_comm == "qemu-system-x86"  # -name does not rename the process
    comms = {th.comm for s in tr.samples for th in s.threads}
    assert "CPU 0/TCG" in comms, comms
    assert len(tr.samples) >= int(seconds * 10 * 0.7), len(tr.samples)
    summary = summarise(tr, tr.samples[0].t, tr.samples[-1].t)
    classes = summary["classes"]
    assert isinstance(classes, dict)
    assert "main" in classes and "vcpu" in classes, summary
    assert classes["vcpu"] > 5.0, summary  # a booting TCG guest keeps its vCPU busy
    assert classes["vcpu"] < 100.0 * (os.cpu_count() or 1) + 5, summary
    tl = timeline(tr)
    assert len(tl) == len(tr.samples) - 1
    assert any(p["classes"].get("vcpu", 0) > 0 for p in tl)
    return summary


def test_local_sampler_sees_main_and_busy_vcpu(qemu: int) -> None:
    with CpuSampler(qemu, hz=10) as sampler:
        time.sleep(2.0)
    tr = sampler.stop()
    assert tr.end_reason == "stopped"
    summary = check_trace(tr, qemu, 2.0)
    assert 1.6 < float(summary["window_s"]) < 2.4  # type: ignore[arg-type]
    # the sampler thread's own cost, from the trailer: well under 1% of a core here
    assert tr.sampler_cpu_s is not None and tr.sampler_cpu_s / 2.0 < 0.01


def test_sampler_stops_by_itself_when_qemu_exits(hosts: HostsConfig, qemu: int) -> None:
    sampler = CpuSampler(qemu, hz=20)
    sampler.start()
    time.sleep(0.5)
    os.kill(qemu, 9)
    deadline = time.monotonic() + 5
    while (snap := sampler.snapshot()) is None or snap.end_reason is None:
        assert time.monotonic() < deadline, "sampler did not notice QEMU's exit"
        time.sleep(0.05)
    assert sampler.stop().end_reason == "exited"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshHost]:
    """A real sshd on 127.0.0.1 with a throwaway key; yields an SshHost pinned to its key."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh server (and ssh-keygen) not installed")
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    except OSError as exc:
        pytest.skip(f"sshd needs /run/sshd: {exc}")
    d = tmp_path / "ssh"
    d.mkdir()
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    (d / "known_hosts").write_text(
        f"[127.0.0.1]:{port} " + " ".join((d / "host_key.pub").read_text().split()[:2]) + "\n")
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        f"PasswordAuthentication no\nPidFile {d / 'sshd.pid'}\n")
    with open(d / "sshd.log", "wb") as log:
        proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=log)
    spec = HostSpec(transport="ssh", address="127.0.0.1", port=port, user=getpass.getuser(),
                    identity_file=d / "user_key", known_hosts=d / "known_hosts",
                    connect_timeout_s=5.0)
    host = SshHost("source", spec)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                host.run(["true"], timeout=10)
                break
            except HostError:
                assert proc.poll() is None, (d / "sshd.log").read_text()
                assert time.monotonic() < deadline, (d / "sshd.log").read_text()
                time.sleep(0.1)
        yield host
    finally:
        host.close()
        proc.terminate()
        proc.wait(10)


def _probes(pid: int) -> list[str]:
    """Pids of CPU probes sampling ``pid`` on this machine (the sshd's "remote" side)."""
    out = subprocess.run(["pgrep", "-f", "--", f"--pid {pid} --hz"], capture_output=True, text=True,
                         check=False)
    return out.stdout.split()


def test_probe_over_real_ssh(qemu: int, sshd: SshHost) -> None:
    # The probe travels as `python3 -c SOURCE` on a channel of the host's paramiko connection;
    # closing the channel's input stops it, and its trailer (reason, own CPU) still arrives.
    with CpuSampler(qemu, hz=10, stream=sshd.cpu_sampler_stream()) as sampler:
        time.sleep(2.0)
    tr = sampler.stop()
    assert tr.end_reason == "stopped"
    assert tr.sampler_cpu_s is not None
    check_trace(tr, qemu, 2.0)
    assert _probes(qemu) == []


def test_killed_channel_ends_the_remote_probe(qemu: int, sshd: SshHost) -> None:
    # No EOF, no trailer: the channel is closed under the probe, which must not outlive it.
    stream = sshd.stream(probe_argv(qemu, 10, duration=600))
    lines = iter(stream)
    assert '"pid"' in next(lines) and '"t"' in next(lines)
    assert len(_probes(qemu)) == 1
    stream.kill()
    deadline = time.monotonic() + 10
    while _probes(qemu):
        assert time.monotonic() < deadline, "the remote probe outlived its channel"
        time.sleep(0.1)
    stream.close()


def test_stream_refuses_a_host_key_that_is_not_pinned(sshd: SshHost, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    host = SshHost("source", sshd.spec.model_copy(update={"known_hosts": empty}))
    with pytest.raises(HostError, match=r"^source \(\S+@127.0.0.1:\d+\): unknown host key"):
        CpuSampler(1, stream=host.cpu_sampler_stream()).start()
    assert empty.read_text() == ""  # refused, not learned
