"""harness.report.slides: default pairs, cell selectors, the info migrate block a cell stands
for (median run, or "cannot complete" with the last sample), differences with significance,
and the plain-text slide on real 7.2 compress runs."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import UsageError
from harness.report.slides import (
    KEY_WIDTH,
    VALUE_WIDTH,
    by_cell,
    default_pairs,
    find_cell,
    info_block,
    parse_pair,
    slide,
    slides,
)
from harness.results.record import RunRecord, read
from harness.results.show import info_migrate
from tests.record_edit import (
    CANCELLED_1T,
    COMPRESS_72,
    NOT_CONVERGED,
    WAIT_FALSE,
    WAIT_TRUE,
    bound_runs,
    cell_runs,
    edit,
)

COMMAND = "migbench report results/x --slides bf15..881a --text"


def cell(n: int, variant: str, axes: dict[str, Any], *, rep: int = 1,
         total_ms: int | None = None, matrix: str = "m") -> RunRecord:
    """A run of cell number ``n`` (its id and start time follow ``n``, so order is ``n``'s)."""
    changes: dict[str, Any] = {
        "cell.id": f"{n:012x}", "cell.variant": variant, "cell.axes": axes,
        "cell.matrix": matrix, "repetition": rep,
        "started_utc": f"2026-11-30T00:{n:02d}:{rep:02d}.000Z",
    }
    if total_ms is not None:
        changes["metrics.total_time_ms"] = total_ms
    return edit(read(COMPRESS_72), changes)


def ids(pairs: list[tuple[str, str]]) -> list[tuple[int, int]]:
    return [(int(a, 16), int(b, 16)) for a, b in pairs]


def test_default_pairs_variants_then_first_axis_value_against_each_other() -> None:
    runs = [
        cell(1, "old", {"feature": "precopy"}),
        cell(2, "old", {"feature": "compress", "compress-threads": 1}),
        cell(3, "old", {"feature": "compress", "compress-threads": 4}),
        cell(4, "new", {"feature": "precopy"}),
        cell(5, "new", {"feature": "multifd", "multifd-channels": 1}),
        cell(6, "new", {"feature": "multifd", "multifd-channels": 4}),
    ]
    assert ids(default_pairs(runs)) == [
        (1, 4),  # the variant pair: same axes, old ran first
        (1, 2), (1, 3),  # feature: precopy vs each compress cell (threads: a dropped knob)
        (4, 5), (4, 6),
        (2, 3),  # compress-threads 1 vs 4
        (5, 6),
    ]


def test_default_pairs_keep_other_axes_equal_and_matrices_apart() -> None:
    runs = [
        cell(1, "v", {"feature": "compress", "compress-wait-thread": True, "threads": 1}),
        cell(2, "v", {"feature": "compress", "compress-wait-thread": False, "threads": 1}),
        cell(3, "v", {"feature": "compress", "compress-wait-thread": True, "threads": 4}),
        cell(4, "v", {"feature": "compress", "compress-wait-thread": False, "threads": 4}),
        cell(5, "v", {"feature": "compress", "compress-wait-thread": False, "threads": 4},
             matrix="other"),
    ]
    assert ids(default_pairs(runs)) == [(1, 2), (3, 4), (1, 3), (2, 4)]


def test_default_pairs_follow_start_order_and_list_each_pair_once() -> None:
    runs = [cell(2, "b", {"x": 1}), cell(1, "a", {"x": 1}), cell(3, "a", {"x": 2}),
            cell(4, "b", {"x": 2})]
    pairs = ids(default_pairs(list(reversed(runs))))
    assert pairs == [(1, 2), (3, 4), (1, 3), (2, 4)]
    assert len(set(pairs)) == len(pairs)
    assert default_pairs([cell(1, "a", {"x": 1})]) == []


def test_find_cell_by_id_prefix_or_axes() -> None:
    runs = bound_runs()
    assert find_cell(runs, "bf15") == WAIT_TRUE
    assert find_cell(runs, "compress-wait-thread=false") == WAIT_FALSE
    assert find_cell(runs, "variant=qemu-7.2,compress-threads=1") == CANCELLED_1T
    assert parse_pair(runs, "bf157b8d9d23..compress-wait-thread=False") == (WAIT_TRUE, WAIT_FALSE)


@pytest.mark.parametrize(("spec", "words"), [
    ("bf15", "expected BEFORE..AFTER"),
    ("bf15..", "expected BEFORE..AFTER"),
    ("bf1..881a", "matches no cell"),  # a prefix needs 4 characters
    ("bf15..feature=compress", "matches 3 cells"),
    ("bf15..nosuch=1", "matches no cell"),
    ("bf15..bf157b8d9d23", "on both sides"),  # one cell, two spellings
])
def test_bad_slide_specs_are_one_line_errors(spec: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_pair(bound_runs(), spec)
    msg = str(info.value)
    assert words in msg and "\n" not in msg and msg.startswith("--slides:")


def test_info_block_shows_the_run_with_the_median_total_time() -> None:
    runs = [cell(1, "v", {}, rep=1, total_ms=5000), cell(1, "v", {}, rep=2, total_ms=9000),
            cell(1, "v", {}, rep=3, total_ms=7000)]
    block = info_block(runs)
    assert block.verdict == "completed" and block.repetition == 3
    assert block.outcomes == "completed 3/3"
    assert block.shown == "median total time of 3"


def test_info_block_of_a_cell_that_cannot_complete_uses_the_last_sample() -> None:
    rec = read(NOT_CONVERGED)
    block = info_block([rec])
    assert block.verdict == "cannot complete" and block.outcomes == "not-converged 1/1"
    last = [s for s in rec.timeline if s.ram is not None][-1]
    assert block.rows == tuple(info_migrate(last))
    assert dict(block.rows)["Migration status"] == "active"
    assert block.shown == f"last sample, {last.t:.2f} s"


def test_info_block_of_corrupted_runs_says_so() -> None:
    block = info_block(cell_runs(WAIT_TRUE))
    assert block.verdict == "corrupted" and block.outcomes == "corrupted 3/3"
    assert block.repetition == 1


def test_differences_use_completed_intact_runs_only() -> None:
    # Four runs a side: with three, the exact Mann-Whitney test cannot go below p = 0.1.
    base = [cell(1, "a", {}, rep=r, total_ms=t) for r, t in enumerate((10, 11, 11, 12), 1)]
    new = [cell(2, "b", {}, rep=r, total_ms=t) for r, t in enumerate((5, 5, 6, 6), 1)]
    bad = edit(new[0], {"repetition": 9, "integrity.verdict": "corrupted",
                        "metrics.total_time_ms": 1})
    cancelled = edit(read(NOT_CONVERGED), {"cell": new[0].cell.model_dump(mode="json"),
                                           "repetition": 8})
    s = slide(base, [*new, bad, cancelled])
    total = s.differences[0]
    assert total.key == "total_time_ms"
    c = total.comparison
    assert c.base is not None and c.new is not None and c.new.n == 4 and c.new.min == 5
    assert c.change == pytest.approx(5.5 / 11 - 1) and c.test.p is not None and c.test.p < 0.05
    assert c.verdict.value == "better"
    line = total.text()
    assert "0.011 s -> 0.0055 s" in line and "-50.0%" in line and f"p={c.test.p:.2g}" in line
    assert "n=4/4" in line
    assert s.blocks[1].outcomes == "completed 4/6, corrupted 1/6, not-converged 1/6"


def test_slide_text_on_real_runs() -> None:
    (s,) = slides(bound_runs(), [(WAIT_TRUE, WAIT_FALSE)], command=COMMAND)
    text = s.text()
    lines = text.splitlines()
    assert lines[0] == "== compress-bound-testdata: before/after"
    assert any(ln.startswith("outcome") and "corrupted" in ln and "completed" in ln
               for ln in lines)
    for i in range(4):
        assert f"  compress {i} " in text and f"  decompress {i} " in text
    assert "compression busy" in text and "busy ratio, whole run" in text
    assert "QEMU before: 7.2: 7.2.22" in text and "source: vm, AMD EPYC, 2 CPUs, tcg" in text
    assert lines[-1] == f"reproduce: {COMMAND}"
    assert max(len(ln) for ln in lines) <= 100  # fits a mail reply's code block


def test_cannot_complete_before_completed_after() -> None:
    runs = bound_runs()
    cells = by_cell(runs)
    s = slide(cells[CANCELLED_1T], cells[WAIT_FALSE])
    a, b = s.blocks
    assert a.verdict == "cannot complete" and b.verdict == "completed"
    text = s.text()
    assert "cannot complete" in text and "last sample, 8.00 s" in text
    assert "no values on the baseline side" in text
    assert "reproduce" not in text  # no command given


def test_slide_text_drops_control_sequences() -> None:
    base = cell(1, "\x1b[31mred", {"feature": "\x1b]0;title\x07x"})
    text = slide([base], [cell(2, "b", {})], command="run \x1b[2J").text()
    assert "\x1b" not in text and "\x07" not in text


def test_a_side_without_runs_is_refused() -> None:
    with pytest.raises(ValueError):
        slide([], [read(COMPRESS_72)])


def test_info_columns_stay_apart_when_a_value_fills_its_column() -> None:
    def runs(cid: int) -> list[RunRecord]:
        return [cell(cid, "v", {}, rep=r, total_ms=t) for r, t in ((1, 5000), (2, 9000), (3, 7000))]

    text = slide(runs(1), runs(2)).text()
    row = next(line for line in text.splitlines() if line.startswith("repetition shown"))
    shown = "3 (median total time of 3)"
    assert len(shown) >= VALUE_WIDTH  # the case: a value as wide as its column
    assert row == f"{'repetition shown':<{KEY_WIDTH}}{shown} {shown}"  # still apart
