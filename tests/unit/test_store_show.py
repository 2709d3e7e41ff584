"""harness.results.store (result files, summary.csv) and harness.results.show (info migrate rendering)."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import cli
from harness.errors import HarnessError
from harness.results import show, store
from harness.results.record import RunRecord, dump, upgrade
from harness.results.record.qmp import MigrationInfo

FINAL: dict[str, Any] = {
    "status": "completed",
    "total-time": 5123,
    "downtime": 212,
    "setup-time": 7,
    "ram": {
        "transferred": 150 * 1024 * 1024 + 500,
        "mbps": 201.57,
        "remaining": 0,
        "total": 537_460_736,
        "duplicate": 100_000,
        "normal": 36_000,
        "normal-bytes": 147_456_000,
        "dirty-sync-count": 9,
        "page-size": 4096,
        "multifd-bytes": 0,
        "pages-per-second": 6100,
        "dirty-pages-rate": 8192,
    },
}

XBZRLE = {
    "cache-size": 134_217_728,
    "bytes": 10 * 1024 * 1024,
    "pages": 5000,
    "cache-miss": 300,
    "cache-miss-rate": 0.05,
    "encoding-rate": 42.5,
    "overflow": 0,
}

COMPRESSION = {
    "pages": 1234,
    "busy": 2,
    "busy-rate": 0.25,
    "compressed-size": 2048 * 1024,
    "compression-rate": 3.5,
}


def make_record(cell_id: str = "0123456789ab", repetition: int = 1, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schema_version": 1,
        "campaign": "demo",
        "cell": {
            "id": cell_id,
            "matrix": "demo",
            "variant": "default",
            "variant_spec": {"build": None, "qemu_args": [], "migration": {}},
            "build": "10.0",
            "axes": {"feature": "xbzrle", "xbzrle-cache-size": "128MiB"},
            "workload": {"writer": {"working_set_mib": 64, "rate_mib_s": 32.0,
                                    "pattern": "sparse", "threads": None}},
            "guest": {"vcpus": 1, "memory_mib": 512},
            "limits": {"max_time_s": 25.0},
            "integrity": "stamps",
            "migration": {"feature": "xbzrle",
                          "capabilities": {"events": True, "xbzrle": True},
                          "parameters": {"max-bandwidth": 25_000_000,
                                         "xbzrle-cache-size": 134_217_728}},
        },
        "repetition": repetition,
        "started_utc": "2025-01-01T00:00:00.000Z",
        "finished_utc": "2025-01-01T00:00:09.000Z",
        "outcome": "completed",
        "error": None,
        "integrity": "ok",
        "integrity_detail": {"stamps": {"verdict": "ok", "pages": 16384, "bad_pages": 0}},
        "timing_excluded": False,
        "hosts": {"source": {"name": "source", "transport": "local", "accel": "tcg"},
                  "destination": {"name": "destination", "transport": "local", "accel": "tcg"}},
        "qemu": {"build": "10.0", "version": "10.0.2 (Debian 1:10.0.2+ds-1)"},
        "final": {**copy.deepcopy(FINAL), "xbzrle-cache": dict(XBZRLE)},
        "metrics": {
            "total_time_ms": 5123,
            "downtime_ms": 212,
            "setup_time_ms": 7,
            "transferred_bytes": 157_286_900,
            "throughput_mbps": 245.62,
            "qemu_mbps": 201.57,
            "dirty_sync_count": 9,
            "host_pause_ms": 230.5,
            "guest_max_stall_ms": 410.2,
            "guest_max_stall_guest_clock_ms": 12.0,
            "guest_stall_clock": "host-arrival",
            "samples": 103,
        },
    }
    rec.update(over)
    return rec


def model(cell_id: str = "0123456789ab", repetition: int = 1, **over: Any) -> RunRecord:
    """:func:`make_record` as the run record the store takes."""
    return upgrade(make_record(cell_id, repetition, **over))


# --- store -----------------------------------------------------------------------------------


def test_write_run_path_and_content(tmp_path: Path) -> None:
    rec = model()
    path = store.write_run(tmp_path, rec)
    assert path == tmp_path / "0123456789ab" / "1.json"
    assert store.run_path(tmp_path, "0123456789ab", 1) == path
    assert store.exists(tmp_path, "0123456789ab", 1)
    assert not store.exists(tmp_path, "0123456789ab", 2)
    assert path.read_bytes() == dump(rec)
    assert store.load_run(path) == rec
    assert path.stat().st_mode & 0o777 == 0o644  # one mode for what the harness writes


def test_write_run_never_overwrites(tmp_path: Path) -> None:
    path = store.write_run(tmp_path, model())
    before = path.read_bytes()
    with pytest.raises(HarnessError, match="never overwritten"):
        store.write_run(tmp_path, model(outcome="failed", error="boom"))
    assert path.read_bytes() == before
    assert json.loads(path.read_text())["outcome"] == "completed"


def test_write_run_leaves_no_temp_files(tmp_path: Path) -> None:
    store.write_run(tmp_path, model())
    with pytest.raises(HarnessError):
        store.write_run(tmp_path, model())
    store.write_summary(tmp_path)
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == []
    assert sorted(p.name for p in (tmp_path / "0123456789ab").iterdir()) == ["1.json"]


def test_write_summary_columns_and_values(tmp_path: Path) -> None:
    store.write_run(tmp_path, model(repetition=1))
    store.write_run(tmp_path, model(
        repetition=2, outcome="not-converged", integrity="unchecked",
        error="did not converge\nwithin max_time_s=25",
        metrics={"total_time_ms": None, "downtime_ms": None, "transferred_bytes": 999},
    ))
    path = store.write_summary(tmp_path)
    assert path == tmp_path / "summary.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames
        rows = list(reader)
    assert cols is not None
    for col in ("campaign", "cell_id", "variant", "qemu_version", "features", "workload",
                "repetition", "outcome", "integrity", "total_time_ms", "downtime_ms",
                "host_pause_ms", "setup_time_ms", "transferred_bytes", "throughput_mbps",
                "dirty_sync_count", "guest_max_stall_ms"):
        assert col in cols
    assert cols == store.SUMMARY_COLUMNS
    assert len(rows) == 2
    r1, r2 = rows
    assert r1["campaign"] == "demo"
    assert r1["cell_id"] == "0123456789ab"
    assert r1["variant"] == "default"
    assert r1["qemu_version"] == "10.0.2 (Debian 1:10.0.2+ds-1)"
    assert r1["features"] == "xbzrle"
    assert r1["workload"] == "writer 64 MiB @ 32 MiB/s sparse"
    assert r1["repetition"] == "1"
    assert r1["outcome"] == "completed"
    assert r1["integrity"] == "ok"
    assert r1["total_time_ms"] == "5123"
    assert r1["downtime_ms"] == "212"
    assert r1["host_pause_ms"] == "230.5"
    assert r1["setup_time_ms"] == "7"
    assert r1["transferred_bytes"] == "157286900"
    assert r1["throughput_mbps"] == "245.62"
    assert r1["dirty_sync_count"] == "9"
    assert r1["guest_max_stall_ms"] == "410.2"
    assert r1["error"] == ""
    assert r2["outcome"] == "not-converged"
    assert r2["total_time_ms"] == "" and r2["downtime_ms"] == ""
    assert r2["transferred_bytes"] == "999"
    assert r2["error"] == "did not converge within max_time_s=25"


def test_summary_rebuild_replaces(tmp_path: Path) -> None:
    store.write_run(tmp_path, model(repetition=1))
    store.write_summary(tmp_path)
    store.write_run(tmp_path, model(cell_id="ffffffffffff", repetition=1))
    store.write_summary(tmp_path)
    with open(tmp_path / "summary.csv", newline="") as f:
        ids = [r["cell_id"] for r in csv.DictReader(f)]
    assert ids == ["0123456789ab", "ffffffffffff"]


def test_summary_row_idle_workload() -> None:
    rec = make_record()
    rec["cell"]["workload"] = {"writer": None}
    rec["metrics"] = {}
    rec["qemu"] = {"build": "10.0"}  # never probed: no version
    row = store.summary_row(upgrade(rec))
    assert row["workload"] == "idle"
    assert row["qemu_version"] is None
    assert row["total_time_ms"] is None


def test_summary_row_max_rate() -> None:
    rec = make_record()
    rec["cell"]["workload"]["writer"]["rate_mib_s"] = 0.0
    assert store.summary_row(upgrade(rec))["workload"] == "writer 64 MiB @ max sparse"


def test_iter_runs_order_and_skips_hidden(tmp_path: Path) -> None:
    store.write_run(tmp_path, model(cell_id="bbbbbbbbbbbb", repetition=1))
    store.write_run(tmp_path, model(cell_id="aaaaaaaaaaaa", repetition=2))
    store.write_run(tmp_path, model(cell_id="aaaaaaaaaaaa", repetition=1))
    (tmp_path / "aaaaaaaaaaaa" / ".tmp-junk.json").write_text("{not json")
    got = [(rec.cell.id, rec.repetition) for _, rec in store.iter_runs(tmp_path)]
    assert got == [("aaaaaaaaaaaa", 1), ("aaaaaaaaaaaa", 2), ("bbbbbbbbbbbb", 1)]
    paths = [p for p, _ in store.iter_runs(tmp_path)]
    assert paths[0] == tmp_path / "aaaaaaaaaaaa" / "1.json"


def test_iter_runs_empty(tmp_path: Path) -> None:
    assert list(store.iter_runs(tmp_path)) == []


@pytest.mark.parametrize("version", [None, 0, 99, "1"])
def test_upgrade_rejects_unknown_schema(version: object) -> None:
    rec = make_record()
    if version is None:
        del rec["schema_version"]
    else:
        rec["schema_version"] = version
    with pytest.raises(HarnessError, match="schema_version: "):
        upgrade(rec)


def test_upgrade_accepts_v1() -> None:
    rec = make_record()
    assert upgrade(rec).schema_version == 2


def _future(root: Path) -> Path:
    """A run file of schema version 99 (a newer migbench's)."""
    path = store.write_run(root, model())
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": 99}))
    return path


def test_iter_runs_rejects_future_schema(tmp_path: Path) -> None:
    _future(tmp_path)
    with pytest.raises(HarnessError, match="99"):
        list(store.iter_runs(tmp_path))


def test_load_run_bad_json(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{oops")
    with pytest.raises(HarnessError, match="x.json: line 1: not valid JSON"):
        store.load_run(p)
    with pytest.raises(HarnessError, match="cannot read result"):
        store.load_run(tmp_path / "missing.json")


def _truncated_campaign(root: Path) -> Path:
    """A campaign with one good run and one run file cut short after its third line."""
    store.write_run(root, model(repetition=1))
    bad = store.write_run(root, model(repetition=2))
    bad.write_text("\n".join(bad.read_text().splitlines()[:3]))
    return bad


def test_iter_runs_truncated_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = _truncated_campaign(tmp_path)
    with pytest.raises(HarnessError) as info:
        list(store.iter_runs(tmp_path))
    msg = str(info.value)
    assert msg == (f"{bad}: line 3: not valid JSON (Expecting property name enclosed in double "
                   "quotes); delete it to rerun that repetition")
    with pytest.raises(HarnessError, match=re.escape(str(bad))):
        store.load(tmp_path)  # a frame silently missing a run is worse than no frame


def test_iter_runs_future_schema_names_the_file(tmp_path: Path) -> None:
    path = _future(tmp_path)
    with pytest.raises(HarnessError, match=re.escape(
            f"{path}: schema_version: 99 is newer than this migbench reads (2); written by a "
            "newer migbench: upgrade")):
        list(store.iter_runs(tmp_path))


@pytest.mark.parametrize("text", ["", "[1, 2]", "\xff\xfe"])
def test_load_run_empty_or_not_a_record(tmp_path: Path, text: str) -> None:
    p = tmp_path / "1.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(HarnessError, match=r"1\.json: .*(not|expected) .*; delete it"):
        store.load_run(p)


def test_cli_show_corrupt_run_file_is_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = _truncated_campaign(tmp_path)
    assert cli.main(["show", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"migbench: error: {bad}: line 3: not valid JSON (Expecting property name enclosed in "
        "double quotes); delete it to rerun that repetition"]
    assert "Traceback" not in captured.err
    assert cli.main(["show", str(bad)]) == 1
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_rows_cpu_columns_are_named_by_side_and_class(tmp_path: Path) -> None:
    cpu = {"source": {"classes": {"main": 7.3, "migration": 41.5}},
           "destination": {"classes": {"main": 8.05, "vcpu": 0.27}}}
    store.write_run(tmp_path, model(cpu={"hz": 10.0, "window": [0.0, 1.0],
                                         **{k: {**v, "window_s": 1.0, "samples": 10}
                                            for k, v in cpu.items()}}))
    (row,) = store.rows(rec for _, rec in store.iter_runs(tmp_path))
    cpu_cols = {k: v for k, v in row.items() if k.startswith("cpu_")}
    assert cpu_cols == {"cpu_src_main_pct": 7.3, "cpu_src_migration_pct": 41.5,
                        "cpu_dst_main_pct": 8.05, "cpu_dst_vcpu_pct": 0.27}


# --- load / export ---------------------------------------------------------------------------

SEED = Path(__file__).parent.parent / "data" / "campaign-seed"
"""Three real runs, trimmed (timelines, consoles, argv): a postcopy run with fio (50d2149269e0/1),
one with ping (38edd36b762e/1), both QEMU 10.0, and a QEMU 7.2 run that failed (7f6dfef9435a/2)."""


def skipped_record() -> dict[str, Any]:
    """Shaped like harness.run.runner.skipped_record: no final answer, no metrics, no CPU."""
    rec = make_record(cell_id="cccccccccccc", outcome="skipped", integrity="unchecked",
                      timing_excluded=True, error="QEMU 10.0.2 has no migration capability "
                      "'compress'", metrics={}, timeline=[], events={}, console={})
    del rec["final"]
    rec["cell"]["axes"] = {"feature": "compress"}
    rec["cell"]["migration"]["feature"] = "compress"
    return rec


def seed_campaign(root: Path) -> Path:
    shutil.copytree(SEED, root)
    store.write_run(root, upgrade(skipped_record()))
    return root


def by_id(df: Any, cell_id: str) -> Any:
    (row,) = [r for _, r in df.iterrows() if r["cell_id"] == cell_id]
    return row


def test_load_one_typed_row_per_run(tmp_path: Path) -> None:
    df = store.load(seed_campaign(tmp_path / "seed"))
    assert list(zip(df["cell_id"], df["repetition"])) == [
        ("38edd36b762e", 1), ("50d2149269e0", 1), ("7f6dfef9435a", 2), ("cccccccccccc", 1)]
    assert list(df.columns[:len(store.FRAME_COLUMNS)]) == store.FRAME_COLUMNS
    assert list(df.columns[len(store.FRAME_COLUMNS):]) == ["axis_workload", "axis_feature"]
    for col in ("total_time_ms", "downtime_ms", "host_pause_ms", "transferred_bytes",
                "throughput_mbps", "fio_iops_during", "ping_lost", "qemu_mbps", "samples",
                "cpu_src_vcpu_pct", "cpu_dst_main_pct", "cpu_src_postcopy_pct"):
        assert df[col].dtype == "float64", col
    assert df["repetition"].dtype == "int64"
    assert df["timing_excluded"].dtype == "bool"
    for col in ("outcome", "integrity", "variant", "workload", "features", "campaign"):
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col
    for col in ("cell_id", "qemu_version", "error", "guest_stall_clock", "axis_workload",
                "axis_feature"):
        assert pd.api.types.is_string_dtype(df[col].dtype), col

    fio = by_id(df, "50d2149269e0")
    assert (fio["outcome"], fio["integrity"], fio["variant"]) == ("completed", "ok", "default")
    assert fio["total_time_ms"] == 5190.0 and fio["downtime_ms"] == 3.0
    assert fio["fio_iops_during"] == 198.3 and fio["fio_lat_p99_us_during"] == 10944.5
    assert fio["cpu_src_vcpu_pct"] == 37.76 and fio["cpu_src_migration_pct"] == 1.16
    assert fio["cpu_dst_main_pct"] == 7.71
    assert math.isnan(fio["cpu_src_compress_pct"])  # a class no thread of this run had
    assert (fio["axis_workload"], fio["axis_feature"]) == ("writer+fio", "postcopy")
    assert by_id(df, "38edd36b762e")["ping_max_gap_ms"] == 126.3

    failed = by_id(df, "7f6dfef9435a")
    assert (failed["outcome"], failed["variant"]) == ("failed", "qemu-7.2")
    assert math.isnan(failed["total_time_ms"])
    assert failed["transferred_bytes"] == 285_374_830
    assert failed["error"].startswith("Unable to write to socket: Broken pipe")
    assert failed["cpu_src_vcpu_pct"] == 12.37
    assert pd.isna(failed["axis_workload"]) and failed["axis_feature"] == "precopy"

    skipped = by_id(df, "cccccccccccc")
    assert skipped["outcome"] == "skipped" and bool(skipped["timing_excluded"])
    assert skipped["error"] == "QEMU 10.0.2 has no migration capability 'compress'"
    assert all(math.isnan(skipped[c]) for c in store.FRAME_COLUMNS if c.startswith("cpu_"))
    assert math.isnan(skipped["total_time_ms"]) and math.isnan(skipped["samples"])


def _csv_cell(v: Any) -> str | None:
    return None if pd.isna(v) or v == "" else str(v)  # csv cannot tell "" from missing


def test_export_parquet_and_csv_read_back(tmp_path: Path) -> None:
    root = seed_campaign(tmp_path / "seed")
    df = store.load(root)
    path = store.export(root, "parquet")
    assert path == root / "runs.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)

    path = store.export(root, "csv", tmp_path / "out.csv")
    assert path == tmp_path / "out.csv"
    back = pd.read_csv(path, dtype={"cell_id": str})  # a hex id like 12e4... parses as a float
    assert list(back.columns) == list(df.columns)
    assert len(back) == len(df)
    for col in df.columns:
        if df[col].dtype == "float64":
            pd.testing.assert_series_equal(back[col].astype("float64"), df[col], obj=col)
        else:
            assert [_csv_cell(v) for v in back[col]] == [_csv_cell(v) for v in df[col]], col


def test_load_and_export_mixed_type_axis(tmp_path: Path) -> None:
    for cell_id, bw, n in (("aaaaaaaaaaaa", "100mbit", 1), ("bbbbbbbbbbbb", 25_000_000, 2)):
        rec = make_record(cell_id=cell_id)
        rec["cell"]["axes"] = {"max-bandwidth": bw, "multifd-channels": n, "zero-page": True}
        store.write_run(tmp_path, upgrade(rec))
    rec = make_record(cell_id="dddddddddddd")
    rec["cell"]["axes"] = {"max-bandwidth": 1.5e6, "zero-page": False}
    store.write_run(tmp_path, upgrade(rec))
    df = store.load(tmp_path)
    assert pd.api.types.is_string_dtype(df["axis_max-bandwidth"].dtype)
    assert list(df["axis_max-bandwidth"]) == ["100mbit", "25000000", "1500000.0"]
    assert df["axis_multifd-channels"].dtype == "float64"  # numeric, NaN where absent
    assert list(df["axis_multifd-channels"][:2]) == [1.0, 2.0]
    assert df["axis_zero-page"].dtype == "boolean"
    path = store.export(tmp_path, "parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)


def test_load_numeric_axis_stays_int(tmp_path: Path) -> None:
    for cell_id, n in (("aaaaaaaaaaaa", 2), ("bbbbbbbbbbbb", 4)):
        rec = make_record(cell_id=cell_id)
        rec["cell"]["axes"] = {"multifd-channels": n}
        store.write_run(tmp_path, upgrade(rec))
    df = store.load(tmp_path)
    assert df["axis_multifd-channels"].dtype == "int64"
    assert list(df["axis_multifd-channels"]) == [2, 4]


def test_load_empty_campaign_has_the_typed_columns(tmp_path: Path) -> None:
    empty = store.load(tmp_path)
    full = store.load(seed_campaign(tmp_path / "seed"))
    assert len(empty) == 0
    assert list(empty.columns) == store.FRAME_COLUMNS
    assert "cpu_src_migration_pct" in empty.columns and "cpu_dst_multifd_recv_pct" in empty.columns
    for col in store.FRAME_COLUMNS:
        if isinstance(full[col].dtype, pd.CategoricalDtype):  # the categories differ, not the kind
            assert isinstance(empty[col].dtype, pd.CategoricalDtype), col
        else:
            assert empty[col].dtype == full[col].dtype, col
    for fmt in ("parquet", "csv"):  # the frame is for Python; an empty export is refused
        with pytest.raises(HarnessError, match="no run results here"):
            store.export(tmp_path, fmt)


def test_load_and_export_errors(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no such campaign folder"):
        store.load(tmp_path / "nope")
    with pytest.raises(HarnessError, match="unknown export format 'xlsx'"):
        store.export(tmp_path, "xlsx")
    with pytest.raises(HarnessError, match="no run results here"):
        store.export(tmp_path, "csv")  # an empty folder: refused, no empty table written
    assert list(tmp_path.iterdir()) == []
    store.write_run(tmp_path, model())
    with pytest.raises(HarnessError, match="cannot write the export"):
        store.export(tmp_path, "csv", tmp_path / "no-such-dir" / "x.csv")


def test_cli_export_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = seed_campaign(tmp_path / "seed")
    assert cli.main(["export", str(root), "--format", "parquet"]) == 0
    path = root / "runs.parquet"
    assert f"wrote {path}" in capsys.readouterr().out
    back = pd.read_parquet(path)
    assert len(back) == 4 and back["cpu_src_vcpu_pct"].notna().sum() == 3
    out = tmp_path / "runs.csv"
    assert cli.main(["export", str(root), "--format", "csv", "-o", str(out)]) == 0
    assert len(pd.read_csv(out)) == 4


# --- show ------------------------------------------------------------------------------------


def info(final: dict[str, Any]) -> MigrationInfo:
    return MigrationInfo.model_validate(final)


def rows_of(final: dict[str, Any]) -> dict[str, str]:
    return dict(show.info_migrate(info(final)))


def test_info_migrate_core_lines() -> None:
    rows = show.info_migrate(info(FINAL))
    assert rows[0] == ("Migration status", "completed")
    d = dict(rows)
    assert d["total time"] == "5123 ms"
    assert d["downtime"] == "212 ms"
    assert d["setup"] == "7 ms"
    assert d["transferred ram"] == "153600 kbytes"  # (150 MiB + 500 B) // 1024
    assert d["throughput"] == "201.57 mbps"
    assert d["total ram"] == "524864 kbytes"
    assert d["dirty sync count"] == "9"
    assert d["page size"] == "4 kbytes"
    assert d["duplicate"] == "100000 pages"


def test_info_migrate_missing_values_are_dashes() -> None:
    d = rows_of({"status": "failed"})
    assert d["Migration status"] == "failed"
    assert d["total time"] == "-"
    assert d["transferred ram"] == "-"
    assert rows_of({})["Migration status"] == "-"


def test_info_migrate_float_formatting() -> None:
    d = rows_of({"total-time": 100, "ram": {"mbps": 33.333333}})  # QEMU's ms are whole
    assert d["total time"] == "100 ms"
    assert d["throughput"] == "33.33 mbps"
    assert rows_of({"ram": {"mbps": 100.0}})["throughput"] == "100 mbps"


def test_info_migrate_expected_downtime_position() -> None:
    rows = show.info_migrate(info({**FINAL, "status": "active", "expected-downtime": 300}))
    assert rows[3] == ("expected downtime", "300 ms")
    assert "expected downtime" not in rows_of(FINAL)


def test_info_migrate_xbzrle_block_only_when_present() -> None:
    plain = rows_of(FINAL)
    assert not any(k.startswith("xbzrle") or k == "cache size" for k in plain)
    d = rows_of({**FINAL, "xbzrle-cache": XBZRLE})
    assert d["cache size"] == "134217728 bytes"
    assert d["xbzrle transferred"] == "10240 kbytes"
    assert d["xbzrle pages"] == "5000 pages"
    assert d["xbzrle cache miss"] == "300 pages"
    assert d["xbzrle cache miss rate"] == "0.05"
    assert d["xbzrle encoding rate"] == "42.5"
    assert d["xbzrle overflow"] == "0"
    assert not any(k.startswith("compress") for k in d)


def test_info_migrate_compression_block_only_when_present() -> None:
    assert not any(k.startswith("compress") for k in rows_of(FINAL))
    d = rows_of({**FINAL, "compression": COMPRESSION})
    assert d["compression pages"] == "1234 pages"
    assert d["compression busy"] == "2"
    assert d["compression busy rate"] == "0.25"
    assert d["compressed size"] == "2048 kbytes"
    assert d["compression rate"] == "3.5"
    assert "xbzrle pages" not in d


def test_run_block() -> None:
    text = show.run_block(model())
    lines = text.splitlines()
    assert lines[0] == ("== demo / 0123456789ab rep 1: default "
                        "(feature=xbzrle, xbzrle-cache-size=128MiB)")
    assert lines[1] == ("QEMU 10.0.2 (Debian 1:10.0.2+ds-1), accel tcg, outcome completed, "
                        "integrity ok")

    def value(label: str) -> str:
        (line,) = [ln for ln in lines if ln.strip().startswith(label + ":")]
        return line.split(":", 1)[1].strip()

    assert value("Migration status") == "completed"
    assert value("total time") == "5123 ms"
    assert value("downtime") == "212 ms"
    assert value("transferred ram") == "153600 kbytes"
    assert value("xbzrle pages") == "5000 pages"
    assert value("host-observed pause") == "230.5 ms"
    assert value("guest max stall (host clock)") == "410.2 ms"
    assert value("query-migrate samples") == "103"
    assert "compression pages" not in text
    assert "error:" not in text
    # values are aligned in one column
    starts = {re.match(r"^  [^:]+:\s+", ln).end() for ln in lines[2:]}  # type: ignore[union-attr]
    assert len(starts) == 1


def test_run_block_without_xbzrle_and_with_error() -> None:
    rec = make_record(outcome="failed", integrity="unchecked", error="QEMU said no",
                      final=copy.deepcopy(FINAL), timing_excluded=True)
    rec["cell"]["integrity"] = "ram"
    text = show.run_block(upgrade(rec))
    assert "outcome failed, integrity unchecked (RAM compared; timing excluded)" in text
    assert "\nerror: QEMU said no\n" in text
    assert "xbzrle" not in text.split("\n", 3)[3]  # not in the info migrate rows
    assert "cache size" not in text


def test_run_block_skipped_prints_the_reason_only() -> None:
    rec = model(outcome="skipped", integrity="unchecked", timing_excluded=True,
                error="QEMU 10.0.2 has no migration capability 'compress'")
    text = show.run_block(rec)
    assert "skipped: QEMU 10.0.2 has no migration capability 'compress'" in text
    assert "Migration status" not in text and "RAM compared" not in text


def test_run_block_minimal_record() -> None:
    """A record with only what every record has: no version, accelerator, answer or figure."""
    rec = make_record(campaign="c", repetition=3, outcome="failed", integrity="unchecked",
                      integrity_detail={}, qemu={"build": "10.0"}, metrics={},
                      hosts={side: {"name": side, "transport": "local"}
                             for side in ("source", "destination")})
    del rec["final"]
    rec["cell"].update(variant="v", axes={})
    text = show.run_block(upgrade(rec))
    assert text.splitlines()[0] == "== c / 0123456789ab rep 3: v (base)"
    assert "QEMU ?, accel ?" in text


def test_write_summary_from_kept_rows_matches_a_rebuild(tmp_path: Path) -> None:
    recs = [make_record(cell_id=c, repetition=r) for c, r in
            (("bbbbbbbbbbbb", 2), ("aaaaaaaaaaaa", 1), ("bbbbbbbbbbbb", 10), ("bbbbbbbbbbbb", 1))]
    kept = {}
    for rec in recs:
        store.write_run(tmp_path, upgrade(rec))
        kept[(rec["cell"]["id"], rec["repetition"])] = store.summary_row(upgrade(rec))
    store.write_summary(tmp_path, kept)
    from_rows = (tmp_path / "summary.csv").read_text()
    store.write_summary(tmp_path)
    assert from_rows == (tmp_path / "summary.csv").read_text()
    order = [line.split(",")[1:7:5] for line in from_rows.splitlines()[1:]]
    assert order == [["aaaaaaaaaaaa", "1"], ["bbbbbbbbbbbb", "1"], ["bbbbbbbbbbbb", "2"],
                     ["bbbbbbbbbbbb", "10"]]


def guest_impact_record() -> RunRecord:
    """The real fio run of tests/data/campaign-seed with the ping block of its ping run added,
    and two workload deaths (the shape harness.run.migration._workload_deaths writes)."""
    rec = json.loads((SEED / "50d2149269e0" / "1.json").read_text())
    ping = json.loads((SEED / "38edd36b762e" / "1.json").read_text())["guest_impact"]["ping"]
    rec["guest_impact"]["ping"] = ping
    rec["workload_errors"] = ["source: what=fio code=1", "destination: what=ping signal=9"]
    return upgrade(rec)


def block_values(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines()[2:]:
        label, value = line.strip().split(":", 1)
        out.setdefault(label, []).append(value.strip())
    return out


def test_run_block_guest_impact() -> None:
    text = show.run_block(guest_impact_record())
    d = block_values(text)
    assert d["ping before"] == ["sent 102, lost 0, max gap 11.5 ms, rtt p50/p99/max "
                                "1.15/3.16/10.99 ms"]
    assert d["ping during"] == ["sent 492, lost 2, max gap 126.3 ms, rtt p50/p99/max "
                                "1.01/3.75/4.43 ms"]
    assert d["ping after"] == ["sent 313, lost 0, max gap 14.6 ms, rtt p50/p99/max "
                               "1.3/81.89/101.75 ms"]
    assert d["fio before (host clock)"] == ["iops 200.4, lat p99 max 1695.7 us"]
    assert d["fio during (host clock)"] == ["iops 198.3, lat p99 max 10944.5 us"]
    assert d["fio after (host clock)"] == ["iops 205.9, lat p99 max 1515.5 us"]
    assert d["guest max stall (host clock)"] == ["36.1 ms"]
    assert d["guest max stall (guest clock)"] == ["75.9 ms"]
    assert d["guest-visible downtime"] == ["36.1 ms"]
    assert d["workload died"] == ["source: what=fio code=1", "destination: what=ping signal=9"]
    assert d["cpu vcpu (src / dst)"] == ["37.8% / 0.2%"]
    labels = [ln.strip().split(":", 1)[0] for ln in text.splitlines()[2:]]
    assert labels.index("ping before") < labels.index("ping during") < labels.index("ping after")
    assert labels.index("ping after") < labels.index("fio before (host clock)")


def test_run_block_fio_during_is_on_the_host_clock() -> None:
    """Under TCG the guest's clock stops with the VM: its IOPS hide the pause, the host's show
    it, and summary.csv's fio_iops_during is the host figure too."""
    raw = json.loads(dump(guest_impact_record()))
    raw["guest_impact"]["fio"]["during"].update(iops_mean=200.0, iops_host_mean=120.5)
    raw["guest_impact"]["fio"]["before"] = {"samples": 0}
    d = block_values(show.run_block(upgrade(raw)))
    assert d["fio during (host clock)"] == ["iops 120.5, lat p99 max 10944.5 us"]
    assert d["fio before (host clock)"] == ["iops -, lat p99 max -"]
    assert not any(k.startswith("fio") and "host clock" not in k for k in d)


def test_run_block_without_guest_impact_has_no_workload_lines() -> None:
    d = block_values(show.run_block(model()))
    assert not any(k.startswith(("ping", "fio", "workload died", "guest-visible")) for k in d)
