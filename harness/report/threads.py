"""Per-thread CPU tables, the talk's slide 9 (pure: run records in, a table out).

Each run stores, per side, the busiest QEMU threads with their CPU share over the migration
window (``cpu.<side>.threads``: tid, name, class, % of one core; see
:mod:`harness.run.sampling.cpu`). A table puts the runs of one or more cells side by side: one row
per thread *role and index* (``main``, ``migration``, ``compress 0`` ..., ``vcpu 0``) and side,
one column per cell, each cell the median over the repetitions with its range, and per class of
numbered threads an imbalance figure: the busiest thread over the idlest (max/min) and the
busiest thread's share of the class.

**Matching threads across runs.** A tid is different in every run, so threads are matched by
role and index, both read from the thread's name:

* numbered names carry their index: ``CPU 3/TCG`` is vcpu 3, ``multifdsend_1`` and
  ``mig/src/send_1`` are multifd-send 1, ``multifdrecv_1`` and ``mig/dst/recv_1`` multifd-recv 1;
* QEMU gives every legacy compress thread the same name (``compress``, ``decompress``), so
  threads of one role whose names carry no number are numbered 0, 1 ... **in ascending tid
  order** within one side of one run. QEMU starts them in a loop over its own index and Linux
  hands out tids in increasing order, so tid order is creation order is QEMU's index; and QEMU
  gives a page to the *first* free thread from index 0 up, which is why index 0 is the busiest.

Limits of that rule: tids wrap at ``/proc/sys/kernel/pid_max`` (a wrap between two thread starts
swaps their indices); the record keeps only the 16 busiest threads of a side (``top`` in
:func:`harness.run.sampling.cpu.summarise`), so an idle thread past that list is missing and the
same-name threads after it shift down by one: the table notes every side whose list is full;
a thread that exited and was started again within the window is a second thread (a new tid) and
gets the next index; the kernel cuts names to 15 bytes, so a 3-digit channel number of
``mig/src/send_NNN`` loses its last digit (channels >= 100 collide, and
colliding threads are summed). Threads of class ``other``
(worker pools, ``call_rcu``, IO threads) come and go with no stable identity: they are one row,
their sum.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.output import csv_row
from harness.output import terminal_text as _t
from harness.results.record import RunRecord
from harness.results.record import threadclass as cpu_classes
from harness.results.record.model import CpuSide, CpuThread

SIDES: tuple[str, str] = ("source", "destination")
#: How many threads a side's list holds at most (harness.run.sampling.cpu.summarise's ``top``).
STORED_THREADS = 16

# Roles, in table order, with the CPU class each belongs to. Numbered roles are those whose
# threads come in a set (channels, workers, vCPUs): they get an index and an imbalance figure.
ROLES: tuple[tuple[str, str], ...] = (
    ("main", cpu_classes.MAIN),
    ("migration", cpu_classes.MIGRATION),
    ("return-path", cpu_classes.MIGRATION),
    ("tls", cpu_classes.MIGRATION),
    ("compress", cpu_classes.COMPRESS),
    ("decompress", cpu_classes.DECOMPRESS),
    ("multifd-send", cpu_classes.MULTIFD_SEND),
    ("multifd-recv", cpu_classes.MULTIFD_RECV),
    ("postcopy-listen", cpu_classes.POSTCOPY),
    ("postcopy-fault", cpu_classes.POSTCOPY),
    ("postcopy-preempt", cpu_classes.POSTCOPY),
    ("vcpu", cpu_classes.VCPU),
    ("other", cpu_classes.OTHER),
)
NUMBERED = ("compress", "decompress", "multifd-send", "multifd-recv", "vcpu")
_ORDER = {role: i for i, (role, _) in enumerate(ROLES)}

# Names whose role is fixed. 7.x-8.x names first, then 9.0+ (mig/...); names are at most 15 bytes.
_NAMED = {
    "live_migration": "migration",
    "mig/src/main": "migration",
    "return path": "return-path",
    "mig/src/rp-thr": "return-path",
    "mig/src/return": "return-path",
    "mig/src/tls": "tls",
    "postcopy/listen": "postcopy-listen",
    "mig/dst/listen": "postcopy-listen",
    "postcopy/fault": "postcopy-fault",
    "fault-default": "postcopy-fault",
    "mig/dst/fault": "postcopy-fault",
    "fault-fast": "postcopy-preempt",  # 8.0-8.2: the preempt channel's fault thread
    "mig/dst/preempt": "postcopy-preempt",
}
_NUMBERED_NAME = (
    (re.compile(r"CPU (\d+)/"), "vcpu"),
    (re.compile(r"(?:multifdsend_|mig/src/send_)(\d+)"), "multifd-send"),
    (re.compile(r"(?:multifdrecv_|mig/dst/recv_)(\d+)"), "multifd-recv"),
)
# A class whose threads are numbered by tid order when their names carry no number.
_BY_CLASS = {
    cpu_classes.COMPRESS: "compress",
    cpu_classes.DECOMPRESS: "decompress",
    cpu_classes.MULTIFD_SEND: "multifd-send",
    cpu_classes.MULTIFD_RECV: "multifd-recv",
    cpu_classes.VCPU: "vcpu",
}


@dataclass(frozen=True, order=True)
class ThreadKey:
    """A thread's identity across runs: its role and, for numbered roles, its index.

    ``index`` is None for a role with one thread (main, migration) and for ``ALL CPUs/TCG``
    (single-threaded TCG: one thread for every vCPU). ``name`` keeps the raw name of a
    migration thread this module has no role for (``mig/src/xyz``), so two such threads stay
    two rows.
    """

    order: int
    role: str
    index: int = -1  # -1: no index (sorts first)
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.role == "vcpu" and self.index < 0:
            return "vcpu (all)"
        return self.role if self.index < 0 else f"{self.role} {self.index}"


def thread_role(comm: str, cls: str) -> tuple[str, int | None, str]:
    """``(role, index or None, name)`` of a thread from its name and stored class (pure).

    The class decides main and other (the sampler knows the main thread by its tid); the name
    decides the role within a class and any index it carries. ``name`` is set only for a
    migration or postcopy thread whose name this module does not know.
    """
    if cls == cpu_classes.MAIN:
        return "main", None, ""
    if cls not in cpu_classes.CLASSES or cls == cpu_classes.OTHER:
        return "other", None, ""
    for pattern, role in _NUMBERED_NAME:
        m = pattern.match(comm)
        if m is not None:
            return role, int(m.group(1)), ""
    named = _NAMED.get(comm)
    if named is not None:
        return named, None, ""
    if comm == "ALL CPUs/TCG":
        return "vcpu", None, ""
    by_class = _BY_CLASS.get(cls)
    if by_class is not None:
        return by_class, None, ""
    # Another mig/* or postcopy thread: a row of its own, under its own name.
    return ("postcopy-fault" if cls == cpu_classes.POSTCOPY else "migration"), None, comm


def side_threads(side: CpuSide) -> dict[ThreadKey, float]:
    """CPU % per thread key of one side of one run (pure); see the module docstring for the
    rules. Threads of class other are summed into one key, and so are two threads of a role
    that has one thread (main, migration ...)."""
    out: dict[ThreadKey, float] = {}
    unnumbered: dict[str, list[CpuThread]] = {}
    for th in sorted(side.threads, key=lambda t: t.tid):  # sums in one order: same floats
        role, index, name = thread_role(th.comm, th.cls)
        if role == "other":
            key = ThreadKey(_ORDER["other"], "other")
            out[key] = out.get(key, 0.0) + th.pct
        elif index is not None:
            key = ThreadKey(_ORDER[role], role, index)
            out[key] = out.get(key, 0.0) + th.pct
        elif role in NUMBERED and not (role == "vcpu" and th.comm == "ALL CPUs/TCG"):
            unnumbered.setdefault(role, []).append(th)
        else:  # one thread per role; should a run have two (a second migration), their sum
            key = ThreadKey(_ORDER[role], role, name=name)
            out[key] = out.get(key, 0.0) + th.pct
    for role, threads in unnumbered.items():
        taken = {k.index for k in out if k.role == role}
        free = (i for i in range(len(threads) + len(taken)) if i not in taken)
        for th in sorted(threads, key=lambda t: t.tid):
            out[ThreadKey(_ORDER[role], role, next(free))] = th.pct
    return out


# ---------------------------------------------------------------------------------------------
# Summaries


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over repetitions (``inf`` allowed: a ratio over 0)."""

    n: int
    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread | None:
        xs = sorted(v for v in values if not math.isnan(v))
        if not xs:
            return None
        return cls(len(xs), float(statistics.median(xs)), xs[0], xs[-1])

    def text(self, digits: int = 1) -> str:
        """``12.3 (11.0-14.1)``; a single value, or a range of width 0, without its range."""
        med, lo, hi = (num(v, digits) for v in (self.median, self.lo, self.hi))
        return med if lo == hi else f"{med} ({lo}-{hi})"


def num(v: float | None, digits: int = 1) -> str:
    """A figure for a table: fixed decimals, ``inf`` for an unbounded ratio, ``-`` for none."""
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


@dataclass(frozen=True)
class ThreadRow:
    side: str
    key: ThreadKey
    cells: tuple[Spread | None, ...]  # one per column; None: no run of that column had it


@dataclass(frozen=True)
class ImbalanceCell:
    """How unevenly one class's threads worked, per run, then median and range over runs."""

    threads: Spread  # how many threads of the class the runs had
    max_over_min: Spread | None  # inf when the idlest thread used no CPU at all
    top_share: Spread | None  # busiest thread's share of the class's CPU (0..1)


@dataclass(frozen=True)
class ImbalanceRow:
    side: str
    role: str
    cells: tuple[ImbalanceCell | None, ...]  # one per column; None: fewer than 2 threads


@dataclass(frozen=True)
class ThreadTable:
    """Per-thread CPU % of one core over the migration window, for one or more cells."""

    columns: tuple[str, ...]  # one label per cell (``before``, ``after``, or a cell's label)
    sampled: dict[str, tuple[int, ...]]  # side -> runs with that side sampled, per column
    rows: tuple[ThreadRow, ...]
    imbalance: tuple[ImbalanceRow, ...]
    notes: tuple[str, ...]

    def lines(self, width: int = 18) -> list[str]:
        """The table as fixed-width text: a block per side, one column per cell (names from the
        record lose their control characters: the text goes to terminals and mail)."""
        if not self.rows:
            return ["CPU per thread: not sampled"]
        head = f"{'CPU % of one core':<28}" + "".join(f"{_t(c)[:width - 1]:>{width}}"
                                                      for c in self.columns)
        out = [head]
        for side in SIDES:
            rows = [r for r in self.rows if r.side == side]
            if not rows:
                continue
            runs = self.sampled.get(side, ())
            out.append(f"{side} ({'/'.join(str(n) for n in runs)} runs)")
            for r in rows:
                cells = []
                for i, c in enumerate(r.cells):
                    mark = "*" if c is not None and c.n < runs[i] else ""
                    cells.append(f"{('-' if c is None else c.text()) + mark:>{width}}")
                out.append(f"  {_t(r.key.label)[:25]:<26}" + "".join(cells))
            for ib in (x for x in self.imbalance if x.side == side):
                out.append(f"  {(ib.role + ' max/min')[:25]:<26}" + "".join(
                    f"{'-' if c is None or c.max_over_min is None else c.max_over_min.text():>{width}}"
                    for c in ib.cells))
                out.append(f"  {(ib.role + ' top share %')[:25]:<26}" + "".join(
                    f"{'-' if c is None or c.top_share is None else _pct(c.top_share).text(0):>{width}}"
                    for c in ib.cells))
        return out + [f"  {n}" for n in self.notes]

    def grid(self) -> tuple[list[tuple[str, str]], list[tuple[str, list[str]]],
                            list[tuple[str, list[str]]]]:
        """The table as the HTML pages show it (slide 9's layout): one row per thread, a column
        per side x cell (``(side, cell label)``), then the imbalance rows; ``median (min-max)``
        texts, ``*`` where some runs lack the thread, ``-`` where none had it."""
        sides = [s for s in SIDES if any(r.side == s for r in self.rows)]
        header = [(s, c) for s in sides for c in self.columns]
        cells: dict[ThreadKey, dict[str, tuple[Spread | None, ...]]] = {}
        for r in self.rows:
            cells.setdefault(r.key, {})[r.side] = r.cells
        threads = []
        for key in sorted(cells):
            texts = []
            for s in sides:
                runs = self.sampled.get(s, ())
                row = cells[key].get(s, (None,) * len(self.columns))
                for i, c in enumerate(row):
                    texts.append("-" if c is None else
                                 c.text() + ("*" if i < len(runs) and c.n < runs[i] else ""))
            threads.append((key.label, texts))
        imbalance = []
        roles = [ib.role for ib in self.imbalance]
        for role in dict.fromkeys(roles):
            by_side = {ib.side: ib.cells for ib in self.imbalance if ib.role == role}
            for label, pick in ((f"{role}: max/min", _max_min_text),
                                (f"{role}: busiest share %", _share_text)):
                texts = [pick(c) for s in sides
                         for c in by_side.get(s, (None,) * len(self.columns))]
                imbalance.append((label, texts))
        return header, threads, imbalance

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        """(header, rows) of the per-thread table: median, min, max and n per column."""
        header = ["side", "thread", "role", "index"]
        for c in self.columns:
            header += [f"{c} median %", f"{c} min %", f"{c} max %", f"{c} runs"]
        rows = []
        for r in self.rows:
            row: list[Any] = [r.side, r.key.label, r.key.role,
                              None if r.key.index < 0 else r.key.index]
            for cell in r.cells:
                row += ([None, None, None, 0] if cell is None
                        else [cell.median, cell.lo, cell.hi, cell.n])
            rows.append(csv_row(row))
        return header, rows

    def imbalance_csv(self) -> tuple[list[str], list[list[Any]]]:
        """(header, rows) of the imbalance figures per side, class and column."""
        header = ["side", "class", "column", "threads median", "max/min median", "max/min min",
                  "max/min max", "top share median", "top share min", "top share max", "runs"]
        rows = []
        for ib in self.imbalance:
            for label, c in zip(self.columns, ib.cells):
                if c is None:
                    continue
                mm, ts = c.max_over_min, c.top_share
                rows.append(csv_row([
                    ib.side, ib.role, label, c.threads.median,
                    *(("inf" if math.isinf(v) else v for v in (mm.median, mm.lo, mm.hi))
                      if mm else (None, None, None)),
                    *((ts.median, ts.lo, ts.hi) if ts else (None, None, None)),
                    c.threads.n]))
        return header, rows


def _max_min_text(c: ImbalanceCell | None) -> str:
    return "-" if c is None or c.max_over_min is None else c.max_over_min.text()


def _share_text(c: ImbalanceCell | None) -> str:
    return "-" if c is None or c.top_share is None else _pct(c.top_share).text(0)


def _pct(s: Spread) -> Spread:
    return Spread(s.n, 100 * s.median, 100 * s.lo, 100 * s.hi)


def _imbalance(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(max/min, max/sum) of one run's threads of a class; None where undefined (all idle)."""
    hi, lo, total = max(values), min(values), sum(values)
    if hi <= 0:
        return None, None
    return (hi / lo if lo > 0 else math.inf), hi / total


def thread_table(columns: Sequence[tuple[str, Sequence[RunRecord]]]) -> ThreadTable:
    """The per-thread table of ``columns``: (label, the runs of one cell) each (pure).

    Every run whose side was sampled counts (a corrupted guest's CPU cost is still real); a
    skipped or unsampled run adds nothing. A cell is the median over the runs that had that
    thread; the text form marks a thread missing from some runs with ``*``.
    """
    labels = tuple(label for label, _ in columns)
    per_run: list[dict[str, list[dict[ThreadKey, float]]]] = []
    full: set[str] = set()
    for _, runs in columns:
        sides: dict[str, list[dict[ThreadKey, float]]] = {s: [] for s in SIDES}
        for rec in runs:
            if rec.cpu is None:
                continue
            for s in SIDES:
                side = getattr(rec.cpu, s)
                if side is None:
                    continue
                sides[s].append(side_threads(side))
                if len(side.threads) >= STORED_THREADS:
                    full.add(s)
        per_run.append(sides)
    rows: list[ThreadRow] = []
    imbalance: list[ImbalanceRow] = []
    for s in SIDES:
        keys = sorted({k for col in per_run for run in col[s] for k in run})
        for key in keys:
            rows.append(ThreadRow(s, key, tuple(
                Spread.of(run[key] for run in col[s] if key in run) for col in per_run)))
        for role in NUMBERED:
            cells: list[ImbalanceCell | None] = []
            for col in per_run:
                counts, ratios, shares = [], [], []
                for run in col[s]:
                    vals = [v for k, v in run.items() if k.role == role]
                    if len(vals) < 2:
                        continue
                    counts.append(float(len(vals)))
                    ratio, share = _imbalance(vals)
                    if ratio is not None and share is not None:
                        ratios.append(ratio)
                        shares.append(share)
                threads = Spread.of(counts)
                cells.append(None if threads is None else
                             ImbalanceCell(threads, Spread.of(ratios), Spread.of(shares)))
            if any(c is not None for c in cells):
                imbalance.append(ImbalanceRow(s, role, tuple(cells)))
    notes = [f"{s}: a run's list holds {STORED_THREADS} threads, the most the record keeps: "
             "idle threads past it are missing, and same-name threads after one are renumbered"
             for s in SIDES if s in full]
    if any(c is not None and c.n < n for r in rows
           for c, n in zip(r.cells, (len(col[r.side]) for col in per_run))):
        notes.append("*: the thread is missing from some runs (not started, or not in the list)")
    sampled = {s: tuple(len(col[s]) for col in per_run) for s in SIDES}
    return ThreadTable(labels, sampled, tuple(rows), tuple(imbalance), tuple(notes))
