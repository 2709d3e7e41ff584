"""The guest's memory writer as the host sees it: its reports as a series (pure).

The writer (``workloads/writer.c``) prints a line on the console every reporting interval; the
series keeps each line with the host time it arrived. The stalls between them are
:mod:`harness.analysis.stalls`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from harness.results.record.model import WriterPoint
from harness.results.record.scalars import Role
from harness.run.sampling.console import GuestRecord


def series(sides: Iterable[tuple[Role, Sequence[GuestRecord]]], t0: float) -> list[WriterPoint]:
    """The writer's reports of both sides, on seconds since ``t0`` (the migrate command), in
    order of arrival."""
    out = [WriterPoint(t=round(r.host_time - t0, 4), host=role, guest_t=r.num("t"),
                       rate=r.num("rate"), stall_ms=r.num("stall_ms"), bad=r.num("bad"))
           for role, records in sides for r in records if r.kind == "writer"]
    out.sort(key=lambda p: p.t)
    return out
