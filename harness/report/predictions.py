"""The convergence model held to account: its predictions beside what happened (pure).

Every run of a campaign is diagnosed (:func:`harness.analysis.diagnosis.diagnose`); a run whose
figures are not a valid migration result (corrupted, failed, not migrated) is counted apart, not
scored. For the others:

* a confusion table of the outcome predicted *before* the migration (configured and pre-measured
  inputs) against the outcome measured (completed / not converged);
* the error of the predicted total time (relative: predicted / measured - 1) and downtime
  (absolute, ms) over the runs that completed, before the run and from the end of pass 0;
* the same errors again with the link as the campaign's *other* runs over the same host pair
  measured it (:func:`harness.analysis.diagnosis.link_premeasured`): the switchover and
  postcopy phases run at the link's pace, not at ``max-bandwidth``; a run's own figures never
  feed its prediction.

Downtime is an absolute error: QEMU's measured downtime of a few milliseconds makes relative
errors meaningless, and over loopback QEMU lifts ``max-bandwidth`` for the stop-and-copy phase,
so the model (which sends the last remainder at ``max-bandwidth``) overestimates it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from harness.analysis.diagnosis import Diagnosis, Figures, diagnose, link_premeasured
from harness.results.record import RunRecord

#: Outcome labels of the confusion table.
COMPLETES, NOT_CONVERGED, UNKNOWN = "completes", "does not converge", "no prediction"
PREDICTED_LABELS = (COMPLETES, NOT_CONVERGED, UNKNOWN)
ACTUAL_LABELS = ("completed", "not converged")


@dataclass(frozen=True)
class Errors:
    """Errors of one prediction over the runs that completed (None: no run to score)."""

    n: int
    median: float | None
    low: float | None
    high: float | None

    @staticmethod
    def of(values: Sequence[float]) -> Errors:
        if not values:
            return Errors(0, None, None, None)
        return Errors(len(values), statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class RunRow:
    cell_id: str
    repetition: int
    factor: str
    predicted: str
    actual: str
    predicted_total_s: float | None
    measured_total_s: float | None
    predicted_downtime_ms: float | None
    measured_downtime_ms: float | None


@dataclass(frozen=True)
class Predictions:
    #: (predicted label, actual label) -> runs
    confusion: dict[tuple[str, str], int]
    total_time_pct: Errors  # before the run: 100 * (predicted / measured - 1)
    downtime_ms: Errors  # before the run: predicted - measured
    early_total_time_pct: Errors  # from the end of pass 0
    early_downtime_ms: Errors
    linked_total_time_pct: Errors  # before the run, the link measured by the other runs
    linked_downtime_ms: Errors
    linked_early_total_time_pct: Errors
    linked_early_downtime_ms: Errors
    runs: list[RunRow]
    left_out: dict[str, int]  # invalid factor -> runs not scored

    @property
    def scored(self) -> int:
        return sum(self.confusion.values())

    @property
    def correct(self) -> int:
        return (self.confusion.get((COMPLETES, "completed"), 0)
                + self.confusion.get((NOT_CONVERGED, "not converged"), 0))

    def table(self) -> list[tuple[str, list[int]]]:
        """The confusion table: one row per predicted label, one count per actual label."""
        return [(p, [self.confusion.get((p, a), 0) for a in ACTUAL_LABELS])
                for p in PREDICTED_LABELS]

    @property
    def actual_labels(self) -> tuple[str, ...]:
        return ACTUAL_LABELS

    def text(self, which: str, unit: str) -> str:
        """One error (a field of this class, e.g. ``total_time_pct``) as :func:`error_text`."""
        e = getattr(self, which)
        assert isinstance(e, Errors), which
        return error_text(e, unit)

    def csv(self) -> tuple[list[str], list[list[str | int | float | None]]]:
        """``predictions.csv``: per scored run, the prediction before it beside the measured
        figures (header, rows; the report writes them through :func:`harness.output.csv_row`)."""
        def r(v: float | None, digits: int) -> float | None:
            return None if v is None else round(v, digits)
        head = ["cell_id", "repetition", "diagnosis", "predicted_outcome", "actual_outcome",
                "predicted_total_time_s", "total_time_s", "predicted_downtime_ms",
                "downtime_ms"]
        return head, [[x.cell_id, x.repetition, x.factor, x.predicted, x.actual,
                       r(x.predicted_total_s, 3), r(x.measured_total_s, 3),
                       r(x.predicted_downtime_ms, 1), r(x.measured_downtime_ms, 1)]
                      for x in self.runs]


def _label(f: Figures | None) -> str:
    if f is None or f.converges is None:
        return UNKNOWN
    return COMPLETES if f.converges else NOT_CONVERGED


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def predictions(records: Sequence[RunRecord],
                diagnoses: Sequence[Diagnosis] | None = None) -> Predictions:
    """Score the model over ``records`` (their diagnoses, if already made, in the same order)."""
    diags = list(diagnoses) if diagnoses is not None else [diagnose(r) for r in records]
    linked = [None if pre is None else diagnose(rec, pre)
              for rec, pre in zip(records, link_premeasured(records), strict=True)]
    confusion: dict[tuple[str, str], int] = {}
    left_out: dict[str, int] = {}
    errors: dict[str, list[float]] = {k: [] for k in ("tt", "dt", "ett", "edt", "ltt", "ldt",
                                                      "lett", "ledt")}
    runs: list[RunRow] = []
    for rec, d, ld in zip(records, diags, linked, strict=True):
        m = d.measured
        if not d.valid or m.converges is None:
            left_out[d.factor] = left_out.get(d.factor, 0) + 1
            continue
        actual = ACTUAL_LABELS[0] if m.converges else ACTUAL_LABELS[1]
        key = (_label(d.predicted), actual)
        confusion[key] = confusion.get(key, 0) + 1
        p = d.predicted
        runs.append(RunRow(rec.cell.id, rec.repetition, d.factor, key[0], actual,
                           p.total_time if p else None, m.total_time,
                           _ms(p.downtime) if p else None, _ms(m.downtime)))
        if not m.converges:
            continue
        _score(p, m, errors["tt"], errors["dt"])
        _score(d.early, m, errors["ett"], errors["edt"])
        if ld is not None:
            _score(ld.predicted, m, errors["ltt"], errors["ldt"])
            _score(ld.early, m, errors["lett"], errors["ledt"])
    e = {k: Errors.of(v) for k, v in errors.items()}
    return Predictions(confusion, e["tt"], e["dt"], e["ett"], e["edt"], e["ltt"], e["ldt"],
                       e["lett"], e["ledt"], runs, left_out)


def _score(f: Figures | None, m: Figures, total: list[float], down: list[float]) -> None:
    """A prediction's errors against a completed run's figures; a wrong outcome is scored in
    the confusion table, not as a time error."""
    if f is None or not f.converges:
        return
    if f.total_time is not None and m.total_time:
        total.append(100 * (f.total_time / m.total_time - 1))
    if f.downtime is not None and m.downtime is not None:
        down.append(1000 * (f.downtime - m.downtime))


def error_text(e: Errors, unit: str) -> str:
    """``+6 % median (-10…+329 %), 9 runs``, or ``-`` without a run to score."""
    if e.median is None or e.low is None or e.high is None:
        return "-"
    return (f"{e.median:+.0f} {unit} median ({e.low:+.0f}…{e.high:+.0f} {unit}), "
            f"{e.n} run{'s' if e.n != 1 else ''}")
