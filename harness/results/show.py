"""Text rendering of run records in the style of QEMU's ``info migrate`` (pure).

Records are untrusted: every value is shown through :func:`harness.output.terminal_text`, so a
result file cannot drive the terminal, and one value stays on its line.
"""

from __future__ import annotations

from harness.output import terminal_text as _t
from harness.results.record import RunRecord
from harness.results.record.metrics import CATALOGUE
from harness.results.record.model import FioPhase, Integrity, PingPhase, ServicePhase
from harness.results.record.qmp import MigrationInfo, RamStats


def _kb(v: int | None) -> str:
    return "-" if v is None else f"{v // 1024} kbytes"


def _v(v: float | str | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    return f"{_t(v)} {unit}".rstrip()


def info_migrate(final: MigrationInfo) -> list[tuple[str, str]]:
    """The ``info migrate`` lines for a final query-migrate answer."""
    ram = final.ram or RamStats()
    rows = [
        ("Migration status", str(final.status if final.status is not None else "-")),
        ("total time", _v(final.total_time, "ms")),
        ("downtime", _v(final.downtime, "ms")),
        ("setup", _v(final.setup_time, "ms")),
        ("transferred ram", _kb(ram.transferred)),
        ("throughput", _v(ram.mbps, "mbps")),
        ("remaining ram", _kb(ram.remaining)),
        ("total ram", _kb(ram.total)),
        ("duplicate", _v(ram.duplicate, "pages")),
        ("normal", _v(ram.normal, "pages")),
        ("normal bytes", _kb(ram.normal_bytes)),
        ("dirty sync count", _v(ram.dirty_sync_count)),
        ("page size", _kb(ram.page_size)),
        ("multifd bytes", _kb(ram.multifd_bytes)),
        ("pages-per-second", _v(ram.pages_per_second)),
        ("dirty pages rate", _v(ram.dirty_pages_rate, "pages")),
    ]
    if "expected_downtime" in final.model_fields_set:
        rows.insert(3, ("expected downtime", _v(final.expected_downtime, "ms")))
    if "cpu_throttle_percentage" in final.model_fields_set:
        rows.append(("cpu throttle percentage", _v(final.cpu_throttle_percentage)))
    x = final.xbzrle_cache
    if x is not None and x.model_fields_set | set(x.model_extra or {}):
        rows += [
            ("cache size", _v(x.cache_size, "bytes")),
            ("xbzrle transferred", _kb(x.bytes)),
            ("xbzrle pages", _v(x.pages, "pages")),
            ("xbzrle cache miss", _v(x.cache_miss, "pages")),
            ("xbzrle cache miss rate", _v(x.cache_miss_rate)),
            ("xbzrle encoding rate", _v(x.encoding_rate)),
            ("xbzrle overflow", _v(x.overflow)),
        ]
    c = final.compression
    if c is not None and c.model_fields_set | set(c.model_extra or {}):
        rows += [
            ("compression pages", _v(c.pages, "pages")),
            ("compression busy", _v(c.busy)),
            ("compression busy rate", _v(c.busy_rate)),
            ("compressed size", _kb(c.compressed_size)),
            ("compression rate", _v(c.compression_rate)),
        ]
    return rows


def run_block(record: RunRecord) -> str:
    """A slide-style block for one run: identity, verdicts, info migrate, guest impact."""
    cell = record.cell
    m = record.metrics
    axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items()) or "base"
    head = [
        _t(f"== {record.campaign} / {cell.id} rep {record.repetition}: "
           f"{cell.variant} ({axes})"),
        _t(f"QEMU {record.qemu.version or '?'}, "
           f"accel {record.hosts.source.accel or '?'}, "
           f"outcome {record.outcome}, integrity {integrity_text(record.integrity)}")
        + (" (RAM compared; timing excluded)"
           if record.timing_excluded and cell.integrity == "ram" else ""),
    ]
    if record.outcome == "skipped":
        return "\n".join(head + [f"  skipped: {_t(record.error or 'no reason recorded')}"])
    if record.error:
        head.append(f"error: {_t(record.error)}")
    rows = info_migrate(record.final or MigrationInfo())
    rows += [_metric(record, key) for key in (
        "host_pause_ms", "guest_max_stall_ms", "guest_max_stall_guest_clock_ms",
        "throughput_mbps")]
    rows.append(("query-migrate samples", _v(m.samples)))
    ping = record.guest_impact.ping
    if ping is not None:
        for phase in ("before", "during", "after"):
            ph: PingPhase = getattr(ping, phase)
            rows.append((f"ping {phase}", f"sent {_v(ph.sent)}, lost {_v(ph.lost)}, "
                         f"max gap {_v(ph.max_gap_ms, 'ms')}, rtt p50/p99/max "
                         f"{_v(ph.rtt_p50_ms)}/{_v(ph.rtt_p99_ms)}/{_v(ph.rtt_max_ms)} ms"))
    fio = record.guest_impact.fio
    if fio is not None:
        # Host clock, as summary.csv: under TCG the guest's clock stops with the VM, so its
        # IOPS hide the pause.
        for phase in ("before", "during", "after"):
            fp: FioPhase = getattr(fio, phase)
            rows.append((f"fio {phase} (host clock)", f"iops {_v(fp.iops_host_mean)}, "
                         f"lat p99 max {_v(fp.lat_p99_us_max, 'us')}"))
    rows += service_rows(record)
    rows += storage_rows(record)
    if m.guest_visible_downtime_ms is not None:  # only a run that switched over has one
        rows.append(_metric(record, "guest_visible_downtime_ms"))
    for err in record.workload_errors:
        rows.append(("workload died", str(err)))
    cpu = record.cpu
    sides = [s for s in (cpu.source, cpu.destination)] if cpu is not None else []
    if any(s is not None and s.classes for s in sides):
        classes: list[str] = []
        for s in sides:
            for cls in (s.classes if s is not None else {}):
                if cls not in classes:
                    classes.append(cls)
        for cls in classes:
            vals = []
            for s in sides:
                pct = s.classes.get(cls) if s is not None else None
                vals.append("-" if pct is None else f"{pct:.1f}%")
            rows.append((f"cpu {cls} (src / dst)", " / ".join(vals)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(head + [f"  {_t(k) + ':':<{width + 1}} {_t(v)}" for k, v in rows])


def service_rows(record: RunRecord) -> list[tuple[str, str]]:
    """A service's figures per phase (latency from when each request was due), its longest
    window without a reply and the dataset read back after the migration."""
    svc = record.guest_impact.service
    if svc is None:
        return []
    rows = []
    for phase in ("before", "during", "after"):
        sp: ServicePhase = getattr(svc, phase)
        rows.append((f"{svc.kind} {phase}",
                     f"{_v(sp.ops_s)} ops/s, p50/p99/p99.9/max {_v(sp.p50_ms)}/{_v(sp.p99_ms)}/"
                     f"{_v(sp.p999_ms)}/{_v(sp.max_ms)} ms, errors {_v(sp.errors)}, timeouts "
                     f"{_v(sp.timeouts)}, longest without a reply {_v(sp.max_gap_ms, 'ms')}, send lag p99 "
                     f"{_v(sp.send_lag_p99_ms, 'ms')}"))
    if svc.max_gap is not None:
        # Only a guest that switched over had a downtime; otherwise it is the longest stall.
        what = ("service-visible downtime" if record.outcome == "completed"
                else "longest window without a reply, no switchover")
        rows.append((f"{svc.kind} {what}", _v(svc.max_gap.ms, "ms")))
    d = svc.dataset
    if d is not None:
        rows.append((f"{svc.kind} dataset", f"{_v(d.verdict)}: {_v(d.keys)} keys, {_v(d.missing)} "
                     f"missing, {_v(d.wrong)} wrong" + (f" ({_v(d.reason)})" if d.reason else "")))
    return rows


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / 1024**2:.1f} MiB"


def storage_rows(record: RunRecord) -> list[tuple[str, str]]:
    """A ``storage: copy`` run's disk sync (issue 17): the mirror to the destination's NBD export
    before the RAM migration (to READY), what it copied in all, what completing it cost at the
    switchover, and the two disks compared afterwards."""
    st = record.storage
    if st is None:
        return []
    rows = [("disk copy", f"{_mib(st.disk_bytes)} disk over NBD {_v(st.nbd)}: synced in "
                          f"{_v(st.sync_s, 's')} ({_mib(st.bytes_at_ready)} at READY), "
                          f"{_mib(st.mirrored_bytes)} mirrored in all, switchover "
                          f"{_v(st.switchover_ms, 'ms')}, disk + RAM {_v(st.total_s, 's')}")]
    if st.error:
        rows.append(("disk copy error", st.error))
    disk = record.integrity.disk
    if disk is not None:
        chunk = _mib(disk.chunk_bytes)
        rows.append(("disk check", f"{disk.verdict}: {_v(disk.differing_chunks)} of "
                                   f"{_v(disk.chunks)} chunks of {chunk} differ"
                                   + (f" ({disk.reason})" if disk.reason else "")))
    return rows


def _metric(record: RunRecord, key: str) -> tuple[str, str]:
    """A figure's line as the catalogue names it (its stored value, in its stored unit)."""
    metric = CATALOGUE[key]
    return metric.title, _v(metric.get(record), metric.show_unit)


def integrity_text(integrity: Integrity) -> str:
    """The verdict, and for a corrupted guest what the checks found: ``corrupted (12 of 65536
    pages differ; the guest crashed)``."""
    if integrity.verdict != "corrupted":
        return integrity.verdict
    found = []
    ram, stamps = integrity.ram, integrity.stamps
    if ram is not None and ram.verdict == "corrupted":
        found.append(f"{_n(ram.differing_pages)} of {_n(ram.pages)} pages differ")
    if stamps is not None and stamps.verdict == "corrupted":
        parts = [f"{_n(stamps.bad_pages)} of {_n(stamps.pages)} pages with a wrong stamp"]
        if stamps.continuous_bad:
            parts.append(f"{stamps.continuous_bad} stale while it ran")
        found.append("stamps: " + ", ".join(parts))
    data = integrity.dataset
    if data is not None and data.verdict == "corrupted":
        found.append(f"service keys: {_n(data.missing)} missing, {_n(data.wrong)} wrong of "
                     f"{_n(data.keys)}")
    disk = integrity.disk
    if disk is not None and disk.verdict == "corrupted":
        found.append(f"disk: {_n(disk.differing_chunks)} of {_n(disk.chunks)} chunks differ")
    if integrity.guest_crash is not None:
        found.append("the guest crashed")
    if integrity.guest_silent is not None:
        found.append("the guest stopped running")
    return "corrupted" + (f" ({'; '.join(found)})" if found else "")


def _n(v: int | None) -> str:
    return "?" if v is None else str(v)
