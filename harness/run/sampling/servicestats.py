"""What a service's clients saw, from every request of the load (pure): per 100 ms and per phase.

The timeline bins requests by when their reply (or error) arrived: achieved ops/s, latency
percentiles (from when each request was due), errors and timeouts; a request never answered
counts as a timeout at its due time plus the timeout. The phases (before / during / after the
migration, and the whole) take the requests *due* in them, so a request sent just before the
switchover and answered after it carries the pause in its phase's tail. The longest window with
no completed request (the service-visible downtime) comes from the gaps between consecutive
completions over the whole load, each clipped to the phase; the edges of the load (before its
first and after its last reply) are no gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Protocol

from harness.analysis.stats import percentile

BIN_S = 0.1


class RequestLike(Protocol):
    @property
    def due(self) -> float: ...
    @property
    def done(self) -> float | None: ...
    @property
    def status(self) -> str: ...
    @property
    def latency_ms(self) -> float | None: ...


def _lag_ms(r: RequestLike) -> float | None:
    sent = getattr(r, "sent", None)
    return None if sent is None else (sent - r.due) * 1000.0


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def _event_time(r: RequestLike, timeout_s: float) -> float:
    return r.done if r.done is not None else r.due + timeout_s


def _late(r: RequestLike) -> bool:
    return r.status in ("late", "lost")


def timeline(requests: Sequence[RequestLike], t0: float, timeout_s: float,
             bin_s: float = BIN_S) -> list[dict[str, Any]]:
    """One point per ``bin_s`` from the first request to the last event; ``t`` in seconds
    after ``t0`` (the migrate command), the bin's start."""
    if not requests:
        return []
    start = min(r.due for r in requests)
    end = max(_event_time(r, timeout_s) for r in requests)
    n = max(1, math.ceil((end - start) / bin_s + 1e-9))
    lat: list[list[float]] = [[] for _ in range(n)]
    errors, timeouts = [0] * n, [0] * n
    for r in requests:
        i = min(n - 1, int((_event_time(r, timeout_s) - start) / bin_s))
        ms = r.latency_ms
        if ms is not None:
            lat[i].append(ms)
        if r.status == "error":
            errors[i] += 1
        elif _late(r):
            timeouts[i] += 1
    out = []
    for i in range(n):
        vals = lat[i]
        out.append({
            "t": round(start + i * bin_s - t0, 3), "ops": round(len(vals) / bin_s, 1),
            "p50_ms": _r(percentile(vals, 50)), "p99_ms": _r(percentile(vals, 99)),
            "p999_ms": _r(percentile(vals, 99.9)), "max_ms": _r(max(vals) if vals else None),
            "errors": errors[i], "timeouts": timeouts[i]})
    return out


def gaps(requests: Sequence[RequestLike]) -> list[tuple[float, float]]:
    """(start, end) between consecutive completed requests, in time order."""
    done = sorted(r.done for r in requests if r.done is not None and r.latency_ms is not None)
    return [(a, b) for a, b in pairwise(done) if b > a]


def _max_gap(gs: Sequence[tuple[float, float]], lo: float, hi: float
             ) -> tuple[float, float, float] | None:
    best = None
    for a, b in gs:
        a2, b2 = max(a, lo), min(b, hi)
        if b2 > a2 and (best is None or b2 - a2 > best[0]):
            best = (b2 - a2, a2, b2)
    return best


def _phase(requests: Sequence[RequestLike], gs: Sequence[tuple[float, float]], lo: float,
           hi: float) -> dict[str, Any]:
    mine = [r for r in requests if lo <= r.due < hi]
    lat = [ms for r in mine if (ms := r.latency_ms) is not None]
    completed = sum(1 for r in requests if r.done is not None and r.latency_ms is not None
                    and lo <= r.done < hi)
    gap = _max_gap(gs, lo, hi)
    span = hi - lo
    return {
        "requests": len(mine), "completed": len(lat),
        "ops_s": _r(completed / span, 1) if span > 0 else None,
        "p50_ms": _r(percentile(lat, 50)), "p99_ms": _r(percentile(lat, 99)),
        "p999_ms": _r(percentile(lat, 99.9)), "max_ms": _r(max(lat) if lat else None),
        "errors": sum(1 for r in mine if r.status == "error"),
        "timeouts": sum(1 for r in mine if _late(r)),
        "max_gap_ms": _r(gap[0] * 1000, 1) if gap else None,
        # How late this machine wrote the requests: latency it adds, not the guest's.
        "send_lag_p99_ms": _r(percentile([v for r in mine if (v := _lag_ms(r)) is not None], 99)),
    }


def summarise(requests: Sequence[RequestLike], migrate_start: float, switchover: float | None,
              end: float) -> dict[str, Any]:
    """Before / during / after / total of the load (epoch times), and the longest window with
    no completed request from the migrate command on (``max_gap``: ms, start and end in epoch
    s), the service-visible downtime; a stall before the migration stays in ``before``."""
    start = min((r.due for r in requests), default=migrate_start)
    last = max([end, *(r.due for r in requests)]) + 1e-6
    cut = switchover if switchover is not None else last
    gs = gaps(requests)
    gap = _max_gap(gs, migrate_start, last)
    return {
        "before": _phase(requests, gs, start, migrate_start),
        "during": _phase(requests, gs, migrate_start, cut),
        "after": _phase(requests, gs, cut, last),
        "total": _phase(requests, gs, start, last),
        "max_gap": ({"ms": round(gap[0] * 1000, 1), "start": round(gap[1], 6),
                     "end": round(gap[2], 6)} if gap else None),
    }
