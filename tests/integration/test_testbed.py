"""The namespace test bed for real: sshd with pinned keys, shaped link, migrations over SSH."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.errors import CommandFailed, HostError
from harness.guest.image import GuestImage
from harness.hosts import testbed
from harness.hosts.host import SshHost
from harness.plan.config import load_hosts
from harness.results import store
from harness.results.record import RunRecord
from harness.run.runner import Progress, run_matrix

from ._testbed import (
    bed,
    bed_processes,
    bed_qemus,
    no_leftover_qemu,
    remote_tunnel_threads,
    settled,
)
from .conftest import matrix, qemu_processes

pytestmark = pytest.mark.integration
__all__ = ["bed", "no_leftover_qemu"]


def _hosts(base: Path) -> Any:
    return load_hosts(base / "hosts.yaml")


def _run(base: Path, tmp_path: Path, image: GuestImage, progress: Progress | None = None,
         hosts: Path | None = None, **fields: Any) -> list[RunRecord]:
    spec = matrix(**fields)
    out = tmp_path / spec.name
    hosts = hosts or base / "hosts.yaml"
    run_matrix(tmp_path / "m.yaml", spec, hosts, load_hosts(hosts), out, progress, image)
    return [rec for _, rec in store.iter_runs(out)]


def _epoch(utc: str) -> float:
    """A record's ``..._utc`` timestamp as epoch seconds."""
    from datetime import UTC, datetime

    return datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _hosts_file(base: Path, path: Path, changes: dict[str, dict[str, Any]]) -> Path:
    """The test bed's hosts file with ``changes`` per role ("source", "destination")."""
    import yaml

    data = yaml.safe_load((base / "hosts.yaml").read_text())
    for role, fields in changes.items():
        data["pairs"]["testbed"][role].update(fields)
    path.write_text(yaml.safe_dump(data))
    return path


def test_up_gives_two_ssh_hosts_with_links(bed: Path) -> None:
    pair = _hosts(bed).pairs["testbed"]
    with SshHost("source", pair.source) as src, SshHost("destination", pair.destination) as dst:
        assert "10.250.1.2/24" in src.run(["ip", "-4", "-o", "addr", "show", "dev", "mgmt0"])
        assert "10.250.2.2/24" in dst.run(["ip", "-4", "-o", "addr", "show", "dev", "mgmt0"])
        # The migration link works between the hosts and is shaped with tbf on both ends.
        route = src.run(["ip", "route", "get", pair.destination.migration_address])
        assert "dev mig0" in route
        for h in (src, dst):
            assert "tbf" in h.run(["tc", "qdisc", "show", "dev", "mig0"])
            assert "br-vm" in h.run(["ip", "-br", "link", "show", "type", "bridge"])
        facts = src.facts()
        assert facts["transport"] == "ssh" and facts["address"] == "10.250.1.2"
    rows = {r[0].strip(): r for r in testbed.status(bed)}
    assert rows["sshd (mbsrc)"][1] == "running" and rows["sshd (mbdst)"][1] == "running"
    # The known_hosts pins exactly the two host keys.
    assert len((bed / "known_hosts").read_text().splitlines()) == 2


def test_unknown_changed_key_wrong_identity_and_unreachable_are_one_clear_line(
        bed: Path, tmp_path: Path) -> None:
    spec = _hosts(bed).pairs["testbed"].source
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostError, match=r"^source \(root@10.250.1.2:22\): unknown host key"):
        SshHost("source", spec.model_copy(update={"known_hosts": empty})).run(["true"])
    assert empty.read_text() == ""  # never added silently

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed = tmp_path / "changed_known_hosts"
    changed.write_text("10.250.1.2 " + " ".join(other.with_suffix(".pub").read_text().split()[:2])
                       + "\n")
    with pytest.raises(HostError, match="host key mismatch") as exc:
        SshHost("source", spec.model_copy(update={"known_hosts": changed})).run(["true"])
    assert "\n" not in str(exc.value)

    with pytest.raises(HostError, match="authentication failed"):
        SshHost("source", spec.model_copy(update={"identity_file": other})).run(["true"])
    with pytest.raises(HostError, match=r"source .*unreachable"):
        SshHost("source", spec.model_copy(update={"address": "10.250.1.3",
                                                  "connect_timeout_s": 2.0})).run(["true"])


def test_hostile_strings_are_quoted(bed: Path, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    hostile = ["a b", "it's", '"double"', f"$(touch {canary})", f"; touch {canary}",
               f"`touch {canary}`", f"x && touch {canary}", "*", "\\", "$HOME", "tab\there"]
    with SshHost("source", _hosts(bed).pairs["testbed"].source) as h:
        assert h.run(["printf", "%s\\n", *hostile]).splitlines() == hostile
        # Files with hostile names: put, read, get.
        weird = tmp_path / "it's a $(file); `x`"
        weird.write_bytes(b"payload\x00\xff")
        remote = tmp_path / "remote copy 'of' $(it)"
        h.put(weird, remote)
        assert h.read_file(remote) == b"payload\x00\xff"
        back = tmp_path / "back"
        h.get(remote, back)
        assert back.read_bytes() == b"payload\x00\xff"
        assert h.exists(remote) and not h.exists(tmp_path / "nope; true")
    assert not canary.exists()


def test_sampler_stream_takes_hostile_key_paths_and_pins_the_key(bed: Path,
                                                                  tmp_path: Path) -> None:
    # The CPU sampler's stream is a channel of the host's paramiko connection: key paths are
    # values, never parsed by an ssh client, and the host key is the pinned one or nothing.
    import shutil

    spec = _hosts(bed).pairs["testbed"].source
    keys = tmp_path / "keys 'q' \"d\" %h %% $(touch x) #c \\ ; `id`"
    keys.mkdir()
    shutil.copy(bed / "id_ed25519", keys / "id key")
    (keys / "id key").chmod(0o600)
    shutil.copy(bed / "known_hosts", keys / "known hosts")
    hostile = spec.model_copy(update={"identity_file": keys / "id key",
                                      "known_hosts": keys / "known hosts"})
    with SshHost("source", hostile) as h:
        start = h.cpu_sampler_stream()
        assert start is not None
        stream = start(["sh", "-c", 'echo "$1"; echo err >&2', "sh", "$(touch x) ok"])
        assert list(stream) == ["$(touch x) ok\n"]
        assert stream.wait(10) == 0 and stream.stderr() == "err\n"
        stream.close()
    # An empty pinned file: the host key is refused, not learned (no system known_hosts either).
    (keys / "known hosts").write_text("")
    with SshHost("source", hostile) as h, pytest.raises(HostError, match="unknown host key"):
        start = h.cpu_sampler_stream()
        assert start is not None
        start(["echo", "ok"])
    assert (keys / "known hosts").read_text() == ""
    assert not (Path.cwd() / "x").exists()


def test_timed_out_remote_command_is_killed_on_the_host(bed: Path) -> None:
    from harness.hosts.host import KILL_AFTER_S

    with SshHost("source", _hosts(bed).pairs["testbed"].source) as h:
        for script in ("sleep 30 & sleep 30", "trap '' TERM; sleep 30"):  # the second needs KILL
            started = time.monotonic()
            with pytest.raises(CommandFailed, match=r"^source \(root@10.250.1.2:22\): `sh -c .*` "
                                                    "timed out"):
                h.run(["sh", "-c", script], timeout=1)
            took = time.monotonic() - started
            assert 1 <= took < 1 + KILL_AFTER_S + 3, took
            deadline = time.monotonic() + 3
            while bed_processes() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert bed_processes() == [], script
        assert h.run(["sh", "-c", "exit 124"], check=False, timeout=5) == ""  # not a timeout
        with pytest.raises(CommandFailed, match="exited 124"):
            h.run(["sh", "-c", "exit 124"], timeout=5)


def test_a_stopped_remote_command_returns_at_once_and_a_writer_is_gone(bed: Path) -> None:
    """Host.run with the run's stop over SSH (the RAM and disk hashers of a remote run): the
    wait ends as soon as the run stops, and a command that writes, as the hashers do, dies at its
    next write once its channel is closed (one that does not is left to the host's watchdog)."""
    from harness.run.cancel import Cancelled, Stop

    stop = Stop()
    with SshHost("source", _hosts(bed).pairs["testbed"].source) as h:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Cancelled):
            h.run(["sh", "-c", "while :; do echo x; sleep 0.1; done"], timeout=120, stop=stop)
        assert time.monotonic() - started < 3
        deadline = time.monotonic() + 5
        while bed_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bed_processes() == []


def test_delay_without_netem_fails_with_one_line(bed: Path) -> None:
    if testbed.netem_available():
        pytest.skip("this kernel has netem")
    with pytest.raises(testbed.TestbedError, match="sch_netem") as exc:
        testbed.up(bed, delay="1ms")
    assert "\n" not in str(exc.value)
    with pytest.raises(testbed.TestbedError, match="sch_netem"):
        testbed.shape("1gbit", "1ms")
    assert testbed.namespaces().count("mbsrc") == 1  # the running test bed was not touched


def test_migration_cell_over_ssh_with_ram_integrity(bed: Path, tmp_path: Path,
                                                     image: GuestImage) -> None:
    # The destination has its own workdir: its QEMU, image and RAM dump live there.
    src_work = _hosts(bed).pairs["testbed"].source.workdir
    dst_work = tmp_path / "destination-work"  # workdirs take no spaces (issue 12)
    hosts = _hosts_file(bed, tmp_path / "hosts.yaml", {"destination": {"workdir": str(dst_work)}})
    [rec] = _run(
        bed, tmp_path, image, hosts=hosts, name="tb", integrity="ram",
        limits={"max_time_s": 60, "observe_after_s": 1},
        workload={"writer": {"working_set_mib": 32, "rate_mib_s": 8, "pattern": "sparse"}},
        migration={"max-bandwidth": "400mbit"},
    )
    assert rec.outcome == "completed", rec.error
    assert rec.integrity.verdict == "ok", rec.integrity
    assert rec.integrity.ram is not None and rec.integrity.ram.differing_pages == 0
    assert rec.integrity.stamps is not None and rec.integrity.stamps.verdict == "ok"
    assert rec.hosts.source.transport == "ssh"
    assert rec.hosts.destination.address == "10.250.2.2"
    assert rec.vms.destination is not None and rec.vms.destination.host == "destination"
    # The destination listened on the migration link.
    assert rec.applied is not None
    assert (rec.applied.uri or "").startswith("tcp:10.250.3.2:"), rec.applied
    assert any(p.host == "destination" for p in rec.guest.writer)
    # Per-thread CPU was sampled on both hosts over SSH. Precopy's incoming side runs in the
    # destination's main thread (no migration thread there; see the multifd test below).
    assert not rec.warnings, rec.warnings
    assert rec.cpu is not None and rec.cpu.source is not None and rec.cpu.destination is not None
    assert rec.cpu.source.classes.get("migration", 0) > 0, rec.cpu.source
    assert rec.cpu.destination.classes.get("main", 0) > 0, rec.cpu.destination
    assert rec.cpu.source.samples > 0 and rec.cpu.destination.samples > 0
    assert remote_tunnel_threads() == []
    for vm, work in ((rec.vms.source, src_work), (rec.vms.destination, dst_work)):
        assert vm is not None
        role, argv = vm.role, list(vm.argv)
        chardev = argv[argv.index("-chardev") + 1]
        console_log = Path(chardev.split("logfile=")[1].split(",")[0])
        assert console_log.is_relative_to(work / "tb"), (role, console_log)
        assert Path(argv[argv.index("-kernel") + 1]).is_relative_to(work / "images"), role
        assert list((work / "tb").iterdir()) == [], role  # the run's folder is gone


def test_remote_cpu_sampling_sees_the_migration_threads_of_both_hosts(
        bed: Path, tmp_path: Path, image: GuestImage) -> None:
    [rec] = _run(
        bed, tmp_path, image, name="tbcpu", axes={"feature": ["multifd"]},
        limits={"max_time_s": 60, "observe_after_s": 0.5},
        workload={"writer": {"working_set_mib": 64, "rate_mib_s": 8}},
        migration={"max-bandwidth": "200mbit"},
    )
    assert rec.outcome == "completed", rec.error
    assert not rec.warnings, rec.warnings
    assert rec.cpu is not None and rec.cpu.source is not None and rec.cpu.destination is not None
    src, dst = rec.cpu.source, rec.cpu.destination
    assert src.classes.get("migration", 0) > 0 and src.classes.get("multifd_send", 0) > 0, src
    assert dst.classes.get("multifd_recv", 0) > 0, dst
    assert {t.comm for t in dst.threads} >= {"mig/dst/recv_0", "mig/dst/recv_1"}, dst


def test_throughput_matches_shaped_link(bed: Path, tmp_path: Path, image: GuestImage) -> None:
    testbed.shape("200mbit")
    try:
        [rec] = _run(
            bed, tmp_path, image, name="shaped",
            limits={"max_time_s": 60, "observe_after_s": 0},
            workload={"writer": None}, migration={"max-bandwidth": "1gbit"},
        )
    finally:
        testbed.shape("1gbit")
    assert rec.outcome == "completed", rec.error
    mbps = rec.metrics.qemu_mbps
    assert mbps is not None and abs(mbps - 200) <= 0.15 * 200, mbps


def test_sshd_killed_mid_run_is_a_recorded_failure_and_next_cell_runs(
        bed: Path, tmp_path: Path, image: GuestImage) -> None:
    running: list[str] = []  # cell ids in the order their runs started
    target: list[str] = []  # the cell whose migration the kill hits
    killed: list[int] = []

    def state(name: str) -> None:
        if name == "migrate" and not target:
            target.append(running[-1])

            def kill() -> None:
                time.sleep(0.5)
                killed.extend(testbed.kill_sshd("destination"))
                time.sleep(0.2)
                testbed.start_sshd(bed, "destination")  # back for the next cell
            threading.Thread(target=kill, daemon=True).start()

    recs = _run(
        bed, tmp_path, image,
        Progress(run_started=lambda cell, rep: running.append(cell.id), state=state),
        name="sshkill", limits={"max_time_s": 60, "observe_after_s": 0}, workload={"writer": None},
        axes={"feature": ["precopy"], "max-bandwidth": ["40mbit", "1gbit"]},
    )
    assert killed
    outcomes = {r.cell.id: r.outcome for r in recs}
    assert sorted(outcomes.values()) == ["completed", "failed"], [r.error for r in recs]
    # The run that was migrating when the destination's sshd died failed; the next one ran.
    assert outcomes[target[0]] == "failed", (target, outcomes)
    failed = next(r for r in recs if r.outcome == "failed")
    # The error names the host whose QEMU went away (its label), not only the role.
    assert "destination (root@10.250.2.2:22)" in (failed.error or ""), failed.error
    assert bed_qemus() == []


# -- doctor, provision, guest NICs on the hosts' bridges, several pairs ------------------------


def _cli(*argv: str) -> int:
    import argparse

    from harness.hosts import provision

    parser = argparse.ArgumentParser(prog="migbench")
    provision.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def _multi_hosts(base: Path, path: Path, broken: bool = True,
                 local_workdir: str = "/tmp/migbench") -> Path:
    """The test bed pair, the local pair, and (optionally) a pair whose source is unreachable."""
    import yaml

    data = yaml.safe_load((base / "hosts.yaml").read_text())
    local = {"transport": "local", "workdir": local_workdir, "migration_address": "127.0.0.1"}
    data["pairs"]["local"] = {"source": local, "destination": local}
    if broken:
        data["pairs"]["broken"] = {
            "source": {"transport": "ssh", "address": "10.250.1.9", "connect_timeout_s": 2,
                       "identity_file": str(base / "id_ed25519"),
                       "known_hosts": str(base / "known_hosts")},
            "destination": local}
    path.write_text(yaml.safe_dump(data))
    return path


def test_doctor_passes_on_the_bed_and_names_the_broken_host(
        bed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.hosts.provision import doctor_pair

    cfg = _hosts(bed)
    report = doctor_pair("testbed", cfg.pairs["testbed"], cfg, memory_mib=512)
    assert report.usable, report.problems()
    rows = {(c.host.split()[0], c.check): c for c in report.checks}
    for role in ("source", "destination"):
        assert rows[(role, "reachable")].status == "ok"
        assert rows[(role, "QEMU 10.0")].detail.startswith("10.0.")
        assert "PVM" in rows[(role, "accel")].detail or "kvm" in rows[(role, "accel")].detail
        assert rows[(role, "VM bridge")].status == "ok"
        assert rows[(role, "memory")].status == "ok"
    assert report.probes[("destination", "10.0")].host == "ssh:root@10.250.2.2:22"
    offset = rows[("pair", "clock offset")]
    assert offset.status == "ok" and "ms" in offset.detail
    assert rows[("destination", "migration address")].detail == "listens on 10.250.3.2"

    hosts = _multi_hosts(bed, tmp_path / "hosts.yaml")
    assert _cli("doctor", "--hosts", str(hosts), "--pair", "testbed") == 0
    capsys.readouterr()
    assert _cli("doctor", "--hosts", str(hosts), "--memory-mib", "256") == 1
    text = capsys.readouterr().out
    problems = [ln for ln in text.splitlines() if ln.startswith("problem:")]
    assert problems == ["problem: pair broken: source (root@10.250.1.9:22): reachable: "
                        "unreachable: timed out"], text
    assert "usable: local, testbed" in text and "unusable: broken" in text


def test_provision_uploads_the_image_once_into_a_fresh_workdir(
        bed: Path, tmp_path: Path, image: GuestImage) -> None:
    import yaml

    from harness.digest import sha256_file
    from harness.hosts.provision import provision

    data = yaml.safe_load((bed / "hosts.yaml").read_text())
    fresh = tmp_path / "fresh-work"
    for role in ("source", "destination"):
        data["pairs"]["testbed"][role]["workdir"] = str(fresh)
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_hosts(path)
    first = provision(cfg, image)
    assert [r.problems for r in first] == [[], []]
    # The namespaces share this machine's files: the source uploads, the destination sees it.
    assert "uploaded vmlinux" in first[0].image and "initrd-fio" in first[0].image
    assert first[1].image.startswith(f"{image.digest[:16]} present")
    assert all(r.installed == [] and r.package_manager == "apt" for r in first)
    assert all(r.qemu["10.0"].startswith("10.0.") for r in first)
    assert all(r.bridge == "br-vm present" for r in first)
    d = fresh / "images" / image.digest[:16]
    for f in (image.kernel, image.initrd, image.fio_initrd):
        assert f is not None and sha256_file(d / f.name) == sha256_file(f)
    assert not list(d.glob(".*part"))
    # A damaged copy is replaced; an intact one is left alone.
    (d / image.initrd.name).write_bytes(b"damaged")
    again = provision(cfg, image)
    assert again[0].image.startswith(f"{image.digest[:16]} uploaded initrd.cpio.gz (")
    assert sha256_file(d / image.initrd.name) == sha256_file(image.initrd)
    assert provision(cfg, image)[0].image.startswith(f"{image.digest[:16]} present")
    assert _cli("provision", "--hosts", str(path), "--check") == 0


def test_ping_cell_over_ssh_sees_the_switchover(bed: Path, tmp_path: Path,
                                                image: GuestImage) -> None:
    [rec] = _run(
        bed, tmp_path, image, name="tbping",
        limits={"max_time_s": 60, "observe_after_s": 2},
        workload={"writer": None, "ping": {"interval_ms": 10}},
        migration={"max-bandwidth": "1gbit"},
    )
    assert rec.outcome == "completed", rec.error
    ping = rec.guest_impact.ping
    assert ping is not None
    assert ping.before.lost == 0 and ping.before.sent >= 50
    # A gap at switchover, well above the 10 ms interval; replies again afterwards.
    assert (ping.during.max_gap_ms or 0) > 30, ping.during
    assert ping.after.sent >= 50 and ping.after.lost <= 2, ping.after
    # Both QEMUs used a tap on their own host's br-vm, and the guest's address is on the bed's
    # VM network (the prober ran here, from mbv-root).
    for vm, short in ((rec.vms.source, "src"), (rec.vms.destination, "dst")):
        assert vm is not None
        assert any(a.startswith(f"tap,id=mbnet0,ifname=mbtap-{short}-") for a in vm.argv)
    assert rec.vms.source is not None
    assert any("mb.net=ip:10.250.4." in a for a in rec.vms.source.argv)
    for ns in ("mbsrc", "mbdst"):
        links = subprocess.run(["ip", "-n", ns, "-br", "link"], capture_output=True,
                               text=True).stdout
        assert "mbtap" not in links


def test_two_pairs_share_a_matrix_and_a_broken_pair_is_skipped(
        bed: Path, tmp_path: Path, image: GuestImage) -> None:
    hosts_path = _multi_hosts(bed, tmp_path / "hosts.yaml")
    spec = matrix(name="pairs", repetitions=2, guest={"memory_mib": 256},
                  limits={"max_time_s": 60, "observe_after_s": 0.5},
                  workload={"writer": {"working_set_mib": 16, "rate_mib_s": 8}},
                  axes={"max-bandwidth": ["400mbit", "1gbit"]})
    out = tmp_path / "pairs"
    notes: list[str] = []
    started = time.monotonic()
    run_matrix(tmp_path / "m.yaml", spec, hosts_path, load_hosts(hosts_path), out,
               Progress(note=notes.append), image)
    took = time.monotonic() - started
    recs = [rec for _, rec in store.iter_runs(out)]
    keys = sorted((r.cell.id, r.repetition) for r in recs)
    assert len(keys) == 4 and len(set(keys)) == 4  # every run exactly once
    assert all(r.outcome == "completed" for r in recs), [r.error for r in recs]
    assert {r.harness.pair if r.harness else None for r in recs} == {"local", "testbed"}
    assert any(n.startswith("pair broken skipped: ") and "10.250.1.9" in n for n in notes), notes
    assert len((out / "summary.csv").read_text().splitlines()) == 5
    # The pairs ran at the same time, each one migration at a time.
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in recs:
        assert r.harness is not None and r.harness.pair is not None
        spans.setdefault(r.harness.pair, []).append(
            (_epoch(r.started_utc), _epoch(r.finished_utc)))
    for pair, runs in spans.items():
        runs.sort()
        assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:])), (pair, runs)
    assert any(a[0] < b[1] and b[0] < a[1] for a in spans["local"] for b in spans["testbed"]), \
        spans
    assert [q for q in qemu_processes() if "/migbench/pairs/" in q] == []  # the local pair's
    print(f"4 runs over two pairs in {took:.1f} s")


def test_ctrl_c_with_two_pairs_tears_both_runs_down_and_saves_neither(
        bed: Path, tmp_path: Path, image: GuestImage) -> None:
    import os
    import shutil
    import signal
    import tempfile

    # Short: QEMU's unix sockets live in the local pair's workdir (108-byte limit).
    local_work = Path(tempfile.mkdtemp(prefix="mb-intr-"))
    hosts_path = _multi_hosts(bed, tmp_path / "hosts.yaml", broken=False,
                              local_workdir=str(local_work))
    # A writer faster than the link: neither migration converges before Ctrl-C comes.
    spec = matrix(name="intr", guest={"memory_mib": 256},
                  limits={"max_time_s": 120, "observe_after_s": 0.5},
                  workload={"writer": {"working_set_mib": 16, "rate_mib_s": 8}},
                  axes={"max-bandwidth": ["40mbit", "50mbit"]})
    out = tmp_path / "intr"
    notes: list[str] = []
    migrating: list[str] = []
    lock = threading.Lock()
    sent: list[float] = []

    def ctrl_c() -> None:
        time.sleep(1.0)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    def state(name: str) -> None:
        if name == "migrate":
            with lock:
                migrating.append(threading.current_thread().name)
                if len(migrating) == 2:
                    threading.Thread(target=ctrl_c, daemon=True).start()

    try:
        with pytest.raises(KeyboardInterrupt):
            run_matrix(tmp_path / "m.yaml", spec, hosts_path, load_hosts(hosts_path), out,
                       Progress(note=notes.append, state=state), image)
        took = time.monotonic() - sent[0]
        assert sorted(migrating) == ["pair-local", "pair-testbed"]
        # Both runs were torn down by their own teardown before run_matrix returned: no QEMU
        # and no helper process left on either pair, nothing killed as a last resort.
        assert bed_qemus() == [] and settled(bed_processes) == []
        assert [q for q in qemu_processes() if str(local_work) in q] == []
        assert not any("killed" in n for n in notes), notes
        assert took < 30, took
        assert any(n.startswith("interrupted: stopping the runs on pair ") for n in notes), notes
        # Neither interrupted run was stored: a resume runs both again.
        assert not list(out.glob("*/*.json")), notes
        assert not [p for p in (local_work / "intr").glob("*") if p.is_dir()]
    finally:
        shutil.rmtree(local_work, ignore_errors=True)


def test_down_then_up_after_a_crash_left_a_half_built_bed(bed: Path) -> None:
    """Runs last: it breaks the module's test bed and builds it again."""
    import argparse
    import shutil
    import socket

    def cli(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="migbench")
        testbed.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    # A crash after `up`: one sshd killed, the state folder (keys, hosts file) gone.
    assert testbed.kill_sshd("source")
    shutil.rmtree(bed)
    assert {"netns mbsrc", "netns mbdst"} <= set(testbed.leftovers())
    assert cli("testbed", "down", "--dir", str(bed)) == 0
    assert testbed.leftovers() == []

    # A crash half way through `up`: one namespace with its root link and a process inside, an
    # orphaned sshd with a test bed config in the root namespace, and no state folder at all.
    subprocess.run(["ip", "netns", "add", "mbsrc"], check=True)
    subprocess.run(["ip", "link", "add", "mbm-src", "type", "veth", "peer", "name", "mgmt0",
                    "netns", "mbsrc"], check=True)
    stray = subprocess.Popen(["ip", "netns", "exec", "mbsrc", "sleep", "300"],
                             start_new_session=True)
    half = Path(tempfile.mkdtemp(prefix="mb-half-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(half / "hk")],
                   check=True)
    conf = half / testbed.SSHD_CONF
    conf.write_text(f"ListenAddress 127.0.0.1:{port}\nHostKey {half / 'hk'}\n"
                    f"PidFile {half / 'sshd.pid'}\n")
    orphan = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(conf)], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not testbed._sshd_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = set(testbed.leftovers())
        assert {"netns mbsrc", "link mbm-src", f"sshd pid {orphan.pid}"} <= left, left
        assert cli("testbed", "down", "--dir", str(bed)) == 0
        assert testbed.leftovers() == []
        stray.wait(10)  # both stopped by `down` (TimeoutExpired otherwise)
        orphan.wait(10)
    finally:
        for proc in (stray, orphan):
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(half, ignore_errors=True)

    # `up` builds a working bed again in the same folder (the module's later teardown uses it).
    testbed.up(bed, rate="1gbit")
    pair = _hosts(bed).pairs["testbed"]
    for role, spec in (("source", pair.source), ("destination", pair.destination)):
        with SshHost(role, spec) as h:
            assert h.run(["echo", "ok"]) == "ok\n"
