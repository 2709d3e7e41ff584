"""Why a run converged or not: the limiting factor in plain words, its evidence, and advice with
numbers that the convergence model (:mod:`harness.analysis.convergence`) predicts would converge.

Pure: a :class:`~harness.results.record.RunRecord` in, a :class:`Diagnosis` out. Each run gets three
predictions of the same model, so that the model is held to account beside what happened:

* ``predicted``: before the migration, from what was configured (writer rate and working set,
  guest RAM, ``max-bandwidth``, ``downtime-limit``, feature parameters) and what was measured
  before it (:class:`Premeasured`; until the runner records those, the share of zero pages is
  taken from the run's own pass 0 and the evidence says so, and no compression saving is assumed);
* ``early``: from the timeline up to the first sync after pass 0 (QEMU's measured throughput,
  zero pages, compression ratio, the working set a pass leaves dirty);
* ``hindsight``: from the whole run; the advice is computed from it.

The factor (:data:`Factor`) is a short string for tables; ``summary`` one line that does not
repeat it (whoever shows both puts :attr:`Diagnosis.headline` before it); ``evidence``
(label, value, unit) triples; ``advice`` one line per remedy, each with the figure the model
needs and what it predicts then. A corrupted run is not diagnosed as if its figures were valid.
:func:`diagnose_cell` (or :func:`aggregate` of diagnoses) combines the repetitions of a cell: the
majority factor and median figures.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from harness.analysis.convergence import (
    PAGE_SIZE,
    AutoConverge,
    Guest,
    Link,
    MiB,
    Observation,
    Prediction,
    Scenario,
    full_pages,
    max_wire_ratio,
    max_xbzrle_ratio,
    min_downtime_limit,
    min_encode_rate,
    min_throughput,
    observe,
    plan_throttle,
    predict,
    xbzrle_cache_size,
)
from harness.analysis.patterns import COMPRESS_RATE, ENCODE_RATE, WIRE_RATIO, XBZRLE_COST
from harness.results.record.model import DirtyRateMeasurement, RunRecord
from harness.results.record.scalars import Json

Factor = Literal["converged", "link-bound", "downtime-limit", "cpu-bound", "xbzrle-cache",
                 "xbzrle-data", "throttle-max", "postcopy-faults", "bandwidth-below",
                 "corrupted", "failed", "not-migrated", "undiagnosed"]
#: Factors of a run whose figures are not a valid migration result (or not one the model takes).
INVALID: tuple[Factor, ...] = ("corrupted", "failed", "not-migrated", "undiagnosed")

#: QEMU's defaults, for parameters a record does not carry.
DEFAULT_MAX_BANDWIDTH = 128 * MiB
DEFAULT_DOWNTIME_LIMIT_MS = 300
DEFAULT_XBZRLE_CACHE = 64 * MiB
#: QEMU above max-bandwidth by more than this is reported (up to 5 % over with one channel and
#: 11-15 % with multifd were measured here: SEND_RATE).
ABOVE = 0.02
#: Below this share of max-bandwidth something else (the link, the CPU) set the pace.
BELOW = 0.7
#: What QEMU sends per second of a rate-limited precopy pass, as a multiple of max-bandwidth: the
#: prediction before the run sends at max-bandwidth times this (:func:`send_rate_factor`). The
#: slope of ``ram.transferred`` over the active samples, over max-bandwidth, medians of the stored
#: and seed runs here (docs/diagnosis.md, "QEMU's send rate"): QEMU 7.2 1.000 (0.999-1.001, 7
#: runs); QEMU 10.0 one channel 1.04 (1.02-1.05 plain, 0.99-1.04 with XBZRLE; 31 runs at 100-400
#: Mbit/s); 10.0 multifd zstd, 2 channels, 1.13 (1.11-1.15, 4 runs). Versions between 7.2 and 10.0
#: were not measured and take 10.0's figures; legacy compress is encoder-bound here (0.3-0.7).
SEND_RATE = {"7.2": 1.0, "one channel": 1.04, "multifd": 1.13}
#: Compress threads busier than this (percent of one core each), or a legacy compress
#: busy-rate above BUSY_RATE, make the encoder the limit.
CPU_BOUND_PCT = 85.0
BUSY_RATE = 0.2
#: An XBZRLE hit that costs more than this share of a page, or this share of overflowing
#: encodings, means the data does not suit XBZRLE.
XBZRLE_UNFRIENDLY = 0.5
#: A run the working set keeps from converging is blamed on the downtime limit when raising
#: the limit by at most this factor would converge (the cheaper knob), on the link otherwise.
DOWNTIME_FACTOR = 2.0
#: calc-dirty-rate before the run and the writer's own rate may differ by this share of the
#: writer's rate before the disagreement is flagged, plus QEMU's rounding to whole MiB/s, plus for
#: page sampling :data:`SAMPLING_Z` standard errors of the sample (see :func:`dirty_rate_tolerance`):
#: the writer is called steady within 10 %.
DIRTY_RATE_TOLERANCE = 0.10
#: Page sampling hashes ``sample-pages`` random pages per GiB; the ones that fall in what the guest
#: dirtied during the period are a binomial count with mean n = rate x period x sample-pages / GiB,
#: so the figure's relative standard error is about 1 / sqrt(n). At 16 MiB/s for 1 s with 4096
#: pages per GiB, n = 64 and one standard error is 12.5 %: a flat 25 % tolerance (2 sigma) flagged
#: an honest measurement (11 vs 16 MiB/s) in about one run in twenty, in CI too. Three standard
#: errors keep such false alarms below 1 in 100; a period longer than the rewrite time or other
#: dirtying in the guest still shows (a factor of 2 either way is beyond it at n = 64).
SAMPLING_Z = 3.0
#: A miss ratio from which an XBZRLE cache below the working set is blamed even when no page
#: was encoded (the model cannot tell what a hit would save, only that none happened).
XBZRLE_ALL_MISSED = 0.9
#: A remainder above the budget by less than this factor is called marginal: QEMU syncs again
#: every ~100 ms once its estimate falls below the threshold, and may complete on a short sync.
MARGINAL = 2 / 3


class Evidence(NamedTuple):
    label: str
    value: float | int | str
    unit: str


@dataclass(frozen=True)
class Figures:
    """Outcome, total time, downtime (seconds) and live passes: predicted or measured."""

    converges: bool | None
    total_time: float | None
    downtime: float | None
    passes: int | None

    @staticmethod
    def of(p: Prediction) -> Figures:
        return Figures(p.converges, p.total_time, p.downtime, p.passes)


@dataclass(frozen=True)
class Premeasured:
    """Figures measured before the migration (the record's ``pre``: calc-dirty-rate)."""

    dirty_rate: float | None = None  # bytes/s, e.g. calc-dirty-rate
    nonzero: float | None = None  # bytes of guest RAM that are not zero pages
    ratio: float | None = None  # wire bytes per RAM byte with the cell's compression
    xbzrle_ratio: float | None = None  # wire bytes per RAM byte of an XBZRLE hit
    link: float | None = None  # bytes/s the link carries unthrottled (see :func:`link_rates`)


@dataclass(frozen=True)
class Diagnosis:
    factor: Factor
    summary: str
    evidence: tuple[Evidence, ...]
    advice: tuple[str, ...]
    predicted: Figures | None  # before the migration
    early: Figures | None  # from the timeline up to the end of pass 0
    hindsight: Figures | None  # from the whole run
    measured: Figures
    runs: int = 1
    factors: tuple[tuple[Factor, int], ...] = ()  # per factor, how many runs (cells)

    @property
    def valid(self) -> bool:
        return self.factor not in INVALID

    @property
    def headline(self) -> str:
        """The factor, and for a cell (:func:`aggregate`) in how many of its runs."""
        if not self.factors:
            return self.factor
        return f"{self.factor} in {dict(self.factors).get(self.factor, 0)}/{self.runs} runs"

    def columns(self) -> dict[str, str | float | int | None]:
        """The ``summary.csv`` columns."""
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 1)
        p, e = self.predicted, self.early
        return {
            "diagnosis": self.factor,
            "advice": " | ".join(self.advice),
            "predicted_outcome": _outcome(p),
            "predicted_total_time_ms": ms(p.total_time) if p else None,
            "predicted_downtime_ms": ms(p.downtime) if p else None,
            "predicted_passes": p.passes if p else None,
            "early_total_time_ms": ms(e.total_time) if e else None,
            "early_downtime_ms": ms(e.downtime) if e else None,
        }

    def lines(self) -> list[str]:
        """Plain text for ``show``."""
        out = [f"diagnosis: {self.headline}: {self.summary}"]
        out += [f"  {e.label}: {_fmt(e.value)}{' ' + e.unit if e.unit else ''}"
                for e in self.evidence]
        rows = (("predicted", self.predicted), ("early", self.early),
                ("hindsight", self.hindsight), ("measured", self.measured))
        for name, f in rows:
            if f is not None:
                out.append(f"  {name}: {_outcome(f)}, total {_opt_s(f.total_time)}, downtime "
                           f"{_opt_ms(f.downtime)}, passes {f.passes if f.passes is not None else '-'}")
        out += [f"  advice: {a}" for a in self.advice]
        return out


def _outcome(f: Figures | None) -> str | None:
    if f is None or f.converges is None:
        return None
    return "completes" if f.converges else "does not converge"


def _fmt(v: float | int | str) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _opt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _opt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def _mib(b: float) -> float:
    return round(b / MiB, 1)


# ---------------------------------------------------------------------------------------------
# What the record says


def _num(params: dict[str, Json], key: str, lo: float = 0.0, hi: float = math.inf
         ) -> float | None:
    """A numeric parameter within [lo, hi] (a record is validated, not its values' ranges)."""
    v = params.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    return min(max(float(v), lo), hi)


@dataclass(frozen=True)
class _Settings:
    """The cell's configuration as the model needs it."""

    ram: float
    max_bandwidth: float | None  # None: unlimited (QEMU's 0)
    downtime_limit: float  # s
    writer_rate: float | None  # bytes/s
    working_set: float | None
    xbzrle: bool
    xbzrle_cache: float
    compression: str | None  # "compress", or multifd's method; None: none
    threads: int  # compress threads or multifd channels
    multifd: bool
    compress_wait: bool  # legacy compress-wait-thread (QEMU's default on): off, busy pages go whole
    qemu: tuple[int, int] | None  # major, minor of the source's QEMU (None: not probed)
    level: int  # compress-level or multifd's level (QEMU's default 1)
    pattern: str | None  # the writer's page pattern
    cpus: int | None  # the source host's CPUs: more encoder threads than these share them
    auto_converge: AutoConverge | None
    postcopy_after_syncs: int | None
    postcopy_after_s: float | None
    pause_after_syncs: int | None
    postcopy_bandwidth: float | None
    max_time: float
    max_passes: int | None


def _settings(rec: RunRecord) -> _Settings:
    cell = rec.cell
    # what QEMU reported using wins over what the cell asked for
    params: dict[str, Json] = {**cell.migration.parameters,
                               **(rec.applied.source.parameters if rec.applied else {})}
    caps = {**cell.migration.capabilities,
            **(rec.applied.source.capabilities if rec.applied else {})}
    harness = cell.migration.harness
    writer = cell.workload.writer
    rate = None
    if writer is not None:
        rate = writer.rate_mib_s * MiB if writer.rate_mib_s > 0 else None
        if rate is None and rec.steady_rate_mib_s:
            rate = rec.steady_rate_mib_s * MiB  # "as fast as it can": its measured steady rate
    compression: str | None = None
    threads = 1
    if caps.get("compress"):
        compression, threads = "compress", int(_num(params, "compress-threads") or 8)
    elif caps.get("multifd"):
        method = params.get("multifd-compression")
        compression = method if isinstance(method, str) and method != "none" else None
        threads = int(_num(params, "multifd-channels") or 2)
    ac = None
    if caps.get("auto-converge"):
        ac = AutoConverge(_num(params, "cpu-throttle-initial", 1, 99) or 20.0,
                          _num(params, "cpu-throttle-increment", 1, 99) or 10.0,
                          _num(params, "max-cpu-throttle", 1, 99) or 99.0,
                          _num(params, "throttle-trigger-threshold", 1, 100) or 50.0)
    postcopy = bool(caps.get("postcopy-ram"))
    syncs = _num(harness, "postcopy-after-syncs")
    after_s = _num(harness, "postcopy-after-s")
    pause = _num(harness, "pause-after-syncs")
    limits = cell.limits
    limit_ms = _num(params, "downtime-limit")
    return _Settings(
        ram=cell.guest.memory_mib * MiB,
        max_bandwidth=_max_bandwidth(params),
        downtime_limit=(DEFAULT_DOWNTIME_LIMIT_MS if limit_ms is None else limit_ms) / 1000,
        writer_rate=rate,
        working_set=writer.working_set_mib * MiB if writer else None,
        xbzrle=bool(caps.get("xbzrle")),
        xbzrle_cache=_num(params, "xbzrle-cache-size") or DEFAULT_XBZRLE_CACHE,
        compression=compression,
        threads=threads,
        multifd=bool(caps.get("multifd")),
        compress_wait=params.get("compress-wait-thread") is not False,
        qemu=_version(rec.qemu.version),
        level=int(_num(params, "compress-level" if compression == "compress" else
                       f"multifd-{compression}-level") or 1),
        pattern=writer.pattern if writer else None,
        cpus=rec.hosts.source.cpus,
        auto_converge=ac,
        postcopy_after_syncs=int(syncs) if postcopy and syncs else None,
        postcopy_after_s=after_s if postcopy else None,
        pause_after_syncs=int(pause) if pause else None,
        postcopy_bandwidth=_num(params, "max-postcopy-bandwidth") or None,  # 0: unlimited
        max_time=float(limits.max_time_s),
        max_passes=limits.max_dirty_syncs - 1 if limits.max_dirty_syncs else None,
    )


def _version(text: str | None) -> tuple[int, int] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(m[1]), int(m[2])) if m else None


def send_rate_factor(st: _Settings) -> float:
    """QEMU's send rate in a rate-limited pass over max-bandwidth (:data:`SEND_RATE`)."""
    if st.qemu is not None and st.qemu < (8, 0):
        return SEND_RATE["7.2"]
    return SEND_RATE["multifd" if st.multifd else "one channel"]


def _max_bandwidth(params: dict[str, Json]) -> float | None:
    """max-bandwidth in bytes/s: QEMU's default when not set, None when 0 (no limit)."""
    v = _num(params, "max-bandwidth")
    if v is None:
        return DEFAULT_MAX_BANDWIDTH
    return v if v >= 1 else None


def _measured(rec: RunRecord, obs: Observation) -> Figures:
    m = rec.metrics
    syncs = m.dirty_sync_count if m.dirty_sync_count is not None else obs.syncs
    if rec.outcome == "completed":
        return Figures(True, None if m.total_time_ms is None else m.total_time_ms / 1000,
                       None if m.downtime_ms is None else m.downtime_ms / 1000,
                       max(syncs - 2, 0) if syncs else None)
    if rec.outcome == "not-converged":
        return Figures(False, None, None, max(syncs - 1, 0) if syncs else None)
    return Figures(None, None, None, None)


def _cpu(rec: RunRecord, cls: str) -> float | None:
    """Percent of one core the source's ``cls`` threads used together."""
    side = rec.cpu.source if rec.cpu else None
    return side.classes.get(cls) if side else None


#: Fewer CPU-seconds of the encoder threads than this make no per-thread figure (sampling noise).
MIN_ENCODER_CPU_S = 0.2


@dataclass(frozen=True)
class EncoderRate:
    """What the run's compressing threads did: RAM bytes they compressed per CPU-second (the
    most one thread can do on a core of its own), and the figures it comes from."""

    per_thread: float  # RAM bytes per CPU-second
    ram_bytes: float  # RAM bytes sent in full (compressed) over the run
    cpu_seconds: float  # the class's CPU over the migration window
    cpu_pct: float  # the class's CPU, percent of one core (all its threads)
    cls: str  # the CPU sampler's thread class


def encoder_rate(rec: RunRecord) -> EncoderRate | None:
    """The per-thread compression throughput the run measured: the pages QEMU sent whole
    (``normal``, plus legacy compress's ``pages``) over the CPU-seconds of the source's
    compressing threads (``compress`` or ``multifd_send``) in the migration window. The send
    threads also find zero pages and write the socket: the figure is what a thread delivers, not
    the codec alone. None without compression, CPU figures or enough CPU time to count."""
    st = _settings(rec)
    if st.compression is None or rec.cpu is None or rec.cpu.source is None:
        return None
    cls = "compress" if st.compression == "compress" else "multifd_send"
    pct = rec.cpu.source.classes.get(cls)
    last = rec.final if rec.final is not None and rec.final.ram is not None else next(
        (s for s in reversed(rec.timeline) if s.ram is not None), None)
    if pct is None or last is None or last.ram is None:
        return None
    cpu_s = pct / 100 * rec.cpu.source.window_s
    ram = float(full_pages(last) * (last.ram.page_size or PAGE_SIZE))
    if cpu_s < MIN_ENCODER_CPU_S or ram <= 0:
        return None
    return EncoderRate(ram / cpu_s, ram, cpu_s, pct, cls)


def _cpu_share(rec: RunRecord, steady: float | None) -> float:
    """s: the vCPU share the writer needs, from its rate under QEMU's throttle (1 if unseen).

    Under a throttle of p the vCPU runs (1 - p) of the time; a writer that needed s of it keeps
    its rate while 1 - p >= s and slows to rate (1 - p) / s beyond.
    """
    if not steady:
        return 1.0
    throttles = [(s.t, s.cpu_throttle_percentage) for s in rec.timeline
                 if s.cpu_throttle_percentage]
    shares = []
    for w in rec.guest.writer:
        if w.host != "source" or w.t <= 0 or w.rate <= 0:
            continue
        p = next((pct for t, pct in reversed(throttles) if t <= w.t), None)
        if p and w.rate < steady:
            shares.append(min((1 - p / 100) * steady / w.rate, 1.0))
    return statistics.median(shares) if shares else 1.0


# ---------------------------------------------------------------------------------------------
# The three scenarios


def _scenario(st: _Settings, rate: float, ws: float | None, zero: float, link: Link,
              setup: float = 0.0, share: float = 1.0) -> Scenario:
    return Scenario(
        Guest(st.ram, rate, ws, min(max(zero, 0.0), 1.0), share),
        link, st.downtime_limit, setup,
        auto_converge=st.auto_converge, postcopy_after_syncs=st.postcopy_after_syncs,
        postcopy_after_s=st.postcopy_after_s, pause_after_syncs=st.pause_after_syncs,
        max_time=st.max_time, max_passes=st.max_passes)


def _seen_rate(obs: Observation) -> float | None:
    """Bytes/s the guest dirtied as QEMU saw it: what pass 0 left dirty over its duration, or
    QEMU's dirty-pages-rate (both count background dirtying the writer's rate leaves out; both
    are lower bounds once the working set is saturated)."""
    rates = [obs.dirty_rate or 0.0]
    if obs.pass0_dirtied is not None and obs.pass0_end:
        rates.append(obs.pass0_dirtied / max(obs.pass0_end - (obs.setup_time or 0.0), 1e-3))
    return max(rates) or None


def _ws(st: _Settings, obs: Observation | None) -> float | None:
    seen = obs.dirtied_at_sync if obs else None
    if st.working_set is None:
        return seen
    return max(st.working_set, seen or 0.0)


@dataclass(frozen=True)
class Scenarios:
    """The model's inputs for one run: before it, at the end of its pass 0, and after it."""

    configured: Scenario | None
    early: Scenario | None
    hindsight: Scenario | None
    zero_from_run: bool  # the configured prediction took the zero pages from the run
    encoder_bound: bool  # the hindsight link is the encoder, not the wire
    encoder_per_thread: float | None = None  # RAM bytes/s one more encoder thread adds


def scenarios(rec: RunRecord, pre: Premeasured | None = None) -> Scenarios:
    """The three scenarios :func:`diagnose` predicts for ``rec``."""
    whole = observe(rec.timeline)
    st = _settings(rec)
    early = observe(rec.timeline, whole.pass0_end) if whole.pass0_end is not None else None
    return _inputs(rec, st, whole, early, pre or premeasured(rec) or Premeasured(),
                   _cpu_bound(rec, st, whole)[0])


@dataclass(frozen=True)
class LinkRates:
    """Bytes/s the run's unthrottled phases carried (None: the run had no such phase).

    * ``switchover``: the stop-and-copy phase, ``downtime-bytes`` over the downtime (QEMU lifts
      ``max-bandwidth`` for it);
    * ``postcopy``: ``postcopy-bytes`` over the time from the switch to completion (at most
      ``max-postcopy-bandwidth``, unlimited by default);
    * ``precopy``: QEMU's median ``mbps`` of the active samples when ``max-bandwidth`` is
      unlimited.

    Compression runs give none: their encoder, not the link, may set those paces.
    """

    switchover: float | None
    postcopy: float | None
    precopy: float | None

    @property
    def link(self) -> float | None:
        """What the link carried at best: a lower bound of its throughput."""
        rates = [r for r in (self.switchover, self.postcopy, self.precopy) if r]
        return max(rates) if rates else None


def link_rates(rec: RunRecord, st: _Settings | None = None) -> LinkRates:
    """The link's throughput as :class:`LinkRates` measured in ``rec``."""
    st = st or _settings(rec)
    if st.compression is not None:
        return LinkRates(None, None, None)
    final = rec.final.ram if rec.final else None
    m = rec.metrics
    switchover = post = None
    if final and final.downtime_bytes and m.downtime_ms:
        switchover = final.downtime_bytes / (m.downtime_ms / 1000)
    if (final and final.postcopy_bytes and rec.postcopy_start_t is not None
            and m.total_time_ms and m.total_time_ms / 1000 > rec.postcopy_start_t):
        post = final.postcopy_bytes / (m.total_time_ms / 1000 - rec.postcopy_start_t)
    unlimited = observe(rec.timeline).throughput if st.max_bandwidth is None else None
    return LinkRates(switchover, post, unlimited)


def link_premeasured(records: Sequence[RunRecord]) -> list[Premeasured | None]:
    """Per record, its own pre-migration figures plus the link as the *other* runs over the same
    host pair measured it (median of their :attr:`LinkRates.link`): what was known about the
    link before that run. None where no other run measured it."""
    def pair(r: RunRecord) -> tuple[str, str]:
        return (r.hosts.source.name, r.hosts.destination.name)
    rates = [link_rates(r).link if r.outcome == "completed" else None for r in records]
    out: list[Premeasured | None] = []
    for i, rec in enumerate(records):
        others = [x for j, (r, x) in enumerate(zip(records, rates, strict=True))
                  if j != i and x and pair(r) == pair(rec)]
        if not others:
            out.append(None)
            continue
        own = premeasured(rec) or Premeasured()
        out.append(replace(own, link=statistics.median(others)))
    return out


class _PatternCosts(NamedTuple):
    xbzrle: float | None  # XBZRLE hit cost, share of a page
    ratio: float | None  # multifd wire bytes per RAM byte
    encode_rate: float | None  # RAM bytes/s the send (or legacy compress) threads can compress


def _pattern_costs(st: _Settings) -> _PatternCosts:
    """The writer's pattern's costs (:mod:`harness.analysis.patterns`) for the cell's features:
    the model's inputs before the run has measured them."""
    pat = st.pattern
    if pat is None:
        return _PatternCosts(None, None, None)
    method = st.compression
    per = ENCODE_RATE.get((method, st.level), {}).get(pat) if method else None
    if method == "compress" and not st.compress_wait:
        # a page no compress thread is free for goes whole at once (busy-rate ~97 % in
        # seed-compress-bound): neither the encoder's pace nor its saving
        return _PatternCosts(XBZRLE_COST.get(pat) if st.xbzrle else None, None, None)
    if method == "compress":  # legacy: its threads together, whatever their number
        whole = COMPRESS_RATE.get(st.level, {}).get(pat)
    else:
        whole = None if per is None else per * usable_threads(st.threads, st.cpus)
    return _PatternCosts(XBZRLE_COST.get(pat) if st.xbzrle else None,
                         WIRE_RATIO.get(method, {}).get(pat) if method else None, whole)


def _postcopy_rate(st: _Settings, link: float | None) -> float | None:
    """The postcopy phase's rate: the link, at most max-postcopy-bandwidth."""
    if st.postcopy_bandwidth is not None and link is not None:
        return min(st.postcopy_bandwidth, link)
    return st.postcopy_bandwidth or link


def _inputs(rec: RunRecord, st: _Settings, whole: Observation, early: Observation | None,
            pre: Premeasured, cpu_bound: bool) -> Scenarios:
    rate = pre.dirty_rate if pre.dirty_rate is not None else st.writer_rate
    zero_run = whole.zero_fraction
    if pre.nonzero is not None:
        zero: float | None = 1 - pre.nonzero / st.ram
    else:
        zero = zero_run
    configured = None
    # before the run measures them, what the writer's pattern costs (harness.analysis.patterns)
    before = _pattern_costs(st)
    x_before = (pre.xbzrle_ratio or before.xbzrle or 1.0) if st.xbzrle else None
    # the switchover and postcopy phases run at the link's pace (QEMU lifts max-bandwidth for the
    # stop-and-copy; max-postcopy-bandwidth is unlimited by default): a measured link, or else
    # max-bandwidth, a lower bound of it. The passes run at what QEMU sends under max-bandwidth
    wire = st.max_bandwidth * send_rate_factor(st) if st.max_bandwidth else pre.link
    if rate is not None and wire is not None:
        link = Link(wire, pre.ratio or before.ratio or 1.0, x_before, st.xbzrle_cache,
                    encode_rate=before.encode_rate, switchover_throughput=pre.link,
                    postcopy_throughput=_postcopy_rate(st, pre.link))
        configured = _scenario(st, rate, st.working_set, zero or 0.0, link)
    early_sc = None
    # QEMU's own rate in pass 0 (as measured, not max-bandwidth)
    wire = (early.throughput if early else None) or (
        st.max_bandwidth * send_rate_factor(st) if st.max_bandwidth else pre.link)
    if rate is not None and early is not None and wire is not None:
        # without a rate limit pass 0 itself ran at the link's pace
        unthrottled = early.throughput if st.max_bandwidth is None else None
        fast = unthrottled or pre.link
        link = Link(wire, early.ratio or pre.ratio or before.ratio or 1.0, x_before,
                    st.xbzrle_cache, encode_rate=before.encode_rate, switchover_throughput=fast,
                    postcopy_throughput=_postcopy_rate(st, fast))
        early_sc = _scenario(st, max(rate, _seen_rate(early) or 0.0), _ws(st, early),
                             early.zero_fraction or zero or 0.0, link, early.setup_time or 0.0)
    hindsight = None
    per: float | None = None  # RAM bytes/s one more encoder thread adds
    steady = rec.steady_rate_mib_s * MiB if rec.steady_rate_mib_s else rate
    h_rate = max(steady or 0.0, _seen_rate(whole) or 0.0)
    if whole.throughput:
        ratio = whole.ratio or 1.0
        own = link_rates(rec, st)
        switchover = own.switchover
        # a run that did not switch to postcopy: its phase would run at the link's pace
        post = own.postcopy or _postcopy_rate(st, own.link or pre.link)
        if cpu_bound:
            # the encoder set the pace: the wire could carry max-bandwidth
            link = Link(max(st.max_bandwidth or 0.0, whole.throughput, own.link or 0.0), ratio,
                        whole.xbzrle_ratio,
                        st.xbzrle_cache, encode_rate=whole.throughput / ratio,
                        switchover_throughput=switchover, postcopy_throughput=post)
            per = whole.throughput / ratio / max(st.threads, 1)  # what each thread achieved
        else:
            # the threads had time to spare: they can deliver what they measured per CPU-second
            enc = encoder_rate(rec)
            per = enc.per_thread if enc is not None else None
            link = Link(whole.throughput, ratio, whole.xbzrle_ratio if st.xbzrle else None,
                        st.xbzrle_cache, encode_rate=None if per is None else
                        per * usable_threads(st.threads, st.cpus),
                        switchover_throughput=switchover, postcopy_throughput=post)
        if st.xbzrle and link.xbzrle_ratio is None:
            link = replace(link, xbzrle_ratio=1.0)  # no page was encoded: no saving seen
        hindsight = _scenario(st, h_rate, _ws(st, whole), zero or 0.0, link,
                              whole.setup_time or 0.0, _cpu_share(rec, steady))
    return Scenarios(configured, early_sc, hindsight,
                     pre.nonzero is None and zero_run is not None, cpu_bound, per)


# ---------------------------------------------------------------------------------------------
# The diagnosis of one run


def _invalid(factor: Factor, summary: str, measured: Figures, advice: tuple[str, ...] = (),
             evidence: tuple[Evidence, ...] = ()) -> Diagnosis:
    return Diagnosis(factor, summary, evidence, advice, None, None, None, measured)


def _corrupted(rec: RunRecord, measured: Figures) -> Diagnosis:
    integ = rec.integrity
    parts: list[str] = []
    ev: list[Evidence] = []
    if integ.ram and integ.ram.differing_pages:
        parts.append(f"{integ.ram.differing_pages} pages differ between source and destination")
        ev.append(Evidence("differing pages", integ.ram.differing_pages, "pages"))
    if integ.stamps and integ.stamps.bad_pages:
        parts.append(f"{integ.stamps.bad_pages} pages carry a stale stamp")
        ev.append(Evidence("stale pages", integ.stamps.bad_pages, "pages"))
    if integ.guest_crash:
        parts.append("the guest crashed on the destination")
    if integ.guest_silent:
        parts.append("the guest went silent")
    what = "; ".join(parts) or "the integrity check failed"
    ev.append(Evidence("QEMU", rec.qemu.version or rec.qemu.build, ""))
    return _invalid("corrupted", f"{what}; its times are not a result and are not diagnosed",
                    measured,
                    ("none for the migration settings: rerun on a QEMU build whose integrity "
                     "checks pass before reading its times",), tuple(ev))


def premeasured(rec: RunRecord) -> Premeasured | None:
    """The record's own pre-migration figures (``rec.pre``: calc-dirty-rate), if it has them.

    The dirty rate is calc-dirty-rate's, unless the writer's own steady rate measured beside it
    agrees (:func:`dirty_rate_check`): then the writer's, which has no sampling error. Page
    sampling's one standard error is 12.5 % at 16 MiB/s over 1 s, and near the convergence
    boundary that decides the outcome: in seed-compression, a 28 MiB/s writer sampled at
    23 MiB/s was predicted to converge at 23.8 MiB/s x 1.04 and did not (2 of 3 runs)."""
    best = rec.pre.best() if rec.pre is not None else None
    if best is None or best.dirty_rate_mib_s is None:
        return None
    writer = rec.pre.writer_rate_mib_s if rec.pre is not None else None
    if writer and dirty_rate_check(rec) is None:
        return Premeasured(dirty_rate=writer * MiB)
    return Premeasured(dirty_rate=best.dirty_rate_mib_s * MiB)


def dirty_rate_tolerance(m: DirtyRateMeasurement, writer_mib_s: float) -> float:
    """The share of the writer's rate by which ``m`` may differ from it and still agree: the
    writer's steadiness (:data:`DIRTY_RATE_TOLERANCE`) and for page sampling :data:`SAMPLING_Z`
    standard errors of the sample (1 / sqrt(expected dirtied samples); see the constants), in
    quadrature, plus QEMU's rounding to whole MiB/s."""
    sampling = 0.0
    if m.mode == "page-sampling":
        per_gib = m.sample_pages or 512  # QEMU's default when the answer does not say
        expected = writer_mib_s * m.period_s * per_gib / 1024
        sampling = SAMPLING_Z / math.sqrt(max(expected, 1.0))
    # the writer's jitter and the sample are independent errors: they add in quadrature
    return math.hypot(DIRTY_RATE_TOLERANCE, sampling) + 0.5 / writer_mib_s


def dirty_rate_check(rec: RunRecord) -> tuple[float, float, str, float] | None:
    """(calc-dirty-rate MiB/s, the writer's own MiB/s, mode, tolerance) when they differ by more
    than :func:`dirty_rate_tolerance` of the writer's rate; None when they agree or one is
    missing."""
    best = rec.pre.best() if rec.pre is not None else None
    writer = (rec.pre.writer_rate_mib_s if rec.pre is not None else None) or rec.steady_rate_mib_s
    if best is None or best.dirty_rate_mib_s is None or not writer:
        return None
    tol = dirty_rate_tolerance(best, writer)
    if abs(best.dirty_rate_mib_s - writer) <= tol * writer:
        return None
    return best.dirty_rate_mib_s, writer, best.mode, tol


def _pre_evidence(rec: RunRecord) -> list[Evidence]:
    ev = []
    for m in rec.pre.calc_dirty_rate if rec.pre is not None else ():
        label = f"calc-dirty-rate {m.mode} before ({m.period_s:g} s)"
        ev.append(Evidence(label, m.dirty_rate_mib_s, "MiB/s") if m.dirty_rate_mib_s is not None
                  else Evidence(label, f"no figure: {m.error or '?'}", ""))
    bad = dirty_rate_check(rec)
    if bad is not None:
        ev.append(Evidence("DIRTY RATE DISAGREES", f"calc-dirty-rate ({bad[2]}) {bad[0]:.1f} vs "
                           f"writer {bad[1]:.1f} MiB/s: beyond "
                           f"{bad[3]:.0%}", ""))
    return ev


def diagnose(rec: RunRecord, pre: Premeasured | None = None) -> Diagnosis:
    """The diagnosis of one run (see the module docstring); without ``pre``, the record's own
    pre-migration figures (:func:`premeasured`) are the model's inputs before the run."""
    pre = pre or premeasured(rec) or Premeasured()
    whole = observe(rec.timeline)
    measured = _measured(rec, whole)
    if rec.integrity.verdict == "corrupted":
        return _corrupted(rec, measured)
    if rec.outcome == "skipped":
        return _invalid("not-migrated", rec.error or "skipped", measured)
    if rec.outcome == "failed":
        return _invalid("failed", rec.error or "no error recorded", measured)
    if whole.samples == 0:
        return _invalid("not-migrated", "no query-migrate samples with RAM figures were recorded",
                        measured)
    st = _settings(rec)
    cpu_bound, cpu_ev = _cpu_bound(rec, st, whole)
    early_obs = observe(rec.timeline, whole.pass0_end) if whole.pass0_end is not None else None
    try:
        ins = _inputs(rec, st, whole, early_obs, pre, cpu_bound)
    except ValueError as exc:  # figures the model cannot take (a record edited by hand)
        return _invalid("undiagnosed", f"the model cannot take its figures: {exc}", measured)
    preds = {name: predict(sc) if sc else None for name, sc in
             (("configured", ins.configured), ("early", ins.early), ("hindsight", ins.hindsight))}
    hind = preds["hindsight"]
    ev = _evidence(rec, st, whole, ins, hind) + _pre_evidence(rec) + cpu_ev
    factor, summary = _factor(rec, st, whole, ins, hind, measured, cpu_bound)
    advice: tuple[str, ...] = ()
    if measured.converges is False and ins.hindsight is not None:
        advice = tuple(_advice(ins.hindsight, st, whole, factor, ins.encoder_per_thread))

    def figs(p: Prediction | None) -> Figures | None:
        return Figures.of(p) if p else None
    return Diagnosis(factor, summary, tuple(ev), advice, figs(preds["configured"]),
                     figs(preds["early"]), figs(hind), measured)


def _cpu_bound(rec: RunRecord, st: _Settings, whole: Observation
               ) -> tuple[bool, list[Evidence]]:
    if st.compression is None:
        return False, []
    cls = "compress" if st.compression == "compress" else "multifd_send"
    total = _cpu(rec, cls)
    ev = []
    per = None
    if total is not None:
        per = total / max(st.threads, 1)
        ev.append(Evidence(f"{cls} threads", st.threads, ""))
        ev.append(Evidence(f"CPU per {cls} thread", round(per, 1), "% of a core"))
    if whole.busy_rate is not None:
        ev.append(Evidence("compression busy rate", round(whole.busy_rate, 3), ""))
    enc = encoder_rate(rec)
    if enc is not None:
        ev.append(Evidence(f"RAM compressed per CPU-second of {cls}", _mib(enc.per_thread),
                           "MiB/s"))
    # unlimited: nothing but the threads (or the link) held QEMU back
    slow = st.max_bandwidth is None or (whole.throughput or 0) < 0.9 * st.max_bandwidth
    busy = (per is not None and per >= CPU_BOUND_PCT) or (whole.busy_rate or 0) >= BUSY_RATE
    return slow and busy, ev


def _evidence(rec: RunRecord, st: _Settings, whole: Observation, ins: Scenarios,
              hind: Prediction | None) -> list[Evidence]:
    ev: list[Evidence] = []
    if st.writer_rate is not None:
        ev.append(Evidence("writer dirty rate (configured)", _mib(st.writer_rate), "MiB/s"))
    if rec.steady_rate_mib_s:
        ev.append(Evidence("writer dirty rate (measured before)", rec.steady_rate_mib_s, "MiB/s"))
    if whole.dirty_rate is not None:
        ev.append(Evidence("QEMU dirty-pages-rate", _mib(whole.dirty_rate), "MiB/s"))
    if st.working_set is not None:
        ev.append(Evidence("working set (configured)", _mib(st.working_set), "MiB"))
    if whole.dirtied_at_sync is not None:
        ev.append(Evidence("largest remainder at a sync", _mib(whole.dirtied_at_sync), "MiB"))
    if st.max_bandwidth is None:
        ev.append(Evidence("max-bandwidth", "unlimited", ""))
    else:
        ev.append(Evidence("max-bandwidth", _mib(st.max_bandwidth), "MiB/s"))
    if whole.throughput:
        ev.append(Evidence("throughput (QEMU, median)", _mib(whole.throughput), "MiB/s"))
        if st.max_bandwidth is not None:
            over = whole.throughput / st.max_bandwidth - 1
            ev.append(Evidence("throughput vs max-bandwidth", round(100 * over, 1), "%"))
    rates = link_rates(rec, st)
    for label, v in (("switchover throughput (downtime bytes / downtime)", rates.switchover),
                     ("postcopy throughput (postcopy bytes / phase)", rates.postcopy)):
        if v is not None:
            ev.append(Evidence(label, _mib(v), "MiB/s"))
    if whole.ratio is not None:
        ev.append(Evidence("wire bytes per RAM byte", round(whole.ratio, 3), ""))
    zero = whole.zero_fraction
    if zero is not None:
        src = " (from the run: no pre-migration figure)" if ins.zero_from_run else ""
        ev.append(Evidence("zero pages at the start" + src, round(100 * zero, 1), "%"))
    ev.append(Evidence("downtime limit", round(st.downtime_limit * 1000), "ms"))
    if hind is not None:
        ev.append(Evidence("budget at the last sync (model)", _mib(hind.budget), "MiB"))
    if st.xbzrle:
        ev.append(Evidence("xbzrle cache", _mib(st.xbzrle_cache), "MiB"))
        for label, v in (("xbzrle miss ratio", whole.xbzrle_miss_ratio),
                         ("xbzrle miss ratio after the cold pass", whole.xbzrle_steady_miss_ratio),
                         ("xbzrle overflow ratio", whole.xbzrle_overflow_ratio)):
            if v is not None:
                ev.append(Evidence(label, round(v, 3), ""))
        if whole.xbzrle_ratio is not None:
            ev.append(Evidence("xbzrle bytes per encoded page",
                               round(whole.xbzrle_ratio * whole.page_size, 1), "B"))
    if st.auto_converge is not None:
        ev.append(Evidence("max-cpu-throttle", st.auto_converge.maximum, "%"))
        ev.append(Evidence("throttle reached", whole.throttle or 0.0, "%"))
    if rec.postcopy_start_t is not None:
        ev.append(Evidence("postcopy switch", round(rec.postcopy_start_t, 2), "s"))
        if rec.final and rec.final.ram and rec.final.ram.postcopy_bytes is not None:
            ev.append(Evidence("postcopy bytes", _mib(rec.final.ram.postcopy_bytes), "MiB"))
    if rec.metrics.guest_max_stall_ms is not None:
        ev.append(Evidence("guest max stall", rec.metrics.guest_max_stall_ms, "ms"))
    return ev


def _factor(rec: RunRecord, st: _Settings, whole: Observation, ins: Scenarios,
            hind: Prediction | None, measured: Figures, cpu_bound: bool) -> tuple[Factor, str]:
    tp = whole.throughput or st.max_bandwidth or DEFAULT_MAX_BANDWIDTH
    limit_ms = st.downtime_limit * 1000
    if measured.converges:
        note = ""
        if hind is not None and not hind.converges and hind.bound != "postcopy":
            marginal = " (marginal)" if hind.margin > MARGINAL else ""
            note = (f"; the model predicted no convergence{marginal}: {hind.reason}")
        if rec.postcopy_start_t is not None:
            stall = rec.metrics.guest_max_stall_ms
            phase = (rec.metrics.total_time_ms / 1000 - rec.postcopy_start_t
                     if rec.metrics.total_time_ms else None)
            if stall is not None and stall > limit_ms:
                return "postcopy-faults", (
                    f"guest stopped by postcopy faults: it made no progress for {stall:.0f} ms "
                    f"(the downtime limit is {limit_ms:.0f} ms) after the switch at "
                    f"{rec.postcopy_start_t:.2f} s; the rest arrived in {_opt_s(phase)}")
            return "converged", (f"switched to postcopy at "
                                 f"{rec.postcopy_start_t:.2f} s, completed in "
                                 f"{_opt_s(measured.total_time)}{note}")
        n = measured.passes
        return "converged", (f"{n} pass{'' if n == 1 else 'es'}, "
                             f"{_opt_s(measured.total_time)}, downtime "
                             f"{_opt_ms(measured.downtime)}{note}")
    sc = ins.hindsight
    ws = sc.guest.ws if sc else (st.working_set or st.ram)
    rate = sc.guest.dirty_rate if sc else (st.writer_rate or 0.0)
    rem = whole.dirtied_at_sync
    ac = st.auto_converge
    if ac is not None and (whole.throttle or 0) >= ac.maximum - 0.5:
        seen = _writer_rate_during(rec)
        still = f"; the guest still dirtied {seen:.1f} MiB/s" if seen is not None else ""
        return "throttle-max", (f"throttle at max-cpu-throttle ({ac.maximum:.0f} %) without "
                                f"convergence{still} (unthrottled {rate / MiB:.1f} MiB/s)")
    if st.xbzrle and sc is not None:
        fits = xbzrle_cache_size(ws, whole.page_size)
        bigger = predict(replace(sc, link=replace(sc.link, xbzrle_cache=float(fits))))
        if not bigger.converges:
            # max_time may end a run before XBZRLE's first warm pass (pass 2): the cache is
            # still the limit if it never converges as it is and would with one that fits
            unbounded = replace(sc, max_time=None, max_passes=None)
            if not predict(unbounded).converges:
                bigger = predict(replace(unbounded, link=replace(
                    sc.link, xbzrle_cache=float(fits))))
        miss = whole.xbzrle_steady_miss_ratio or whole.xbzrle_miss_ratio
        # every lookup missed: no page was encoded, so what a hit would cost is unknown
        unseen = whole.xbzrle_ratio is None and (miss or 0.0) >= XBZRLE_ALL_MISSED
        if st.xbzrle_cache < ws and (bigger.converges or unseen):
            return "xbzrle-cache", (
                f"XBZRLE cache too small: {st.xbzrle_cache / MiB:.0f} MiB for a {ws / MiB:.0f} MiB "
                f"working set; {_pct(miss)} of its lookups missed"
                + (" after the cold pass" if whole.xbzrle_steady_miss_ratio is not None else "")
                + ("; no page was encoded, so the saving of a cache that fits is unknown"
                   if unseen and not bigger.converges else ""))
        if ((whole.xbzrle_ratio or 0) > XBZRLE_UNFRIENDLY
                or (whole.xbzrle_overflow_ratio or 0) > XBZRLE_UNFRIENDLY):
            return "xbzrle-data", (
                f"data unfriendly to XBZRLE: {_pct(whole.xbzrle_overflow_ratio)} of its encodings "
                f"overflowed, an encoded page cost "
                f"{(whole.xbzrle_ratio or 0) * whole.page_size:.0f} of {whole.page_size} bytes")
    if cpu_bound:
        raw = tp / (whole.ratio or 1.0)
        return "cpu-bound", (
            f"CPU-bound compression: {st.threads} {st.compression} threads moved "
            f"{raw / MiB:.1f} MiB/s of RAM ({tp / MiB:.1f} MiB/s on the wire), "
            + ("with max-bandwidth unlimited" if st.max_bandwidth is None else
               f"below the {st.max_bandwidth / MiB:.1f} MiB/s max-bandwidth allows"))
    if (st.max_bandwidth is not None and whole.throughput
            and whole.throughput < BELOW * st.max_bandwidth):
        return "bandwidth-below", (
            f"QEMU sent {whole.throughput / MiB:.1f} MiB/s, "
            f"{100 * whole.throughput / st.max_bandwidth:.0f} % of max-bandwidth "
            f"({st.max_bandwidth / MiB:.1f} MiB/s): the link or the host, not max-bandwidth, "
            "set the pace")
    left = rem if rem is not None else (hind.remaining if hind else ws)
    send_ms = 1000 * left * (whole.ratio or 1.0) / tp
    downtime_txt = (f"downtime limit below what one pass needs: the {left / MiB:.1f} MiB a pass "
                    f"leaves take {send_ms:.0f} ms at {tp / MiB:.1f} MiB/s; the limit is "
                    f"{limit_ms:.0f} ms")
    if hind is not None and sc is not None:
        if hind.converges:
            # the model says it completes in time; a pass cannot be shorter than QEMU's syncs
            floor = rate * (whole.min_sync_interval or 0.0)
            if floor > hind.budget:
                return "downtime-limit", downtime_txt
            return "link-bound", (
                f"the guest dirties {rate / MiB:.1f} MiB/s, the link carried "
                f"{tp / MiB:.1f} MiB/s; the model predicted completion at "
                f"{_opt_s(hind.total_time)}, QEMU did not get there ({left / MiB:.1f} MiB "
                "left at a sync)")
        # without the harness's limits: does it converge at all, and why not
        free = predict(replace(sc, max_time=None, max_passes=None))
        if free.converges:
            return "link-bound", (
                f"too slow for max_time_s ({st.max_time:g} s): at {tp / MiB:.1f} "
                f"MiB/s it would complete at {_opt_s(free.total_time)} after {free.passes} "
                f"passes (pass 0 alone: {free.schedule[0].duration:.1f} s)")
        need = min_downtime_limit(sc)
        if (free.bound == "working-set" and need is not None
                and need <= DOWNTIME_FACTOR * st.downtime_limit):
            return "downtime-limit", downtime_txt
    ws_txt = f" over a {ws / MiB:.0f} MiB working set" if ws < st.ram else ""
    return "link-bound", (
        f"the guest dirties {rate / MiB:.1f} MiB/s{ws_txt}, the link carried "
        f"{tp / MiB:.1f} MiB/s: each pass left {left / MiB:.1f} MiB dirty, {send_ms:.0f} ms of "
        f"sending against a {limit_ms:.0f} ms downtime limit")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def _writer_rate_during(rec: RunRecord) -> float | None:
    rates = [w.rate for w in rec.guest.writer if w.host == "source" and w.t > 0]
    return min(rates) if rates else None


# ---------------------------------------------------------------------------------------------
# Advice


def usable_threads(threads: int, cpus: int | None) -> int:
    """Encoder threads that can run at once: no more than the host's CPUs."""
    return max(1, min(threads, cpus) if cpus else threads)


def _threads_advice(sc: Scenario, st: _Settings, factor: Factor, per: float | None
                    ) -> str | None:
    """How many encoder threads the model needs, when the encoder is (or would be) what keeps
    the run from converging: each adds ``per`` RAM bytes/s while there are CPUs for it."""
    enc = sc.link.encode_rate
    if st.compression is None or enc is None or not per:
        return None
    need = min_encode_rate(sc)
    if need is None:
        if factor != "cpu-bound":
            return None
        return (f"threads: more {st.compression} threads alone do not converge: the link "
                f"({sc.link.throughput / MiB:.1f} MiB/s) is the next limit")
    if need <= enc * (1 + 1e-3):
        return None  # the encoder is not what stops it
    n = math.ceil(need / per)
    each = f"{per / MiB:.1f} MiB/s of RAM each"
    if st.cpus and n > st.cpus:
        return (f"threads: {n} {st.compression} threads ({each}) needed, more than the "
                f"source's {st.cpus} CPUs: threads alone do not get there (a lower compression "
                "level or a faster host)")
    more = predict(replace(sc, link=replace(sc.link, encode_rate=n * per)))
    return f"threads: {n} {st.compression} threads (now {st.threads}; {each}): {_then(more)}"


def _bandwidth_and_threads(sc: Scenario, st: _Settings, per: float | None, over: float
                           ) -> str | None:
    """When no bandwidth alone converges because the encoder threads cannot fill it: the
    bandwidth the model needs without that limit, and the threads that would compress as much."""
    if st.compression is None or sc.link.encode_rate is None or not per:
        return None
    if min_throughput(sc) is not None:
        return None
    b = min_throughput(replace(sc, link=replace(sc.link, encode_rate=None)))
    if b is None:
        return None
    n = math.ceil(b / sc.link.ratio / per)
    head = (f"bandwidth: {b / MiB:.1f} MiB/s on the wire (max-bandwidth >= "
            f"{b / over / MiB:.1f} MiB/s) with {n} {st.compression} threads to compress "
            f"{b / sc.link.ratio / MiB:.1f} MiB/s of RAM ({per / MiB:.1f} MiB/s each; now "
            f"{st.threads})")
    if st.cpus and n > st.cpus:
        return head + f": more threads than the source's {st.cpus} CPUs, not reachable there"
    p = predict(replace(sc, link=replace(sc.link, throughput=b, encode_rate=n * per)))
    return f"{head}: {_then(p)}"


def _then(p: Prediction) -> str:
    if not p.converges:
        return "still does not converge"
    if p.postcopy is not None:
        return f"completes in {_opt_s(p.total_time)}"
    return f"completes in {_opt_s(p.total_time)} with {_opt_ms(p.downtime)} of downtime"


def _advice(sc: Scenario, st: _Settings, whole: Observation, factor: Factor,
            per_thread: float | None = None) -> list[str]:
    lines: dict[str, str] = {}
    tp = sc.link.throughput
    # QEMU sends this much above max-bandwidth (unlimited: the link itself must carry it)
    over = (whole.throughput / st.max_bandwidth) if whole.throughput and st.max_bandwidth else 1.0

    def scaled(key: str, fn: Callable[[Scenario], float | None], change: Callable[[float], Scenario],
               text: Callable[[float, Prediction], str]) -> None:
        v = fn(sc)
        lines[key] = (text(v, predict(change(v))) if v is not None else
                      f"{key}: no value converges within max_time_s ({st.max_time:g} s)")

    scaled("bandwidth", min_throughput,
           lambda b: replace(sc, link=replace(sc.link, throughput=b)),
           lambda b, p: (f"bandwidth: {b / MiB:.1f} MiB/s ({b * 8 / 1e6:.0f} Mbit/s) on the wire, "
                         f"{b / tp:.2f}x the {tp / MiB:.1f} MiB/s measured ("
                         + ("max-bandwidth is unlimited: the link itself" if
                            st.max_bandwidth is None else
                            f"max-bandwidth >= {b / over / MiB:.1f} MiB/s at QEMU's measured "
                            f"{100 * (over - 1):+.0f} %") + f"): {_then(p)}"))
    both = _bandwidth_and_threads(sc, st, per_thread, over)
    if both is not None:
        lines["bandwidth"] = both
    scaled("downtime", min_downtime_limit, lambda limit: replace(sc, downtime_limit=limit),
           lambda limit, p: (f"downtime-limit: >= {math.ceil(limit * 1000)} ms (now "
                             f"{st.downtime_limit * 1000:.0f} ms): {_then(p)}"))
    ws = sc.guest.ws
    cache = xbzrle_cache_size(ws, whole.page_size)
    with_cache = replace(sc, link=replace(sc.link, xbzrle_cache=float(cache)))
    if st.xbzrle:
        if st.xbzrle_cache < cache:
            unknown = (" (no page was encoded: the model assumes no saving)"
                       if whole.xbzrle_ratio is None else "")
            lines["xbzrle"] = (f"xbzrle-cache-size: {cache // MiB} MiB (holds the "
                               f"{ws / MiB:.0f} MiB working set; now "
                               f"{st.xbzrle_cache / MiB:.0f} MiB): {_then(predict(with_cache))}"
                               f"{unknown}")
    else:
        x = max_xbzrle_ratio(replace(with_cache, link=replace(with_cache.link, xbzrle_ratio=1.0)))
        if x is not None and x < 1.0:
            p = predict(replace(with_cache, link=replace(with_cache.link, xbzrle_ratio=x)))
            lines["xbzrle"] = (f"XBZRLE with a {cache // MiB} MiB cache: converges if a re-sent "
                               f"page encodes to at most {x * whole.page_size:.0f} bytes: "
                               f"{_then(p)}")
    c = max_wire_ratio(sc)
    if c is not None and c < sc.link.ratio:
        p = predict(replace(sc, link=replace(sc.link, ratio=c)))
        lines["compression"] = (f"compression: at most {c:.3f} wire bytes per RAM byte "
                                f"({1 / c:.1f}:1, e.g. multifd zstd): {_then(p)}")
    threads = _threads_advice(sc, st, factor, per_thread)
    if threads is not None:
        lines["threads"] = threads
    plan = plan_throttle(sc)
    ac = sc.auto_converge or AutoConverge()
    if plan.needed is None:
        lines["throttle"] = "auto-converge: not even a 99 % throttle converges"
    elif plan.needed > 0 and plan.step is not None and plan.step_value is not None:
        when = (f", reached about {plan.reached_at:.1f} s in" if plan.reached_at is not None
                else f", not reached within max_time_s ({st.max_time:g} s)")
        cap = ("max-cpu-throttle allows it" if plan.reachable else
               f"max-cpu-throttle must be >= {plan.step_value:.0f} % (now {ac.maximum:.0f} %)")
        lines["throttle"] = (f"auto-converge: needs a {plan.needed:.0f} % throttle: step "
                             f"{plan.step} ({plan.step_value:.0f} %) of cpu-throttle-initial "
                             f"{ac.initial:.0f} / increment {ac.increment:.0f}{when}; {cap}")
    if st.postcopy_after_syncs is None and st.postcopy_after_s is None:
        p = predict(replace(sc, auto_converge=None, postcopy_after_syncs=2, pause_after_syncs=None))
        if p.postcopy is not None:
            lines["postcopy"] = (f"postcopy: switch after pass 0 at {p.postcopy.switch_at:.1f} s; "
                                 f"{p.postcopy.remaining / MiB:.1f} MiB then arrive in "
                                 f"{_opt_s(p.postcopy.fault_phase)} of page faults (the guest "
                                 f"waits on each missing page): {_then(p)}")
    first = {"cpu-bound": "threads", "xbzrle-cache": "xbzrle", "xbzrle-data": "compression",
             "throttle-max": "throttle", "downtime-limit": "downtime"}.get(factor, "bandwidth")
    order = [first] + [k for k in lines if k != first]
    return [lines[k] for k in order if k in lines]


# ---------------------------------------------------------------------------------------------
# A cell: the repetitions together


def _median(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def _median_figures(figs: Sequence[Figures | None]) -> Figures | None:
    fs = [f for f in figs if f is not None]
    if not fs:
        return None
    conv = [f.converges for f in fs if f.converges is not None]
    passes = _median([f.passes for f in fs])
    return Figures(None if not conv else sum(conv) * 2 > len(conv),
                   _median([f.total_time for f in fs]), _median([f.downtime for f in fs]),
                   None if passes is None else round(passes))


def aggregate(diagnoses: Sequence[Diagnosis]) -> Diagnosis:
    """The repetitions of one cell together: the majority factor among valid runs (invalid runs
    are counted, not diagnosed), median figures, the evidence medians of the runs with that
    factor and the advice of the first of them."""
    if not diagnoses:
        raise ValueError("a cell needs at least one diagnosis")
    counts = Counter(d.factor for d in diagnoses)
    valid = [d for d in diagnoses if d.valid]
    pool = valid or list(diagnoses)
    tally = Counter(d.factor for d in pool)
    # ties: the factor of the earlier repetition
    factor = max(tally, key=lambda f: (tally[f], -[d.factor for d in pool].index(f)))
    chosen = [d for d in pool if d.factor == factor]
    rep = chosen[0]
    evidence: list[Evidence] = []
    for e in rep.evidence:
        vals = [x.value for d in chosen for x in d.evidence if x.label == e.label]
        nums = [float(v) for v in vals if isinstance(v, (int, float))]
        if isinstance(e.value, (int, float)) and len(nums) == len(vals):
            evidence.append(Evidence(e.label, round(statistics.median(nums), 3), e.unit))
        else:
            evidence.append(e)
    left = len(diagnoses) - len(valid)
    note = f" ({left} of {len(diagnoses)} runs {_invalid_words(counts)}, left out)" if (
        valid and left) else ""
    summary = f"{rep.summary}{note}"
    return Diagnosis(
        factor, summary, tuple(evidence), rep.advice,
        _median_figures([d.predicted for d in chosen]), _median_figures([d.early for d in chosen]),
        _median_figures([d.hindsight for d in chosen]),
        _median_figures([d.measured for d in chosen]) or rep.measured,
        runs=len(diagnoses),
        factors=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))


def _invalid_words(counts: Counter[Factor]) -> str:
    return ", ".join(f"{n} {f}" for f, n in sorted(counts.items()) if f in INVALID)


def summary_columns(rec: RunRecord) -> dict[str, str | float | int | None]:
    """The run's ``summary.csv`` columns (:data:`harness.results.store.DIAGNOSIS_COLUMNS`)."""
    return diagnose(rec).columns()


def diagnose_cell(records: Sequence[RunRecord], pre: Premeasured | None = None) -> Diagnosis:
    """The diagnosis of a cell from the records of its repetitions."""
    return aggregate([diagnose(r, pre) for r in records])
