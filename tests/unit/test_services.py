"""The Debian guest's service workloads, pure parts: models, wire protocols, the load's
summaries and dataset check, kernel/QEMU arguments, the image recipe's helpers; and the load
generator's open loop against a small in-process RESP server that can pause."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness.errors import ImageError
from harness.guest import debian
from harness.guest.image import GuestImage
from harness.hosts.netsetup import NetAttachment
from harness.plan.matrix import cell_id
from harness.plan.models import GuestSpec, MatrixSpec, RedisSpec, WorkloadSpec
from harness.results.record.model import GuestImpact, GuestSeries, ServiceImpact
from harness.run import workload
from harness.run.sampling import service_proto as proto
from harness.run.sampling import servicestats
from harness.run.sampling.service import ServiceLoad, judge_dataset

NET = NetAttachment(tap="mbtap-src-x1", guest_ip="10.251.0.2", prefix_len=24,
                    host_ip="10.251.0.1")


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(("fields", "text"), [
    ({"ratio": "1-9"}, "should match pattern"),
    ({"ratio": "0:0"}, "sends nothing"),
    ({"clients": 8, "keys": 4}, "at most as many clients as keys"),
    ({"keys": 100_000, "value_bytes": 4096, "maxmem_mib": 64}, "does not fit"),
    ({"rate_ops": 0}, "greater than 0"),
    ({"value_bytes": 8}, "greater than or equal to 16"),
])
def test_service_spec_refuses(fields: dict[str, Any], text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        RedisSpec.model_validate(fields)


def test_set_fraction_is_memtiers_ratio() -> None:
    assert RedisSpec(ratio="1:9").set_fraction() == pytest.approx(0.1)
    assert RedisSpec(ratio="3:0").set_fraction() == 1.0


def test_services_need_the_debian_guest_and_one_service_per_workload() -> None:
    with pytest.raises(ValidationError, match="workload.redis runs in the Debian guest"):
        MatrixSpec.model_validate({"name": "m", "workload": {"redis": {}}})
    with pytest.raises(ValidationError, match="workloads.s.stress runs in the Debian guest"):
        MatrixSpec.model_validate({"name": "m", "workloads": {"s": {"stress": {}}}})
    with pytest.raises(ValidationError, match="one service per workload"):
        WorkloadSpec.model_validate({"redis": {}, "memcached": {}})
    with pytest.raises(ValidationError, match="workload.fio with guest.image: debian and "
                                              "storage: copy: the copy moves the root disk"):
        MatrixSpec.model_validate({"name": "m", "guest": {"image": "debian"},
                                   "storage": "copy", "workload": {"fio": {}}})
    m = MatrixSpec.model_validate({"name": "m", "guest": {"image": "debian"},
                                   "workload": {"redis": {"rate_ops": 500}}})
    assert m.workload.service() == ("redis", m.workload.redis)


def test_fio_in_the_debian_guest_is_on_its_data_disk_not_the_root() -> None:
    """The Debian guest's root is /dev/vda: its fio word is mb.datafio, which the services hook
    runs on /dev/vdb (mb.fio is init.sh's, on /dev/vda)."""
    m = MatrixSpec.model_validate({"name": "m", "guest": {"image": "debian"},
                                   "workload": {"writer": None, "fio": {"rw": "randwrite"}}})
    assert m.workload.fio is not None
    [word] = workload.kernel_args(m.workload, None, 1, "debian")
    assert word.startswith("mb.datafio=rw:randwrite,") and "mb.fio=" not in word
    assert workload.kernel_args(m.workload, None, 1)[0].startswith("mb.fio=rw:randwrite,")
    hook = (debian.DEBIAN_DIR / "services.sh").read_text()
    assert "cmdline_opt datafio" in hook and "--filename=/dev/vdb" in hook


def test_new_fields_leave_old_cell_ids_alone() -> None:
    """A dump without the later fields (cell ids and coordinates hash dumps)."""
    w = WorkloadSpec.model_validate({"writer": {}})
    assert set(w.model_dump(mode="json")) == {"writer", "ping", "fio"}
    assert GuestSpec().model_dump(mode="json") == {"vcpus": 1, "memory_mib": 512}
    before = cell_id({"workload": {"writer": w.writer.model_dump(mode="json") if w.writer
                                   else None, "ping": None, "fio": None},
                      "guest": {"vcpus": 1, "memory_mib": 512}})
    assert cell_id({"workload": w.model_dump(mode="json"),
                    "guest": GuestSpec().model_dump(mode="json")}) == before
    d = WorkloadSpec.model_validate({"redis": {}}).model_dump(mode="json")
    assert d["redis"]["port"] == 6379 and "memcached" not in d
    assert GuestSpec(image="debian").model_dump()["image"] == "debian"


def test_old_records_load_without_service_fields() -> None:
    assert GuestSeries.model_validate({"writer": [], "ping": [], "fio": []}).service == ()
    assert GuestImpact.model_validate({"ping": None, "fio": None}).service is None


# --------------------------------------------------------------------------- protocols


def test_redis_encoding_and_replies() -> None:
    assert proto.encode_get("redis", 7) == b"*2\r\n$3\r\nGET\r\n$4\r\nmb:7\r\n"
    assert proto.encode_set("redis", 7, b"ab") == b"*3\r\n$3\r\nSET\r\n$4\r\nmb:7\r\n$2\r\nab\r\n"
    assert proto.parse("redis", b"+OK\r\n$3\r\nab") == (proto.Reply(True), 5)
    assert proto.parse("redis", b"$3\r\nab") is None  # incomplete
    assert proto.parse("redis", b"$3\r\nabc\r\n") == (proto.Reply(True, b"abc"), 9)
    assert proto.parse("redis", b"$-1\r\n") == (proto.Reply(True, None), 5)
    assert proto.parse("redis", b"-OOM no\r\n") == (proto.Reply(False, error="OOM no"), 9)
    with pytest.raises(proto.ProtocolError):
        proto.parse("redis", b":1\r\n")
    with pytest.raises(proto.ProtocolError):
        proto.parse("redis", b"$3\r\nabcXY")
    with pytest.raises(proto.ProtocolError):
        proto.parse("redis", b"+" + b"x" * 5000)


def test_memcached_encoding_and_replies() -> None:
    assert proto.encode_get("memcached", 3) == b"get mb:3\r\n"
    assert proto.encode_set("memcached", 3, b"xy") == b"set mb:3 0 0 2\r\nxy\r\n"
    assert proto.parse("memcached", b"STORED\r\n") == (proto.Reply(True), 8)
    assert proto.parse("memcached", b"END\r\n") == (proto.Reply(True, None), 5)
    data = b"VALUE mb:3 0 2\r\nxy\r\nEND\r\n"
    assert proto.parse("memcached", data) == (proto.Reply(True, b"xy"), len(data))
    assert proto.parse("memcached", data[:-1]) is None
    assert proto.parse("memcached", b"SERVER_ERROR out of memory\r\n")[0].ok is False  # type: ignore[index]
    with pytest.raises(proto.ProtocolError):
        proto.parse("memcached", b"VALUE mb:3 0 2\r\nxyzEND\r\n\r\n")


def test_values_differ_by_key_and_version() -> None:
    vals = {proto.value_of(k, v, 32) for k in range(50) for v in range(20)}
    assert len(vals) == 1000 and all(len(x) == 32 for x in vals)


def test_dataset_judge() -> None:
    size = 20
    got = {0: proto.value_of(0, 3, size), 1: proto.value_of(1, 5, size), 2: None,
           3: proto.value_of(3, 1, size)}
    acked = {0: 3, 1: 4, 2: 0, 3: 2}
    maybe = {1: {5}}  # the SET of version 5 was never answered: it may have landed
    v = judge_dataset(got, acked, maybe, size)
    assert v == {"verdict": "corrupted", "keys": 4, "missing": 1, "wrong": 1, "ambiguous": 1,
                 "first_bad": [2, 3]}
    assert judge_dataset({0: got[0]}, {0: 3}, {}, size)["verdict"] == "ok"


# --------------------------------------------------------------------------- summaries


@dataclass
class Req:
    due: float
    done: float | None
    status: str = "ok"

    @property
    def latency_ms(self) -> float | None:
        return None if self.done is None or self.status not in ("ok", "late") \
            else (self.done - self.due) * 1000


def _load(pause: tuple[float, float]) -> list[Req]:
    """100 requests/s for 3 s, 1 ms each; none answered inside ``pause`` until it ends."""
    out = []
    for i in range(300):
        due = 100.0 + i / 100
        done = due + 0.001
        if pause[0] <= due < pause[1]:
            done = pause[1] + 0.001
        out.append(Req(due, done, "late" if done - due > 0.2 else "ok"))
    return out


def test_phases_and_the_service_visible_downtime() -> None:
    reqs = _load((101.5, 101.8))
    reqs.append(Req(102.95, None, "lost"))
    reqs.append(Req(100.5, 100.5, "error"))
    s = servicestats.summarise(reqs, migrate_start=101.0, switchover=101.8, end=103.0)
    assert s["before"]["requests"] == 101 and s["before"]["errors"] == 1
    assert s["before"]["p99_ms"] == pytest.approx(1.0)
    # The pause: the longest window without a completion, across the switchover.
    assert s["max_gap"]["ms"] == pytest.approx(300, abs=11)
    assert s["during"]["max_gap_ms"] == pytest.approx(300, abs=11)
    assert s["during"]["max_ms"] == pytest.approx(301, abs=1)
    assert s["during"]["timeouts"] == 11  # due in the first 100 ms of the pause: > 200 ms late
    assert s["after"]["timeouts"] == 1 and s["after"]["p99_ms"] == pytest.approx(1.0)
    assert s["total"]["requests"] == 302
    assert s["before"]["ops_s"] == pytest.approx(100, rel=0.02)
    # A longer stall before the migration is the before phase's, not the migration's downtime.
    early = _load((100.2, 100.9)) + [r for r in _load((101.5, 101.8)) if r.due >= 101.0]
    early = [r for r in early if r.due < 101.0] + [r for r in reqs if r.due >= 101.0]
    s2 = servicestats.summarise(early, migrate_start=101.0, switchover=101.8, end=103.0)
    assert s2["before"]["max_gap_ms"] == pytest.approx(700, abs=11)
    assert s2["max_gap"]["ms"] == pytest.approx(300, abs=11)


def test_timeline_bins_by_reply() -> None:
    reqs = _load((101.5, 101.8))
    reqs.append(Req(101.0, None, "lost"))
    tl = servicestats.timeline(reqs, t0=101.0, timeout_s=0.5)
    assert tl[0]["t"] == -1.0 and tl[0]["ops"] == pytest.approx(100)
    quiet = [p for p in tl if 0.5 <= p["t"] < 0.8]
    assert len(quiet) == 3 and all(p["ops"] == 0 and p["p99_ms"] is None for p in quiet)
    burst = next(p for p in tl if p["t"] == pytest.approx(0.8))
    assert burst["ops"] >= 300 and burst["max_ms"] == pytest.approx(301, abs=1)
    assert sum(p["timeouts"] for p in tl) == 1 + 11  # the lost one, at due + timeout


def test_impact_and_summary_columns() -> None:
    spec = WorkloadSpec.model_validate({"redis": {"rate_ops": 100}})
    impact = workload.summarise(spec, migrate_start=101.0, switchover=101.8, end=103.0,
                                requests=_load((101.5, 101.8)),
                                dataset={"verdict": "ok", "keys": 1000})
    svc = impact.service
    assert isinstance(svc, ServiceImpact) and svc.kind == "redis" and svc.rate_ops == 100
    assert svc.dataset is not None and svc.dataset.verdict == "ok"
    cols = workload.summary_columns(impact)
    assert cols["service_max_gap_ms"] == svc.max_gap.ms  # type: ignore[union-attr]
    assert cols["service_p99_ms"] == svc.during.p99_ms


# --------------------------------------------------------------------------- arguments


def test_kernel_args_and_ready_kinds() -> None:
    spec = WorkloadSpec.model_validate({"memcached": {"port": 11311, "maxmem_mib": 32},
                                        "stress": {"vm": 2, "bytes_mib": 16,
                                                   "method": "flip"}})
    args = workload.kernel_args(spec, NET)
    assert "mb.memcached=port:11311,maxmem:32" in args
    assert "mb.stress=vm:2,bytes:16,method:flip" in args
    assert "mb.net=ip:10.251.0.2/24" in args
    assert workload.ready_kinds(spec) == ["net-ready", "memcached-ready", "stress-ready"]
    assert workload.needs_network(spec)


def test_boot_files_of_each_guest(tmp_path: Path) -> None:
    img = GuestImage(kernel=tmp_path / "k", initrd=tmp_path / "i", digest="d" * 64,
                     kernel_release="r", pvh=True)
    w = WorkloadSpec.model_validate({"redis": {}})
    assert workload.boot_files(img, GuestSpec(), WorkloadSpec(), None) == (tmp_path / "i", [])
    with pytest.raises(ImageError, match="debian=True"):
        workload.boot_files(img, GuestSpec(image="debian"), w, tmp_path / "o")
    deb = GuestImage(**{**img.__dict__, "debian_disk": tmp_path / "root.qcow2",
                        "debian_initrd": tmp_path / "initrd-debian.cpio.gz"})
    initrd, args = workload.boot_files(deb, GuestSpec(image="debian"), w, tmp_path / "o.qcow2")
    assert initrd == tmp_path / "initrd-debian.cpio.gz"
    assert args[0] == "-blockdev" and f"file.filename={tmp_path}/o.qcow2" in args[1]
    assert f"backing.file.filename={tmp_path}/root.qcow2" in args[1]
    assert args[3].startswith("virtio-blk-pci,drive=mbroot0")
    assert deb.to_dict()["debian_disk"] == str(tmp_path / "root.qcow2")
    assert "debian_disk" not in img.to_dict()  # records of initramfs runs as before


def test_debian_recipe_helpers(tmp_path: Path) -> None:
    policy = ("redis-server:\n  Installed: (none)\n  Candidate: 5:7.0.15-1~deb12u10\n"
              "  Version table:\n     5:7.0.15 500\nfio:\n  Installed: 3.33-3\n"
              "  Candidate: 3.33-3\nnope:\n  Installed: (none)\n  Candidate: (none)\n")
    assert debian.parse_candidates(policy) == {"redis-server": "5:7.0.15-1~deb12u10",
                                               "fio": "3.33-3", "nope": "(none)"}
    assert debian.mkfs_size_mib(270 * 1024 * 1024) == 512
    assert debian.mkfs_size_mib(0) == 128
    assert debian.overlay_argv("qemu-img", Path("/b/root.qcow2"), Path("/w/o.qcow2")) == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "/b/root.qcow2", "-F", "qcow2",
        "/w/o.qcow2"]
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("")  # empty: not a source
    for name in ("debian.sources", "x.list", "old.list.disabled"):
        (tmp_path / "sources.list.d" / name).write_text("deb x\n")
    assert [p.name for p in debian.apt_sources(tmp_path)] == ["debian.sources", "x.list"]


# --------------------------------------------------------------------------- the open loop


class _Server:
    """A RESP server of GET/SET on a dict, in its own thread, that can stop answering for a
    while (as a guest paused for the switchover)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.paused_until = 0.0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()
        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readline()
                if not head:
                    return
                parts = []
                for _ in range(int(head[1:])):
                    n = int((await r.readline())[1:])
                    parts.append((await r.readexactly(n + 2))[:-2])
                while time.monotonic() < self.paused_until:
                    await asyncio.sleep(0.005)
                if parts[0] == b"SET":
                    self.data[parts[1]] = parts[2]
                    w.write(b"+OK\r\n")
                else:
                    v = self.data.get(parts[1])
                    w.write(b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v))
                await w.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def test_the_load_holds_its_rate_through_a_pause(server: _Server) -> None:
    spec = RedisSpec(clients=4, rate_ops=400, keys=200, value_bytes=32, ratio="1:1")
    load = ServiceLoad("redis", "127.0.0.1", server.port, spec, seed=1)
    try:
        load.preload(5)
        assert len(server.data) == 200
        load.start()
        time.sleep(0.6)
        paused_at = time.time()
        server.paused_until = time.monotonic() + 0.3
        time.sleep(0.9)
        reqs = load.stop()
        check = load.check_dataset()
    finally:
        load.close()
    # Open loop: requests stayed due at 400/s while nothing was answered.
    due_in_pause = [r for r in reqs if paused_at <= r.due < paused_at + 0.3]
    assert len(due_in_pause) == pytest.approx(120, abs=12)
    assert len(reqs) == pytest.approx(600, rel=0.1)
    assert all(r.status in ("ok", "late") for r in reqs)
    # A request due when the pause began waited it out: latency counted from when it was due.
    first = min(due_in_pause, key=lambda r: r.due)
    assert first.latency_ms is not None and first.latency_ms > 250
    s = servicestats.summarise(reqs, paused_at, None, time.time())
    assert s["max_gap"]["ms"] > 250
    # The load wrote each request about when it was due (its own lag is recorded apart).
    assert all(r.sent is not None and r.sent >= r.due - 0.001 for r in reqs)
    assert s["before"]["send_lag_p99_ms"] is not None and s["before"]["send_lag_p99_ms"] >= 0
    # The dataset: every key holds its last acknowledged SET.
    assert check["verdict"] == "ok" and check["keys"] == 200
    server.data[proto.key_name(5)] = b"garbage"
    del server.data[proto.key_name(6)]
    load2 = ServiceLoad("redis", "127.0.0.1", server.port, spec)
    load2._acked.update(load._acked)
    load2._maybe.update(load._maybe)
    try:
        bad = load2.check_dataset()
    finally:
        load2.close()
    assert bad["verdict"] == "corrupted" and bad["first_bad"] == [5, 6]


def test_a_slow_preload_is_not_a_failed_one(server: _Server) -> None:
    """Replies to the preload's SETs that come after the load's timeout still wrote the keys
    (seen: 'preloading 1500 of 2000 keys failed (late)' from a slow guest on a busy machine)."""
    spec = RedisSpec(clients=1, rate_ops=100, keys=50, value_bytes=16, timeout_ms=200)
    load = ServiceLoad("redis", "127.0.0.1", server.port, spec, seed=1)
    server.paused_until = time.monotonic() + 0.5
    try:
        load.preload(5)
        check = load.check_dataset()
    finally:
        load.close()
    assert len(server.data) == 50 and check["verdict"] == "ok"


def test_an_unreachable_service_is_a_clear_error() -> None:
    spec = RedisSpec(clients=1, rate_ops=10, keys=10)
    load = ServiceLoad("redis", "127.0.0.1", 1, spec)
    try:
        with pytest.raises(Exception, match="redis at 127.0.0.1:1"):
            load.preload(0.5)
    finally:
        load.close()


# --------------------------------------------------------------------------- show and report


REDIS_RUN = Path(__file__).parent.parent / "data" / "run-redis.json"


def _redis_record(**changes: Any) -> Any:
    """A real run: redis under 400 ops/s in the Debian guest, postcopy, QEMU 10.0, TCG."""
    import json

    from harness.results.record import upgrade

    raw = json.loads(REDIS_RUN.read_text())
    for path, value in changes.items():
        node = raw
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return upgrade(raw)


def test_show_prints_the_service_per_phase() -> None:
    from harness.results import show

    rec = _redis_record()
    svc = rec.guest_impact.service
    lines = {ln.strip().split(":", 1)[0]: ln.split(":", 1)[1].strip()
             for ln in show.run_block(rec).splitlines()[2:]}
    assert lines["redis during"].startswith(f"{svc.during.ops_s:g} ops/s, p50/p99/p99.9/max ")
    assert f"/{svc.during.p99_ms:g}/" in lines["redis during"]
    assert lines["redis service-visible downtime"] == f"{svc.max_gap.ms:g} ms"
    assert lines["redis dataset"] == "ok: 2000 keys, 0 missing, 0 wrong"
    assert {"redis before", "redis after"} <= set(lines)


def test_show_escapes_what_a_result_file_says() -> None:
    from harness.results import show

    rec = _redis_record(**{"guest_impact.service.dataset": {
        "verdict": "unchecked", "reason": "no answer\x1b[2J\nFAKE: line"}})
    text = show.run_block(rec)
    assert "\x1b" not in text and "\nFAKE" not in text
    assert "redis dataset" in text


def test_report_has_the_service_rows_and_timeline(tmp_path: Path) -> None:
    from harness.report import make_report
    from harness.report.impact import guest_impact
    from harness.report.model import timeline
    from harness.results import store

    rec = _redis_record()
    impact = guest_impact([rec], lambda r: None)
    measures = {(row.measure, row.phase): row.values[0] for row in impact.rows}
    svc = rec.guest_impact.service
    assert measures[("service p99 latency", "during")] == svc.during.p99_ms
    assert measures[("service longest window without a reply", "after")] == svc.after.max_gap_ms
    assert measures[("service dataset: keys missing or wrong", "after")] == 0
    tl = timeline(rec)
    assert {"redis p99", "redis max", "redis ops/s"} <= {s.name for s in tl.series}
    assert "redis latency (ms)" in tl.panels
    (tmp_path / "res").mkdir()
    store.write_run(tmp_path / "res", rec)
    store.write_summary(tmp_path / "res")
    make_report(tmp_path / "res", tmp_path / "report", slide_specs=[])
    page = (tmp_path / "report" / "cells" / f"{rec.cell.id}.html").read_text()
    assert "service p99 latency" in page and "redis p99" in page


def test_keys_lost_make_the_guest_corrupted() -> None:
    from harness.results import show
    from harness.results.record.model import DatasetCheck, Integrity, StampsCheck

    ok = Integrity.judge(stamps=StampsCheck(verdict="ok", pages=10, bad_pages=0))
    assert ok.with_dataset(DatasetCheck(verdict="ok", keys=5)).verdict == "ok"
    lost = ok.with_dataset(DatasetCheck(verdict="corrupted", keys=5, missing=1, wrong=2))
    assert lost.verdict == "corrupted" and lost.stamps == ok.stamps
    assert show.integrity_text(lost) == "corrupted (service keys: 1 missing, 2 wrong of 5)"
    # A guest without the writer: the dataset is its one check.
    assert Integrity.judge().with_dataset(DatasetCheck(verdict="ok", keys=5)).verdict == "ok"


def test_a_night_judges_service_p99_and_service_visible_downtime() -> None:
    """The nightly's regression metrics include the service's p99 and its stall (issue 17): a
    redis whose p99 and longest window without a reply grew is a regression, the rest alike."""
    from harness.analysis import regress

    def runs(p99: float, gap: float) -> list[Any]:
        return [_redis_record(**{"repetition": i, "metrics.service_p99_ms": p99 + i,
                                 "metrics.service_max_gap_ms": gap + 3 * i})
                for i in range(1, 7)]

    found = {f.metric: f.verdict for f in regress.compare_sides(
        runs(8.0, 140.0), runs(40.0, 700.0), regress.Thresholds())}
    assert found["service_p99_ms"] == regress.REGRESSION, found
    assert found["service_max_gap_ms"] == regress.REGRESSION, found
    assert found["total_time_ms"] == regress.NO_CHANGE, found


def test_the_report_judges_a_services_p99_and_its_no_reply_window(tmp_path: Path) -> None:
    """A real redis run (tests/data/v2): the cell's statistics, as the report's comparisons, have
    the service's p99 and its service-visible downtime, as a night's verdict does (issue 17)."""
    import csv
    import shutil

    from harness.report import make_report

    camp = tmp_path / "camp"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "v2" / "v2-redis", camp)
    make_report(camp, tmp_path / "report")
    (stats,) = (tmp_path / "report" / "cells").glob("*-stats.csv")
    with stats.open(newline="") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(rows["service p99 during"]["median"]) > 0
    assert float(rows["service-visible downtime"]["median"]) > 0
    assert "ping max gap" not in rows  # a metric appears only where the runs have it
