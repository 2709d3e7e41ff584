"""harness.analysis.convergence: the precopy model against cases computed by hand, the advice fed back into
the model, and properties (monotonicity, the closed-form fast-forward against a plain loop)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.analysis import convergence
from harness.analysis.convergence import (
    AutoConverge,
    Guest,
    Link,
    MiB,
    Scenario,
    max_wire_ratio,
    max_xbzrle_ratio,
    min_downtime_limit,
    min_throughput,
    plan_throttle,
    predict,
    throttle_needed,
    xbzrle_cache_size,
)

M = float(MiB)
BELOW = 1 - 1e-3  # "one step below" an advised value


def mib(x: float) -> float:
    return x * M


def stuck_ws(**kw: object) -> Scenario:
    """1 GiB guest, half zero pages; 40 MiB/s over a 64 MiB working set; 32 MiB/s; 300 ms."""
    sc = Scenario(Guest(mib(1024), mib(40), mib(64), 0.5), Link(mib(32)), 0.3)
    return replace(sc, **kw)  # type: ignore[arg-type]


def test_link_bound_guest_without_working_set_cannot_converge() -> None:
    """d = 40 MiB/s over all of RAM, B = 32 MiB/s, L = 0.3 s (budget 9.6 MiB).

    Pass 0 sends the 512 MiB of non-zero pages in 512/32 = 16 s, while the guest dirties
    40 * 16 = 640 MiB. That is more than the pass sent (q = 40/32 = 1.25 >= 1), and the recurrence
    is monotone, so the remainder never shrinks again: no convergence after 1 pass, 640 MiB dirty.
    """
    sc = Scenario(Guest(mib(1024), mib(40), None, 0.5), Link(mib(32)), 0.3)
    p = predict(sc)
    assert not p.converges and p.bound == "dirty-rate"
    assert p.passes == 1
    assert p.remaining == pytest.approx(mib(640))
    assert p.budget == pytest.approx(mib(9.6))
    assert p.elapsed == pytest.approx(16.0)
    assert p.total_time is None and p.downtime is None
    assert "dirties 40.0 MiB/s" in p.reason and "32.0 MiB/s" in p.reason


def test_working_set_fixed_point_cannot_converge() -> None:
    """The same guest with a 64 MiB working set: pass 0 (16 s) leaves min(640, 64) = 64 MiB;
    pass 1 sends it in 2 s while the guest dirties min(80, 64) = 64 MiB again: the fixed point is
    the working set, 64 MiB > 9.6 MiB. Sending it takes 2.0 s against a 300 ms limit."""
    p = predict(stuck_ws())
    assert not p.converges and p.bound == "working-set"
    assert p.passes == 2
    assert p.remaining == pytest.approx(mib(64))
    assert p.elapsed == pytest.approx(18.0)
    assert [s.duration for s in p.schedule] == pytest.approx([16.0, 2.0])
    assert "2.0 s" in p.reason and "300 ms" in p.reason
    assert p.margin == pytest.approx(9.6 / 64)


def test_converges_in_three_passes() -> None:
    """R = 1 GiB with 75 % zero pages (D_0 = 256 MiB), B = 64 MiB/s, d = 16 MiB/s, L = 0.1 s
    (budget 6.4 MiB); q = 16/64 = 0.25.

    pass 0: 256 MiB in 4 s, leaves 64 MiB; pass 1: 1 s, leaves 16 MiB; pass 2: 0.25 s, leaves
    4 MiB <= 6.4 MiB: stop. Downtime 4/64 = 0.0625 s; total 4 + 1 + 0.25 + 0.0625 = 5.3125 s.
    With 1 s of setup everything moves by 1 s.
    """
    sc = Scenario(Guest(mib(1024), mib(16), None, 0.75), Link(mib(64)), 0.1)
    p = predict(sc)
    assert p.converges and p.bound == "converged"
    assert p.passes == 3
    assert [s.ram_bytes / M for s in p.schedule] == pytest.approx([256, 64, 16])
    assert [s.start for s in p.schedule] == pytest.approx([0, 4, 5])
    assert p.remaining == pytest.approx(mib(4))
    assert p.downtime == pytest.approx(0.0625)
    assert p.total_time == pytest.approx(5.3125)
    late = predict(replace(sc, setup_time=1.0))
    assert late.total_time == pytest.approx(6.3125) and late.passes == 3
    # the stop-and-copy at a faster switchover link (QEMU lifts max-bandwidth for it)
    fast = predict(replace(sc, link=replace(sc.link, switchover_throughput=mib(1024))))
    assert fast.downtime == pytest.approx(4 / 1024) and fast.passes == 3
    # a max_time before the end of pass 2 cancels it: pass 2 would end at 5.25 s
    cut = predict(replace(sc, max_time=5.2))
    assert not cut.converges and cut.bound == "max-time" and cut.passes == 2
    assert cut.remaining == pytest.approx(mib(16))


def xbzrle_case(cache_mib: float | None) -> Scenario:
    """512 MiB guest, 75 % zero (D_0 = 128 MiB); 32 MiB/s over 64 MiB; 24 MiB/s; 250 ms."""
    link = Link(mib(24)) if cache_mib is None else Link(mib(24), 1.0, 1 / 64, mib(cache_mib))
    return Scenario(Guest(mib(512), mib(32), mib(64), 0.75), link, 0.25)


def test_xbzrle_saving_changes_the_outcome() -> None:
    """Budget 24 * 0.25 = 6 MiB.

    Precopy: pass 0 takes 128/24 = 5.333 s and leaves the whole 64 MiB working set; pass 1 takes
    2.667 s and leaves it again (q = 32/24 > 1): no convergence after 2 passes, at 8 s.

    XBZRLE saving 63/64 of a re-sent page (64 bytes per 4 KiB page) with a 64 MiB cache: pass 0 and
    pass 1 (cold cache: every lookup misses) cost the same as precopy, 8 s; pass 2 sends
    64 MiB / 64 = 1 MiB in 1/24 s while the guest dirties 32/24 = 1.333 MiB <= 6 MiB: converges
    after 3 passes; downtime 1.333/64/24 s; total 8 + 1/24 + 1.333/64/24 = 8.04253 s.

    With a 16 MiB cache only h = 16/64 of the dirty pages hit: a page costs 0.25/64 + 0.75 =
    0.7539 of a page, q = 32 * 0.7539 / 24 = 1.005 >= 1: the working set stays dirty, 3 passes.
    """
    plain = predict(xbzrle_case(None))
    assert not plain.converges and plain.bound == "working-set" and plain.passes == 2
    assert plain.elapsed == pytest.approx(8.0)
    good = predict(xbzrle_case(64))
    assert good.converges and good.passes == 3
    assert good.remaining == pytest.approx(mib(32 / 24))
    assert good.downtime == pytest.approx(32 / 24 / 64 / 24)
    assert good.total_time == pytest.approx(8 + 1 / 24 + 32 / 24 / 64 / 24)
    assert [s.wire_bytes / M for s in good.schedule] == pytest.approx([128, 64, 1])
    small = predict(xbzrle_case(16))
    assert not small.converges and small.bound == "working-set" and small.passes == 3
    assert small.schedule[2].wire_bytes == pytest.approx(mib(64) * (0.25 / 64 + 0.75))


def ac_case(**kw: object) -> Scenario:
    """256 MiB guest, half zero (D_0 = 128 MiB); 64 MiB/s over 32 MiB; 32 MiB/s; 250 ms (8 MiB);
    auto-converge 20 % + 10 %, up to 99 %, trigger 50 %."""
    sc = Scenario(Guest(mib(256), mib(64), mib(32), 0.5), Link(mib(32)), 0.25,
                  auto_converge=AutoConverge(20, 10, 99, 50))
    return replace(sc, **kw)  # type: ignore[arg-type]


def test_auto_converge_follows_qemus_throttle_steps() -> None:
    """QEMU checks at a sync >= 1 s after the last check; two checks where the bytes dirtied
    exceed 50 % of the bytes sent raise the throttle.

    pass 0 (0-4 s) leaves 32 MiB: check at 4 s, 32 > 64 (50 % of 128) is false. Each later
    working-set pass takes 1 s and leaves 32 MiB (32 > 16: high): checks at 5, 6 -> 20 %;
    7, 8 -> 30 %; 10 -> 40 %; 12 -> 50 %; 14 -> 60 % (64 MiB/s * (1 - p) >= 32 until then).
    At 60 % (25.6 MiB/s) the passes shrink: 14-15 s leaves 25.6 (check: high), 15-15.8 leaves
    20.48, 15.8-16.44 leaves 16.384 (check at 16.44: 36.864 > 23.04, high) -> 70 % (19.2 MiB/s);
    16.44-16.952 leaves 9.8304, 16.952-17.2592 leaves 5.89824 <= 8: converges after 16 passes,
    downtime 5.89824/32 = 0.18432 s, total 17.44352 s.
    """
    p = predict(ac_case())
    assert p.converges and p.passes == 16
    assert [t for t, _ in p.throttle_history] == pytest.approx([6, 8, 10, 12, 14, 16.44])
    assert [pct for _, pct in p.throttle_history] == [20, 30, 40, 50, 60, 70]
    assert p.remaining == pytest.approx(mib(5.89824))
    assert p.total_time == pytest.approx(17.44352)
    # cancelled at 9.5 s: pass 6 (9-10 s) would end after it; the throttle had reached 30 %
    cut = predict(ac_case(max_time=9.5))
    assert not cut.converges and cut.bound == "max-time" and cut.passes == 6
    assert cut.throttle == 30 and cut.throttle_history == ((6, 20), (8, 30))


def test_throttle_needed_and_the_step_that_reaches_it() -> None:
    """With at most 2 passes, pass 1 (1 s for the 32 MiB working set) must leave <= 8 MiB:
    64 (1 - p) <= 8, p >= 87.5 %. The steps are 20, 30, ..., 90, 99: 90 % is step 7. With
    max-cpu-throttle 80 it is out of reach; the schedule alone never gets there in 2 passes."""
    sc = ac_case(max_passes=2, auto_converge=None)
    need = throttle_needed(sc)
    assert need is not None and need == pytest.approx(87.5, rel=1e-3)
    g = replace(sc.guest, dirty_rate=sc.guest.rate_at(need))
    assert predict(replace(sc, guest=g)).converges
    g = replace(sc.guest, dirty_rate=sc.guest.rate_at(need * BELOW))
    assert not predict(replace(sc, guest=g)).converges
    plan = plan_throttle(sc, AutoConverge(20, 10, 99, 50))
    assert plan.needed == need and plan.step == 7 and plan.step_value == 90 and plan.reachable
    assert plan.reached_at is None  # 2 passes are 5 s: the first raise comes at 6 s
    capped = plan_throttle(sc, AutoConverge(20, 10, 80, 50))
    assert capped.step == 7 and capped.step_value == 90 and not capped.reachable
    # the uncapped schedule of ac_case reaches 60 % (>= its need without a pass limit) at 14 s
    free = plan_throttle(ac_case())
    assert free.needed is not None and 50 < free.needed < 51  # q = 2 (1 - p) < 1
    assert free.step == 4 and free.reached_at == pytest.approx(14.0)


def test_cpu_share_lets_a_light_writer_keep_its_rate() -> None:
    """A writer that needs 40 % of its vCPU keeps its full rate under a 50 % throttle and slows
    to 64 * 0.2 / 0.4 = 32 MiB/s under 80 %."""
    g = Guest(mib(256), mib(64), mib(32), 0.5, cpu_share=0.4)
    assert g.rate_at(50) == pytest.approx(mib(64))
    assert g.rate_at(80) == pytest.approx(mib(32))
    assert Guest(mib(256), mib(64)).rate_at(80) == pytest.approx(mib(64) * 0.2)


def test_postcopy_phase_length() -> None:
    """Switch after 2 syncs (after pass 0, at 16 s): the 64 MiB pass 0 left arrive at 32 MiB/s in
    2 s (total 18 s), or at 128 MiB/s (max-postcopy-bandwidth unlimited: the link) in 0.5 s.

    At 10 s instead (mid pass 0): 512 (1 - 10/16) = 192 MiB unsent plus min(400, 64) = 64 MiB
    dirtied: 256 MiB, 8 s of page faults, total 18 s."""
    p = predict(stuck_ws(postcopy_after_syncs=2))
    assert p.converges and p.bound == "postcopy" and p.postcopy is not None
    assert p.postcopy.switch_at == pytest.approx(16.0)
    assert p.postcopy.remaining == pytest.approx(mib(64))
    assert p.postcopy.fault_phase == pytest.approx(2.0)
    assert p.total_time == pytest.approx(18.0) and p.downtime == 0
    fast = predict(stuck_ws(postcopy_after_syncs=2,
                            link=Link(mib(32), postcopy_throughput=mib(128))))
    assert fast.postcopy is not None and fast.postcopy.fault_phase == pytest.approx(0.5)
    mid = predict(stuck_ws(postcopy_after_s=10.0))
    assert mid.postcopy is not None and mid.passes == 0
    assert mid.postcopy.switch_at == pytest.approx(10.0)
    assert mid.postcopy.remaining == pytest.approx(mib(256))
    assert mid.total_time == pytest.approx(18.0)
    # a guest paused after 2 syncs stops dirtying: pass 1 sends the 64 MiB and nothing is left
    paused = predict(stuck_ws(pause_after_syncs=2))
    assert paused.converges and paused.passes == 2 and paused.downtime == 0
    assert paused.total_time == pytest.approx(18.0)


def test_advice_fed_back_converges_and_one_step_below_does_not() -> None:
    """For the stuck working-set case: the limit must hold the 64 MiB pass 0 leaves,
    64 / 32 = 2.0 s; the bandwidth must exceed the dirty rate (q < 1), 40 MiB/s (just above:
    the remainder then shrinks by q per pass within MAX_PASSES); compression must bring a page
    to 32/40 = 0.8 of itself. Each value converges and 0.1 % worse does not."""
    sc = stuck_ws()
    b = min_throughput(sc)
    assert b is not None and b == pytest.approx(mib(40), rel=1e-3)
    assert predict(replace(sc, link=replace(sc.link, throughput=b))).converges
    assert not predict(replace(sc, link=replace(sc.link, throughput=b * BELOW))).converges
    limit = min_downtime_limit(sc)
    assert limit is not None and limit == pytest.approx(2.0, rel=1e-3)
    assert predict(replace(sc, downtime_limit=limit)).passes == 1
    assert not predict(replace(sc, downtime_limit=limit * BELOW)).converges
    c = max_wire_ratio(sc)
    assert c is not None and c == pytest.approx(0.8, rel=1e-3)
    assert predict(replace(sc, link=replace(sc.link, ratio=c))).converges
    assert not predict(replace(sc, link=replace(sc.link, ratio=c / BELOW))).converges
    # within 20 s the bandwidth has to do more than outrun the guest
    timed = replace(sc, max_time=20.0)
    b20 = min_throughput(timed)
    assert b20 is not None and b20 > mib(41)
    assert predict(replace(timed, link=replace(timed.link, throughput=b20))).converges
    assert not predict(replace(timed, link=replace(timed.link, throughput=b20 * BELOW))).converges


def test_xbzrle_advice() -> None:
    """The cache must hold the working set and be a power of two; the XBZRLE hit cost that
    converges with a 64 MiB cache is below q = 1: 32 x / 24 < 1 for pass 2 to shrink."""
    assert xbzrle_cache_size(mib(64)) == 64 * MiB
    assert xbzrle_cache_size(mib(64) + 1) == 128 * MiB
    assert xbzrle_cache_size(mib(48.6)) == 64 * MiB
    assert xbzrle_cache_size(1) == 4096
    sc = xbzrle_case(64)
    x = max_xbzrle_ratio(sc)
    assert x is not None and x < 24 / 32
    assert predict(replace(sc, link=replace(sc.link, xbzrle_ratio=x))).converges
    assert not predict(replace(sc, link=replace(sc.link, xbzrle_ratio=x / BELOW))).converges
    assert max_xbzrle_ratio(xbzrle_case(16)) is None or not predict(xbzrle_case(16)).converges


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="dirty_rate"):
        Guest(mib(1), -1.0)
    with pytest.raises(ValueError, match="throughput"):
        Link(0.0)
    with pytest.raises(ValueError, match="zero_fraction"):
        Guest(mib(1), 0.0, zero_fraction=math.nan)
    with pytest.raises(ValueError, match="max-cpu-throttle"):
        AutoConverge(maximum=100)
    with pytest.raises(ValueError, match="max_passes"):
        Scenario(Guest(mib(1), 0.0), Link(1.0), max_passes=0)


def test_an_idle_guest_converges_after_pass_0() -> None:
    p = predict(Scenario(Guest(mib(256), 0.0, None, 0.5), Link(mib(64)), 0.3))
    assert p.converges and p.passes == 1 and p.downtime == 0 and p.total_time == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------
# Properties

rates = st.floats(min_value=0.0, max_value=200.0)
positive = st.floats(min_value=1.0, max_value=200.0)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ram = draw(st.floats(min_value=64, max_value=4096))
    ws = draw(st.none() | st.floats(min_value=1, max_value=4096))
    guest = Guest(mib(ram), mib(draw(rates)), None if ws is None else mib(ws),
                  draw(st.floats(min_value=0.0, max_value=0.95)))
    xb = draw(st.none() | st.floats(min_value=0.001, max_value=1.0))
    link = Link(mib(draw(positive)), draw(st.floats(min_value=0.1, max_value=1.0)), xb,
                mib(draw(st.floats(min_value=0, max_value=512))))
    # QEMU's downtime-limit is whole milliseconds
    limit = draw(st.integers(min_value=0, max_value=2000)) / 1000
    return Scenario(guest, link, limit,
                    max_time=draw(st.none() | st.floats(min_value=1.0, max_value=600.0)),
                    min_pass_time=draw(st.sampled_from([0.0, 0.05])))


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.floats(min_value=1.0, max_value=20.0))
def test_more_bandwidth_never_breaks_convergence(sc: Scenario, k: float) -> None:
    p = predict(sc)
    q = predict(replace(sc, link=replace(sc.link, throughput=sc.link.throughput * k)))
    if p.converges:
        assert q.converges
        assert q.total_time is not None and p.total_time is not None
        assert q.total_time <= p.total_time * (1 + 1e-9)
    if p.converges and q.converges:
        assert q.passes <= p.passes


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.floats(min_value=1.0, max_value=20.0))
def test_a_larger_downtime_limit_never_adds_passes(sc: Scenario, k: float) -> None:
    p = predict(sc)
    q = predict(replace(sc, downtime_limit=sc.downtime_limit * k + 1e-3))
    if p.converges:
        assert q.converges and q.passes <= p.passes


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.floats(min_value=1.0, max_value=20.0))
def test_a_faster_writer_never_helps(sc: Scenario, k: float) -> None:
    p = predict(sc)
    q = predict(replace(sc, guest=replace(sc.guest, dirty_rate=sc.guest.dirty_rate * k)))
    if q.converges:
        assert p.converges and p.passes <= q.passes


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_downtime_stays_within_the_limit(sc: Scenario) -> None:
    """QEMU stops the guest only when the remainder fits the budget: at the precopy rate the
    stop-and-copy lasts at most the limit times the cost of a page (at most 1 here)."""
    p = predict(sc)
    if p.converges and p.downtime is not None:
        assert p.downtime <= sc.downtime_limit * (1 + 1e-9)
        assert p.remaining <= p.budget * (1 + 1e-9)


def brute(sc: Scenario) -> tuple[bool, int, float]:
    """The recurrence of the module docstring, one pass at a time (no throttle, no postcopy)."""
    g, ln = sc.guest, sc.link
    load, t, k = g.ram * (1 - g.zero_fraction), sc.setup_time, 0
    while k < 5000:
        c = ln.cost(k, g.ws)
        dur = max(load * ln.seconds_per_byte(c), sc.min_pass_time)
        if sc.max_time is not None and t + dur > sc.max_time:
            return False, k, t
        dirtied = min(g.dirty_rate * dur, g.ws)
        k, t = k + 1, t + dur
        if dirtied <= ln.wire_rate(c) * sc.downtime_limit:
            return True, k, t
        if dirtied >= load and ln.cost(k, g.ws) == c:
            return False, k, t
        load = dirtied
    return False, k, t


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.floats(min_value=0.5, max_value=0.999))
def test_the_closed_form_skip_matches_a_plain_loop(sc: Scenario, q: float) -> None:
    """Dirty rate set so that the remainder shrinks by q per pass (often thousands of passes):
    the model, which sums long geometric runs in closed form, agrees with a plain loop."""
    c = sc.link.ratio
    assume(sc.downtime_limit > 0)  # a plain loop "converges" when its remainder underflows
    sc = replace(sc, link=replace(sc.link, xbzrle_ratio=None),
                 guest=replace(sc.guest, dirty_rate=q * sc.link.throughput / c))
    ok, passes, t = brute(sc)
    if passes >= 5000:
        return
    p = predict(sc)
    assert p.converges == ok
    assert p.passes == passes
    decided = (p.total_time - (p.downtime or 0)) if p.total_time is not None else p.elapsed
    if sc.max_time is not None and not ok and t < sc.max_time and p.bound == "max-time":
        t = sc.max_time  # the loop stops at the last sync, the model at max_time
    assert decided == pytest.approx(t, rel=1e-6, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_advised_bandwidth_and_limit_converge_and_less_does_not(sc: Scenario) -> None:
    b = min_throughput(sc)
    if b is not None and b > 2.0:
        assert predict(replace(sc, link=replace(sc.link, throughput=b))).converges
        assert not predict(replace(sc, link=replace(sc.link, throughput=b * BELOW))).converges
    limit = min_downtime_limit(sc)
    if limit is not None and limit > 1e-5:
        assert predict(replace(sc, downtime_limit=limit)).converges
        assert not predict(replace(sc, downtime_limit=limit * BELOW)).converges


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.none() | st.tuples(st.floats(1, 99), st.floats(1, 99), st.floats(1, 99),
                                          st.floats(1, 100)))
def test_shortcuts_change_nothing(sc: Scenario, ac: tuple[float, ...] | None) -> None:
    """With or without auto-converge, the two shortcuts (a remainder that stopped shrinking never
    converges; a long geometric run is summed in closed form) agree with simulating every pass."""
    assume(sc.downtime_limit > 0)  # else the plain loop "converges" when its remainder underflows
    sc = replace(sc, max_passes=3000, auto_converge=None if ac is None else AutoConverge(*ac))
    fast = predict(sc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(convergence._Sim, "settled", lambda *_: False)
        slow = predict(sc)
    assert fast.converges == slow.converges
    if fast.bound in ("dirty-rate", "working-set"):
        assert slow.bound in ("max-passes", "max-time")
        return
    assert (fast.bound, fast.passes) == (slow.bound, slow.passes)
    assert fast.elapsed == pytest.approx(slow.elapsed, rel=1e-6, abs=1e-9)
    assert fast.throttle == slow.throttle
    if fast.total_time is not None and slow.total_time is not None:
        assert fast.total_time == pytest.approx(slow.total_time, rel=1e-6, abs=1e-9)
