"""The lab of host pairs for real: redis-server, two `migbench worker` processes on the SSH test
bed, a submitter, a worker and the submitter killed with SIGKILL.

The test bed has two namespace hosts; its two pairs are the two directions between them
(``ab``: mbsrc -> mbdst, ``ba``: mbdst -> mbsrc), each owned by one worker. Both run at once
(separate QEMUs, run folders and migration ports), as two pairs of a lab would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.hosts import testbed
from harness.lab import broker
from harness.lab.caps import WorkerInfo
from harness.lab.commands import status_lines
from harness.lab.worker import scratch_tag
from harness.results import store

from ._testbed import bed_qemus, settled

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MIGBENCH = [sys.executable, "-m", "harness.cli"]
LEASE_S = 10.0
MATRIX = """\
name: lab
repetitions: 2
guest: {vcpus: 1, memory_mib: 256}
limits: {max_time_s: 8, observe_after_s: 0.5}
workload:
  writer: {working_set_mib: 16, rate_mib_s: 4, pattern: sparse}
migration:
  max-bandwidth: 1gbit
axes:
  feature: [precopy, xbzrle]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own: loopback, a free port, its own folder, no persistence."""
    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
        stdout=(folder / "redis.log").open("w"), stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                broker.client(url)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def lab_hosts() -> Iterator[Path]:
    """The SSH test bed with both directions as pairs, and the local pair."""
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root")
    if testbed.leftovers():
        pytest.skip(f"the test bed is in use (another test?): {testbed.leftovers()}")
    scratch_before = _killed_worker_scratch()
    base = Path(tempfile.mkdtemp(prefix="mb-labbed-"))
    hosts = testbed.up(base, rate="1gbit")
    try:
        data: dict[str, Any] = yaml.safe_load(hosts.read_text())
        ab = data["pairs"].pop("testbed")
        local = yaml.safe_load((REPO / "hosts.yaml").read_text())["pairs"]["local"]
        data["pairs"] = {"ab": ab, "ba": {"source": ab["destination"],
                                          "destination": ab["source"]}, "local": local}
        path = base / "lab-hosts.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield path
        assert settled(bed_qemus) == []
    finally:
        testbed.down(base)
        # A SIGKILLed worker cannot remove its run's local tunnel folder (mb-tun-*) or the VM
        # socket folders on the bed's hosts (/tmp/mb-vm.*, this file system): the test kills
        # one on purpose, so what appeared during this module is removed here, or every later
        # test bed module's leftover check would report it.
        for leftover in _killed_worker_scratch() - scratch_before:
            shutil.rmtree(leftover, ignore_errors=True)


def _killed_worker_scratch() -> set[Path]:
    return {*Path(tempfile.gettempdir()).glob("mb-tun-*"), *Path("/tmp").glob("mb-vm.*")}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MIGBENCH_CACHE", str(REPO / "build"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*MIGBENCH, *argv], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**_env(), **env}, cwd=REPO, start_new_session=True)


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """End every process a test started: SIGTERM to each group (a worker stops its run and
    cleans up), SIGKILL after 40 s."""
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _declared(url: str) -> dict[str, WorkerInfo]:
    c = broker.client(url)
    return {w.name: w for w in (WorkerInfo.parse(v, k) for k, v in broker.declarations(c))}


def _wait(what: str, check: Any, timeout: float, procs: list[subprocess.Popen[bytes]],
          logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p, log in zip(procs, logs, strict=True):
            assert p.poll() is None, f"{p.args} exited {p.returncode}: {log.read_text()[-2000:]}"
        time.sleep(0.3)
    tails = "\n".join(f"== {log.name}\n{log.read_text()[-1500:]}" for log in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def _delivered(log: Path, task_id: str) -> int | None:
    """Which delivery of the run ``task_id`` the worker of ``log`` got (its own line)."""
    cell_id, rep = task_id.rsplit("-", 2)[-2:]
    found = re.findall(rf": {cell_id} .* rep {rep} \(delivery (\d+)\)", log.read_text())
    return int(found[-1]) if found else None


def _stored(out: Path) -> dict[tuple[str, int], str | None]:
    if not out.is_dir():
        return {}
    return {(r.cell.id, r.repetition): r.harness.pair if r.harness else None
            for _, r in store.iter_runs(out)}


def test_lab_redelivers_a_killed_workers_run_and_reattaches(
        redis_url: str, lab_hosts: Path, tmp_path: Path) -> None:
    matrix = tmp_path / "lab.yaml"
    matrix.write_text(MATRIX)
    out = tmp_path / "results"
    logs = {n: tmp_path / f"{n}.log" for n in ("wa", "wb", "submit", "attach")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    common = ["--hosts", str(lab_hosts), "--broker", redis_url, "--lease-s", str(LEASE_S)]
    try:
        # One worker after the other: both place the guest image in the same (shared) folder.
        procs["wa"] = _start(["worker", *common, "--pair", "ab", "--name", "wa"], logs["wa"])
        _wait("worker wa", lambda: "wa" in _declared(redis_url), 90, [procs["wa"]], [logs["wa"]])
        procs["wb"] = _start(["worker", *common, "--pair", "ba", "--name", "wb"], logs["wb"])
        workers = [procs["wa"], procs["wb"]]
        wlogs = [logs["wa"], logs["wb"]]
        declared = _wait("worker wb", lambda: len(_declared(redis_url)) == 2 and
                         _declared(redis_url), 90, workers, wlogs)
        assert declared["wa"].queue == declared["wb"].queue  # same capabilities: one queue
        status = subprocess.run([*MIGBENCH, "lab", "status", "--broker", redis_url],
                                capture_output=True, text=True, env=_env(), cwd=REPO, timeout=30)
        assert status.returncode == 0, status.stderr
        assert "wa: pair ab" in status.stdout and "wb: pair ba" in status.stdout
        assert f"queue {declared['wa'].queue}: 0 waiting, 2 workers" in status.stdout
        twin = subprocess.run([*MIGBENCH, "worker", *common, "--pair", "ba", "--name", "wa"],
                              capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)
        assert twin.returncode == 1 and "a worker named wa is live" in twin.stderr, twin.stderr
        other = subprocess.run([*MIGBENCH, "worker", *common[:-1], "30", "--pair", "ba",
                                "--name", "wc"],
                               capture_output=True, text=True, env=_env(), cwd=REPO, timeout=60)
        assert other.returncode == 1 and "use the same lease" in other.stderr, other.stderr

        procs["submit"] = _start(["run", str(matrix), "--hosts", str(lab_hosts), "--out",
                                  str(out), "--engine", f"celery://{redis_url}"],
                                 logs["submit"])
        everyone = [*workers, procs["submit"]]
        alogs = [*wlogs, logs["submit"]]

        # wa stores a run, then is killed in the middle of its next one.
        def wa_busy_again() -> str | None:
            if "ab" not in _stored(out).values():
                return None
            cur = _declared(redis_url).get("wa")
            if cur is None or cur.current is None:
                return None
            if (cur.current.cell_id, cur.current.repetition) in _stored(out):
                return None
            return cur.current.task_id if time.time() - cur.current.started > 2 else None

        lost = _wait("wa in its second run", wa_busy_again, 150, everyone, alogs)
        os.killpg(procs["wa"].pid, signal.SIGKILL)
        lines = status_lines(redis_url)  # wa is declared until its declaration expires
        running = [ln for ln in lines if ln.strip().startswith("running ")]
        assert running and any(lost.rsplit("-", 2)[-2] in ln for ln in running), lines
        assert any(ln.startswith("runs in flight: ") for ln in lines), lines
        procs["wa"].wait(10)
        # The submitter goes too; the lab goes on without it.
        os.killpg(procs["submit"].pid, signal.SIGKILL)
        procs["submit"].wait(10)
        done_before = len(_stored(out))
        assert done_before < 4

        c = broker.client(redis_url)
        assert c.exists(broker.worker_key("wa")) == 1  # until its declaration expires
        # no hosts file: --attach plans from the broker (one named but missing would fail)
        procs["attach"] = _start(["run", str(matrix), "--out", str(out),
                                  "--engine", f"celery://{redis_url}", "--attach"],
                                 logs["attach"], MIGBENCH_HOSTS=str(tmp_path / "none.yaml"))
        code = procs["attach"].wait(240)
        text = logs["attach"].read_text()
        assert code == 0, text[-3000:]
        assert f"resuming: {done_before} of 4 runs already finished" in text

        stored = _stored(out)
        files = sorted(out.glob("*/*.json"))
        assert len(files) == 4 and len(stored) == 4  # every cell x repetition, once
        assert set(stored.values()) == {"ab", "ba"}  # both pairs ran runs
        cell_id, rep = lost.rsplit("-", 2)[-2], int(lost.rsplit("-", 1)[-1])
        assert stored[(cell_id, rep)] == "ba"  # the killed run, completed on the other pair
        assert _delivered(logs["wb"], lost) == 2
        assert c.exists(broker.deliveries_key(lost), f"celery-task-meta-{lost}") == 0  # stored:
        # its answer and counters left the broker
        runs = [r for _, r in store.iter_runs(out)]
        assert all(r.outcome == "completed" and r.integrity.verdict == "ok" for r in runs), \
            [(r.outcome, r.error) for r in runs]
        rows = (out / "summary.csv").read_text().strip().splitlines()
        assert len(rows) == 5
        # the dead worker's declaration expires (it is renewed by a live worker only)
        _wait("wa's declaration to expire", lambda: "wa" not in _declared(redis_url),
              broker.DECLARATION_TTL_S + 5, [procs["wb"]], [logs["wb"]])
    finally:
        _stop(procs)
    assert settled(bed_qemus, timeout=10) == []


def test_lab_stopped_worker_requeues_and_a_run_lost_too_often_is_failed(
        redis_url: str, tmp_path: Path) -> None:
    """On the local pair: a worker stopped with SIGTERM hands its run back at once (not counted
    as a loss); a worker killed with SIGKILL loses it, and leaves its run folder; the next worker
    of its name removes that folder at start; it declares other capabilities (no 7.2 build), so
    it listens on another queue and takes the run over from the dead worker's; with
    --redeliveries 0 it records it failed, naming the lost worker."""
    matrix = tmp_path / "one.yaml"
    matrix.write_text(MATRIX.replace("repetitions: 2", "repetitions: 1")
                      .replace("[precopy, xbzrle]", "[precopy, compress]")
                      .replace("name: lab", "name: one"))
    out = tmp_path / "results"
    hosts = REPO / "hosts.yaml"
    logs = {n: tmp_path / f"{n}.log" for n in ("w1", "w2", "w3", "submit")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    common = ["--hosts", str(hosts), "--pair", "local", "--broker", redis_url, "--lease-s", "10"]
    c = broker.client(redis_url)

    def running(name: str) -> str | None:
        w = _declared(redis_url).get(name)
        if w is None or w.current is None or time.time() - w.current.started < 2:
            return None
        return w.current.task_id

    try:
        procs["w1"] = _start(["worker", *common, "--name", "w1"], logs["w1"])
        _wait("worker w1", lambda: "w1" in _declared(redis_url), 90, [procs["w1"]], [logs["w1"]])
        procs["submit"] = _start(["run", str(matrix), "--hosts", str(hosts), "--out", str(out),
                                  "--broker", redis_url, "--redeliveries", "0"], logs["submit"])
        tid = _wait("w1 running", lambda: running("w1"), 90, [procs["w1"], procs["submit"]],
                    [logs["w1"], logs["submit"]])
        os.killpg(procs["w1"].pid, signal.SIGTERM)
        assert procs["w1"].wait(60) == 0, logs["w1"].read_text()[-2000:]
        assert int(c.get(broker.deliveries_key(tid))) == 0  # a stop is not a loss
        assert c.exists(broker.worker_key("w1")) == 0  # it left the lab
        assert not (out / "summary.csv").exists()  # nothing stored for the stopped run

        procs["w2"] = _start(["worker", *common, "--name", "w2"], logs["w2"])
        _wait("w2 running the run w1 handed back", lambda: running("w2") == tid, 90,
              [procs["w2"], procs["submit"]], [logs["w2"], logs["submit"]])
        os.killpg(procs["w2"].pid, signal.SIGKILL)
        procs["w2"].wait(10)

        # its run folder, or (killed while it saved its guest for warm starts) that guest's
        one, tag = Path("/tmp/migbench/one"), scratch_tag("w2")
        scratch = [*one.glob(f"{tag}{tid.split('-')[-2]}-*"), *one.glob(f"warm-*-{tag}*")]
        assert scratch, "the killed worker's scratch"
        # Another kind of worker (10.0 only: another queue) of the same name, once the dead
        # one's declaration expired: it cleans up after it and takes its run over.
        only_10 = yaml.safe_load(hosts.read_text())
        del only_10["qemu_builds"]["7.2"]
        for key, value in only_10["qemu_builds"]["10.0"].items():
            only_10["qemu_builds"]["10.0"][key] = ([str(REPO / v) for v in value]
                                                   if isinstance(value, list) else str(REPO / value))
        (tmp_path / "hosts-10.yaml").write_text(yaml.safe_dump(only_10))
        _wait("w2's declaration to expire", lambda: "w2" not in _declared(redis_url),
              broker.DECLARATION_TTL_S + 5, [procs["submit"]], [logs["submit"]])
        procs["w3"] = _start(["worker", "--hosts", str(tmp_path / "hosts-10.yaml"),
                              *common[2:], "--name", "w2"], logs["w3"])
        code = procs["submit"].wait(120)
        text = logs["submit"].read_text()
        # QEMU 10.0 has no legacy compress: no worker can run that cell; reported, not stored
        assert code == 1, text[-3000:]
        assert "no worker can run it (w1: QEMU 10.0.2 has no migration capability 'compress'" \
            in text.replace("\n", " "), text[-3000:]
        runs = [r for _, r in store.iter_runs(out)]
        assert len(runs) == 1 and runs[0].outcome == "failed"
        assert runs[0].harness is not None and runs[0].harness.pair == "local"
        error = runs[0].error or ""
        assert "lost once: " in error and "w2 (pair local)" in error
        assert "w1 (pair local)" not in error  # a stop is not a loss
        assert _delivered(logs["w2"], tid) == 1 and _delivered(logs["w3"], tid) == 2
        w3 = logs["w3"].read_text()
        assert f"removed {len(scratch)} folders an earlier worker named w2 left" in w3, w3[-2000:]
        assert not any(d.exists() for d in scratch)
        assert re.search(r"w2: took over \w+ .* from migbench\.caps\.\w+, which no live", w3), \
            w3[-2000:]
    finally:
        _stop(procs)


def test_lab_a_pair_failing_mid_run_hands_the_run_to_another_pair(
        redis_url: str, lab_hosts: Path, tmp_path: Path) -> None:
    """The destination's sshd dies during wa's run on the test bed: the run is not stored as a
    failure, it goes back to the queue, wa stops, and wl completes it on the local pair."""
    matrix = tmp_path / "slow.yaml"
    matrix.write_text(MATRIX.replace("repetitions: 2", "repetitions: 1")
                      .replace("[precopy, xbzrle]", "[precopy]").replace("name: lab", "name: slow")
                      .replace("max_time_s: 8", "max_time_s: 30")
                      .replace("rate_mib_s: 4", "rate_mib_s: 1")
                      .replace("max-bandwidth: 1gbit", "max-bandwidth: 80mbit"))
    out = tmp_path / "results"
    logs = {n: tmp_path / f"{n}.log" for n in ("wa", "wl", "submit")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    common = ["--hosts", str(lab_hosts), "--broker", redis_url, "--lease-s", str(LEASE_S)]
    base = lab_hosts.parent
    try:
        procs["wa"] = _start(["worker", *common, "--pair", "ab", "--name", "wa2"], logs["wa"])
        _wait("worker wa2", lambda: "wa2" in _declared(redis_url), 90, [procs["wa"]],
              [logs["wa"]])
        procs["submit"] = _start(["run", str(matrix), "--hosts", str(lab_hosts), "--out",
                                  str(out), "--broker", redis_url], logs["submit"])

        def running() -> str | None:
            w = _declared(redis_url).get("wa2")
            if w is None or w.current is None or time.time() - w.current.started < 3:
                return None
            return w.current.task_id

        tid = _wait("wa2 running", running, 90, [procs["wa"], procs["submit"]],
                    [logs["wa"], logs["submit"]])
        procs["wl"] = _start(["worker", *common, "--pair", "local", "--name", "wl"], logs["wl"])
        _wait("worker wl", lambda: "wl" in _declared(redis_url), 90, [procs["wl"]], [logs["wl"]])
        assert testbed.kill_sshd("destination")
        try:
            assert procs["wa"].wait(90) == 1
        finally:
            testbed.start_sshd(base, "destination")
        assert "pair ab failed during a run" in logs["wa"].read_text()
        code = procs["submit"].wait(120)
        assert code == 0, logs["submit"].read_text()[-3000:]
        runs = [r for _, r in store.iter_runs(out)]
        assert len(runs) == 1 and runs[0].outcome == "completed", [r.error for r in runs]
        assert runs[0].harness is not None and runs[0].harness.pair == "local"
        assert _delivered(logs["wa"], tid) == 1 and _delivered(logs["wl"], tid) == 2
    finally:
        _stop(procs)
    assert settled(bed_qemus, timeout=10) == []


def test_an_idle_worker_takes_over_only_runs_it_can_run_from_queues_nobody_consumes(
        redis_url: str) -> None:
    """Real broker, real Celery messages, the local pair's real declaration: a run it can run
    waiting on a queue no live worker consumes moves to its own queue (routing key and all); a
    run it cannot run (compress on 10.0) stays; a live worker's queue is left alone; one run at
    a time."""
    from harness.lab.job import Job
    from harness.lab.worker import LabWorker
    from harness.plan.config import load_hosts
    from harness.plan.matrix import expand
    from harness.plan.models import MatrixSpec

    hosts = load_hosts(REPO / "hosts.yaml")
    w = LabWorker(redis_url, REPO / "hosts.yaml", hosts, "local", "adopter", LEASE_S,
                  say=lambda _m: None)
    c = w.redis = broker.client(redis_url)
    app = broker.make_app(redis_url)
    try:
        w.info = w.declare_capabilities()
        spec = MatrixSpec.model_validate(yaml.safe_load(
            MATRIX.replace("[precopy, xbzrle]", "[precopy, compress]")))
        cells = {c.label.rsplit("=", 1)[-1]: c for c in expand(spec, hosts.default_build)}
        orphan, busy = "migbench.caps.000000000000", "migbench.caps.111111111111"
        other = w.info.model_copy(update={"name": "other", "queue": busy})
        c.set(broker.worker_key("other"), other.model_dump_json(), ex=60)
        sent = {}
        for feature, queue in (("compress", orphan), ("precopy", orphan), ("precopy", busy)):
            job = Job(spec=spec, default_build=hosts.default_build,
                      cell_id=cells[feature].id, repetition=1, matrix_file="m.yaml",
                      redeliveries=0)
            tid = f"mb-adopt-{feature}-{queue[-1]}"
            app.send_task(broker.TASK_NAME, args=[job.payload()], task_id=tid, queue=queue)
            sent[(feature, queue)] = tid
        assert w.adopt() == sent[("precopy", orphan)]
        moved = json.loads(c.lrange(w.info.queue, 0, -1)[0])
        assert moved["headers"]["id"] == sent[("precopy", orphan)]
        assert moved["properties"]["delivery_info"]["routing_key"] == w.info.queue
        assert [json.loads(m)["headers"]["id"] for m in c.lrange(orphan, 0, -1)] == [
            sent[("compress", orphan)]]
        assert c.llen(busy) == 1
        assert w.adopt() is None  # its own queue holds one already
        c.delete(w.info.queue)
        assert w.adopt() is None  # nothing else it can run on a queue nobody consumes
    finally:
        c.delete(broker.worker_key("other"), "migbench.caps.000000000000",
                 "migbench.caps.111111111111")
        if w.info is not None:
            c.delete(w.info.queue)
        for pw in w.pairs.values():
            pw.close()


DEBIAN_MATRIX = """\
name: lab-debian
repetitions: 1
guest: {image: debian, vcpus: 1, memory_mib: 512}
limits: {max_time_s: 30, observe_after_s: 1}
workload:
  redis: {clients: 2, rate_ops: 200, keys: 500, value_bytes: 64, ratio: "1:4"}
migration:
  max-bandwidth: 1gbit
"""


def test_a_lab_worker_runs_a_debian_guest_with_redis(redis_url: str, lab_hosts: Path,
                                                      tmp_path: Path) -> None:
    """Issue 17's real guest in the lab: the worker readies the image with the Debian guest
    (built here when missing, as a local run does) and runs a redis cell on the local pair; the
    record carries the service's figures and its dataset check."""
    matrix = tmp_path / "debian.yaml"
    matrix.write_text(DEBIAN_MATRIX)
    out = tmp_path / "results"
    logs = {n: tmp_path / f"{n}.log" for n in ("wd", "submit")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["wd"] = _start(["worker", "--hosts", str(lab_hosts), "--broker", redis_url,
                              "--pair", "local", "--name", "wd"], logs["wd"])
        _wait("worker wd", lambda: "wd" in _declared(redis_url), 90, [procs["wd"]],
              [logs["wd"]])
        procs["submit"] = _start(["run", str(matrix), "--hosts", str(lab_hosts), "--out",
                                  str(out), "--broker", redis_url], logs["submit"])
        code = procs["submit"].wait(600)  # the Debian image may be built first (about 1 min)
        assert code == 0, logs["submit"].read_text()[-3000:] + logs["wd"].read_text()[-3000:]
        runs = [r for _, r in store.iter_runs(out)]
        assert len(runs) == 1, [r.error for r in runs]
        r = runs[0]
        assert r.outcome == "completed" and r.integrity.verdict == "ok", (r.error, r.integrity)
        assert r.harness is not None and r.harness.pair == "local"
        assert r.cell.guest.image == "debian" and r.image is not None and r.image.debian_disk
        svc = r.guest_impact.service
        assert svc is not None and svc.kind == "redis" and svc.total.completed > 0
        assert svc.dataset is not None and svc.dataset.verdict == "ok" and svc.dataset.keys > 0
    finally:
        _stop(procs)
