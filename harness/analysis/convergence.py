"""The convergence model: whether a precopy migration finishes, after how many passes, when, and
with what downtime; what auto-converge and postcopy change; what would make it finish.

Pure: numbers in (frozen dataclasses, bytes and seconds), numbers out; no I/O. The diagnosis
(:mod:`harness.analysis.diagnosis`) builds the inputs from a run record, this module only computes.

Notation (units: bytes, seconds, bytes/s)::

    R   guest RAM                       z   fraction of RAM in zero pages when the migration starts
    W   working set: distinct bytes the guest keeps re-dirtying (W <= R; R when unbounded)
    d   guest dirty rate (bytes of pages dirtied per second, unthrottled)
    s   share of its vCPU the dirtying needs unthrottled (1: CPU-bound, QEMU's assumption)
    B   wire throughput during precopy passes (max-bandwidth, or what QEMU measured)
    c   wire bytes per RAM byte for a page sent in full (compression: < 1)
    x   wire bytes per RAM byte for a page that hits the XBZRLE cache; C the cache size
    E   RAM bytes per second the encoder threads can process (compression CPU bound; inf if none)
    L   downtime limit                  m   shortest pass (bitmap sync and iteration cost; 0)

Cost of pass k (the first pass is k = 0)::

    c_0 = c_1 = c                       XBZRLE starts after pass 0 and pass 1 fills its cache
    c_k = h x + (1 - h) c  (k >= 2)     h = min(1, C / W): the share of dirty pages it holds
    T(D, k) = max(D c_k / B, D / E, m)  time to send D RAM bytes in pass k
    b_k = min(B, c_k E)                 the wire rate QEMU measures in pass k

Precopy passes::

    D_0     = R (1 - z)                 pass 0 sends every non-zero page (zero pages cost ~nothing)
    d_p     = d min(1, (1 - p/100) / s) the dirty rate under a CPU throttle of p %
    D_{k+1} = min(d_p T(D_k, k), W)     what the guest dirtied while pass k was sent
    budget_k = b_k L                    QEMU's threshold: dirty RAM bytes it sends within L

After pass k QEMU syncs the dirty bitmap; it stops the guest when ``D_{k+1} <= budget_k`` (it
compares RAM bytes with the wire rate, so compression does not raise the budget, it shortens the
passes). Then::

    passes   = k + 1                    live passes, as QEMU's dirty-sync-count - 2
    downtime = T(D_{k+1}, k + 1) at the switchover throughput B_s (QEMU lifts max-bandwidth
               for the stop-and-copy; B_s = B unless known)
    total    = setup + sum_j T(D_j, j) + downtime

In the stationary regime (c_k, p fixed) the remainder changes by ``q = d_p max(c/B, 1/E)`` per
pass: with q < 1 it shrinks geometrically and always reaches the budget (unless max_time or
max_passes end the run first); with q >= 1 it never shrinks, and grows until the working set
bounds it: the fixed point is ``D* = W`` and precopy converges only if ``W <= budget``. Both are
decided exactly: the recurrence is monotone, so a remainder that did not shrink never will.

Auto-converge follows QEMU's ``migration_trigger_throttle``: at a bitmap sync at least 1 s after
the previous check, if the bytes dirtied in that period exceed ``throttle-trigger-threshold`` %
of the bytes sent in it, a counter rises; when it reaches 2 the throttle starts at
``cpu-throttle-initial`` % or rises by ``cpu-throttle-increment`` %, up to ``max-cpu-throttle``,
and the counter resets. A throttle of p % lets the vCPU run (1 - p/100) of the time, hence d_p.

Postcopy switches after N dirty syncs (N - 1 passes; the harness's ``postcopy-after-syncs``) or
at S seconds (mid-pass: the unsent rest of that pass plus what was dirtied in it); the
destination then runs and the rest arrives at B_post (``max-postcopy-bandwidth``, unlimited by
default: the link) with no compression or XBZRLE::

    fault phase = D_switch / B_post     total = t_switch + fault phase     downtime ~ 0

The harness's limits end a run: a pass that would end after ``max_time`` never reaches its sync
(the stop-and-copy must start by then), and ``max_passes`` bounds the syncs. A guest paused after
N syncs (the ``pause`` baseline) dirties nothing from then on.

The model is the textbook one. What it leaves out, so that a disagreement can be read: QEMU
ends a pass early, syncing again (at most every ~100 ms iteration) as soon as its remaining
estimate falls below the threshold, so it may complete on a short sync where the model sends
the whole remainder first (the model's total time runs long; near the boundary it may call a
run that completes non-converging); QEMU measures its bandwidth per 100 ms window including sync
time; zero pages cost a few bytes each.

:func:`observe` reads the same inputs from a run's ``query-migrate`` timeline (up to a time, so
that a prediction can be made from its first seconds); the advice functions bisect
:func:`predict` over one knob (bandwidth, downtime limit, compression ratio, XBZRLE hit cost,
encoder rate, throttle).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from harness.results.record.qmp import MigrationInfo, TimelineSample

MiB = 1 << 20
PAGE_SIZE = 4096
#: QEMU re-evaluates the throttle at a bitmap sync at most once a second.
THROTTLE_PERIOD_S = 1.0
#: ... and changes it when the dirty rate was high at two such checks.
THROTTLE_HITS = 2
#: A run of the model ends after this many passes at the latest (QEMU has no such limit).
MAX_PASSES = 100_000
#: Passes kept in :attr:`Prediction.schedule` (the count is always exact).
SCHEDULE_KEPT = 100
#: A settled geometric decrease longer than this many passes is summed in closed form.
FAST_FORWARD_MIN = 50
#: Bisections in the advice functions stop at this relative width.
PRECISION = 1e-4

Bound = Literal["converged", "postcopy", "dirty-rate", "working-set", "max-time", "max-passes"]


def _finite(name: str, v: float, lo: float = 0.0, hi: float = math.inf, *, open_lo: bool = False
            ) -> None:
    if not (math.isfinite(v) and (v > lo if open_lo else v >= lo) and v <= hi):
        bound = f"{'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if math.isfinite(hi) else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {v!r}")


@dataclass(frozen=True)
class Guest:
    """The guest as the model sees it (bytes, bytes/s)."""

    ram: float
    dirty_rate: float
    working_set: float | None = None  # None: it may dirty all of RAM
    zero_fraction: float = 0.0
    cpu_share: float = 1.0
    page_size: int = PAGE_SIZE

    def __post_init__(self) -> None:
        _finite("ram", self.ram, open_lo=True)
        _finite("dirty_rate", self.dirty_rate)
        if self.working_set is not None:
            _finite("working_set", self.working_set)
        _finite("zero_fraction", self.zero_fraction, 0.0, 1.0)
        _finite("cpu_share", self.cpu_share, 0.0, 1.0, open_lo=True)
        if self.page_size <= 0:
            raise ValueError(f"page_size must be positive, got {self.page_size}")

    @property
    def ws(self) -> float:
        """W: the working set, at most RAM."""
        return self.ram if self.working_set is None else min(self.working_set, self.ram)

    def rate_at(self, throttle: float) -> float:
        """d_p: the dirty rate under a throttle of ``throttle`` %."""
        return self.dirty_rate * min(1.0, (1.0 - throttle / 100.0) / self.cpu_share)


@dataclass(frozen=True)
class Link:
    """How pages cross: throughput on the wire and bytes per RAM byte (see the module docstring)."""

    throughput: float
    ratio: float = 1.0
    xbzrle_ratio: float | None = None  # None: XBZRLE off
    xbzrle_cache: float = 0.0
    encode_rate: float | None = None  # None: the encoder is never the limit
    switchover_throughput: float | None = None  # None: throughput
    postcopy_throughput: float | None = None  # None: throughput

    def __post_init__(self) -> None:
        _finite("throughput", self.throughput, open_lo=True)
        _finite("ratio", self.ratio, 0.0, 2.0, open_lo=True)
        if self.xbzrle_ratio is not None:
            _finite("xbzrle_ratio", self.xbzrle_ratio, 0.0, 2.0, open_lo=True)
        _finite("xbzrle_cache", self.xbzrle_cache)
        for name in ("encode_rate", "switchover_throughput", "postcopy_throughput"):
            v = getattr(self, name)
            if v is not None:
                _finite(name, v, open_lo=True)

    def cost(self, k: int, working_set: float) -> float:
        """c_k: wire bytes per RAM byte in pass ``k``."""
        if self.xbzrle_ratio is None or k < 2:
            return self.ratio
        h = min(1.0, self.xbzrle_cache / working_set) if working_set > 0 else 1.0
        return h * self.xbzrle_ratio + (1.0 - h) * self.ratio

    def seconds_per_byte(self, cost: float, throughput: float | None = None) -> float:
        u = cost / (throughput or self.throughput)
        return max(u, 1.0 / self.encode_rate) if self.encode_rate else u

    def wire_rate(self, cost: float) -> float:
        """b_k: the wire rate QEMU measures while sending at ``cost``."""
        return cost / self.seconds_per_byte(cost)


@dataclass(frozen=True)
class AutoConverge:
    """QEMU's auto-converge parameters (percent)."""

    initial: float = 20.0
    increment: float = 10.0
    maximum: float = 99.0
    trigger_threshold: float = 50.0

    def __post_init__(self) -> None:
        _finite("cpu-throttle-initial", self.initial, 1.0, 99.0)
        _finite("cpu-throttle-increment", self.increment, 1.0, 99.0)
        _finite("max-cpu-throttle", self.maximum, 1.0, 99.0)
        _finite("throttle-trigger-threshold", self.trigger_threshold, 1.0, 100.0)

    def steps(self) -> tuple[float, ...]:
        """The throttle values QEMU goes through: initial, then + increment, capped at maximum."""
        out = [min(self.initial, self.maximum)]
        while out[-1] < self.maximum:
            out.append(min(out[-1] + self.increment, self.maximum))
        return tuple(out)


@dataclass(frozen=True)
class Scenario:
    """One migration to predict."""

    guest: Guest
    link: Link
    downtime_limit: float = 0.3  # s (QEMU's default 300 ms)
    setup_time: float = 0.0
    min_pass_time: float = 0.0
    auto_converge: AutoConverge | None = None
    postcopy_after_syncs: int | None = None
    postcopy_after_s: float | None = None
    pause_after_syncs: int | None = None  # the guest is stopped after N syncs (a baseline)
    max_time: float | None = None  # the harness cancels the migration then
    max_passes: int | None = None

    def __post_init__(self) -> None:
        _finite("downtime_limit", self.downtime_limit)
        _finite("setup_time", self.setup_time)
        _finite("min_pass_time", self.min_pass_time)
        for name in ("postcopy_after_s", "max_time"):
            v = getattr(self, name)
            if v is not None:
                _finite(name, v)
        for name in ("postcopy_after_syncs", "pause_after_syncs", "max_passes"):
            n = getattr(self, name)
            if n is not None and n < 1:
                raise ValueError(f"{name} must be at least 1, got {n}")


@dataclass(frozen=True)
class Pass:
    """One precopy pass of a prediction."""

    index: int
    start: float  # s after the migrate command
    duration: float
    ram_bytes: float  # RAM bytes sent
    wire_bytes: float
    dirtied: float  # RAM bytes dirty at its end: the next pass's load
    throttle: float  # % in effect


@dataclass(frozen=True)
class PostcopyPhase:
    switch_at: float  # s after the migrate command
    remaining: float  # RAM bytes still on the source at the switch
    fault_phase: float  # s until the last page has arrived


@dataclass(frozen=True)
class Prediction:
    """The outcome the model predicts for a :class:`Scenario`."""

    converges: bool
    bound: Bound
    reason: str  # one line, plain words
    passes: int  # live precopy passes (dirty-sync-count - 2 of a completed precopy run)
    total_time: float | None  # s; None when it does not converge
    downtime: float | None  # s
    remaining: float  # RAM bytes dirty at the last sync (the fixed point when it does not converge)
    budget: float  # RAM bytes the downtime limit allows at that sync
    elapsed: float  # s simulated (the decision time when it does not converge)
    throttle: float = 0.0  # % at the end
    throttle_history: tuple[tuple[float, float], ...] = ()  # (s, %) at each change
    postcopy: PostcopyPhase | None = None
    schedule: tuple[Pass, ...] = ()  # the first SCHEDULE_KEPT passes

    @property
    def margin(self) -> float:
        """budget / remaining: >= 1 converges; just below 1 is a marginal case."""
        return math.inf if self.remaining <= 0 else self.budget / self.remaining


def _mib(b: float) -> str:
    return f"{b / MiB:.1f} MiB"


def _s(t: float) -> str:
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.1f} s"


class _Sim:
    """The pass-by-pass recurrence of the module docstring, with QEMU's throttle rule."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.g, self.ln = sc.guest, sc.link
        self.ws = sc.guest.ws
        self.t = sc.setup_time
        self.passes = 0
        self.throttle = 0.0
        self.history: list[tuple[float, float]] = []
        self.schedule: list[Pass] = []
        self.last_check = sc.setup_time
        self.period_dirty = 0.0
        self.period_wire = 0.0
        self.hits = 0

    def result(self, converges: bool, bound: Bound, reason: str, remaining: float, budget: float,
               total: float | None = None, downtime: float | None = None,
               postcopy: PostcopyPhase | None = None) -> Prediction:
        return Prediction(converges, bound, reason, self.passes, total, downtime, remaining, budget,
                          self.t, self.throttle, tuple(self.history), postcopy, tuple(self.schedule))

    def paused(self) -> bool:
        # syncs so far: the setup sync and one per finished pass
        n = self.sc.pause_after_syncs
        return n is not None and self.passes + 1 >= n

    def check_throttle(self, dirtied: float, wire: float) -> None:
        ac = self.sc.auto_converge
        if ac is None:
            return
        self.period_dirty += dirtied
        self.period_wire += wire
        if self.t - self.last_check < THROTTLE_PERIOD_S:
            return
        high = self.period_dirty > ac.trigger_threshold / 100.0 * self.period_wire
        self.last_check, self.period_dirty, self.period_wire = self.t, 0.0, 0.0
        if not high:
            return
        self.hits += 1
        if self.hits >= THROTTLE_HITS:
            self.hits = 0
            new = ac.initial if self.throttle == 0 else self.throttle + ac.increment
            new = min(new, ac.maximum)
            if new != self.throttle:
                self.throttle = new
                self.history.append((self.t, new))

    def settled(self, cost_now: float, cost_next: float, dirtied: float, wire: float) -> bool:
        """Nothing will change the recurrence any more: cost, throttle and events are fixed."""
        sc = self.sc
        # the cost changes once, when XBZRLE's cache is warm (pass 2)
        if cost_next != cost_now or (self.ln.xbzrle_ratio is not None and self.passes < 2):
            return False
        ac = sc.auto_converge
        # from here on every pass dirties the same share of what it sends: if that share is above
        # the trigger the throttle will rise, otherwise it never will
        if (ac is not None and self.throttle < ac.maximum
                and dirtied > ac.trigger_threshold / 100.0 * wire):
            return False
        if sc.pause_after_syncs is not None and not self.paused():
            return False
        return sc.postcopy_after_syncs is None and sc.postcopy_after_s is None

    def switch(self, remaining: float, budget: float) -> Prediction:
        ln = self.ln
        phase = remaining / (ln.postcopy_throughput or ln.throughput)
        pc = PostcopyPhase(self.t, remaining, phase)
        return self.result(True, "postcopy",
                           f"switches to postcopy at {_s(self.t)} with {_mib(remaining)} left; "
                           f"they arrive in {_s(phase)} of page faults", remaining, budget,
                           self.t + phase, 0.0, pc)

    def run(self) -> Prediction:
        sc, g, ln, ws = self.sc, self.g, self.ln, self.ws
        cap = min(sc.max_passes or MAX_PASSES, MAX_PASSES)
        load = g.ram * (1.0 - g.zero_fraction)
        while True:
            k = self.passes
            c = ln.cost(k, ws)
            u = ln.seconds_per_byte(c)
            rate = 0.0 if self.paused() else g.rate_at(self.throttle)
            dur = max(load * u, sc.min_pass_time)
            budget = ln.wire_rate(c) * sc.downtime_limit
            at = sc.postcopy_after_s
            if at is not None and self.t + dur >= at:
                into = max(at - self.t, 0.0)
                unsent = load * (1.0 - into / dur) if dur > 0 else 0.0
                self.t = max(self.t, at)
                cap_bytes = ws if k > 0 else max(load, ws)
                return self.switch(min(unsent + min(rate * into, ws), cap_bytes), budget)
            if sc.max_time is not None and self.t + dur > sc.max_time:
                # the harness cancels before this pass's sync: what was dirty at the last one stays
                end = self.t + dur
                self.t = sc.max_time
                return self.result(False, "max-time",
                                   f"pass {k} would end at {_s(end)}, after max_time "
                                   f"({_s(sc.max_time)}), with {_mib(load)} to send; the limit "
                                   f"allows {_mib(budget)}", load, budget)
            dirtied = min(rate * dur, ws)
            wire = load * c
            if len(self.schedule) < SCHEDULE_KEPT:
                self.schedule.append(Pass(k, self.t, dur, load, wire, dirtied, self.throttle))
            self.passes += 1
            self.t += dur
            if dirtied <= budget:
                c_end = ln.cost(self.passes, ws)
                down = max(dirtied * ln.seconds_per_byte(c_end, ln.switchover_throughput), 0.0)
                return self.result(True, "converged",
                                   f"converges after {self.passes} passes: {_mib(dirtied)} left, "
                                   f"within the {_mib(budget)} the downtime limit allows",
                                   dirtied, budget, self.t + down, down)
            n_pc = sc.postcopy_after_syncs
            if n_pc is not None and self.passes + 1 >= n_pc:
                return self.switch(dirtied, budget)
            if self.passes >= cap:
                return self.result(False, "max-passes",
                                   f"still {_mib(dirtied)} dirty after {self.passes} passes",
                                   dirtied, budget)
            self.check_throttle(dirtied, wire)
            c_next = ln.cost(self.passes, ws)
            # a throttle raised (or a pause begun) at this sync changes the next pass
            same_rate = (0.0 if self.paused() else g.rate_at(self.throttle)) == rate
            if same_rate and self.settled(c, c_next, dirtied, wire):
                if dirtied >= load:
                    return self.stuck(dirtied, budget, rate, c)
                ff = self.fast_forward(dirtied, rate * u, u, budget, cap)
                if isinstance(ff, Prediction):
                    return ff
                load = ff
                continue
            load = dirtied

    def stuck(self, dirtied: float, budget: float, rate: float, c: float) -> Prediction:
        ln = self.ln
        send = ln.wire_rate(c) / c  # RAM bytes per second the link (or encoder) moves
        if dirtied >= self.ws * (1 - 1e-12) and self.ws < self.g.ram:
            why = (f"each pass leaves the whole working set ({_mib(self.ws)}) dirty: sending it "
                   f"takes {_s(self.ws / send)}, the downtime limit allows "
                   f"{_s(self.sc.downtime_limit)}")
            bound: Bound = "working-set"
        else:
            why = (f"the guest dirties {_mib(rate)}/s, the link moves {_mib(send)}/s of RAM: "
                   "each pass leaves at least as much as it sent")
            bound = "dirty-rate"
        return self.result(False, bound, why, dirtied, budget)

    def fast_forward(self, r: float, q: float, u: float, budget: float, cap: int
                     ) -> Prediction | float:
        """Skip the passes of a settled geometric decrease (D_{j+1} = q D_j, q < 1) that cannot
        converge yet, so that q close to 1 costs no loop: the next pass's load, or the end.
        """
        sc = self.sc
        if not (0 < q < 1) or r >= self.ws or r * u < sc.min_pass_time:
            return r
        share = budget / r
        if share <= 0:  # a zero budget (or one that underflows) never holds a positive rest
            self.passes = cap
            return self.result(False, "max-passes", f"the downtime limit allows nothing while "
                               f"the guest dirties {_mib(q / u)}/s", r, budget)
        n = math.ceil(math.log(share) / math.log(q)) - 1
        # stay where every pass is linear: r q^j u >= m
        if sc.min_pass_time > 0:
            n = min(n, int(math.log(sc.min_pass_time / (r * u)) / math.log(q)))
        n = min(n, cap - self.passes - 1)
        if n < FAST_FORWARD_MIN:
            return r  # few passes: simulate them one by one (the schedule keeps them)
        span = r * u * (1 - q**n) / (1 - q)
        if sc.max_time is not None and self.t + span > sc.max_time:
            # passes j that end in time: r u (1 - q^j) / (1 - q) <= max_time - t
            left = (sc.max_time - self.t) * (1 - q) / (r * u)
            j = int(math.log(1 - left) / math.log(q)) if left < 1 else n
            self.passes += j
            self.t = sc.max_time
            rem = r * q**j
            return self.result(False, "max-time",
                               f"still {_mib(rem)} dirty after {self.passes} passes when max_time "
                               f"({_s(sc.max_time)}) ends it", rem, budget)
        self.passes += n
        self.t += span
        return r * q**n


def predict(sc: Scenario) -> Prediction:
    """The outcome of ``sc`` (see the module docstring for the equations)."""
    return _Sim(sc).run()


# ---------------------------------------------------------------------------------------------
# Advice: each is a bisection over :func:`predict`, which is monotone in the knob it moves.


def _bisect(converges: Callable[[float], bool], value: float, lo_limit: float, hi_limit: float,
            *, increasing: bool = True) -> float | None:
    """The knob value at the boundary, on the converging side (within PRECISION).

    ``increasing``: a larger value helps. None when even ``hi_limit`` (or ``lo_limit`` for a
    decreasing knob) does not converge.
    """
    good_end, bad_end = (hi_limit, lo_limit) if increasing else (lo_limit, hi_limit)
    if not converges(good_end):
        return None
    if converges(bad_end):
        return bad_end
    good, bad = good_end, bad_end
    v = min(max(value, lo_limit), hi_limit)  # start from the scenario's own value
    if converges(v):
        good = v
    else:
        bad = v
    while abs(good - bad) > PRECISION * max(abs(good), 1e-12):
        mid = math.sqrt(good * bad) if good > 0 and bad > 0 else (good + bad) / 2
        if converges(mid):
            good = mid
        else:
            bad = mid
    return good


def min_throughput(sc: Scenario) -> float | None:
    """The least wire throughput (bytes/s) with which ``sc`` converges (switchover and postcopy
    throughputs left unset follow it)."""
    def ok(b: float) -> bool:
        return predict(replace(sc, link=replace(sc.link, throughput=b))).converges
    return _bisect(ok, sc.link.throughput, 1.0, 1e13)


def min_downtime_limit(sc: Scenario) -> float | None:
    """The least downtime limit (s) with which ``sc`` converges."""
    def ok(limit: float) -> bool:
        return predict(replace(sc, downtime_limit=limit)).converges
    return _bisect(ok, sc.downtime_limit, 1e-6, 1e6)


def max_wire_ratio(sc: Scenario) -> float | None:
    """The largest wire bytes per RAM byte (for every page: compression) that converges; the
    compression ratio needed is its inverse."""
    def ok(c: float) -> bool:
        return predict(replace(sc, link=replace(sc.link, ratio=c))).converges
    return _bisect(ok, sc.link.ratio, 1e-6, 1.0, increasing=False)


def max_xbzrle_ratio(sc: Scenario) -> float | None:
    """The largest XBZRLE hit cost (wire bytes per RAM byte) that converges with ``sc``'s cache
    (XBZRLE switched on if it was not)."""
    def ok(x: float) -> bool:
        return predict(replace(sc, link=replace(sc.link, xbzrle_ratio=x))).converges
    return _bisect(ok, sc.link.xbzrle_ratio or 1.0, 1e-6, 1.0, increasing=False)


def min_encode_rate(sc: Scenario) -> float | None:
    """The least encoder rate (RAM bytes/s, all threads) that converges."""
    def ok(e: float) -> bool:
        return predict(replace(sc, link=replace(sc.link, encode_rate=e))).converges
    return _bisect(ok, sc.link.encode_rate or sc.link.throughput, 1.0, 1e13)


def xbzrle_cache_size(working_set: float, page_size: int = PAGE_SIZE) -> int:
    """The XBZRLE cache that holds ``working_set``: a power of two (QEMU requires one)."""
    need = max(int(math.ceil(working_set)), page_size, 1)
    return 1 << (need - 1).bit_length()


@dataclass(frozen=True)
class ThrottlePlan:
    """What auto-converge needs, and whether and when its steps get there."""

    needed: float | None  # the least throttle % that converges; None: not even 99 %
    step: int | None  # index in AutoConverge.steps() of the first step >= needed
    step_value: float | None
    reachable: bool  # that step is within max-cpu-throttle
    reached_at: float | None  # s: when the simulated auto-converge run first throttles that much
    prediction: Prediction  # the simulated auto-converge run


def throttle_needed(sc: Scenario) -> float | None:
    """The least constant CPU throttle (%) with which ``sc`` converges, without auto-converge's
    schedule (None: not even 99 %)."""
    base = replace(sc, auto_converge=None)

    def ok(p: float) -> bool:
        g = replace(sc.guest, dirty_rate=sc.guest.rate_at(p), cpu_share=1.0)
        return predict(replace(base, guest=g)).converges
    if ok(0.0):
        return 0.0
    return _bisect(ok, 50.0, 0.0, 99.0)


def plan_throttle(sc: Scenario, ac: AutoConverge | None = None) -> ThrottlePlan:
    """The throttle ``sc`` needs, the auto-converge step that reaches it and roughly when."""
    ac = ac or sc.auto_converge or AutoConverge()
    needed = throttle_needed(sc)
    run = predict(replace(sc, auto_converge=ac))
    steps = AutoConverge(ac.initial, ac.increment, 99.0, ac.trigger_threshold).steps()
    step = None if needed is None else next(
        (i for i, v in enumerate(steps) if v >= needed - 1e-9), None)
    value = None if step is None else steps[step]
    reached = None if needed is None else next(
        (t for t, p in run.throttle_history if p >= needed - 1e-9), None)
    return ThrottlePlan(needed, step, value, value is not None and value <= ac.maximum, reached,
                        run)


# ---------------------------------------------------------------------------------------------
# Inputs from a run's timeline (QEMU's own figures, up to a time)


@dataclass(frozen=True)
class Observation:
    """What the ``query-migrate`` timeline says, up to ``until`` (None where it cannot tell)."""

    until: float
    samples: int
    page_size: int
    ram: float | None  # ram.total
    setup_time: float | None  # s
    throughput: float | None  # bytes/s: median of QEMU's own mbps over the active samples
    dirty_rate: float | None  # bytes/s: QEMU's dirty-pages-rate (distinct pages per >= 1 s period)
    dirtied_at_sync: float | None  # largest remaining right after a sync: a pass's dirtied bytes
    pass0_end: float | None  # s: the first sync after pass 0
    pass0_dirtied: float | None  # remaining right after that sync: what pass 0 left dirty
    nonzero: float | None  # non-zero RAM bytes pass 0 sent
    zero_bytes: float | None  # bytes of the zero pages QEMU found (the last sample's duplicate)
    ratio: float | None  # wire bytes per RAM byte of pages sent in full
    xbzrle_ratio: float | None  # xbzrle bytes per RAM byte of the pages it encoded
    xbzrle_miss_ratio: float | None  # cache-miss / (cache-miss + pages) over the run
    xbzrle_steady_miss_ratio: float | None  # the same from pass 2 on (the cache was cold before)
    xbzrle_overflow_ratio: float | None  # overflow / pages
    xbzrle_cache: float | None
    busy_rate: float | None  # legacy compress: share of pages no compress thread was free for
    throttle: float | None  # highest cpu-throttle-percentage
    syncs: int  # dirty-sync-count reached
    min_sync_interval: float | None  # s: the shortest time between two syncs

    @property
    def zero_fraction(self) -> float | None:
        """z: from what pass 0 sent, else (no sample after its sync) from the zero pages found."""
        if not self.ram:
            return None
        if self.nonzero is not None:
            return min(max(1.0 - self.nonzero / self.ram, 0.0), 1.0)
        if self.zero_bytes is not None:
            return min(max(self.zero_bytes / self.ram, 0.0), 1.0)
        return None


def full_pages(s: MigrationInfo) -> int:
    """Pages sent whole (normal, plus legacy compress's, which ``normal`` does not count)."""
    ram = s.ram
    n = (ram.normal or 0) if ram else 0
    return n + ((s.compression.pages or 0) if s.compression else 0)


def observe(timeline: Sequence[TimelineSample], until: float | None = None) -> Observation:
    """The model's inputs as QEMU measured them in ``timeline`` up to ``until`` s (all if None)."""
    end = math.inf if until is None else until
    samples = [s for s in timeline if s.t <= end and s.ram is not None]
    page = next((s.ram.page_size for s in samples if s.ram and s.ram.page_size), None) or PAGE_SIZE
    active = [s for s in samples if s.status == "active"]
    mbps = [s.ram.mbps for s in active if s.ram and s.ram.mbps]
    syncs = [s.ram.dirty_sync_count or 0 for s in samples if s.ram]
    after_sync: list[TimelineSample] = []  # the first sample after each new sync, while active
    prev = None
    for s in samples:
        n = s.ram.dirty_sync_count if s.ram else None
        if n is not None and prev is not None and n > prev and s.status == "active":
            after_sync.append(s)
        prev = n if n is not None else prev
    pass0 = next((s for s in after_sync if s.ram and (s.ram.dirty_sync_count or 0) >= 2), None)
    before0 = None if pass0 is None else next(
        (s for s in reversed(samples) if s.t < pass0.t and s.ram and s.status == "active"), None)
    rates = [s.ram.dirty_pages_rate for s in samples if s.ram and s.ram.dirty_pages_rate]
    last = samples[-1] if samples else None
    sync_times = [s.t for s in after_sync]
    gaps = [b - a for a, b in zip(sync_times, sync_times[1:])]
    return Observation(
        until=end if until is not None else (last.t if last else 0.0),
        samples=len(samples),
        page_size=page,
        ram=float(last.ram.total) if last and last.ram and last.ram.total else None,
        setup_time=next((s.setup_time / 1000 for s in reversed(samples)
                         if s.setup_time is not None), None),
        throughput=statistics.median(mbps) * 1e6 / 8 if mbps else None,
        dirty_rate=rates[-1] * page if rates else None,
        dirtied_at_sync=max((float(s.ram.remaining) for s in after_sync
                             if s.ram and s.ram.remaining is not None), default=None),
        pass0_end=pass0.t if pass0 else None,
        pass0_dirtied=float(pass0.ram.remaining) if pass0 and pass0.ram and
        pass0.ram.remaining is not None else None,
        # the sync fell between two samples: take the middle of their counts
        nonzero=(None if pass0 is None else
                 (full_pages(pass0) + full_pages(before0 or pass0)) / 2 * page),
        zero_bytes=float(last.ram.duplicate * page) if last and last.ram and
        last.ram.duplicate is not None else None,
        ratio=_ratio(last, page) if last else None,
        **_xbzrle(samples, page),
        busy_rate=next((s.compression.busy_rate for s in reversed(samples)
                        if s.compression and s.compression.busy_rate is not None), None),
        throttle=max((float(s.cpu_throttle_percentage) for s in samples
                      if s.cpu_throttle_percentage is not None), default=None),
        syncs=max(syncs, default=0),
        min_sync_interval=min(gaps) if gaps else None,
    )


def _ratio(s: TimelineSample, page: int) -> float | None:
    ram = s.ram
    if ram is None or ram.transferred is None:
        return None
    full = full_pages(s) * page
    x = s.xbzrle_cache
    encoded = max(((x.bytes or 0) - (x.overflow or 0) * page), 0) if x else 0
    if full <= 0:
        return None
    return min(max((ram.transferred - encoded) / full, 1e-6), 2.0)


def _xbzrle(samples: Sequence[TimelineSample], page: int) -> dict[str, float | None]:
    xs = [s for s in samples if s.xbzrle_cache is not None]
    out: dict[str, float | None] = {
        "xbzrle_ratio": None, "xbzrle_miss_ratio": None, "xbzrle_steady_miss_ratio": None,
        "xbzrle_overflow_ratio": None, "xbzrle_cache": None}
    if not xs:
        return out
    last = xs[-1].xbzrle_cache
    assert last is not None
    pages, miss, over = last.pages or 0, last.cache_miss or 0, last.overflow or 0
    out["xbzrle_cache"] = float(last.cache_size) if last.cache_size else None
    if pages:
        out["xbzrle_ratio"] = min(max((last.bytes or 0) / (pages * page), 1e-6), 2.0)
        out["xbzrle_overflow_ratio"] = over / pages
    if pages + miss:
        out["xbzrle_miss_ratio"] = miss / (pages + miss)
    # pass 2 starts at dirty-sync-count 3: XBZRLE began with pass 1, whose lookups all miss
    warm = next((s.xbzrle_cache for s in xs
                 if s.ram and (s.ram.dirty_sync_count or 0) >= 3), None)
    if warm is not None:
        d_pages = pages - (warm.pages or 0)
        d_miss = miss - (warm.cache_miss or 0)
        if d_pages + d_miss > 0:
            out["xbzrle_steady_miss_ratio"] = d_miss / (d_pages + d_miss)
    return out
