"""``migbench worker``: one Celery worker that owns one host pair and runs one run at a time.

At start the worker readies its pair as the local runner does (guest image on the hosts, each
host's accelerator), probes every QEMU build both hosts have, and declares what it can run
(:class:`~harness.lab.caps.WorkerInfo`, renewed every few seconds, expiring when the worker
dies). It then consumes its capability queue with a prefetch of one and late acknowledgement.

Each run goes through the local runner's per-run function (:meth:`_PairWorker.run_one`), and
comes back to the submitter as the record's canonical JSON (the run file's bytes). While a
run goes on, the worker renews its lease on the message; if the worker dies the lease runs out
and the broker hands the run to another worker of the same queue, or, when none is left there,
an idle worker of another kind that can run it takes it over (:meth:`LabWorker.adopt`). Each
delivery is counted
on the broker: past ``1 + redeliveries`` deliveries the run is recorded ``failed`` with the
workers it was lost with. After a ``failed`` run the worker checks its pair: if a host no longer
answers, the run is not a result about the cell: it goes back to the queue for another pair,
and this worker stops (its pair is out of the lab until someone starts it again). A worker
names its run folders and saved guests on the hosts with its own tag (:func:`scratch_tag`) and
at start removes what a killed worker of its name left there.

Celery's thread pool with one thread: the task runs in this process (so a killed worker takes
its SSH sessions, and with them its remote QEMUs, along), while the main thread keeps talking
to the broker (lease sweeps, shutdown).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from harness import locations
from harness.errors import HarnessError, HostError
from harness.guest.image import GuestImage, ensure_image
from harness.hosts.host import Host
from harness.hosts.probe import probe
from harness.lab import broker
from harness.lab.caps import QUEUE_PREFIX, BuildCaps, Current, WorkerInfo, signature
from harness.lab.caps import reason as cannot_run
from harness.lab.job import Cells, Job
from harness.output import terminal_text
from harness.plan.models import HostsConfig, MatrixSpec
from harness.results.record import dump
from harness.results.record.model import HarnessInfo, RunRecord
from harness.results.record.scalars import utc
from harness.run.cancel import Cancelled, Stop
from harness.run.runner import Progress, _Campaign, _PairWorker, skipped_record

log = logging.getLogger("migbench.lab")


def scratch_tag(name: str) -> str:
    """What starts the names of the worker ``name``'s scratch folders on its hosts (run folders
    ``<workdir>/<campaign>/<tag><run>``, saved guests ``warm-<key>-<tag>...``): short (a local
    VM's sockets live in its run folder, and a socket path has at most 107 bytes) and with no
    character a worker name has, so that no other name's folders match."""
    return f"lab@{hashlib.sha256(name.encode()).hexdigest()[:8]}@"


def remove_scratch(host: Host, name: str) -> list[str]:
    """Remove the worker ``name``'s scratch folders from ``host``'s workdir; their paths.

    :raise HarnessError: the host cannot be reached or the folders cannot be listed.
    """
    tag = scratch_tag(name)
    found = host.run(["find", str(host.spec.workdir), "-mindepth", "2", "-maxdepth", "2",
                      "-type", "d", "(", "-name", f"{tag}*", "-o", "-name", f"warm-*-{tag}*",
                      ")", "-prune", "-print"], timeout=60, check=False)
    root = host.spec.workdir
    # a name with a newline in it could fake another line: only our own pattern is removed
    paths = [Path(line) for line in found.splitlines()
             if Path(line).parent.parent == root and ".." not in Path(line).parts
             and (Path(line).name.startswith(tag) or (Path(line).name.startswith("warm-")
                                                       and f"-{tag}" in Path(line).name))]
    for path in paths:
        host.remove_tree(path)
    return [str(x) for x in paths]


class LabWorker:
    """The process's one worker: its pair, its declaration, its Celery worker."""

    def __init__(self, url: str, hosts_path: Path, hosts: HostsConfig, pair: str, name: str,
                 lease_s: float, say: Any = print) -> None:
        self.url = url
        self.hosts_path = hosts_path
        self.hosts = hosts
        self.pair_name = pair
        self.name = name
        self.lease_s = lease_s
        self.say = say
        self.redis: Any = None
        # by what the guest image holds: (fio, the Debian guest) -- one image per kind
        self.pairs: dict[tuple[bool, bool], _PairWorker] = {}
        self.cells = Cells()
        self.adoptable = Cells()  # the heartbeat's, for runs left on other queues (adopt)
        self.info: WorkerInfo | None = None
        self.current: Current | None = None
        self.done = 0
        self.stop = threading.Event()  # the worker is shutting down
        self.run_stop: Stop | None = None  # the run in progress's stop
        self.tags: dict[str, str] = {}  # task id -> delivery tag (for its lease)
        self.lock = threading.Lock()
        self.pair_failure: str | None = None
        self.app: Any = None

    # -- start ------------------------------------------------------------------------------

    def _campaign(self, spec: MatrixSpec, image: GuestImage, matrix_file: str) -> _Campaign:
        """What the local runner's pair worker reads of its campaign, for one run here."""
        progress = Progress(note=lambda m: self.say(f"{self.name}: {m}"), state=self._step)
        scratch = Path(tempfile.gettempdir())  # never written: the submitter stores the records
        return _Campaign(Path(matrix_file), spec, self.hosts, scratch, progress, image, [])

    def pair(self, fio: bool, debian: bool = False) -> _PairWorker:
        """The pair readied for the guest image with (or without) fio and the Debian guest (issue
        17), set up on first use: the image is built here when missing, as a local run does.

        :raise HarnessError: the image cannot be built or the pair cannot take it.
        """
        key = (fio, debian)
        if key not in self.pairs:
            image = ensure_image(locations.image_cache(), fio=fio, debian=debian)
            camp = self._campaign(MatrixSpec.model_validate({"name": "lab"}), image, "")
            pw = _PairWorker(self.pair_name, self.hosts.pairs[self.pair_name], camp)
            # this worker's runs and saved guests are named by it (clean_scratch)
            pw.scratch_tag = scratch_tag(self.name)
            pw.warm.tag = scratch_tag(self.name) + pw.warm.tag
            try:
                pw.setup()
            except BaseException:
                pw.close()
                raise
            self.pairs[key] = pw
        return self.pairs[key]

    def declare_capabilities(self) -> WorkerInfo:
        """Probe the pair's builds and build the declaration.

        :raise HarnessError: the pair cannot be used.
        """
        pw = self.pair(False)
        spec = self.hosts.pairs[self.pair_name]
        builds = {}
        for build in sorted(set(self.hosts.qemu_builds) | set(spec.source.qemu)
                            | set(spec.destination.qemu)):
            src_b = self.hosts.build_for(spec.source, build)
            dst_b = self.hosts.build_for(spec.destination, build)
            if src_b is None or dst_b is None:
                continue
            try:
                builds[build] = BuildCaps(
                    source=probe(src_b, locations.probe_cache(), host=pw.source),
                    destination=probe(dst_b, locations.probe_cache(), host=pw.destination))
            except HarnessError as exc:
                self.say(terminal_text(f"{self.name}: QEMU build {build} left out: {exc}"))
        if not builds:
            raise HostError(f"pair {self.pair_name}: no QEMU build answers on both hosts")
        accel = pw.accel
        queue = signature(spec, accel["source"], accel["destination"], builds)
        now = time.time()
        return WorkerInfo(name=self.name, pair=self.pair_name, machine=socket.gethostname(),
                          pid=os.getpid(), hosts=spec, source_accel=accel["source"],
                          destination_accel=accel["destination"], builds=builds, queue=queue,
                          started=now, heartbeat=now, lease_s=self.lease_s)

    def clean_scratch(self) -> int:
        """Remove what an earlier worker of this name left on the pair's hosts (a killed worker
        cannot remove its run's folders or its saved guests); the folders removed. Run after
        :meth:`_check_lab`: no live worker has this name, so none of them is in use."""
        pw = self.pair(False)
        removed = 0
        seen: set[tuple[str, Path]] = set()
        for host in (pw.source, pw.destination):
            key = (host.identity, host.spec.workdir)
            if key in seen:
                continue
            seen.add(key)
            try:
                removed += len(remove_scratch(host, self.name))
            except HarnessError as exc:
                self.say(terminal_text(f"{self.name}: stale scratch{host.where} left: {exc}"))
        if removed:
            self.say(f"{self.name}: removed {removed} folders an earlier worker named "
                     f"{self.name} left on the pair's hosts")
        return removed

    def _check_lab(self) -> None:
        """:raise HostError: a live worker already has this name (it would share its key), or
            another lease (the shorter one would take the longer one's runs while they run)."""
        key = broker.worker_key(self.name)
        for other_key, value in broker.declarations(self.redis):
            try:
                info = WorkerInfo.parse(value, other_key)
            except HarnessError:
                if other_key == key:
                    raise HostError(f"a worker named {self.name} is live (its declaration does "
                                    "not validate): give this one another --name") from None
                continue
            if other_key == key:
                raise HostError(f"a worker named {self.name} is live on {info.machine} (pid "
                                f"{info.pid}, pair {info.pair}): give this one another --name, "
                                f"or wait {broker.DECLARATION_TTL_S} s if that worker died")
            if info.lease_s != self.lease_s:
                raise HostError(f"--lease-s {self.lease_s:g}: the lab's workers use "
                                f"{info.lease_s:g} (worker {info.name}); use the same lease")

    def publish(self) -> None:
        assert self.info is not None
        info = self.info.model_copy(update={"heartbeat": time.time(), "done": self.done,
                                            "current": self.current})
        self.redis.set(broker.worker_key(self.name), info.model_dump_json(),
                       ex=broker.DECLARATION_TTL_S)

    def _heartbeat(self) -> None:
        """Renew the declaration and the lease of the run in progress until the worker stops;
        when idle, take over a run left on a queue no live worker consumes."""
        every = min(broker.HEARTBEAT_S, self.lease_s / 4)
        while not self.stop.wait(every):
            with contextlib.suppress(Exception):  # the broker is away: Celery reconnects, so do we
                self.publish()
                cur = self.current
                tag = self.tags.get(cur.task_id) if cur else None
                if tag is not None:
                    broker.renew_lease(self.redis, tag)
                if cur is None:
                    self.adopt()

    def adopt(self) -> str | None:
        """Move one run this worker can run from a queue that no live worker consumes to its
        own queue; its task id, or None.

        Workers of other capabilities listen on other queues: a run whose worker died comes back
        (when its lease runs out) to the queue of that worker's kind, where nobody may be left to
        take it. Its deliveries are counted by task id, so the redelivery limit holds across
        queues. Only an idle worker whose own queue is empty takes one, one at a time.
        """
        assert self.info is not None
        own = self.info.queue
        if broker.queue_depth(self.redis, own):
            return None
        live = set()
        for key, value in broker.declarations(self.redis):
            with contextlib.suppress(HarnessError):
                live.add(WorkerInfo.parse(value, key).queue)
        for q in sorted(k.decode(errors="replace") for k in
                        self.redis.scan_iter(match=f"{QUEUE_PREFIX}*", count=500)):
            if q == own or q in live or self.redis.type(q) != b"list":
                continue
            for raw, task_id, payload in broker.waiting_runs(self.redis, q):
                try:
                    cell = self.adoptable.find(Job.parse(payload))
                except HarnessError:
                    continue
                if cannot_run(cell, self.info):
                    continue
                if broker.move_run(self.redis, raw, q, own):
                    self.say(terminal_text(f"{self.name}: took over {cell.id} {cell.label} "
                                           f"from {q}, which no live worker consumes"))
                    return task_id
        return None

    # -- one run ----------------------------------------------------------------------------

    def execute(self, task_id: str, payload: Any) -> str:
        """Run one job; its record's canonical JSON.

        :raise HarnessError: the payload is not a job of a matrix this worker can plan.
        :raise celery.exceptions.Reject: the run must go to another worker (this one stops, or
            its pair failed).
        """
        from celery.exceptions import Reject

        job = Job.parse(payload)
        cell = self.cells.find(job)
        rep = job.repetition
        pw = self.pair(cell.workload.fio is not None, cell.guest.image == "debian")
        delivery = int(self.redis.incr(broker.deliveries_key(task_id)))
        self.redis.expire(broker.deliveries_key(task_id), broker.RESULT_TTL_S)
        self.redis.rpush(broker.attempts_key(task_id),
                         f"{self.name} (pair {self.pair_name}) at {utc(time.time())}")
        self.redis.expire(broker.attempts_key(task_id), broker.RESULT_TTL_S)
        camp = self._campaign(job.spec, pw.camp.image, job.matrix_file)
        pw.camp = camp  # the spec, the stop and the notes of this run
        self.run_stop = camp.interrupted
        if self.stop.is_set():
            camp.interrupt()
        self.current = Current(task_id=task_id, cell_id=cell.id, repetition=rep,
                               label=cell.label[:300], started=time.time(), delivery=delivery)
        with contextlib.suppress(Exception):
            self.publish()
        self.say(terminal_text(f"{self.name}: {cell.id} {cell.label} rep {rep} "
                               f"(delivery {delivery})"))
        try:
            if delivery > 1 + job.redeliveries:
                record = self._lost_too_often(job, cell, rep, pw, task_id, delivery)
            else:
                record = pw.run_one(cell, rep)
        except Cancelled:
            if not camp.interrupted.is_set():
                raise
            record = None  # the worker is stopping (below)
        finally:
            self.current = None
            self.run_stop = None
        if camp.interrupted.is_set():
            # not a loss: a stopped worker's run does not count against its redeliveries
            self.redis.decr(broker.deliveries_key(task_id))
            self.redis.rpop(broker.attempts_key(task_id))
            self.say(f"{self.name}: stopped: {cell.id} rep {rep} goes back to the queue")
            raise Reject("the worker is stopping: the run goes back to the queue", requeue=True)
        assert record is not None
        if record.outcome == "failed" and not self._pair_answers(pw):
            self.pair_failure = f"pair {self.pair_name} failed during a run: {record.error}"
            self.say(terminal_text(f"{self.name}: {self.pair_failure}; the run goes back to the "
                                   "queue and this worker stops"))
            os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown, after this task
            raise Reject(self.pair_failure, requeue=True)
        self.done += 1
        record = record.model_copy(update={"harness": HarnessInfo(
            commit=camp.commit, matrix_file=job.matrix_file, pair=self.pair_name)})
        return dump(record).decode()

    def _step(self, name: str) -> None:
        """Tell the submitter the run's step (boot, migrate ...) for its progress bar."""
        cur, app = self.current, self.app
        if cur is None or app is None:
            return
        with contextlib.suppress(Exception):  # progress only: the run goes on without it
            app.backend.store_result(cur.task_id, {"step": name[:40], "pair": self.pair_name},
                                     "STARTED")

    def _lost_too_often(self, job: Job, cell: Any, rep: int, pw: _PairWorker, task_id: str,
                        delivery: int) -> RunRecord:
        attempts = [a.decode(errors="replace") for a in
                    self.redis.lrange(broker.attempts_key(task_id), 0, -1)]
        lost = "once" if delivery == 2 else f"{delivery - 1} times"
        reason = (f"lost {lost}: the worker running it died or its pair failed "
                  f"before it finished ({'; '.join(attempts[:-1])[:600]}); at most "
                  f"{job.redeliveries} redeliveries")
        build = self.hosts.build_for(pw.pair.source, cell.build)
        assert build is not None
        return skipped_record(cell, rep, job.spec.name, reason, None, build, pw.source,
                              pw.destination, outcome="failed")

    def _pair_answers(self, pw: _PairWorker) -> bool:
        for host in (pw.source, pw.destination):
            try:
                host.run(["true"], timeout=20)
            except HarnessError:
                return False
        return True

    # -- the Celery worker --------------------------------------------------------------------

    def serve(self) -> int:
        """Declare, consume until stopped; the exit status.

        :raise HarnessError: the broker or the pair cannot be used.
        """
        from celery import signals
        from celery.exceptions import SecurityWarning

        # QEMU, namespaces and the hosts' tools need root; the tasks take JSON only, never
        # pickle, which is what Celery's warning about root is for
        warnings.filterwarnings("ignore", category=SecurityWarning)
        # a run handed back (Reject) is said in one line here, not as Celery's traceback
        logging.getLogger("celery.app.trace").setLevel(logging.ERROR)
        self.redis = broker.client(self.url)
        self._check_lab()
        self.info = self.declare_capabilities()
        self.clean_scratch()
        app = self.app = broker.make_app(self.url, self.lease_s)

        @app.task(name=broker.TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
        def run(task: Any, payload: Any) -> str:
            return self.execute(str(task.request.id), payload)

        def received(sender: Any = None, request: Any = None, **_: Any) -> None:
            if request is not None and request.message is not None:
                self.tags[str(request.id)] = str(request.message.delivery_tag)

        def shutting_down(**_: Any) -> None:
            self.stop.set()
            if self.run_stop is not None:
                self.run_stop.set()  # the run tears down now; it goes back to the queue

        signals.task_received.connect(received, weak=False)
        signals.worker_shutting_down.connect(shutting_down, weak=False)
        self.publish()
        beat = threading.Thread(target=self._heartbeat, name="lab-heartbeat", daemon=True)
        beat.start()
        caps = ", ".join(f"{b} (QEMU {c.source.version})" for b, c in self.info.builds.items())
        self.say(terminal_text(f"worker {self.name}: pair {self.pair_name}, builds {caps}, "
                               f"accel {self.info.source_accel}/{self.info.destination_accel}, "
                               f"queue {self.info.queue}, broker {broker.shown(self.url)}"))
        try:
            w = app.Worker(hostname=f"{self.name}@{socket.gethostname()}",
                           queues=[self.info.queue], pool="threads", concurrency=1,
                           prefetch_multiplier=1, without_gossip=True, without_mingle=True,
                           without_heartbeat=True, loglevel="WARNING", quiet=True)
            w.start()
            code = int(w.exitcode or 0)
        finally:
            self.stop.set()
            beat.join(timeout=5)
            with contextlib.suppress(Exception):
                self.redis.delete(broker.worker_key(self.name))
            for pw in self.pairs.values():
                pw.close()
        if self.pair_failure:
            raise HostError(self.pair_failure)
        return code

