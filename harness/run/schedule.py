"""Which run comes next when cells stop once they are sure (``repetitions: {min, max, ci}``).

No I/O: the runner tells the schedule which runs are stored, started and finished, and asks it
for the next run. The run order stays what it is with a fixed number of repetitions:

* ``order: cells``: a cell's runs one after the other, the next cell once it has stopped;
* ``order: interleaved``: in rounds, round ``r`` running repetition ``r`` of every cell still
  open, the variants of one point side by side (A B A B ...). The variants of a point stop
  together: a point goes on while any of its variants is not sure, so a before/after comparison
  keeps equal, interleaved samples on both sides.

Repetitions up to ``min`` always run. Repetition ``r`` beyond it is decided (by
:func:`harness.analysis.stopping.decide`) only once every earlier run of its point has finished:
with several host pairs, a worker with nothing decidable waits (:data:`WAIT`) rather than guess.
A resumed campaign is handed its stored runs first, so it continues where it stopped and makes
the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from harness.analysis.stopping import Decision, Rule, RunFigures, decide
from harness.plan.matrix import Cell, coordinate_key


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


#: :meth:`AdaptiveSchedule.next`: nothing can start until a run in progress finishes.
WAIT: Final = _Wait()


@dataclass
class _Group:
    """The cells that stop together: one cell (order ``cells``), or the variants of a point."""

    cells: list[Cell]
    announced: bool = False


class AdaptiveSchedule:
    """The runs of a matrix whose cells stop when sure (not thread-safe: the runner locks)."""

    def __init__(self, cells: list[Cell], rule: Rule, order: str) -> None:
        self.rule = rule
        self.order = order
        if order == "interleaved":
            points: dict[str, list[Cell]] = {}
            for c in cells:
                points.setdefault(coordinate_key(c, variant=False), []).append(c)
            self.groups = [_Group(g) for g in points.values()]
        else:
            self.groups = [_Group([c]) for c in cells]
        self.group_of = {c.id: g for g in self.groups for c in g.cells}
        self.done: dict[str, dict[int, RunFigures]] = {c.id: {} for c in cells}
        self.running: dict[str, set[int]] = {c.id: set() for c in cells}

    # -- what the runner tells it

    def stored(self, cell_id: str, rep: int, figures: RunFigures) -> None:
        """A run found on disk before the campaign (re)started."""
        self.done[cell_id][rep] = figures

    def started(self, cell: Cell, rep: int) -> None:
        self.running[cell.id].add(rep)

    def finished(self, cell: Cell, rep: int, figures: RunFigures | None
                 ) -> list[tuple[Cell, Decision]]:
        """A run ended: stored with ``figures``, or not stored (None: it runs again on resume).
        Returns each cell of its group with its decision when this closed the group."""
        self.running[cell.id].discard(rep)
        if figures is None:
            return []
        self.done[cell.id][rep] = figures
        group = self.group_of[cell.id]
        if group.announced or self._next_round(group) is not None:
            return []
        group.announced = True
        return [(c, self.decision(c.id)) for c in group.cells]

    # -- what it answers

    def decision(self, cell_id: str, before: int | None = None) -> Decision:
        """The rule's answer on the cell's finished runs (in repetition order), or on those
        before repetition ``before`` (the decision of that round)."""
        runs = self.done[cell_id]
        return decide(self.rule, [runs[r] for r in sorted(runs) if before is None or r < before])

    def next(self) -> tuple[Cell, int] | _Wait | None:
        """The next run to start, :data:`WAIT`, or None when every cell has stopped and no run
        is in progress."""
        best: tuple[tuple[int, int], Cell, int] | None = None
        for i, group in enumerate(self.groups):
            nxt = self._next_round(group)
            if nxt is None or isinstance(nxt, _Wait):
                continue
            rnd, cell = nxt
            # order cells: the first group that can run; interleaved: the lowest round first
            key = (rnd if self.order == "interleaved" else 0, i)
            if best is None or key < best[0]:
                best = (key, cell, rnd)
        if best is not None:
            return best[1], best[2]
        return WAIT if any(self.running.values()) else None

    def _first_gap(self, cell: Cell) -> int:
        taken = self.done[cell.id].keys() | self.running[cell.id]
        r = 1
        while r in taken:
            r += 1
        return r

    def _next_round(self, group: _Group) -> tuple[int, Cell] | _Wait | None:
        """(round, cell) of the group's next run, WAIT (undecidable now), or None (stopped)."""
        rnd, idx = min((self._first_gap(c), i) for i, c in enumerate(group.cells))
        if rnd > self.rule.max:
            return WAIT if self._busy(group, rnd + 1) else None
        if rnd <= self.rule.min:
            return rnd, group.cells[idx]
        if self._busy(group, rnd):
            return WAIT
        # the round's decision rests on the runs before it, so every variant of the point
        # gets the same answer, whichever of them ran first in this round
        if all(self.decision(c.id, before=rnd).stop for c in group.cells):
            return None
        return rnd, group.cells[idx]

    def _busy(self, group: _Group, below: int) -> bool:
        """Is a run of the group before repetition ``below`` still in progress?"""
        return any(r < below for c in group.cells for r in self.running[c.id])

    def closed(self, cell_id: str) -> bool:
        """Has the cell's group stopped (every run it needs done)?"""
        return self._next_round(self.group_of[cell_id]) is None

    def pending(self) -> bool:
        """Are runs left that the rule asks for?"""
        return any(self._next_round(g) is not None for g in self.groups)

    def planned(self) -> tuple[int, int, int]:
        """(runs done, fewest runs the campaign can end with, most): the progress bar's range."""
        done = lo = hi = 0
        for group in self.groups:
            stopped = self._next_round(group) is None
            for c in group.cells:
                n = len(self.done[c.id])
                ran = n + len(self.running[c.id])
                done += n
                lo += ran if stopped else max(self.rule.min, ran)
                hi += ran if stopped else max(self.rule.max, ran)
        return done, lo, hi
