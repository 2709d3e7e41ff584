"""Guest workloads with real QEMU 10.0 under TCG: ping on the VM bridge, fio on a shared disk,
and a local migration with both running (network-visible gap vs QEMU's downtime)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.guest.image import GuestImage, create_shared_disk, ensure_image, initrd_for
from harness.hosts.host import LocalHost
from harness.hosts.netsetup import GUEST_MAC, LocalVmNetwork
from harness.plan.models import HostsConfig, HostSpec, WorkloadSpec
from harness.run import workload
from harness.run.sampling import fio as fio_sampling
from harness.run.sampling import ping
from harness.run.vm import Vm, VmConfig

from .conftest import qemu_processes

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]  # this checkout

BOOT_S = 45.0


def _our_qemus() -> list[str]:
    return [ln for ln in qemu_processes() if "-wl" in ln.split(" -name ", 1)[-1].split(",", 1)[0]]


@pytest.fixture(autouse=True)
def no_leftover_qemu() -> Iterator[None]:
    """Like conftest's, but only for this module's QEMUs (named mb-*-wl*): other sessions run
    their own QEMUs on this machine at the same time."""
    assert _our_qemus() == [], "a QEMU from an earlier workload test is still running"
    yield
    left = _our_qemus()
    assert left == [], f"QEMU processes left behind: {left}"


@pytest.fixture(scope="module")
def fio_image() -> GuestImage:
    img = ensure_image(REPO_ROOT / "build" / "image", fio=True)
    assert img.fio_initrd is not None and img.fio_initrd.is_file()
    return img


def _host() -> LocalHost:
    return LocalHost("local", HostSpec())


def _vm(tmp: Path, hosts: HostsConfig, image: GuestImage, spec: WorkloadSpec, role: str,
        net: LocalVmNetwork | None, disk: Path | None) -> Vm:
    att = net.attachment(role) if net is not None else None
    append = " ".join(["console=ttyS0", "quiet", "panic=0", "loglevel=4",
                       *workload.kernel_args(spec, att)])
    cfg = VmConfig(
        name=f"mb-{role[:3]}-wl{tmp.name[-6:]}", role=role, build=hosts.qemu_builds["10.0"],
        accel="tcg", vcpus=1, memory_mib=512, kernel=image.kernel,
        initrd=initrd_for(image, spec), append=append, workdir=tmp / role,
        incoming=role == "destination", start_paused=role == "source",
        extra_args=tuple(workload.qemu_args(spec, att, disk)),
    )
    return Vm(_host(), cfg)


def _ready(vm: Vm, spec: WorkloadSpec, timeout: float = BOOT_S) -> None:
    deadline = time.monotonic() + timeout
    for kind in workload.ready_kinds(spec):
        if vm.console.wait_for(kind, max(0.1, deadline - time.monotonic())) is None:
            errors = [r.fields for r in vm.console.records("error")]
            tail = [ln.text for ln in vm.console.snapshot()][-15:]
            pytest.fail(f"no '@mb {kind}' from the {vm.cfg.role}: errors {errors}; tail {tail}")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[LocalVmNetwork]:
    with LocalVmNetwork(f"t{abs(hash(tmp_path.name)) % 10000}") as n:
        yield n


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["udp", "icmp"])
def test_guest_answers_ping_on_the_bridge(tmp_path: Path, hosts: HostsConfig, image: GuestImage,
                                          net: LocalVmNetwork, mode: str) -> None:
    spec = WorkloadSpec.model_validate({"ping": {"mode": mode, "interval_ms": 10}})
    with _vm(tmp_path, hosts, image, spec, "source", net, None) as vm:
        vm.launch()
        vm.qmp.execute("cont")
        _ready(vm, spec)
        ready = vm.console.records("net-ready")[0]
        assert ready.fields["ip"] == f"{net.guest_ip}/24"
        assert ready.fields["mac"] == GUEST_MAC
        with ping.Prober(net.guest_ip or "", interval_s=0.01, mode=mode,  # type: ignore[arg-type]
                         source=net.host_ip) as prober:
            time.sleep(3.0)
        probes = prober.probes()
        # ARP resolution may cost the first probe or two
        s = ping.summarise(probes[5:], time.time(), None, time.time())
        b = s["before"]
        print(f"{mode}: sent={b['sent']} lost={b['lost']} rtt p50={b['rtt_p50_ms']} "
              f"p99={b['rtt_p99_ms']} max={b['rtt_max_ms']} gap={b['max_gap_ms']} ms")
        assert b["sent"] >= 200
        assert b["lost"] <= 0.02 * b["sent"], b
        assert b["rtt_p50_ms"] is not None and b["rtt_p50_ms"] < 20


@pytest.mark.timeout(150)
def test_fio_reports_iops(tmp_path: Path, hosts: HostsConfig, fio_image: GuestImage) -> None:
    spec = WorkloadSpec.model_validate(
        {"fio": {"rw": "randrw", "rwmixread": 70, "bs": "4k", "iodepth": 4, "rate_iops": 200,
                 "disk_mib": 64}})
    assert spec.fio is not None
    disk = create_shared_disk(tmp_path / "disk.raw", spec.fio.disk_mib)
    with _vm(tmp_path, hosts, fio_image, spec, "source", None, disk) as vm:
        vm.launch()
        vm.qmp.execute("cont")
        _ready(vm, spec, 60)
        deadline = time.monotonic() + 30
        while len(vm.console.records("fio")) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        tl = fio_sampling.timeline([("source", vm.console.records("fio"))])
    assert len(tl) >= 5, [ln.text for ln in vm.console.snapshot()][-20:]
    iops = [s["iops"] for s in tl[1:]]
    print("fio iops", iops, "p99 us", [s["lat_p99_us"] for s in tl])
    assert all(150 <= v <= 250 for v in iops), iops
    assert all(s["lat_p99_us"] is not None and s["err"] == 0 for s in tl[1:])
    assert all(abs(s["r_iops"] - 140) < 30 and abs(s["w_iops"] - 60) < 20 for s in tl[1:]), tl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(240)
def test_migration_with_ping_and_fio(tmp_path: Path, hosts: HostsConfig, fio_image: GuestImage,
                                     net: LocalVmNetwork) -> None:
    spec = WorkloadSpec.model_validate({
        "writer": {"working_set_mib": 32, "rate_mib_s": 8, "pattern": "text"},
        "ping": {"mode": "udp", "interval_ms": 10},
        "fio": {"rw": "randrw", "rwmixread": 70, "rate_iops": 100, "disk_mib": 64},
    })
    assert spec.fio is not None and spec.ping is not None
    disk = create_shared_disk(tmp_path / "disk.raw", spec.fio.disk_mib)
    dst = _vm(tmp_path, hosts, fio_image, spec, "destination", net, disk)
    src = _vm(tmp_path, hosts, fio_image, spec, "source", net, disk)
    with dst, src:
        dst.launch()
        src.launch()
        src.qmp.execute("cont")
        _ready(src, spec, 60)
        time.sleep(2.0)  # a few fio seconds before
        for vm in (src, dst):
            vm.qmp.execute("migrate-set-capabilities",
                           {"capabilities": [{"capability": "events", "state": True}]})
            vm.qmp.execute("migrate-set-parameters", {"max-bandwidth": 100_000_000,
                                                      "downtime-limit": 300})
        uri = f"tcp:127.0.0.1:{_free_port()}"
        dst.qmp.execute("migrate-incoming", {"uri": uri})
        prober = ping.Prober(net.guest_ip or "", interval_s=0.01, source=net.host_ip)
        prober.start()
        try:
            time.sleep(2.0)
            t_migrate = time.time()
            src.qmp.execute("migrate", {"uri": uri})
            deadline = time.monotonic() + 90
            while True:
                info = src.qmp.execute("query-migrate")
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                assert time.monotonic() < deadline, info
                time.sleep(0.05)
            assert info["status"] == "completed", info
            resume = dst.qmp.wait_event("RESUME", 10.0)
            assert resume is not None
            time.sleep(5.0)
        finally:
            probes = prober.stop()
        end = time.time()
        stop = src.qmp.events("STOP")
        host_pause_ms = (resume.qemu_time - stop[-1].qemu_time) * 1000 if stop else None
        s = ping.summarise(probes, t_migrate, resume.host_time, end)
        fio_tl = fio_sampling.timeline([("source", src.console.records("fio")),
                                        ("destination", dst.console.records("fio"))])
        fs = fio_sampling.summarise(fio_tl, t_migrate, resume.host_time, end)
        writer_dst = dst.console.records("writer")
    gap = s["max_gap"]["ms"]
    downtime = info.get("downtime")
    print(f"migration: total {info.get('total-time')} ms, downtime {downtime} ms, host pause "
          f"{host_pause_ms and round(host_pause_ms, 1)} ms; ping lost before/during/after "
          f"{s['before']['lost']}/{s['during']['lost']}/{s['after']['lost']}, max gap {gap} ms "
          f"(gap/downtime {gap / downtime:.2f}); fio iops before {fs['before']['iops_mean']} "
          f"during(host) {fs['during']['iops_host_mean']} after {fs['after']['iops_mean']}, "
          f"p99 us before {fs['before']['lat_p99_us_max']} during {fs['during']['lat_p99_us_max']}")
    assert s["before"]["lost"] == 0, s["before"]
    assert s["before"]["max_gap_ms"] < 200, s["before"]
    # the switchover is visible: a gap well above the probe interval, or lost probes
    assert s["during"]["lost"] > 0 or s["max_gap"]["ms"] > 3 * 10, s
    assert s["max_gap"]["ms"] >= downtime * 0.5, (s["max_gap"], downtime)
    # and replies resume on the destination
    assert s["replies_after_switchover"] > 100, s
    assert s["after"]["lost"] <= 2, s["after"]
    # fio keeps running on the destination (shared disk)
    dst_fio = [x for x in fio_tl if x["host"] == "destination"]
    assert len(dst_fio) >= 3 and all(x["iops"] > 50 for x in dst_fio[1:]), dst_fio
    assert len(writer_dst) >= 10


def test_fiomon_reduces_fio_json_to_per_second_lines(tmp_path: Path) -> None:
    """fiomon (guest side) on a synthetic fio json+ stream: interval IOPS and percentiles."""
    import json
    import subprocess

    exe = tmp_path / "fiomon"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe),
                    str(REPO_ROOT / "workloads/fio/fiomon.c")], check=True, timeout=120)

    def status(ms: int, r_ios: int, bins: dict[str, int]) -> str:
        d = {"total_ios": r_ios, "clat_ns": {"min": 1, "bins": bins}}
        return json.dumps({"fio version": "x", "timestamp_ms": ms, "jobs": [
            {"jobname": "mb", "error": 0, "job options": {"rw": "randread"},
             "read": d, "write": {"total_ios": 0, "clat_ns": {"min": 0}}}]}, indent=2)

    # 2nd interval: 100 IOs, 98 at 100 us, 2 at 5000 us
    stream = "fio: a warning line\n" + status(1000, 50, {"100000": 50}) + "\n" + status(
        2000, 150, {"100000": 148, "5000000": 2}) + "\n"
    out = subprocess.run([str(exe), "--parse"], input=stream, capture_output=True, text=True,
                         timeout=10, check=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("@mb fio ")]
    assert "fio: a warning line" in out and "@mb fio-ready" in out
    assert len(lines) == 1
    f = dict(kv.split("=", 1) for kv in lines[0].split()[2:])
    assert f["iops"] == "100.0" and f["r_iops"] == "100.0" and f["w_iops"] == "0.0"
    assert f["lat_p50_us"] == "100.0" and f["lat_p99_us"] == "5000.0"
    assert f["w_lat_p99_us"] == "nan" and f["err"] == "0"
