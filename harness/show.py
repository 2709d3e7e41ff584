"""Text rendering of run records in the style of QEMU's ``info migrate`` (pure).

Records are untrusted: every value is shown through :func:`harness.output.terminal_text`, so a
result file cannot drive the terminal, and one value stays on its line.
"""

from __future__ import annotations

from typing import Any

from harness.output import terminal_text as _t


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf")


def _kb(v: Any) -> str:
    if v is None:
        return "-"
    return f"{int(v) // 1024} kbytes" if _finite(v) else _t(v)


def _v(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and _finite(v):
        v = f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))
    return f"{_t(v)} {unit}".rstrip()


def info_migrate(final: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``info migrate`` lines for a final query-migrate answer."""
    ram = final.get("ram", {})
    rows = [
        ("Migration status", str(final.get("status", "-"))),
        ("total time", _v(final.get("total-time"), "ms")),
        ("downtime", _v(final.get("downtime"), "ms")),
        ("setup", _v(final.get("setup-time"), "ms")),
        ("transferred ram", _kb(ram.get("transferred"))),
        ("throughput", _v(ram.get("mbps"), "mbps")),
        ("remaining ram", _kb(ram.get("remaining"))),
        ("total ram", _kb(ram.get("total"))),
        ("duplicate", _v(ram.get("duplicate"), "pages")),
        ("normal", _v(ram.get("normal"), "pages")),
        ("normal bytes", _kb(ram.get("normal-bytes"))),
        ("dirty sync count", _v(ram.get("dirty-sync-count"))),
        ("page size", _kb(ram.get("page-size"))),
        ("multifd bytes", _kb(ram.get("multifd-bytes"))),
        ("pages-per-second", _v(ram.get("pages-per-second"))),
        ("dirty pages rate", _v(ram.get("dirty-pages-rate"), "pages")),
    ]
    if "expected-downtime" in final:
        rows.insert(3, ("expected downtime", _v(final.get("expected-downtime"), "ms")))
    if "cpu-throttle-percentage" in final:
        rows.append(("cpu throttle percentage", _v(final.get("cpu-throttle-percentage"))))
    x = final.get("xbzrle-cache")
    if x:
        rows += [
            ("cache size", _v(x.get("cache-size"), "bytes")),
            ("xbzrle transferred", _kb(x.get("bytes"))),
            ("xbzrle pages", _v(x.get("pages"), "pages")),
            ("xbzrle cache miss", _v(x.get("cache-miss"), "pages")),
            ("xbzrle cache miss rate", _v(x.get("cache-miss-rate"))),
            ("xbzrle encoding rate", _v(x.get("encoding-rate"))),
            ("xbzrle overflow", _v(x.get("overflow"))),
        ]
    c = final.get("compression")
    if c:
        rows += [
            ("compression pages", _v(c.get("pages"), "pages")),
            ("compression busy", _v(c.get("busy"))),
            ("compression busy rate", _v(c.get("busy-rate"))),
            ("compressed size", _kb(c.get("compressed-size"))),
            ("compression rate", _v(c.get("compression-rate"))),
        ]
    return rows


def run_block(record: dict[str, Any]) -> str:
    """A slide-style block for one run: identity, verdicts, info migrate, guest impact."""
    cell = record["cell"]
    m = record.get("metrics", {})
    axes = ", ".join(f"{k}={v}" for k, v in (cell.get("axes") or {}).items()) or "base"
    head = [
        _t(f"== {record.get('campaign')} / {cell['id']} rep {record['repetition']}: "
           f"{cell['variant']} ({axes})"),
        _t(f"QEMU {(record.get('qemu') or {}).get('version', '?')}, "
           f"accel {(record.get('hosts') or {}).get('source', {}).get('accel', '?')}, "
           f"outcome {record['outcome']}, integrity {record['integrity']}")
        + (" (RAM compared; timing excluded)"
           if record.get("timing_excluded") and cell.get("integrity") == "ram" else ""),
    ]
    if record["outcome"] == "skipped":
        return "\n".join(head + [f"  skipped: {_t(record.get('error') or 'no reason recorded')}"])
    if record.get("error"):
        head.append(f"error: {_t(record['error'])}")
    rows = info_migrate(record.get("final") or {})
    rows += [
        ("host-observed pause", _v(m.get("host_pause_ms"), "ms")),
        ("guest max stall (host clock)", _v(m.get("guest_max_stall_ms"), "ms")),
        ("guest max stall (guest clock)", _v(m.get("guest_max_stall_guest_clock_ms"), "ms")),
        ("average throughput", _v(m.get("throughput_mbps"), "mbps")),
        ("query-migrate samples", _v(m.get("samples"))),
    ]
    impact = record.get("guest_impact") or {}
    ping = impact.get("ping")
    if ping:
        for phase in ("before", "during", "after"):
            ph = ping.get(phase) or {}
            rows.append((f"ping {phase}", f"sent {_v(ph.get('sent'))}, lost {_v(ph.get('lost'))}, "
                         f"max gap {_v(ph.get('max_gap_ms'), 'ms')}, rtt p50/p99/max "
                         f"{_v(ph.get('rtt_p50_ms'))}/{_v(ph.get('rtt_p99_ms'))}/"
                         f"{_v(ph.get('rtt_max_ms'))} ms"))
    fio = impact.get("fio")
    if fio:
        # Host clock, as summary.csv: under TCG the guest's clock stops with the VM, so its
        # IOPS hide the pause.
        for phase in ("before", "during", "after"):
            ph = fio.get(phase) or {}
            rows.append((f"fio {phase} (host clock)", f"iops {_v(ph.get('iops_host_mean'))}, "
                         f"lat p99 max {_v(ph.get('lat_p99_us_max'), 'us')}"))
    if m.get("guest_visible_downtime_ms") is not None:
        rows.append(("guest-visible downtime", _v(m.get("guest_visible_downtime_ms"), "ms")))
    for err in record.get("workload_errors", []):
        rows.append(("workload died", str(err)))
    cpu = record.get("cpu") or {}
    if cpu.get("source") or cpu.get("destination"):
        classes: list[str] = []
        for side in ("source", "destination"):
            for cls, pct in ((cpu.get(side) or {}).get("classes") or {}).items():
                if cls not in classes and pct is not None:
                    classes.append(cls)
        for cls in classes:
            vals = []
            for side in ("source", "destination"):
                pct = ((cpu.get(side) or {}).get("classes") or {}).get(cls)
                vals.append(f"{pct:.1f}%" if _finite(pct) else _v(pct))
            rows.append((f"cpu {cls} (src / dst)", " / ".join(vals)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(head + [f"  {_t(k) + ':':<{width + 1}} {_t(v)}" for k, v in rows])
