"""harness.report.threads: per-thread CPU tables on real 7.2 / 10.0 records, thread matching by
role and index across runs, the same-name rule (tid order), imbalance, CSV, and properties."""

from __future__ import annotations

import csv
import io
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.report.threads import (
    STORED_THREADS,
    Spread,
    ThreadKey,
    ThreadTable,
    side_threads,
    thread_role,
    thread_table,
)
from harness.results.record import read
from harness.results.record.model import CpuSide, CpuThread
from tests.record_edit import (
    COMPRESS_72,
    MULTIFD_100,
    WAIT_FALSE,
    WAIT_TRUE,
    cell_runs,
    threads,
    with_threads,
)


def cells(table: ThreadTable, side: str) -> dict[str, tuple[Spread | None, ...]]:
    return {r.key.label: r.cells for r in table.rows if r.side == side}


def medians(table: ThreadTable, side: str, col: int = 0) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, c in cells(table, side).items():
        s = c[col]
        out[k] = None if s is None else s.median
    return out


def test_real_72_compress_lists_each_compress_and_decompress_thread() -> None:
    table = thread_table([("run", [read(COMPRESS_72)])])
    # The record: compress tids 9427 (33.41 %) and 9428 (30.02 %), decompress 9429 and 9430.
    assert medians(table, "source") == {
        "main": 6.78, "migration": 16.94, "compress 0": 33.41, "compress 1": 30.02,
        "vcpu 0": 42.12, "other": pytest.approx(0.96)}
    assert medians(table, "destination") == {
        "main": 6.61, "decompress 0": 14.53, "decompress 1": 13.56, "vcpu 0": 0.63,
        "other": 0.0}
    (src,) = [ib for ib in table.imbalance if ib.side == "source"]
    assert src.role == "compress"
    cell = src.cells[0]
    assert cell is not None and cell.max_over_min is not None and cell.top_share is not None
    assert cell.max_over_min.median == pytest.approx(33.41 / 30.02)
    assert cell.top_share.median == pytest.approx(33.41 / (33.41 + 30.02))


def test_real_100_multifd_takes_the_channel_number_from_the_name() -> None:
    table = thread_table([("run", [read(MULTIFD_100)])])
    src, dst = medians(table, "source"), medians(table, "destination")
    assert src["multifd-send 0"] == 13.81 and src["multifd-send 1"] == 13.81
    assert src["migration"] == 0.0  # mig/src/main
    assert dst["multifd-recv 0"] == 25.34 and dst["multifd-recv 1"] == 25.34


def test_three_real_runs_give_median_and_range_per_thread() -> None:
    runs = cell_runs(WAIT_TRUE)
    table = thread_table([("wait", runs)])
    assert table.sampled == {"source": (3,), "destination": (3,)}
    per_run = [sorted((t.tid, t.pct) for t in r.cpu.source.threads if t.comm == "compress")
               for r in runs if r.cpu and r.cpu.source]
    for i in range(4):  # compress i is, in every run, the i-th compress thread by tid
        vals = sorted(run[i][1] for run in per_run)
        spread = cells(table, "source")[f"compress {i}"][0]
        assert spread == Spread(3, vals[1], vals[0], vals[2])
    assert {f"decompress {i}" for i in range(4)} <= set(cells(table, "destination"))


def test_before_after_columns_on_real_runs() -> None:
    table = thread_table([("before", cell_runs(WAIT_TRUE)), ("after", cell_runs(WAIT_FALSE))])
    assert table.columns == ("before", "after")
    assert all(len(r.cells) == 2 for r in table.rows)
    text = "\n".join(table.lines())
    assert "compress 3" in text and "decompress 3" in text and "compress max/min" in text
    # With compress-wait-thread false the destination's main thread loads the raw pages.
    before, after = medians(table, "destination", 0)["main"], medians(table, "destination", 1)["main"]
    assert before is not None and after is not None and after > 20 > before


@pytest.mark.parametrize(("comm", "cls", "role"), [
    ("live_migration", "migration", ("migration", None, "")),
    ("mig/src/main", "migration", ("migration", None, "")),
    ("return path", "migration", ("return-path", None, "")),
    ("mig/src/rp-thr", "migration", ("return-path", None, "")),
    ("multifdsend_3", "multifd_send", ("multifd-send", 3, "")),
    ("mig/src/send_12", "multifd_send", ("multifd-send", 12, "")),
    ("multifdrecv_0", "multifd_recv", ("multifd-recv", 0, "")),
    ("mig/dst/recv_7", "multifd_recv", ("multifd-recv", 7, "")),
    ("CPU 5/KVM", "vcpu", ("vcpu", 5, "")),
    ("CPU 0/TCG", "vcpu", ("vcpu", 0, "")),
    ("ALL CPUs/TCG", "vcpu", ("vcpu", None, "")),
    ("compress", "compress", ("compress", None, "")),
    ("decompress", "decompress", ("decompress", None, "")),
    ("postcopy/listen", "postcopy", ("postcopy-listen", None, "")),
    ("mig/dst/fault", "postcopy", ("postcopy-fault", None, "")),
    ("fault-fast", "postcopy", ("postcopy-preempt", None, "")),
    ("mig/dst/preempt", "postcopy", ("postcopy-preempt", None, "")),
    ("mig/src/new-thr", "migration", ("migration", None, "mig/src/new-thr")),
    ("qemu-system-x86", "main", ("main", None, "")),
    ("qemu-system-x86", "other", ("other", None, "")),  # call_rcu keeps the process name
    ("worker", "other", ("other", None, "")),
    ("compress", "no-such-class", ("other", None, "")),  # a record's class is not trusted
])
def test_roles_from_names_of_both_qemu_generations(comm: str, cls: str,
                                                   role: tuple[str, int | None, str]) -> None:
    assert thread_role(comm, cls) == role


def test_same_name_threads_are_numbered_by_tid_not_by_list_order() -> None:
    side = with_threads(read(COMPRESS_72), threads(
        (300, "compress", "compress", 1.0), (100, "compress", "compress", 45.0),
        (200, "compress", "compress", 6.0))).cpu
    assert side is not None and side.source is not None
    got = {k.label: v for k, v in side_threads(side.source).items()}
    assert got == {"compress 0": 45.0, "compress 1": 6.0, "compress 2": 1.0}


def test_threads_match_across_runs_by_index_whatever_their_tids() -> None:
    base = read(COMPRESS_72)
    a = with_threads(base, threads((10, "compress", "compress", 40.0),
                                   (11, "compress", "compress", 5.0)))
    b = with_threads(base, threads((9000, "compress", "compress", 50.0),
                                   (8000, "compress", "compress", 7.0)))  # lower tid first
    table = thread_table([("x", [a, b])])
    got = cells(table, "source")
    assert got["compress 0"][0] == Spread(2, 23.5, 7.0, 40.0)  # 40 (tid 10) and 7 (tid 8000)
    assert got["compress 1"][0] == Spread(2, 27.5, 5.0, 50.0)


def test_7x_and_9x_names_land_on_the_same_rows() -> None:
    base = read(MULTIFD_100)
    old = with_threads(base, threads((1, "live_migration", "migration", 10.0),
                                     (2, "multifdsend_0", "multifd_send", 30.0)))
    new = with_threads(base, threads((7, "mig/src/main", "migration", 20.0),
                                     (8, "mig/src/send_0", "multifd_send", 50.0)))
    got = cells(thread_table([("7.x", [old]), ("9.x", [new])]), "source")
    assert set(got) == {"migration", "multifd-send 0"}
    assert [c.median for c in got["multifd-send 0"] if c] == [30.0, 50.0]


def test_unnumbered_threads_take_the_indices_numbered_names_left_free() -> None:
    side = with_threads(read(COMPRESS_72), threads(
        (5, "CPU 0/TCG", "vcpu", 10.0), (6, "vcpu-odd", "vcpu", 3.0),
        (7, "CPU 2/TCG", "vcpu", 4.0))).cpu
    assert side is not None and side.source is not None
    got = {k.label: v for k, v in side_threads(side.source).items()}
    assert got == {"vcpu 0": 10.0, "vcpu 1": 3.0, "vcpu 2": 4.0}


def test_single_threaded_tcg_is_one_row_without_index() -> None:
    side = with_threads(read(COMPRESS_72), threads((5, "ALL CPUs/TCG", "vcpu", 80.0))).cpu
    assert side is not None and side.source is not None
    assert {k.label: v for k, v in side_threads(side.source).items()} == {"vcpu (all)": 80.0}


def test_imbalance_max_over_min_is_inf_when_a_thread_idles_and_none_when_all_do() -> None:
    base = read(COMPRESS_72)
    uneven = with_threads(base, threads((1, "compress", "compress", 45.0),
                                        (2, "compress", "compress", 6.0),
                                        (3, "compress", "compress", 0.0)))
    idle = with_threads(base, threads((1, "compress", "compress", 0.0),
                                      (2, "compress", "compress", 0.0)))
    table = thread_table([("uneven", [uneven]), ("idle", [idle])])
    (row,) = table.imbalance
    first, second = row.cells
    assert first is not None and first.max_over_min is not None and first.top_share is not None
    assert math.isinf(first.max_over_min.median)
    assert first.top_share.median == pytest.approx(45 / 51)
    assert second is not None and second.max_over_min is None and second.top_share is None
    assert "inf" in "\n".join(table.lines())
    header, rows = table.imbalance_csv()
    assert rows[0][header.index("max/min median")] == "inf"


def test_a_thread_missing_from_some_runs_is_marked() -> None:
    base = read(COMPRESS_72)
    two = with_threads(base, threads((1, "compress", "compress", 9.0),
                                     (2, "compress", "compress", 8.0)))
    one = with_threads(base, threads((1, "compress", "compress", 7.0)))
    table = thread_table([("x", [two, one])])
    assert cells(table, "source")["compress 1"][0] == Spread(1, 8.0, 8.0, 8.0)
    text = "\n".join(table.lines())
    assert "8.0*" in text and "missing from some runs" in text


def test_a_full_thread_list_is_noted() -> None:
    full = threads(*((i, f"worker{i}", "other", 0.0) for i in range(STORED_THREADS - 1)),
                   (99, "compress", "compress", 5.0))
    table = thread_table([("x", [with_threads(read(COMPRESS_72), full, None)])])
    assert any(f"holds {STORED_THREADS} threads" in n for n in table.notes)
    assert table.sampled == {"source": (1,), "destination": (0,)}


def test_unsampled_runs_add_nothing() -> None:
    rec = with_threads(read(COMPRESS_72), None, None)
    table = thread_table([("x", [rec])])
    assert table.rows == () and table.lines() == ["CPU per thread: not sampled"]


def test_csv_rows_match_the_header_and_defuse_formulas() -> None:
    rec = with_threads(read(COMPRESS_72), threads((1, "=HYPERLINK(1)", "migration", 2.0),
                                                   (2, "compress", "compress", 3.0)))
    table = thread_table([("a", [rec]), ("b", [read(COMPRESS_72)])])
    header, rows = table.csv()
    assert header[:4] == ["side", "thread", "role", "index"] and len(header) == 4 + 2 * 4
    assert all(len(r) == len(header) for r in rows)
    assert ["source", "'=HYPERLINK(1)", "migration", ""] in [r[:4] for r in rows]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    assert "\n=" not in buf.getvalue() and ",=" not in buf.getvalue()


def test_text_drops_control_sequences_from_names() -> None:
    rec = with_threads(read(COMPRESS_72), threads((1, "mig/\x1b[2Jx", "migration", 2.0)))
    text = "\n".join(thread_table([("\x1b]0;t\x07col", [rec])]).lines())
    assert "\x1b" not in text and "\x07" not in text


_NAMES = st.sampled_from([
    ("compress", "compress"), ("decompress", "decompress"), ("live_migration", "migration"),
    ("worker", "other"), ("call_rcu", "other"), ("multifdsend_0", "multifd_send"),
    ("multifdsend_1", "multifd_send"), ("mig/src/send_1", "multifd_send"),
    ("CPU 0/TCG", "vcpu"), ("CPU 1/TCG", "vcpu"), ("odd", "vcpu"), ("ALL CPUs/TCG", "vcpu"),
    ("mig/src/zzz", "migration"), ("qemu-system-x86", "main"),
])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.floats(0, 100, allow_nan=False)), max_size=14),
       st.randoms(use_true_random=False))
def test_no_cpu_is_lost_and_order_does_not_matter(spec: list[tuple[tuple[str, str], float]],
                                                  rnd: random.Random) -> None:
    ths = [CpuThread(tid=100 + i, comm=comm, cls=cls, pct=pct)
           for i, ((comm, cls), pct) in enumerate(spec)]
    shuffled = list(ths)
    rnd.shuffle(shuffled)
    got = side_threads(CpuSide(threads=tuple(ths), window_s=1.0, samples=10))
    assert got == side_threads(CpuSide(threads=tuple(shuffled), window_s=1.0, samples=10))
    assert sum(got.values()) == pytest.approx(sum(t.pct for t in ths))
    for role in ("compress", "decompress"):  # unnumbered names: indices 0..n-1
        idx = sorted(k.index for k in got if k.role == role)
        assert idx == list(range(len(idx)))
    assert all(isinstance(k, ThreadKey) for k in got)
