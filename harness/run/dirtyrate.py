"""QEMU's own dirty-rate measurement on the source before the migration (issue 16).

Once the workload is steady and before ``migrate``, :func:`measure` runs ``calc-dirty-rate`` and
polls ``query-dirty-rate`` until it says ``measured`` (or a deadline passes). Two modes:

* ``page-sampling`` always: QEMU hashes ``sample-pages`` pages per GiB at the start and the end of
  the period and counts the changed ones. We ask for the maximum (4096 per GiB): a small guest
  otherwise gets a handful of samples and a ±30 % figure;
* on KVM a whole-RAM mode too: ``dirty-ring`` with the dirty ring on (the VM's
  ``dirty-ring-size``), else ``dirty-bitmap`` (KVM's dirty log). Not on TCG: QEMU 10.0 accepts
  ``dirty-bitmap`` there but answers 0 MiB/s for a guest dirtying 16 MiB/s (measured here,
  tests/integration/test_diagnosis.py), so the figure would be wrong, not missing.
  QEMU refuses a mode it cannot do; the refusal is kept as the measurement's ``error``.

QEMU answers in whole MiB/s: below a few MiB/s the figure is coarse.

The period: QEMU counts *distinct* pages dirtied in it, so a page the writer rewrites twice within
the period is counted once and the rate is underestimated once the period exceeds the working
set's rewrite time (working set / rate). The period is at most half that time, so every page is
written at most once in it even with the writer's pacing jitter, and at most 1 s (the migration
must not wait long) and at least 0.2 s (QEMU's timers and TCG's vCPU scheduling make shorter
periods noisy). Within those bounds it is no longer than it takes the writer to dirty
:data:`MIN_SAMPLES` of QEMU's sampled pages (expected): the figure's relative standard error is
about 1 / sqrt(samples), and 64 (12.5 %) is the sample on which the diagnosis's tolerance was set
and checked (analysis/diagnosis.SAMPLING_Z: a 16 MiB/s writer over 1 s). A longer period only
narrows an error the tolerance already allows for, and costs every run its length: the demo's
32 MiB/s writer is measured over 0.5 s instead of 1 s (issue 18). The diagnosis's tolerance
follows the period's sample (analysis/diagnosis.dirty_rate_tolerance).
QEMU before 8.2 has no ``calc-time-unit``: there the period is whole seconds (1 s), and the
figure of a fast writer with a small working set is an underestimate; the record says which
period was used.

The result is a :class:`~harness.results.record.model.PreMigration`; the diagnosis takes its
dirty rate as the model's input before the migration.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Protocol

from harness.errors import QmpError
from harness.plan.models import WriterSpec
from harness.results.record.model import DirtyRateMeasurement, PreMigration
from harness.run.cancel import Stop

MiB = 1024 * 1024
PAGE = 4096
#: QEMU's bounds for sample-pages (per GiB).
MAX_SAMPLE_PAGES = 4096
MIN_PERIOD_S, MAX_PERIOD_S = 0.2, 1.0
#: Dirtied sampled pages a period is long enough to expect (see the module docstring).
MIN_SAMPLES = 64
#: Beyond the period, how long QEMU may take to answer ``measured`` before we give up.
GRACE_S = 5.0

Mode = Literal["page-sampling", "dirty-bitmap", "dirty-ring"]


class Qmp(Protocol):
    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 10.0, wake_on_stop: bool = True) -> Any: ...


def period_s(writer: WriterSpec | None) -> float:
    """The time to dirty :data:`MIN_SAMPLES` sampled pages, at most half the working set's
    rewrite time, within [0.2, 1] s (see the module docstring)."""
    if writer is None or writer.rate_mib_s <= 0:
        return MAX_PERIOD_S  # idle guest or unpaced writer: no rewrite time known
    rewrite = writer.working_set_mib / writer.rate_mib_s
    enough = MIN_SAMPLES * 1024 / (writer.rate_mib_s * MAX_SAMPLE_PAGES)
    return round(min(MAX_PERIOD_S, max(MIN_PERIOD_S, min(rewrite / 2, enough))), 3)


def modes(accel: str | None, dirty_ring: bool) -> list[Mode]:
    """Page sampling, then on KVM the whole-RAM mode (see the module docstring)."""
    if accel != "kvm":
        return ["page-sampling"]
    return ["page-sampling", "dirty-ring" if dirty_ring else "dirty-bitmap"]


def _calc(qmp: Qmp, mode: Mode, period: float, stop: Stop) -> DirtyRateMeasurement:
    ms = max(1, round(period * 1000))
    args: dict[str, Any] = {"calc-time": ms, "calc-time-unit": "millisecond", "mode": mode}
    if mode == "page-sampling":
        args["sample-pages"] = MAX_SAMPLE_PAGES
    query: dict[str, Any] = {"calc-time-unit": "millisecond"}
    try:
        qmp.execute("calc-dirty-rate", args)
    except QmpError as exc:
        if "calc-time-unit" not in str(exc):
            return DirtyRateMeasurement(mode=mode, period_s=period, error=str(exc)[:300])
        # QEMU < 8.2: whole seconds only
        period, query = 1.0, {}
        args = {k: v for k, v in args.items() if k != "calc-time-unit"} | {"calc-time": 1}
        try:
            qmp.execute("calc-dirty-rate", args)
        except QmpError as exc2:
            return DirtyRateMeasurement(mode=mode, period_s=period, error=str(exc2)[:300])
    deadline = time.monotonic() + period + GRACE_S
    stop.sleep(period)
    while True:
        ans = qmp.execute("query-dirty-rate", query or None)
        if ans.get("status") == "measured":
            rate = ans.get("dirty-rate")
            if not isinstance(rate, (int, float)):
                return DirtyRateMeasurement(mode=mode, period_s=period,
                                            error=f"query-dirty-rate gave no rate: {ans!r}"[:300])
            return DirtyRateMeasurement(
                mode=mode, period_s=period, dirty_rate_mib_s=float(rate),
                pages_per_s=round(float(rate) * MiB / PAGE, 1),
                sample_pages=ans.get("sample-pages") if mode == "page-sampling" else None)
        if time.monotonic() > deadline:
            return DirtyRateMeasurement(
                mode=mode, period_s=period,
                error=f"not measured {period + GRACE_S:g} s after calc-dirty-rate "
                      f"(status {ans.get('status')!r})")
        stop.sleep(0.01)  # a round trip on an idle socket: the answer is due, do not wait long


def measure(qmp: Qmp, writer: WriterSpec | None, accel: str | None, dirty_ring: bool,
            writer_rate_mib_s: float | None, stop: Stop) -> PreMigration:
    """Every mode of :func:`modes`, one after the other (QEMU runs one calculation at a time).

    :raise Cancelled: the campaign was stopped (its waits wake on ``stop``).
    """
    period = period_s(writer)
    return PreMigration(
        calc_dirty_rate=tuple(_calc(qmp, m, period, stop) for m in modes(accel, dirty_ring)),
        writer_rate_mib_s=writer_rate_mib_s)
