"""harness.results.record: the v2 run record, the upgrade of real v1 files, canonical bytes, and one-line
errors for every damaged or hand-edited file (including Hypothesis-mutated records)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.errors import HarnessError, StoreError
from harness.results import store
from harness.results.record import RecordError, RunRecord, dump, loads, read, upgrade, validation_line
from harness.results.record.errors import BUG, DELETE, NEWER, UNKNOWN
from harness.results.record.model import Metrics, PreMigration

DATA = Path(__file__).resolve().parent.parent / "data"
V1_FILES = sorted([*DATA.glob("v1/*/*.json"), *DATA.glob("campaign-seed/*/*.json"),
                   DATA / "run-xbzrle.json"])
SKIPPED = DATA / "v1/c085dd64c021/1.json"  # the runner's record: 10.0 has no legacy compress
CORRUPTED = DATA / "v1/ca53824e9fde/1.json"  # 7.2, integrity: ram, the guest crashed
NOT_CONVERGED = DATA / "v1/ebde118b7008/1.json"
FULL = DATA / "v1/615439fa7f3c/1.json"  # multifd with writer, ping and fio
SOURCE = "results/demo/0123456789ab/1.json"
HOLE = "\x00hostile\x00"  # marks where a test writes raw JSON text


def raw(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def v2(path: Path) -> dict[str, Any]:
    """The file upgraded and dumped: a v2 record as a dict."""
    data = json.loads(dump(read(path)))
    assert isinstance(data, dict)
    return data


def refused(data: bytes | str) -> str:
    """The one-line error for ``data`` read as the file SOURCE."""
    with pytest.raises(RecordError) as info:
        loads(data, SOURCE)
    line = str(info.value)
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(SOURCE + ": ")
    assert isinstance(info.value, HarnessError)  # the CLI's one place prints it and exits 1
    return line


def text(d: dict[str, Any]) -> str:
    return json.dumps(d)


# ---------------------------------------------------------------------------------------------
# v1 -> v2 on every real file, byte-stable round trip


def test_corpus_is_there() -> None:
    assert len(V1_FILES) >= 17
    outcomes = {raw(p)["outcome"] for p in V1_FILES}
    assert outcomes == {"completed", "not-converged", "failed", "skipped"}
    assert {raw(p)["integrity"] for p in V1_FILES} == {"ok", "corrupted", "unchecked"}
    assert all(raw(p)["schema_version"] == 1 for p in V1_FILES)


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_v1_file_upgrades_and_round_trips_byte_stable(path: Path) -> None:
    rec = read(path)
    assert rec.schema_version == 2
    out = dump(rec)
    again = loads(out)
    assert again == rec
    assert dump(again) == out
    assert out.endswith(b"\n") and out.isascii()
    assert b"NaN" not in out and b"Infinity" not in out


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_upgrade_keeps_every_figure(path: Path) -> None:
    old, rec = raw(path), read(path)
    assert rec.cell.id == old["cell"]["id"] and rec.repetition == old["repetition"]
    assert rec.outcome == old["outcome"] and rec.error == old["error"]
    assert rec.integrity.verdict == old["integrity"]
    for name, value in old["metrics"].items():
        if name == "guest_visible_downtime_ms" and old["outcome"] != "completed":
            # version 1's one wrong figure: no switchover, so no guest-visible downtime
            assert rec.metrics.guest_visible_downtime_ms is None
            continue
        assert getattr(rec.metrics, name) == value, name
    assert len(rec.timeline) == len(old.get("timeline", []))
    for sample, before in zip(rec.timeline, old.get("timeline", []), strict=True):
        assert sample.t == before["t"] and sample.status == before.get("status")
        if "ram" in before:
            assert sample.ram is not None
            assert sample.ram.transferred == before["ram"]["transferred"]
    for side in ("source", "destination"):
        assert len(getattr(rec.events, side)) == len(old["events"].get(side, []))
        assert len(getattr(rec.console, side)) == len(old["console"].get(side, []))
        classes = ((old.get("cpu") or {}).get(side) or {}).get("classes")
        cpu_side = getattr(rec.cpu, side) if rec.cpu is not None else None
        assert (cpu_side.classes if cpu_side is not None else None) == classes
    assert len(rec.guest.writer) == len(old.get("guest", {}).get("writer", []))
    for check, detail in old["integrity_detail"].items():
        assert getattr(rec.integrity, check).model_dump(mode="json", exclude_unset=True) == detail
    mig = old.get("migration")
    if mig and mig["applied"]:
        assert rec.applied is not None and rec.applied.uri == mig.get("uri")
        assert rec.applied.source.parameters == mig["applied"]["source"]["parameters"]
        assert mig["requested"] == old["cell"]["migration"]  # why v2 drops it
    assert rec.cell.migration.model_dump(mode="json", exclude_unset=True) == old["cell"]["migration"]


# Version 2 as today's code writes it: a warm start under a repetitions rule, a storage: copy
# run with its disk check, redis under load with its dataset read back (tests/data/v2/README.md)
V2_FILES = sorted(DATA.glob("v2/*/*/*.json"))


def _lost(stored: Any, again: Any, at: str = "") -> list[str]:
    """Where ``again`` (the record read and written again) lost or changed a value of
    ``stored`` (the file); a key only ``again`` has (a field added since) must be null."""
    if isinstance(stored, dict) and isinstance(again, dict):
        out = [f"{at}.{k}: added as {again[k]!r}" for k in again.keys() - stored.keys()
               if again[k] is not None]
        for k, v in stored.items():
            out += _lost(v, again[k], f"{at}.{k}") if k in again else [f"{at}.{k}: lost"]
        return out
    if isinstance(stored, list) and isinstance(again, list) and len(stored) == len(again):
        return [x for i, (a, b) in enumerate(zip(stored, again)) for x in _lost(a, b, f"{at}[{i}]")]
    return [] if stored == again and type(stored) is type(again) else [f"{at}: {stored!r} -> {again!r}"]


def test_v2_corpus_is_there() -> None:
    assert len(V2_FILES) == 4


@pytest.mark.parametrize("path", V2_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_todays_v2_file_reads_back_with_every_value(path: Path) -> None:
    rec = read(path)
    assert _lost(raw(path), json.loads(dump(rec))) == []
    assert dump(loads(dump(rec))) == dump(rec)


def test_todays_v2_files_keep_the_parts_of_issues_16_to_18() -> None:
    warm = read(DATA / "v2/v2-warm/0e4edbd0611d/2.json")
    assert warm.start is not None and warm.start.kind == "warm" and warm.start.restore_s
    assert warm.repetitions is not None and warm.repetitions.ci_ms == 5.0
    assert warm.phases is not None and warm.phases.wall_s > 0
    best = warm.pre.best() if warm.pre is not None else None
    assert best is not None and best.dirty_rate_mib_s is not None
    copy_ = read(DATA / "v2/v2-storage/c71f8c0c87f9/1.json")
    assert copy_.storage is not None and copy_.storage.sync_s is not None
    assert copy_.integrity.disk is not None and copy_.integrity.disk.verdict == "ok"
    assert copy_.start is not None and copy_.start.kind == "cold" and copy_.start.reason
    redis = read(DATA / "v2/v2-redis/b120da055039/1.json")
    svc = redis.guest_impact.service
    assert svc is not None and svc.kind == "redis" and svc.during.p99_ms is not None
    assert redis.integrity.dataset is not None and redis.integrity.dataset.keys == 500
    assert len(redis.guest.service) > 0 and redis.metrics.service_p99_ms is not None


def test_guest_visible_downtime_only_where_the_guest_switched_over() -> None:
    """Version 1 reported the writer's longest stall as the guest-visible downtime of runs that
    never switched over (the guest kept running on the source); the upgrade drops it."""
    nulled = [p for p in V1_FILES if raw(p)["outcome"] != "completed"
              and raw(p)["metrics"].get("guest_visible_downtime_ms") is not None]
    assert {raw(p)["outcome"] for p in nulled} == {"not-converged", "failed"}  # real cases
    for p in nulled:
        assert read(p).metrics.guest_visible_downtime_ms is None
        assert read(p).metrics.guest_max_stall_ms == raw(p)["metrics"]["guest_max_stall_ms"]
    kept = [p for p in V1_FILES if raw(p)["outcome"] == "completed"
            and raw(p)["metrics"].get("guest_visible_downtime_ms") is not None]
    assert kept and all(read(p).metrics.guest_visible_downtime_ms
                        == raw(p)["metrics"]["guest_visible_downtime_ms"] for p in kept)


def test_a_run_that_failed_before_qemu_answered_upgrades() -> None:
    d = raw(NOT_CONVERGED)
    del d["qemu"]
    rec = upgrade(d)
    assert rec.qemu.build == d["cell"]["build"] and rec.qemu.version is None


def test_runner_skipped_record_upgrades() -> None:
    rec = read(SKIPPED)
    assert rec.outcome == "skipped" and "compress" in (rec.error or "")
    assert rec.image is None and rec.cpu is None and rec.final is None and rec.applied is None
    assert rec.events.source == () and rec.vms.destination is None
    assert rec.metrics == Metrics()  # v1's `metrics: {}`: every figure null
    assert rec.timing_excluded is True
    assert rec.qemu.version is not None and rec.qemu.destination_binary is None


def test_corrupted_record_keeps_its_counts() -> None:
    rec = read(CORRUPTED)
    ram = rec.integrity.ram
    assert rec.integrity.verdict == "corrupted" and ram is not None
    assert (ram.differing_pages, ram.pages) == (12, 65536)
    assert ram.first_differing[:2] == (62976, 62981)
    assert rec.integrity.guest_crash is not None and rec.integrity.guest_silent is not None
    assert rec.integrity.stamps is not None and rec.integrity.stamps.verdict == "unchecked"
    assert rec.destination_status_before_cont == "paused"


def test_qmp_replies_typed_with_unknown_fields_kept() -> None:
    rec = read(FULL)
    final = rec.final
    assert final is not None and final.status == "completed" and final.ram is not None
    assert final.ram.multifd_bytes is not None and final.ram.multifd_bytes > 0
    last = rec.timeline[-1]
    assert last.ram is not None and last.ram.model_extra is not None
    # 10.0 reports ram.dirty-sync-missed-zero-copy, which the model does not name: kept as sent
    assert "dirty-sync-missed-zero-copy" in last.ram.model_extra
    out = v2(FULL)
    assert "dirty-sync-missed-zero-copy" in out["final"]["ram"]
    assert "compression" not in out["final"]  # what QEMU did not send stays absent
    assert out["guest_impact"]["ping"]["during"]["sent"] > 0
    assert len(out["guest"]["fio"]) == len(rec.guest.fio) > 0


HARNESS = Path(__file__).resolve().parents[2] / "harness"


def test_every_query_migrate_answer_is_parsed_once_where_it_arrives() -> None:
    """Item 4 of issue 13: no stage indexes a raw ``query-migrate`` dict (warm start's poll of
    its save and restore did, ``info.get("status")``)."""
    raw_calls = [f"{f.relative_to(HARNESS)}:{n}" for f in sorted(HARNESS.rglob("*.py"))
                 for n, line in enumerate(f.read_text().splitlines(), 1)
                 if 'execute("query-migrate")' in line and "from_qmp(MigrationInfo" not in line]
    assert raw_calls == []


class _Qmp:
    def __init__(self, reply: object) -> None:
        self.reply = reply

    def execute(self, command: str) -> object:
        assert command == "query-migrate"
        return self.reply


@pytest.mark.parametrize(("reply", "line"), [
    ({"status": "failed", "error-desc": "No space left on device", "ram": {}},
     "saving failed: No space left on device"),
    ({"status": "cancelled"}, "saving cancelled: no reason given"),
    ({"status": 5}, "QEMU's answer to query-migrate is not what migbench reads: status: "
                    "expected a string, got 5"),
], ids=["failed", "cancelled", "malformed"])
def test_warm_starts_poll_of_a_save_reads_the_typed_answer(reply: object, line: str) -> None:
    from harness.run.cancel import Stop
    from harness.run.warm import _wait_migration

    vm: Any = type("FakeVm", (), {"qmp": _Qmp(reply)})()
    with pytest.raises(HarnessError) as info:
        _wait_migration(vm, "saving", Stop(), timeout=0)
    assert str(info.value) == line


def test_v2_layout() -> None:
    out = v2(CORRUPTED)
    assert out["schema_version"] == 2
    assert "integrity_detail" not in out and "migration" not in out
    assert out["integrity"]["verdict"] == "corrupted"
    assert set(out["applied"]) == {"source", "destination", "uri"}
    text_ = dump(read(CORRUPTED)).decode()
    keys = [ln.split('"')[1] for ln in text_.splitlines() if ln.startswith(' "')]
    assert keys == sorted(keys)  # canonical: sorted keys, indent=1
    assert text_.startswith('{\n "applied": {')


def test_dump_is_canonical_for_equal_records() -> None:
    a = read(FULL)
    b = upgrade(json.loads(text(dict(reversed(list(raw(FULL).items()))))))
    assert a == b and dump(a) == dump(b)


# ---------------------------------------------------------------------------------------------
# Non-finite numbers


def _literal(path: str, literal: str, base: Path = FULL) -> str:
    """The file ``base`` with the value at ``path`` written as ``literal`` (any JSON-ish text)."""
    return text(_set(path, HOLE, base)).replace(json.dumps(HOLE), literal, 1)


def test_nan_and_infinity_literals_read_as_null() -> None:
    d = _set("metrics/downtime_ms", "NaN-here")
    d["metrics"]["throughput_mbps"] = "Infinity-here"
    rec = loads(text(d).replace('"NaN-here"', "NaN").replace('"Infinity-here"', "-Infinity"))
    assert rec.metrics.downtime_ms is None and rec.metrics.throughput_mbps is None
    assert rec.metrics.total_time_ms == raw(FULL)["metrics"]["total_time_ms"]
    assert loads(_literal("metrics/qemu_mbps", "1e999")).metrics.qemu_mbps is None


def test_non_finite_python_floats_stored_as_null() -> None:
    d = raw(FULL)
    d["metrics"]["guest_max_stall_ms"] = math.nan
    d["timeline"][3]["ram"]["mbps"] = -math.inf
    d["events"]["source"][0]["data"]["x"] = [math.inf, {"y": math.nan}]  # open QMP data
    rec = upgrade(d)
    assert rec.metrics.guest_max_stall_ms is None
    ram = rec.timeline[3].ram
    assert ram is not None and ram.mbps is None
    assert rec.events.source[0].data["x"] == [None, {"y": None}]
    out = dump(rec)
    assert b"NaN" not in out and b"Infinity" not in out and loads(out) == rec


def test_a_record_changed_without_validation_is_stored_valid(tmp_path: Path) -> None:
    """``model_copy(update=...)`` skips validation (the runner adds the phases and the
    repetition rule so): the one door out validates again, so a non-finite figure where one may
    be missing is stored as null (it was a ValueError from the JSON writer, mid-matrix)."""
    rec = read(FULL)
    pre = PreMigration(writer_rate_mib_s=8.0).model_copy(update={"writer_rate_mib_s": math.nan})
    changed = rec.model_copy(update={"boot_s": math.nan, "steady_rate_mib_s": math.inf,
                                     "pre": pre})
    path = store.write_run(tmp_path, changed)
    back = read(path)
    assert back == rec.model_copy(update={"boot_s": None, "steady_rate_mib_s": None,
                                          "pre": PreMigration()})
    assert b"NaN" not in path.read_bytes() and b"Infinity" not in path.read_bytes()


def test_a_record_no_reader_would_accept_is_not_stored(tmp_path: Path) -> None:
    rec = read(FULL).model_copy(update={"started_utc": "yesterday"})
    with pytest.raises(StoreError) as info:
        store.write_run(tmp_path, rec)
    path = tmp_path / rec.cell.id / "1.json"
    assert str(info.value) == (f"{path}: started_utc: not stored: expected text matching "
                               r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$, got "
                               f"'yesterday'; {BUG}")
    assert list(tmp_path.iterdir()) == []  # nothing written, no empty cell folder


def test_non_finite_where_a_number_is_required_is_an_error() -> None:
    d = raw(FULL)
    d["repetition"] = math.nan
    assert refused(text(d)) == (f"{SOURCE}: repetition: expected an integer, got null; {DELETE}")
    d = raw(FULL)
    d["cell"]["limits"]["max_time_s"] = math.inf
    assert "cell.limits.max_time_s: expected a number, got null" in refused(text(d))


# ---------------------------------------------------------------------------------------------
# One line per malformed file


def _without(key: str) -> str:
    d = raw(FULL)
    del d[key]
    return text(d)


def _set(path: str, value: Any, base: Path = FULL) -> dict[str, Any]:
    d = raw(base)
    *parents, last = path.split("/")
    node: Any = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    return d


MALFORMED = [
    # (what, file text, expected line after "SOURCE: ")
    ("missing cell", _without("cell"), f"cell: missing; {DELETE}"),
    ("missing metrics", _without("metrics"), f"metrics: missing; {DELETE}"),
    ("axes as a list", text(_set("cell/axes", ["feature", "multifd"])),
     f"cell.axes: expected an object, got a list of 2; {DELETE}"),
    ("a metric that is a string", text(_set("metrics/total_time_ms", "fast")),
     f"metrics.total_time_ms: expected an integer, got 'fast'; {DELETE}"),
    ("a number as a string", text(_set("metrics/throughput_mbps", "462.9")),
     f"metrics.throughput_mbps: expected a number, got '462.9'; {DELETE}"),
    ("repetition one", text(_set("repetition", "one")),
     f"repetition: expected an integer, got 'one'; {DELETE}"),
    ("repetition true", text(_set("repetition", True)),
     f"repetition: expected an integer, got true; {DELETE}"),
    ("repetition 0", text(_set("repetition", 0)),
     f"repetition: expected a value >= 1, got 0; {DELETE}"),
    ("300-digit integer", text(_set("metrics/transferred_bytes", 10**299)),
     f"metrics.transferred_bytes: expected a number within 64 bits, got an integer of 300 "
     f"digits; {DELETE}"),
    ("5000-digit integer", text(_set("metrics/transferred_bytes", 0)).replace(
        '"transferred_bytes": 0', '"transferred_bytes": ' + "9" * 5000),
     f"metrics.transferred_bytes: expected a number within 64 bits, got an integer of 5000 "
     f"digits; {DELETE}"),
    ("huge integer in a QMP reply", text(_set("final/ram/total", 2**64)),
     f"final.ram.total: expected a number within 64 bits, got an integer of 20 digits; {DELETE}"),
    ("nested in a number's place", text(_set("metrics/downtime_ms", json.loads("[" * 60 + "]" * 60))),
     f"metrics.downtime_ms: expected an integer, got a list of 1; {DELETE}"),
    ("nested in an open value", text(_set("cell/axes/feature", json.loads("[" * 60 + "]" * 60))),
     f"cell.axes.feature: expected a JSON value nested at most 20 levels deep; {DELETE}"),
    ("nested beyond Python's recursion limit", "[" * 100_000 + "]" * 100_000,
     f"not a run record (JSON nested too deep); {DELETE}"),
    ("unknown field", text(_set("metrics/speed", 3)), f"metrics.speed: unknown field; {UNKNOWN}"),
    ("cell id", text(_set("cell/id", "../../etc")),
     f"cell.id: expected text matching ^[0-9a-f]{{12}}$, got '../../etc'; {DELETE}"),
    ("outcome", text(_set("outcome", "great")),
     "outcome: expected 'completed', 'not-converged', 'failed' or 'skipped', got 'great'; "
     f"{DELETE}"),
    ("workload number as a string", text(_set("cell/workload/writer/rate_mib_s", "8")),
     f"cell.workload.writer.rate_mib_s: expected a number, got '8'; {DELETE}"),
    ("not an object", "[1, 2]", f"expected a run record (a JSON object), got a list of 2; {DELETE}"),
    ("not JSON", '{"schema_version": 1,', "line 1: not valid JSON (Expecting property name "
     f"enclosed in double quotes); {DELETE}"),
    ("not UTF-8", b'{"campaign": "\xff"}', f"not valid JSON (not UTF-8 text); {DELETE}"),
    ("key twice", '{"metrics": {}, "metrics": {}}',
     f"not a run record (an object names the key 'metrics' twice); {DELETE}"),
    ("no schema", text({k: v for k, v in raw(FULL).items() if k != "schema_version"}),
     f"schema_version: missing; {DELETE}"),
    ("schema as a string", text(_set("schema_version", "1")),
     f"schema_version: expected 1 or 2, got '1'; {DELETE}"),
    ("newer schema", text(_set("schema_version", 3)),
     f"schema_version: 3 is newer than this migbench reads (2); {NEWER}"),
    # a v1 file is blamed where that file has the field
    ("v1 integrity detail", text(_set("integrity_detail/ram/differing_pages", "12", CORRUPTED)),
     f"integrity_detail.ram.differing_pages: expected an integer, got '12'; {DELETE}"),
    ("v1 integrity verdict", text(_set("integrity", "fine", CORRUPTED)),
     f"integrity: expected 'ok', 'corrupted' or 'unchecked', got 'fine'; {DELETE}"),
    ("v1 applied", text(_set("migration/applied/source/capabilities/xbzrle", "on")),
     f"migration.applied.source.capabilities.xbzrle: expected true or false, got 'on'; {DELETE}"),
    ("v1 detail not an object", text(_set("integrity_detail", [1], CORRUPTED)),
     f"integrity_detail: expected an object, got a list of 1; {DELETE}"),
]


@pytest.mark.parametrize(("what", "body", "line"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_gives_one_line(what: str, body: str | bytes, line: str) -> None:
    assert refused(body) == f"{SOURCE}: {line}"


def test_several_problems_are_counted_on_the_one_line() -> None:
    d = raw(FULL)
    d["repetition"] = "one"
    d["metrics"]["downtime_ms"] = "x"
    assert refused(text(d)) == (f"{SOURCE}: repetition: expected an integer, got 'one' (and 1 "
                                f"more problem); {DELETE}")


def test_v2_file_is_blamed_on_v2_paths() -> None:
    d = v2(CORRUPTED)
    d["integrity"]["ram"]["differing_pages"] = "12"
    assert refused(text(d)) == (f"{SOURCE}: integrity.ram.differing_pages: expected an integer, "
                                f"got '12'; {DELETE}")


def test_validation_line_of_a_pydantic_error() -> None:
    with pytest.raises(ValidationError) as info:
        RunRecord.model_validate({**v2(FULL), "campaign": 7})
    assert validation_line("r/1.json", info.value) == (
        f"r/1.json: campaign: expected a string, got 7; {DELETE}")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RecordError) as info:
        read(tmp_path / "missing.json")
    assert str(info.value).startswith(f"{tmp_path / 'missing.json'}: cannot read result: ")


# ---------------------------------------------------------------------------------------------
# Hypothesis: hostile mutations of valid records give a record or one line, nothing else

BASES = [raw(FULL), raw(SKIPPED), raw(CORRUPTED), v2(FULL), v2(SKIPPED), *map(raw, V2_FILES)]


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        # long series: a few elements stand for all of them
        for i in sorted({0, 1, len(node) // 2, len(node) - 1} & set(range(len(node)))):
            yield from _paths(node[i], (*at, i))


PATHS = [list(_paths(b)) for b in BASES]

# Replacements written into the JSON text (what Python's json.dumps cannot produce) ...
TEXT_VALUES = ["NaN", "-Infinity", "1e999", "9" * 500, "-" + "9" * 5000, "[" * 3000 + "]" * 3000,
               '{"a":' * 200 + "1" + "}" * 200, '"\\u0000\\u001b[31m"']
# ... and Python values put into the record before json.dumps / upgrade().
PY_VALUES: list[Any] = [math.inf, math.nan, 10**300, -(2**63) - 1, 2**63, "one", "", True, False,
                        None, [], {}, [None], {"": None}, 1.5, -1, 0, "9" * 30]


def _mutate(base: dict[str, Any], where: tuple[Any, ...], op: str, value: Any) -> Any:
    d = copy.deepcopy(base)
    if not where:
        return value
    parent: Any = d
    for p in where[:-1]:
        parent = parent[p]
    if op == "delete":
        del parent[where[-1]]
    elif op == "wrap":
        parent[where[-1]] = [[[[[[parent[where[-1]]]]]]]]
    else:
        parent[where[-1]] = value
    return d


def _check(result: RunRecord | RecordError) -> None:
    if isinstance(result, RecordError):
        line = str(result)
        assert line.startswith(SOURCE + ": ") and "\n" not in line and "\r" not in line
        assert line.endswith((DELETE, NEWER))
        return
    out = dump(result)
    assert b"NaN" not in out and b"Infinity" not in out
    again = loads(out)
    assert again == result and dump(again) == out


def _outcome(body: bytes | str) -> RunRecord | RecordError:
    try:
        return loads(body, SOURCE)
    except RecordError as exc:
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_records_give_a_record_or_one_line(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(BASES) - 1), label="base")
    where = data.draw(st.sampled_from(PATHS[i]), label="path")
    op = data.draw(st.sampled_from(["replace", "delete", "wrap", "text"]) if where
                   else st.just("replace"), label="op")
    if op == "text":
        hostile = data.draw(st.sampled_from(TEXT_VALUES), label="text")
        body = json.dumps(_mutate(BASES[i], where, "replace", HOLE)).replace(
            json.dumps(HOLE), hostile, 1)
        _check(_outcome(body))
        return
    value = data.draw(st.sampled_from(PY_VALUES) | st.text(max_size=40)
                      | st.integers(-(2**200), 2**200) | st.floats(), label="value")
    mutated = _mutate(BASES[i], where, op, value)
    _check(_outcome(json.dumps(mutated)))  # as a file
    try:
        result: RunRecord | RecordError = upgrade(mutated)  # as Python values, NaN and all
    except RecordError as exc:
        result = exc.in_file(SOURCE)
    _check(result)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_give_one_line(body: bytes | str) -> None:
    _check(_outcome(body))
