"""Pure parts of the guest workloads: models, QEMU/kernel arguments, ping and fio summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness.errors import HostError
from harness.hosts.netsetup import GUEST_MAC, LocalVmNetwork, NetAttachment, check_subnet
from harness.plan.models import MatrixSpec, WorkloadSpec
from harness.run import workload
from harness.run.sampling import fio, ping
from harness.run.sampling.console import parse_line

NET = NetAttachment(tap="mbtap-src-x1", guest_ip="10.251.0.2", prefix_len=24,
                    host_ip="10.251.0.1")


def spec(**kw: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate(kw)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("workload", "where", "text"),
    [
        ({"writer": {"pattern": "stripes"}}, "workload.writer.pattern", "'zero', 'text'"),
        ({"writer": {"rate_mib_s": -1}}, "workload.writer.rate_mib_s", "greater than or equal"),
        ({"ping": {"interval_ms": 0}}, "workload.ping.interval_ms", "greater than or equal to 1"),
        ({"ping": {"mode": "tcp"}}, "workload.ping.mode", "'udp' or 'icmp'"),
        ({"ping": {"interval_ms": 100, "timeout_ms": 50}}, "workload.ping", "at least one interval"),
        ({"fio": {"rwmixread": 150}}, "workload.fio.rwmixread", "less than or equal to 100"),
        ({"fio": {"rw": "randrw", "rwmixread": 0}}, "workload.fio", "is not a mix"),
        ({"fio": {"rw": "trim"}}, "workload.fio.rw", "'randread'"),
        ({"fio": {"bs": "3x"}}, "workload.fio.bs", "should match pattern"),
        ({"fio": {"bs": "1000"}}, "workload.fio", "multiple of 512"),
        ({"fio": {"rate_iops": -5}}, "workload.fio.rate_iops", "greater than or equal to 0"),
        ({"fio": {"iodepth": 0}}, "workload.fio.iodepth", "greater than or equal to 1"),
        ({"fiio": {}}, "workload.fiio", "Extra inputs"),
    ],
)
def test_bad_workloads_are_validation_errors(workload: dict[str, Any], where: str,
                                             text: str) -> None:
    with pytest.raises(ValidationError) as err:
        MatrixSpec.model_validate({"name": "x", "workload": workload})
    msg = str(err.value)
    assert where in msg and text in msg, msg


def test_working_set_larger_than_guest_ram_is_rejected() -> None:
    with pytest.raises(ValidationError, match="does not fit in guest.memory_mib=512"):
        MatrixSpec.model_validate({"name": "x", "guest": {"memory_mib": 512},
                                   "workload": {"writer": {"working_set_mib": 1024}}})


def test_composed_workload_validates() -> None:
    m = MatrixSpec.model_validate({"name": "x", "workload": {
        "writer": {"working_set_mib": 64}, "ping": {"interval_ms": 5}, "fio": {"bs": "64k"}}})
    assert m.workload.ping is not None and m.workload.ping.interval_ms == 5
    assert m.workload.fio is not None and m.workload.fio.bs_bytes() == 65536


# --------------------------------------------------------------------------- arguments


def test_qemu_args_nic_and_shared_disk(tmp_path: Path) -> None:
    s = spec(ping={}, fio={})
    args = workload.qemu_args(s, NET, tmp_path / "d.raw")
    joined = " ".join(args)
    assert "-netdev tap,id=mbnet0,ifname=mbtap-src-x1,script=no,downscript=no" in joined
    assert f"virtio-net-pci,netdev=mbnet0,mac={GUEST_MAC},romfile=" in joined
    assert f"file={tmp_path / 'd.raw'},format=raw,if=none,id=mbdisk0,cache=none" in joined
    assert "virtio-blk-pci,drive=mbdisk0" in joined
    assert "cache=writeback" in " ".join(workload.qemu_args(s, NET, tmp_path / "d", direct_io=False))


def test_qemu_args_need_what_the_workload_uses(tmp_path: Path) -> None:
    assert workload.qemu_args(spec(writer={}), None, None) == []
    with pytest.raises(ValueError, match="ping needs a network"):
        workload.qemu_args(spec(ping={}), None, None)
    with pytest.raises(ValueError, match="fio needs a shared disk"):
        workload.qemu_args(spec(fio={}), NET, None)


def test_kernel_args() -> None:
    s = spec(writer={"working_set_mib": 32, "rate_mib_s": 8, "pattern": "text"},
             ping={"mode": "udp", "port": 9000},
             fio={"rw": "randrw", "rwmixread": 70, "rate_iops": 200, "bs": "4k", "iodepth": 8})
    assert workload.kernel_args(s, NET, vcpus=2) == [
        "mb.writer=ws:32,rate:8,pattern:text,threads:2",
        "mb.net=ip:10.251.0.2/24",
        "mb.ping=mode:udp,port:9000",
        ("mb.fio=rw:randrw,rwmixread:70,bs:4k,iodepth:8,ioengine:io_uring,direct:1,"
         "rate_iops:140/60"),
    ]
    assert workload.kernel_args(spec(ping={"mode": "icmp"}), NET)[-1] == "mb.ping=mode:icmp"
    ro = workload.kernel_args(spec(fio={"rw": "randread", "rate_iops": 0, "direct": False}))
    assert ro == ["mb.fio=rw:randread,bs:4k,iodepth:4,ioengine:io_uring,direct:0"]
    # no spaces: every word survives the kernel command line
    assert all(" " not in w for w in workload.kernel_args(s, NET))


def test_ready_kinds() -> None:
    assert workload.ready_kinds(spec(writer={}, ping={}, fio={})) == [
        "writer-ready", "net-ready", "ping-ready", "fio-ready"]


# --------------------------------------------------------------------------- ping


def probes(t0: float, n: int, interval: float, rtt: float,
           lost: range = range(0), late: dict[int, float] | None = None) -> list[ping.Probe]:
    out = []
    for i in range(n):
        sent = t0 + i * interval
        if i in lost:
            out.append(ping.Probe(i, sent, None))
        else:
            out.append(ping.Probe(i, sent, sent + (late or {}).get(i, rtt)))
    return out


def test_ping_summary_phases_and_gap() -> None:
    # 10 ms probes for 10 s; migrate at t=3; probes 500..519 lost (5.00-5.19 s); resume at 5.2
    ps = probes(1000.0, 1000, 0.01, 0.001, lost=range(500, 520))
    s = ping.summarise(ps, 1003.0, 1005.2, 1010.0, interval_s=0.01, timeout_s=0.5)
    assert s["before"]["sent"] == 300 and s["before"]["lost"] == 0
    assert s["before"]["max_gap_ms"] == pytest.approx(10.0, abs=0.01)
    assert s["during"]["lost"] == 20 and s["during"]["max_lost_run"] == 20
    assert s["during"]["max_gap_ms"] == pytest.approx(210.0, abs=0.01)
    assert s["after"]["lost"] == 0 and s["replies_after_switchover"] == 480
    assert s["max_gap"]["ms"] == pytest.approx(210.0, abs=0.01)
    assert s["max_gap"]["start"] == pytest.approx(1004.991)
    assert s["total"]["sent"] == 1000  # all answered: none undetermined
    assert s["total"]["rtt_p50_ms"] == pytest.approx(1.0) and s["total"]["rtt_max_ms"] == 1.0


def test_ping_late_reply_counts_as_lost_and_rtt_percentiles() -> None:
    ps = probes(0.0, 100, 0.01, 0.002, late={10: 2.0, 20: 0.05})
    s = ping.summarise(ps, 5.0, None, 10.0, interval_s=0.01, timeout_s=1.0)
    assert s["before"]["lost"] == 1  # probe 10 answered after 2 s > timeout
    assert s["before"]["rtt_max_ms"] == pytest.approx(50.0)
    assert s["before"]["rtt_p50_ms"] == pytest.approx(2.0)
    assert s["during"]["sent"] == 0 and s["after"]["sent"] == 0
    assert s["after"]["max_gap_ms"] is None


def test_ping_summary_without_probes() -> None:
    s = ping.summarise([], 1.0, 2.0, 3.0)
    assert s["total"]["sent"] == 0 and s["max_gap"] is None


def test_rtt_percentiles_are_the_one_percentile_linear_between_ranks() -> None:
    """Nearest rank until issue 13 (p99 of 1..100 was 99); the harness's one definition now
    (harness.analysis.stats.percentile): linear between the two nearest ranks, numpy's and R's default."""
    from harness.analysis.stats import percentile

    assert percentile([], 50) is None
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.5
    ps = probes(0.0, 4, 0.01, 0.001) + probes(0.04, 4, 0.01, 0.003)  # RTTs 1 ms x4, 3 ms x4
    s = ping.summarise(ps, 5.0, None, 10.0, interval_s=0.01, timeout_s=1.0)
    assert s["before"]["rtt_p50_ms"] == pytest.approx(2.0)  # nearest rank said 1.0
    assert s["before"]["rtt_p99_ms"] == pytest.approx(3.0)


def test_icmp_echo_checksum_verifies() -> None:
    pkt = ping.icmp_echo(0x1234, 70000, b"hello!")
    assert pkt[0] == 8 and int.from_bytes(pkt[6:8], "big") == 70000 & 0xFFFF
    assert ping._checksum(pkt) == 0  # a correct checksum sums to zero


def test_ping_timeline_is_relative() -> None:
    tl = ping.timeline(probes(100.0, 3, 0.01, 0.001, lost=range(1, 2)), 100.0)
    assert tl[1] == {"seq": 1, "t": 0.01, "rtt_ms": None} and tl[0]["rtt_ms"] == 1.0


# --------------------------------------------------------------------------- fio

FIO_LINE = ("@mb fio t={t} seq={seq} dt=1.000 iops={iops} r_iops=70.0 w_iops=30.0 "
            "lat_p50_us=80.0 lat_p99_us={p99} lat_p999_us=900.0 lat_max_us=900.0 "
            "r_lat_p99_us=200.0 w_lat_p99_us=nan err=0")


def fio_records(host_times: list[float], p99: list[float], iops: float = 100.0) -> list[Any]:
    out = []
    for i, (h, p) in enumerate(zip(host_times, p99)):
        rec = parse_line(FIO_LINE.format(t=10 + i, seq=i, iops=iops, p99=p), h)
        assert rec is not None
        out.append(rec)
    return out


def test_fio_timeline_and_phases() -> None:
    src = fio_records([1.0, 2.0, 3.0, 4.0], [250, 260, 270, 5000])
    # the guest paused ~1.5 s around the switchover: the next line arrives late
    dst = fio_records([5.5, 6.5, 7.5], [300, 240, 250])
    noise = [parse_line("@mb writer t=1 rate=8", 2.5)]
    tl = fio.timeline([("source", src + noise), ("destination", dst)])  # type: ignore[list-item]
    assert [s["host"] for s in tl] == ["source"] * 4 + ["destination"] * 3
    assert tl[0]["w_lat_p99_us"] is None and tl[0]["t_guest"] == 10
    assert tl[4]["iops_host"] == pytest.approx(100 / 1.5, abs=0.1)
    assert tl[4]["t_start_host"] == 4.0
    s = fio.summarise(tl, migrate_start=2.9, switchover=5.2, end=8.0)
    assert s["before"]["samples"] == 3 and s["before"]["iops_mean"] == 100.0
    assert s["before"]["lat_p99_us_max"] == 270.0
    # the line covering the pause (4.0 -> 5.5) began before the switchover: it counts as during
    assert s["during"]["samples"] == 2 and s["during"]["lat_p99_us_max"] == 5000.0
    assert s["during"]["iops_host_min"] == pytest.approx(66.7)
    assert s["after"]["samples"] == 2 and s["on_destination"] == 3
    assert s["during"]["max_report_gap_ms"] == 1500.0


def test_summary_columns() -> None:
    s = spec(ping={}, fio={})
    impact = workload.summarise(
        s, migrate_start=1003.0, switchover=1005.2, end=1010.0,
        probes=probes(1000.0, 1000, 0.01, 0.001, lost=range(500, 520)),
        fio_samples=fio.timeline([("source", fio_records([1001.0, 1002.0, 1003.0, 1004.0],
                                                         [100, 110, 120, 900]))]))
    cols = workload.summary_columns(impact)
    assert cols["ping_lost"] == 20 and cols["ping_max_gap_ms"] == pytest.approx(210.0)
    assert cols["fio_iops_before"] == 100.0 and cols["fio_lat_p99_us_before"] == 120.0
    assert cols["fio_lat_p99_us_during"] == 900.0
    assert workload.summary_columns(workload.summarise(
        spec(writer={}), migrate_start=0, switchover=None, end=1)) == dict.fromkeys(cols)


# --------------------------------------------------------------------------- network


def routes(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"dst": d, "dev": dev} for d, dev in pairs])


def test_check_subnet() -> None:
    r = routes(("default", "eth0"), ("192.0.2.0/24", "eth0"), ("10.251.0.0/24", "mbbr0"))
    assert str(check_subnet("10.251.0.1/24", "mbbr0", r).network) == "10.251.0.0/24"
    with pytest.raises(HostError, match="private subnet"):
        check_subnet("8.8.8.1/24", "mbbr0", r)
    with pytest.raises(HostError, match="private subnet"):
        check_subnet("10.251.0.1/16", "mbbr0", r)
    with pytest.raises(HostError, match="overlaps route 10.251.0.0/20 on eth1"):
        check_subnet("10.251.0.1/24", "mbbr0", routes(("10.251.0.0/20", "eth1")))
    with pytest.raises(HostError, match="not IPv4"):
        check_subnet("bogus", "mbbr0", "[]")


def test_tap_names_fit_ifnamsiz() -> None:
    n = LocalVmNetwork("ab12")
    assert n.tap_name("source") == "mbtap-src-ab12" and n.tap_name("destination") == "mbtap-dst-ab12"
    with pytest.raises(ValueError, match="at most 5"):
        LocalVmNetwork("toolongtag")
    with pytest.raises(HostError, match="context manager"):
        n.attachment("source")


def test_workload_label_names_every_part() -> None:
    from harness.plan.models import workload_label as label

    assert label(None) == "idle"
    assert label(WorkloadSpec.model_validate(
        {"writer": {"working_set_mib": 64, "rate_mib_s": 32, "pattern": "random"},
         "ping": {"interval_ms": 10}, "fio": {"rw": "randrw"}})) == (
        "writer 64 MiB @ 32 MiB/s random + ping + fio randrw")
