"""The guest writer's stalls: the gaps between its reports as the host sees them arrive (pure).

The writer (``workloads/writer.c``) prints a line every :data:`INTERVAL_S` on the console; when
the guest stops (a switchover, a throttled vCPU), reports stop arriving at the host. Under TCG the
guest's own clock stops with it, so the host's arrival times are what show the pause: a stall is
the time between two consecutive reports arriving, minus the reporting interval. The run's
``guest_max_stall_ms`` (:mod:`harness.run.migration`) and the report's per-phase writer stalls
(:mod:`harness.report.impact`) are both this one computation.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The writer's reporting interval: writer.c's default ``--interval-ms``, which the harness uses.
INTERVAL_S = 0.1


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
