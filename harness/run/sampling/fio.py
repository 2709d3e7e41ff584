"""fio in the guest: its per-second ``@mb fio`` lines as a timeline, and per-phase summaries.

The guest's ``fiomon`` (workloads/fio/fiomon.c) runs fio with ``--output-format=json+
--status-interval=1`` and reduces each cumulative JSON status to one line: the interval's IOPS
and completion-latency percentiles (from the difference of fio's cumulative clat histograms)::

    @mb fio t=12.004 seq=7 dt=1.000 iops=200.0 r_iops=140.0 w_iops=60.0 lat_p50_us=88.6
        lat_p99_us=259.1 lat_p999_us=774.1 lat_max_us=774.1 r_lat_p99_us=173.1
        w_lat_p99_us=264.2 err=0

``dt`` and ``iops`` are on the guest's clock, which stops while the VM is stopped under TCG; the
host's arrival time of each line gives ``iops_host`` (the same IOs over the host-time interval since
the previous line), which shows a migration's pause as lost throughput.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from harness.run.sampling.console import GuestRecord

NUMERIC = ("t", "dt", "iops", "r_iops", "w_iops", "lat_p50_us", "lat_p99_us", "lat_p999_us",
           "lat_max_us", "r_lat_p99_us", "w_lat_p99_us")


def _num(fields: dict[str, str], key: str) -> float | None:
    try:
        v = float(fields[key])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(v) else v


def timeline(sources: Iterable[tuple[str, Iterable[GuestRecord]]]) -> list[dict[str, Any]]:
    """Per-second samples from ``(host_label, records)`` pairs (e.g. source then destination).

    Non-``fio`` records are ignored. Each sample: ``t_host`` (epoch arrival), ``host``, ``seq``,
    the line's numbers (``t`` renamed ``t_guest``; ``nan`` becomes None), ``iops_host`` and
    ``t_start_host`` (the previous line's arrival: where the covered host interval begins).
    Samples are sorted by arrival; fio's state migrates with the guest, so ``seq`` continues.
    """
    out: list[dict[str, Any]] = []
    for host, records in sources:
        for r in records:
            if r.kind != "fio":
                continue
            s: dict[str, Any] = {"t_host": r.host_time, "host": host,
                                 "seq": int(_num(r.fields, "seq") or 0)}
            for k in NUMERIC:
                s["t_guest" if k == "t" else k] = _num(r.fields, k)
            s["err"] = int(_num(r.fields, "err") or 0)
            out.append(s)
    out.sort(key=lambda s: s["t_host"])
    prev: float | None = None
    for s in out:
        ios = (s["iops"] or 0.0) * (s["dt"] or 0.0)
        span = s["t_host"] - prev if prev is not None else s["dt"]
        s["iops_host"] = round(ios / span, 1) if span and span > 0 else None
        # The host-time interval the sample covers starts at the previous line's arrival.
        s["t_start_host"] = prev if prev is not None else s["t_host"] - (s["dt"] or 0.0)
        prev = s["t_host"]
    return out


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _phase(samples: Sequence[dict[str, Any]], lo: float, hi: float) -> dict[str, Any]:
    ss = [s for s in samples if lo <= s["t_start_host"] < hi]
    iops = [s["iops"] for s in ss if s["iops"] is not None]
    iops_host = [s["iops_host"] for s in ss if s["iops_host"] is not None]
    p99 = [s["lat_p99_us"] for s in ss if s["lat_p99_us"] is not None]
    p50 = [s["lat_p50_us"] for s in ss if s["lat_p50_us"] is not None]
    mx = [s["lat_max_us"] for s in ss if s["lat_max_us"] is not None]
    times = [s["t_host"] for s in ss]
    return {
        "samples": len(ss),
        "iops_mean": _r(statistics.fmean(iops)) if iops else None,
        "iops_min": _r(min(iops)) if iops else None,
        "iops_host_mean": _r(statistics.fmean(iops_host)) if iops_host else None,
        "iops_host_min": _r(min(iops_host)) if iops_host else None,
        "zero_iops_samples": sum(1 for v in iops if v == 0),
        "lat_p50_us_median": _r(statistics.median(p50)) if p50 else None,
        "lat_p99_us_median": _r(statistics.median(p99)) if p99 else None,
        "lat_p99_us_max": _r(max(p99)) if p99 else None,
        "lat_max_us": _r(max(mx)) if mx else None,
        "max_report_gap_ms": (_r(max(b - a for a, b in pairwise(times)) * 1000)
                              if len(times) > 1 else None),
        "errors": max((s["err"] for s in ss), default=0),
    }


def summarise(samples: Sequence[dict[str, Any]], migrate_start: float, switchover: float | None,
              end: float) -> dict[str, Any]:
    """Before / during / after summaries of a :func:`timeline` (epoch times).

    A sample belongs to the phase in which the host-time interval it covers began, so the line
    that arrives first after the switchover (and covers the pause) counts as ``during``.
    ``during`` is [migrate_start, switchover) (until ``end`` if the guest never moved). Latency
    figures are over the per-second percentiles: ``lat_p99_us_max`` is the worst second's p99.
    ``max_report_gap_ms`` is the longest gap between two lines arriving (about 1000 normally).
    """
    sw = switchover if switchover is not None else math.inf
    return {
        "before": _phase(samples, -math.inf, migrate_start),
        "during": _phase(samples, migrate_start, min(sw, end)),
        "after": _phase(samples, sw, end),
        "on_destination": sum(1 for s in samples if s["host"] == "destination"),
    }
