"""The namespace test bed for real: sshd with pinned keys, shaped link, migrations over SSH."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import store, testbed
from harness.config import load_hosts
from harness.errors import HostError
from harness.host import SshHost
from harness.image import GuestImage
from harness.runner import Progress, run_matrix

from ._testbed import bed, bed_qemus, no_leftover_qemu, remote_tunnel_threads
from .conftest import matrix

pytestmark = pytest.mark.integration
__all__ = ["bed", "no_leftover_qemu"]


def _hosts(base: Path) -> Any:
    return load_hosts(base / "hosts.yaml")


def _run(base: Path, tmp_path: Path, image: GuestImage, progress: Progress | None = None,
         **fields: Any) -> list[dict[str, Any]]:
    spec = matrix(**fields)
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, base / "hosts.yaml", _hosts(base), out, progress, image)
    return [rec for _, rec in store.iter_runs(out)]


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
    [rec] = _run(
        bed, tmp_path, image, name="tb", integrity="ram",
        limits={"max_time_s": 60, "observe_after_s": 1},
        workload={"writer": {"working_set_mib": 32, "rate_mib_s": 8, "pattern": "sparse"}},
        migration={"max-bandwidth": "400mbit"},
    )
    assert rec["outcome"] == "completed", rec["error"]
    assert rec["integrity"] == "ok", rec["integrity_detail"]
    assert rec["integrity_detail"]["ram"]["differing_pages"] == 0
    assert rec["integrity_detail"]["stamps"]["verdict"] == "ok"
    assert rec["hosts"]["source"]["transport"] == "ssh"
    assert rec["hosts"]["destination"]["address"] == "10.250.2.2"
    assert rec["vms"]["destination"]["host"] == "destination"
    # The destination listened on the migration link.
    assert "10.250.3.2" in str(rec["timeline"]) or rec["migration"]
    assert any(p["host"] == "destination" for p in rec["guest"]["writer"])
    assert remote_tunnel_threads() == []


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
    assert rec["outcome"] == "completed", rec["error"]
    mbps = rec["metrics"]["qemu_mbps"]
    assert abs(mbps - 200) <= 0.15 * 200, mbps


def test_sshd_killed_mid_run_is_a_recorded_failure_and_next_cell_runs(
        bed: Path, tmp_path: Path, image: GuestImage) -> None:
    killed: list[int] = []

    def state(name: str) -> None:
        if name == "migrate" and not killed:
            def kill() -> None:
                time.sleep(0.5)
                killed.extend(testbed.kill_sshd("destination"))
                time.sleep(0.2)
                testbed.start_sshd(bed, "destination")  # back for the next cell
            threading.Thread(target=kill, daemon=True).start()

    recs = _run(
        bed, tmp_path, image, Progress(state=state), name="sshkill",
        limits={"max_time_s": 60, "observe_after_s": 0}, workload={"writer": None},
        axes={"feature": ["precopy"], "max-bandwidth": ["40mbit", "1gbit"]},
    )
    assert killed
    outcomes = sorted(r["outcome"] for r in recs)
    assert outcomes == ["completed", "failed"], [r["error"] for r in recs]
    failed = next(r for r in recs if r["outcome"] == "failed")
    assert failed["error"]
    assert bed_qemus() == []
