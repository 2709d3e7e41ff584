"""The guest's memory writer as the host sees it: its reports, and the stalls between them (pure).

The writer (``workloads/writer.c``) prints a line every :data:`INTERVAL_S` on the console; when
the guest stops (a switchover, a throttled vCPU), reports stop arriving at the host. Under TCG the
guest's own clock stops with it, so the host's arrival times are what show the pause: a stall is
the time between two consecutive reports arriving, minus the reporting interval. The run's
``guest_max_stall_ms`` and the report's per-phase writer stalls are both this one computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from harness.record.model import WriterPoint
from harness.record.scalars import Role
from harness.sampling.console import GuestRecord

#: The writer's reporting interval: writer.c's default ``--interval-ms``, which the harness uses.
INTERVAL_S = 0.1


def series(sides: Iterable[tuple[Role, Sequence[GuestRecord]]], t0: float) -> list[WriterPoint]:
    """The writer's reports of both sides, on seconds since ``t0`` (the migrate command), in
    order of arrival."""
    out = [WriterPoint(t=round(r.host_time - t0, 4), host=role, guest_t=r.num("t"),
                       rate=r.num("rate"), stall_ms=r.num("stall_ms"), bad=r.num("bad"))
           for role, records in sides for r in records if r.kind == "writer"]
    out.sort(key=lambda p: p.t)
    return out


def stalls(times: Iterable[float], interval_s: float = INTERVAL_S) -> list[tuple[float, float]]:
    """(start, stall in ms) of each gap between consecutive report arrivals ``times`` (any order):
    the gap minus the interval, never below 0."""
    ts = sorted(times)
    return [(a, max(0.0, (b - a - interval_s) * 1000.0)) for a, b in zip(ts, ts[1:])]


def longest_stall_ms(times: Iterable[float], start: float = float("-inf"),
                     end: float = float("inf"), interval_s: float = INTERVAL_S) -> float | None:
    """The longest stall between reports arriving from ``start`` to ``end`` (the gaps before the
    first and after the last report of that window do not count); None with fewer than two."""
    found = stalls((t for t in times if start <= t <= end), interval_s)
    return max(s for _, s in found) if found else None
