"""``migbench advise``: the predicted outcome of each migration feature for one workload and link
(pure; the calibration that feeds it is :func:`harness.run.runner.run_matrix` on one short
precopy run per cell).

The base is the convergence model's scenario of the calibration run at the end of its pass 0
(:func:`harness.analysis.diagnosis.scenarios`): QEMU's measured throughput and zero pages, the
dirty rate QEMU's ``calc-dirty-rate`` measured before the migration (the writer's configured
rate without it), the configured working set, guest RAM, ``max-bandwidth`` and downtime limit.
Each feature changes one input of that scenario:

* ``precopy``: none;
* ``xbzrle``: an XBZRLE hit costs ``XBZRLE_COST`` of a page for the writer's pattern, the
  cache is the configured ``xbzrle-cache-size`` (QEMU's 64 MiB default);
* ``multifd-zstd``: wire bytes per RAM byte ``ZSTD_RATIO`` for the pattern, and the
  encoder's rate: the matrix's ``multifd-channels`` (QEMU's default 2; no more at once than the
  source's CPUs) at ``ENCODE_RATE`` RAM bytes per CPU-second each for the pattern and
  ``multifd-zstd-level``. When the encoder keeps it from converging, the note says how many
  channels would do (and whether the source has the CPUs for them);
* ``auto-converge``: QEMU's default steps (20 % + 10 % to 99 %);
* ``postcopy``: switch after the first pass.

The per-pattern figures (:mod:`harness.analysis.patterns`, which says where each comes from)
are not measured by the calibration (it migrates with precopy only): the XBZRLE costs are
assumed from how the writer's patterns are built, the zstd ratios and encoder rates were
measured on this machine by real multifd migrations. The output says which is which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from harness.analysis.convergence import (
    AutoConverge,
    MiB,
    Prediction,
    Scenario,
    min_encode_rate,
    plan_throttle,
    predict,
)
from harness.analysis.diagnosis import usable_threads
from harness.analysis.patterns import ENCODE_RATE, XBZRLE_COST, ZSTD_RATIO

__all__ = ["ENCODE_RATE", "FEATURES", "XBZRLE_COST", "ZSTD_RATIO", "Outlook", "lines",
           "multifd_settings", "outlooks"]

#: QEMU's defaults for the multifd outlook.
DEFAULT_CHANNELS = 2
DEFAULT_ZSTD_LEVEL = 1
FEATURES = ("precopy", "xbzrle", "multifd-zstd", "auto-converge", "postcopy")


@dataclass(frozen=True)
class Outlook:
    feature: str
    prediction: Prediction
    note: str  # what the feature's figure rests on

    @property
    def rank_key(self) -> tuple[int, float, float]:
        p = self.prediction
        return (0 if p.converges else 1, p.total_time if p.total_time is not None else 1e18,
                p.downtime if p.downtime is not None else 1e18)


def outlooks(base: Scenario, pattern: str | None, xbzrle_cache: float | None = None,
             channels: int = DEFAULT_CHANNELS, zstd_level: int = DEFAULT_ZSTD_LEVEL,
             cpus: int | None = None) -> list[Outlook]:
    """Every feature of :data:`FEATURES` on ``base``, best first (converging, then shortest
    total time, then shortest downtime). ``xbzrle_cache``: the matrix's cache size (a precopy
    calibration run does not carry it); ``channels``, ``zstd_level``: the matrix's multifd
    settings; ``cpus``: the source's CPUs (encoder threads beyond them share them)."""
    plain = replace(base, link=replace(base.link, ratio=1.0, xbzrle_ratio=None),
                    auto_converge=None, postcopy_after_syncs=None, postcopy_after_s=None,
                    pause_after_syncs=None, max_time=None, max_passes=None)  # not the harness's cut
    pat = pattern or "random"
    cache = xbzrle_cache or base.link.xbzrle_cache or 64 * 1024 * 1024
    out = [
        Outlook("precopy", predict(plain), "as calibrated"),
        Outlook("xbzrle", predict(replace(plain, link=replace(
            plain.link, xbzrle_ratio=XBZRLE_COST.get(pat, 1.0), xbzrle_cache=cache))),
            f"a hit costs {XBZRLE_COST.get(pat, 1.0):.0%} of a page for '{pat}' pages "
            f"(assumed), cache {cache / 2**20:.0f} MiB"),
        _zstd(plain, pat, channels, zstd_level, cpus),
    ]
    throttle = plan_throttle(plain, AutoConverge())
    if throttle.needed is None:
        need = "needs more than 99 % throttle"
    else:
        need = f"needs {throttle.needed:.0f} % throttle" if throttle.needed else "needs none"
    out.append(Outlook("auto-converge", throttle.prediction, need + ", QEMU's default steps"))
    out.append(Outlook("postcopy", predict(replace(plain, postcopy_after_syncs=1)),
                       "switch after pass 0"))
    return sorted(out, key=lambda o: o.rank_key)


def multifd_settings(*params: Mapping[str, object]) -> tuple[int, int]:
    """(channels, zstd level) from the first of ``params`` (the calibration cell's, then the
    matrix's) that sets each; QEMU's defaults otherwise."""
    def first(key: str, default: int) -> int:
        for p in params:
            v = p.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return default
    return first("multifd-channels", DEFAULT_CHANNELS), first("multifd-zstd-level",
                                                             DEFAULT_ZSTD_LEVEL)


def _zstd(plain: Scenario, pat: str, channels: int, level: int, cpus: int | None) -> Outlook:
    """multifd zstd: the pattern's ratio, and the channels' measured encoder rate."""
    ratio = ZSTD_RATIO.get(pat, 1.0)
    sc = replace(plain, link=replace(plain.link, ratio=ratio))
    note = f"{ratio:g} wire bytes per RAM byte for '{pat}' pages (measured)"
    per = ENCODE_RATE.get(("zstd", level), {}).get(pat)
    if per is None:
        why = "zero pages skip it" if pat == "zero" else f"level {level} not measured"
        return Outlook("multifd-zstd", predict(sc), f"{note}; encoder not the limit ({why})")
    used = usable_threads(channels, cpus)
    sc = replace(sc, link=replace(sc.link, encode_rate=per * used))
    p = predict(sc)
    note += (f"; {channels} channel{'s' if channels != 1 else ''} at {per / MiB:.0f} MiB/s of RAM "
             f"each (level {level}, measured)")
    if used < channels:
        note += f", {used} at once on {cpus} CPUs"
    wire = per * used * ratio
    if wire < sc.link.throughput:
        note += (f"; the encoder, not the link, sets the pace: {wire / MiB:.1f} of "
                 f"{sc.link.throughput / MiB:.1f} MiB/s")
    if not p.converges:
        need = min_encode_rate(sc)
        if need is not None and need > per * used:
            n = math.ceil(need / per)
            note += f"; needs {n} channels"
            if cpus and n > cpus:
                note += f", more than the source's {cpus} CPUs"
    return Outlook("multifd-zstd", p, note)


def lines(title: str, base: Scenario, pattern: str | None, calibrated: str,
          xbzrle_cache: float | None = None, channels: int = DEFAULT_CHANNELS,
          zstd_level: int = DEFAULT_ZSTD_LEVEL, cpus: int | None = None) -> list[str]:
    """The text ``advise`` prints for one cell."""
    g, link = base.guest, base.link
    out = [f"== {title}",
           f"  inputs: dirty rate {g.dirty_rate / 2**20:.1f} MiB/s ({calibrated}), working set "
           f"{(g.working_set or g.ram) / 2**20:.0f} MiB, RAM {g.ram / 2**20:.0f} MiB, "
           f"throughput {link.throughput / 2**20:.1f} MiB/s, downtime limit "
           f"{base.downtime_limit * 1000:.0f} ms"]
    for i, o in enumerate(outlooks(base, pattern, xbzrle_cache, channels, zstd_level, cpus), 1):
        p = o.prediction
        if p.converges:
            fig = (f"completes in {p.total_time:.2f} s" if p.total_time is not None
                   else "completes") + (f", downtime {p.downtime * 1000:.0f} ms"
                                        if p.downtime is not None else "")
        else:
            fig = "does not converge"
        out.append(f"  {i}. {o.feature}: {fig}: {p.reason} [{o.note}]")
    return out
