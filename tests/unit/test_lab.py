"""The lab's pure parts: broker URLs and engine flags, worker declarations, routing, jobs, and
records arriving as bytes (integration: tests/integration/test_lab.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import checks
from harness.errors import HarnessError, UsageError
from harness.hosts.probe import Probe
from harness.lab import broker
from harness.lab.caps import BuildCaps, WorkerInfo, route, signature, unroutable_line
from harness.lab.job import Cells, Job
from harness.plan.matrix import expand
from harness.plan.models import HostPair, MatrixSpec
from harness.results import store
from harness.results.record.errors import RecordError

CAPS = ("events", "xbzrle", "postcopy-ram", "auto-converge", "multifd")
PARAMS = ("max-bandwidth", "downtime-limit", "xbzrle-cache-size", "multifd-channels",
          "multifd-compression")


def _probe(version: str = "10.0.2", caps: tuple[str, ...] = CAPS) -> Probe:
    return Probe(binary="/usr/bin/qemu-system-x86_64", version=version, package="deb",
                 capabilities=caps, parameters=PARAMS,
                 commands=("migrate", "migrate-start-postcopy"),
                 multifd_compression=("none", "zlib", "zstd"), host="h", build_id="sha256:x")


def _pair(**fields: Any) -> HostPair:
    side = {"transport": "ssh", "address": "10.0.0.1", **fields}
    return HostPair.model_validate({"source": side, "destination": {**side,
                                                                   "address": "10.0.0.2"}})


def _worker(name: str, builds: dict[str, BuildCaps], accel: str = "tcg") -> WorkerInfo:
    pair = _pair()
    return WorkerInfo(name=name, pair=name, machine="m", pid=1, hosts=pair, source_accel=accel,
                      destination_accel=accel, builds=builds,
                      queue=signature(pair, accel, accel, builds), started=0.0, heartbeat=0.0,
                      lease_s=60.0)


def _spec(**fields: Any) -> MatrixSpec:
    return MatrixSpec.model_validate({"name": "t", "repetitions": 2,
                                      "axes": {"feature": ["precopy", "xbzrle", "compress"]},
                                      **fields})


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://h", "rediss://:pw@h:1/15",
                                 "redis://[::1]:6379/0", "redis://user:pw@host.example:7/3"])
def test_broker_urls_accepted(url: str) -> None:
    assert broker.broker_problem(url) == ""
    checks.FLAG_CHECKS["broker"]("--broker", url)
    checks.FLAG_CHECKS["engine"]("--engine", f"celery://{url}")


@pytest.mark.parametrize("url", ["http://h:1/0", "redis://", "redis://h:0/0", "redis://h:99999",
                                 "redis://h/16", "redis://h/x", "redis://h/0?ssl=1",
                                 "redis://h;rm/0", "redis:///tmp/sock", "amqp://h//"])
def test_broker_urls_refused_in_one_line(url: str) -> None:
    assert broker.broker_problem(url)
    with pytest.raises(UsageError) as exc:
        checks.FLAG_CHECKS["broker"]("--broker", url)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("--broker")


def test_engine_flag() -> None:
    checks.FLAG_CHECKS["engine"]("--engine", "local")
    for bad in ("celery", "celery://http://h", "ray://h", "local "):
        with pytest.raises(UsageError):
            checks.FLAG_CHECKS["engine"]("--engine", bad)
    assert broker.engine_broker(None, None) is None
    assert broker.engine_broker("local", None) is None
    assert broker.engine_broker("celery://redis://h/0", None) == "redis://h/0"
    assert broker.engine_broker(None, "redis://b/1") == "redis://b/1"
    for flag, value in (("--redeliveries", -1), ("--redeliveries", 11), ("--lease-s", 5.0),
                        ("--name", "a b")):
        dest = {"--redeliveries": "redeliveries", "--lease-s": "lease_s",
                "--name": "worker_name"}[flag]
        with pytest.raises(UsageError):
            checks.FLAG_CHECKS[dest](flag, value)


def test_a_password_is_never_shown() -> None:
    assert broker.shown("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert broker.shown("redis://u:s3cret@h:1/0") == "redis://u:***@h:1/0"
    with pytest.raises(UsageError) as exc:
        checks.FLAG_CHECKS["broker"]("--broker", "http://:s3cret@h:1/0")
    assert "s3cret" not in str(exc.value)


def test_task_ids_are_the_idempotency_key() -> None:
    key = broker.campaign_key("{}", Path("/tmp/x"))
    assert key == broker.campaign_key("{}", Path("/tmp/x"))
    assert key != broker.campaign_key("{}", Path("/tmp/y"))
    assert key != broker.campaign_key('{"a":1}', Path("/tmp/x"))
    assert broker.task_id(key, "0123456789ab", 3) == f"mb-{key}-0123456789ab-3"


def test_same_capabilities_share_a_queue_other_ones_do_not() -> None:
    ten = {"10.0": BuildCaps(source=_probe(), destination=_probe())}
    a, b = _worker("a", ten), _worker("b", ten)
    assert a.queue == b.queue and a.queue.startswith("migbench.caps.")
    # another binary path or host of the same QEMU routes alike
    moved = Probe(**{**_probe().to_dict(), "binary": "/opt/q", "host": "z", "build_id": "y"})
    assert _worker("c", {"10.0": BuildCaps(source=moved, destination=moved)}).queue == a.queue
    assert _worker("d", ten, accel="kvm").queue != a.queue
    seven = {"10.0": BuildCaps(source=_probe("7.2.0", (*CAPS, "compress")),
                               destination=_probe("7.2.0", (*CAPS, "compress")))}
    assert _worker("e", seven).queue != a.queue


def test_routing_sends_a_cell_to_able_workers_and_reports_the_rest() -> None:
    cells = {c.migration.feature: c for c in expand(_spec(), "10.0")}
    ten = _worker("ten", {"10.0": BuildCaps(source=_probe(), destination=_probe())})
    old = {"10.0": BuildCaps(source=_probe("7.2.0", (*CAPS, "compress")),
                             destination=_probe("7.2.0", (*CAPS, "compress")))}
    legacy, legacy2 = _worker("legacy", old), _worker("legacy2", old)
    queue, reasons = route(cells["precopy"], [ten, legacy, legacy2])
    assert queue == legacy.queue and reasons == {}  # the queue with the most able workers
    queue, reasons = route(cells["compress"], [ten, legacy])
    assert queue == legacy.queue and "compress" in reasons["ten"]
    queue, reasons = route(cells["compress"], [ten])
    assert queue is None
    line = unroutable_line(cells["compress"], reasons)
    assert "no worker can run it" in line and "ten:" in line and "compress" in line
    assert "no worker is registered" in unroutable_line(cells["compress"], {})
    other = _worker("other", {"9.0": BuildCaps(source=_probe(), destination=_probe())})
    queue, reasons = route(cells["precopy"], [other])
    assert queue is None and "no QEMU build '10.0'" in reasons["other"]


def test_ping_cells_need_the_vm_network() -> None:
    spec = _spec(axes={"feature": ["precopy"]}, workload={"ping": {"interval_ms": 10}})
    cell = expand(spec, "10.0")[0]
    builds = {"10.0": BuildCaps(source=_probe(), destination=_probe())}
    bare = _worker("bare", builds)
    queue, reasons = route(cell, [bare])
    assert queue is None and "vm_bridge" in reasons["bare"]
    pair = _pair(vm_bridge="br-vm", vm_network="10.250.4.1/24")
    net = bare.model_copy(update={"name": "net", "hosts": pair,
                                  "queue": signature(pair, "tcg", "tcg", builds)})
    assert net.queue != bare.queue
    assert route(cell, [bare, net])[0] == net.queue


@pytest.mark.parametrize("src, dst", [
    ({"transport": "local"}, {"transport": "local"}),
    ({"transport": "local", "vm_bridge": "br0"}, {"transport": "local"}),
    ({"transport": "local", "vm_bridge": "br0"}, {"transport": "local", "vm_bridge": "br0"}),
    ({"transport": "local", "vm_bridge": "br0", "vm_network": "10.1.0.1/24"},
     {"transport": "local", "vm_bridge": "br0"}),
    ({"transport": "ssh", "address": "a"}, {"transport": "ssh", "address": "b"}),
    ({"transport": "ssh", "address": "a", "vm_bridge": "b"},
     {"transport": "ssh", "address": "b", "vm_bridge": "b", "vm_network": "10.1.0.1/24"}),
    ({"transport": "ssh", "address": "a", "vm_network": "10.1.0.1/24"},
     {"transport": "ssh", "address": "b", "vm_bridge": "b"}),
])
def test_the_declared_guest_network_agrees_with_the_runner(src: dict[str, Any],
                                                           dst: dict[str, Any]) -> None:
    from harness.lab.caps import guest_network
    from harness.run.runner import skip_reason

    pair = HostPair.model_validate({"source": src, "destination": dst})
    spec = _spec(axes={"feature": ["precopy"]}, workload={"ping": {"interval_ms": 10}})
    cell = expand(spec, "10.0")[0]
    runner_says = skip_reason(cell, _probe(), _probe(), "tcg", "tcg", pair) == ""
    assert guest_network(pair) == runner_says


def test_a_local_and_an_ssh_pair_that_can_run_the_same_cells_share_a_queue() -> None:
    builds = {"10.0": BuildCaps(source=_probe(), destination=_probe())}
    local = HostPair.model_validate({"source": {}, "destination": {}})
    bed = _pair(vm_bridge="br-vm", vm_network="10.250.4.1/24")
    assert signature(local, "tcg", "tcg", builds) == signature(bed, "tcg", "tcg", builds)
    assert signature(_pair(), "tcg", "tcg", builds) != signature(bed, "tcg", "tcg", builds)


def test_a_declaration_from_the_broker_is_validated() -> None:
    w = _worker("a", {"10.0": BuildCaps(source=_probe(), destination=_probe())})
    assert WorkerInfo.parse(w.model_dump_json(), "k") == w
    data = json.loads(w.model_dump_json())
    for field, value in (("name", "a;rm -rf /"), ("queue", "celery"), ("source_accel", "x"),
                         ("pid", 0), ("extra", 1)):
        with pytest.raises(HarnessError, match="broker key k: not a worker declaration"):
            WorkerInfo.parse(json.dumps({**data, field: value}), "k")
    with pytest.raises(HarnessError):
        WorkerInfo.parse(b"\xff{", "k")


def test_a_job_travels_and_finds_its_cell() -> None:
    spec = _spec()
    cell = expand(spec, "10.0")[1]
    job = Job(spec=spec, default_build="10.0", cell_id=cell.id, repetition=2,
              matrix_file="m.yaml", redeliveries=2)
    again = Job.parse(json.loads(json.dumps(job.payload())))
    assert again == job
    found = Cells().find(again)
    assert found.id == cell.id and found.to_dict() == cell.to_dict()
    with pytest.raises(HarnessError, match="has no cell"):
        Cells().find(job.model_copy(update={"cell_id": "0" * 12}))
    for bad in ({**job.payload(), "cell_id": "../../x"}, {**job.payload(), "redeliveries": 99},
                {**job.payload(), "spec": {"name": "t", "guest": {"vcpus": 0}}}, "x", None):
        with pytest.raises(HarnessError, match="not a migbench run"):
            Job.parse(bad)


def test_records_arriving_as_bytes_go_through_the_store(tmp_path: Path) -> None:
    for bad in (b"", b"{", b'{"schema_version": 2}', b"[1]", "\u0000"):
        with pytest.raises(RecordError) as exc:
            store.receive_run(bad, "task t")
        assert str(exc.value).startswith("task t")
    with pytest.raises(RecordError, match="more than a run record"):
        store.receive_run(b" " * (64 * 1024**2 + 1), "task t")


def test_run_lab_flags_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    demo = str(Path(__file__).resolve().parents[2] / "matrices" / "demo.yaml")
    parser = cli.build_parser()
    for argv, message in ((["--attach"], "--attach collects"),
                          (["--engine", "local", "--attach"], "--attach collects"),
                          (["--broker", "redis://h/0", "--pair", "local"], "drop --pair"),
                          (["--engine", "celery://redis://h/0", "--redeliveries", "11"],
                           "--redeliveries 11: must be at least 0 and at most 10")):
        with pytest.raises(UsageError, match=message):
            checks.preflight(parser, parser.parse_args(["run", demo, *argv]))
    for ok in ([], ["--engine", "local", "--pair", "local"], ["--broker", "redis://h/0",
                                                              "--attach"]):
        checks.preflight(parser, parser.parse_args(["run", demo, *ok]))
    assert cli.main(["run", demo, "--engine", "celery://http://h"]) == 1
    assert "--engine" in capsys.readouterr().err


class _Host:
    """What skipped_record reads of a host: its facts (those of a stored run)."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self._facts = facts

    def facts(self) -> dict[str, Any]:
        return self._facts


def _record_json(cell: Any, rep: int, campaign: str) -> str:
    from harness.plan.models import QemuBuild
    from harness.results.record import dump
    from harness.run.runner import skipped_record

    stored = store.load_run(Path(__file__).resolve().parents[1] / "data" / "run-xbzrle.json")
    host: Any = _Host(stored.hosts.source.model_dump(mode="json"))
    rec = skipped_record(cell, rep, campaign, "no QEMU", None,
                         QemuBuild(binary=Path("/usr/bin/qemu-system-x86_64")), host, host)
    return dump(rec).decode()


def test_a_returned_record_is_stored_once_and_only_if_it_is_the_run_asked_for(
        tmp_path: Path) -> None:
    from harness.lab.submit import _store, _Submission
    from harness.run.runner import Progress

    spec = _spec()
    cells = expand(spec, "10.0")
    finished: list[tuple[str, int]] = []
    sub = _Submission(spec, tmp_path, Progress(
        run_finished=lambda c, r, rec: finished.append((c.id, r)), note=lambda m: None))
    good = _record_json(cells[0], 1, "t")
    for answer in (None, 42, "{", _record_json(cells[1], 1, "t"), _record_json(cells[0], 2, "t"),
                   _record_json(cells[0], 1, "other"),
                   good.replace('"outcome": "skipped"', '"outcome": "won"')):
        _store(sub, "tid", cells[0], 1, answer)
    assert len(sub.problems) == 7 and not list(tmp_path.glob("*/*.json")) and not finished
    assert "the answer is not a run record" in sub.problems[0]
    assert "record is of another run" in sub.problems[3]
    _store(sub, "tid", cells[0], 1, good)
    _store(sub, "tid", cells[0], 1, good)  # the same run again (two submitters): stored once
    assert [p.name for p in tmp_path.glob("*/*.json")] == ["1.json"]
    assert finished == [(cells[0].id, 1)] and len(sub.written) == 1
    assert (tmp_path / "summary.csv").read_text().count("\n") == 2


def test_a_worker_removes_only_what_an_earlier_worker_of_its_name_left(tmp_path: Path) -> None:
    """A SIGKILLed worker leaves its run folder and saved guests in the hosts' workdir; the next
    worker of that name removes them (real find and rm on this machine) and nothing else: not
    another worker's (even one whose name starts alike), not a local run's, not a name forged
    with a newline."""
    from harness.hosts.host import make_host
    from harness.lab.worker import remove_scratch, scratch_tag
    from harness.plan.models import HostSpec

    work = tmp_path / "work"
    tag, other = scratch_tag("wa"), scratch_tag("wa2")
    assert tag != other and "@" in tag and len(tag) <= 13
    mine = [work / "lab" / f"{tag}0123456789ab-1-1700000000-beef",
            work / "other-matrix" / f"warm-k1-{tag}a1b2c3"]
    kept = [work / "lab" / f"{other}0123456789ab-2-1700000000-cafe",
            work / "lab" / "0123456789ab-1-1700000000-beef",  # the local runner's
            work / "lab" / "warm-k1-a1b2c3", work / "images" / "d1",
            work / "lab" / f"warm-a\n-{tag}x"]  # prints as two lines: neither is removed
    for d in [*mine, *kept]:
        d.mkdir(parents=True)
        (d / "f").write_text("x")
    host = make_host("source", HostSpec.model_validate({"transport": "local",
                                                        "workdir": str(work)}))
    removed = remove_scratch(host, "wa")
    assert sorted(removed) == sorted(str(d) for d in mine)
    assert not any(d.exists() for d in mine) and all(d.exists() for d in kept)
    assert remove_scratch(host, "wa") == []
    assert remove_scratch(make_host("source", HostSpec.model_validate(
        {"transport": "local", "workdir": str(tmp_path / "none")})), "wa") == []
