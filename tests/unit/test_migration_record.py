"""Pure parts of harness.run.migration's record keeping, on fake VMs with real console buffers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from harness.plan.matrix import MatrixSpec, expand
from harness.run import migration
from harness.run.sampling.console import Console, ConsoleLine


def _run(workload: dict[str, Any], src_lines: list[str]) -> Any:
    (cell,) = expand(MatrixSpec.model_validate({"name": "t", "workload": workload}), "10.0")
    console = Console("source", "/nonexistent",
                      lines=[ConsoleLine(100.0 + i, t) for i, t in enumerate(src_lines)])
    src = SimpleNamespace(cfg=SimpleNamespace(role="source"), console=console)
    ctx = SimpleNamespace(cell=cell)
    return migration._Run(ctx=ctx, src=src)  # type: ignore[arg-type]


def test_a_writer_that_dies_is_reported_even_without_ping_or_fio() -> None:
    run = _run({"writer": {"working_set_mib": 16, "rate_mib_s": 8}},
               ["@mb writer t=1.0 seq=1 rate=8.00 stall_ms=0.1 max_stall_ms=0.1 passes=0 bad=0",
                "@mb exit workload=writer code=139"])
    migration._finish_workloads(run)
    assert run.workload_errors == ["source: workload=writer code=139"]


def test_healthy_workloads_leave_no_error() -> None:
    run = _run({"writer": {"working_set_mib": 16, "rate_mib_s": 8}},
               ["@mb writer t=1.0 seq=1 rate=8.00 stall_ms=0.1 max_stall_ms=0.1 passes=0 bad=0"])
    migration._finish_workloads(run)
    assert run.workload_errors == []
