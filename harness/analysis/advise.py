"""``migbench advise``: the predicted outcome of each migration feature for one workload and link
(pure; the calibration that feeds it is :func:`harness.run.runner.run_matrix` on one short
precopy run per cell).

The base is the convergence model's scenario of the calibration run at the end of its pass 0
(:func:`harness.analysis.diagnosis.scenarios`): QEMU's measured throughput and zero pages, the
dirty rate QEMU's ``calc-dirty-rate`` measured before the migration (the writer's configured
rate without it), the configured working set, guest RAM, ``max-bandwidth`` and downtime limit.
Each feature changes one input of that scenario:

* ``precopy``: none;
* ``xbzrle``: an XBZRLE hit costs :data:`XBZRLE_COST` of a page for the writer's pattern, the
  cache is the configured ``xbzrle-cache-size`` (QEMU's 64 MiB default);
* ``multifd-zstd``: wire bytes per RAM byte :data:`ZSTD_RATIO` for the pattern; the encoder is
  assumed not to be the limit (on a slow host it may be: see the compress-bound seed matrix);
* ``auto-converge``: QEMU's default steps (20 % + 10 % to 99 %);
* ``postcopy``: switch after the first pass.

The per-pattern figures are not measured by the calibration (it migrates with precopy only):
they are what the writer's patterns are built to be (``sparse`` changes 8 bytes of a page,
``random`` is incompressible, ``zero`` writes zero pages, ``text`` is English-like text),
taken from the stored runs (tests/data). The output says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.analysis.convergence import AutoConverge, Prediction, Scenario, plan_throttle, predict

#: Bytes on the wire per page of an XBZRLE hit, as a share of the page, per writer pattern.
XBZRLE_COST = {"sparse": 0.01, "text": 0.3, "random": 1.0, "zero": 0.01}
#: Wire bytes per RAM byte with multifd zstd, per writer pattern.
ZSTD_RATIO = {"sparse": 0.02, "text": 0.35, "random": 1.0, "zero": 0.001}
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


def outlooks(base: Scenario, pattern: str | None, xbzrle_cache: float | None = None
             ) -> list[Outlook]:
    """Every feature of :data:`FEATURES` on ``base``, best first (converging, then shortest
    total time, then shortest downtime). ``xbzrle_cache``: the matrix's cache size (a precopy
    calibration run does not carry it)."""
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
        Outlook("multifd-zstd", predict(replace(plain, link=replace(
            plain.link, ratio=ZSTD_RATIO.get(pat, 1.0)))),
            f"{ZSTD_RATIO.get(pat, 1.0):g} wire bytes per RAM byte for '{pat}' pages (assumed),"
            " encoder not the limit"),
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


def lines(title: str, base: Scenario, pattern: str | None, calibrated: str,
          xbzrle_cache: float | None = None) -> list[str]:
    """The text ``advise`` prints for one cell."""
    g, link = base.guest, base.link
    out = [f"== {title}",
           f"  inputs: dirty rate {g.dirty_rate / 2**20:.1f} MiB/s ({calibrated}), working set "
           f"{(g.working_set or g.ram) / 2**20:.0f} MiB, RAM {g.ram / 2**20:.0f} MiB, "
           f"throughput {link.throughput / 2**20:.1f} MiB/s, downtime limit "
           f"{base.downtime_limit * 1000:.0f} ms"]
    for i, o in enumerate(outlooks(base, pattern, xbzrle_cache), 1):
        p = o.prediction
        if p.converges:
            fig = (f"completes in {p.total_time:.2f} s" if p.total_time is not None
                   else "completes") + (f", downtime {p.downtime * 1000:.0f} ms"
                                        if p.downtime is not None else "")
        else:
            fig = "does not converge"
        out.append(f"  {i}. {o.feature}: {fig}: {p.reason} [{o.note}]")
    return out
