"""Runs a matrix: every cell x repetition on the host pairs, fresh VMs each time, resumable.

Runs are spread over the pairs of the hosts file, one worker thread per pair (each pair runs one
migration at a time); a pair that fails its preflight is reported and skipped.

A failed run is a recorded outcome and the matrix goes on. Finished runs are on disk as soon as
they finish; rerunning the same matrix into the same folder skips them. SIGTERM is turned into
KeyboardInterrupt so that Ctrl-C and a polite kill both clean up the same way: the runs in
progress on every pair are torn down and not saved (a resume runs them again).

The pair workers always run in threads, and the main thread only waits for them: a signal
lands there, which sets the campaign's :class:`~harness.run.cancel.Stop`; each worker wakes at
its next wait and tears its run down (cooperative: nothing is raised inside another thread).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness import locations
from harness.analysis.diagnosis import summary_columns
from harness.analysis.overhead import phases
from harness.analysis.stopping import Decision, RunFigures
from harness.errors import ConfigError, HarnessError, HostError, StoreError
from harness.guest.image import GuestImage, ensure_image
from harness.hosts.host import Host, make_host
from harness.hosts.netsetup import private_network
from harness.hosts.placement import place_image
from harness.hosts.probe import Probe, probe, unsupported_reason
from harness.output import terminal_text
from harness.plan.config import plan
from harness.plan.matrix import Cell, coordinate_key
from harness.plan.models import HostPair, HostsConfig, MatrixSpec, QemuBuild
from harness.plan.repetitions import Repetitions
from harness.results import store
from harness.results.record.model import (
    SCHEMA_VERSION,
    CellRecord,
    HarnessInfo,
    HostFacts,
    Integrity,
    Metrics,
    Outcome,
    PerSide,
    QemuInfo,
    RepetitionRule,
    RunRecord,
)
from harness.results.record.scalars import utc
from harness.run import workload as wl
from harness.run.cancel import Stop
from harness.run.migration import RunContext, run_migration
from harness.run.schedule import AdaptiveSchedule
from harness.run.warm import WarmStarts

INTERRUPT_TEARDOWN_S = 30.0  # after Ctrl-C, how long the pairs' runs get to tear down
log = logging.getLogger("migbench")


def harness_commit() -> str:
    """The git commit of a source checkout (``-dirty`` when changed), else the installed version."""
    repo = locations.source_checkout()
    if repo is None:
        return f"migbench {locations.version()}"
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (commit + ("-dirty" if dirty else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Progress:
    """Callbacks the CLI uses to draw progress; all optional."""

    start: Callable[[int, int], None] | None = None  # total runs, already done
    run_started: Callable[[Cell, int], None] | None = None
    state: Callable[[str], None] | None = None
    run_finished: Callable[[Cell, int, RunRecord], None] | None = None
    note: Callable[[str], None] | None = None  # a pair skipped, an image uploaded ...
    # repetitions {min, max, ci}: (runs done, fewest and most the campaign can end with), at the
    # start and after each run; and each cell's decision as it stops
    planned: Callable[[int, int, int], None] | None = None
    cell_stopped: Callable[[Cell, Decision], None] | None = None


def skip_reason(cell: Cell, src_probe: Probe, dst_probe: Probe, src_accel: str,
                dst_accel: str, pair: HostPair | None = None) -> str:
    """Why this cell cannot run on this pair (missing capability, no KVM, no VM network ...),
    or "" (pure). The probes and accelerators are the pair's own hosts'."""
    for p, accel in ((src_probe, src_accel), (dst_probe, dst_accel)):
        reason = unsupported_reason(p, cell.migration, accel)
        if reason:
            return reason
    if pair is not None and wl.needs_network(cell.workload):
        src, dst = pair.source, pair.destination
        if not private_network(src, dst):
            if not (src.vm_bridge and dst.vm_bridge):
                return ("the ping workload needs vm_bridge on both hosts of this pair "
                        "(hosts.yaml)")
            if not (src.vm_network or dst.vm_network):
                return ("the ping workload needs vm_network in hosts.yaml (the VM network's "
                        "subnet and this machine's address on it)")
    return ""


def skipped_record(cell: Cell, rep: int, campaign: str, reason: str, probe_: Probe | None,
                   build: QemuBuild, source: Host, destination: Host,
                   outcome: Outcome = "skipped") -> RunRecord:
    """The record of a run that was not attempted, with the reason: ``skipped`` (the pair cannot
    run it) or ``failed`` (a fault kept it from starting). It has no figures: every metric null,
    no image, no timeline."""
    now = utc(time.time())
    p = probe_
    return RunRecord(
        schema_version=SCHEMA_VERSION, campaign=campaign,
        cell=CellRecord.model_validate(cell.to_dict()), repetition=rep, started_utc=now,
        finished_utc=now, outcome=outcome, error=reason, integrity=Integrity(verdict="unchecked"),
        timing_excluded=True,
        qemu=QemuInfo(build=cell.build, version=f"{p.version} ({p.package})" if p else None,
                      source_binary=str(build.binary)),
        hosts=PerSide(source=HostFacts.model_validate(source.facts()),
                      destination=HostFacts.model_validate(destination.facts())),
        metrics=Metrics())


def run_workdirs(pair: HostPair, campaign: str, run_id: str) -> dict[str, Path]:
    """Each host's scratch folder for one run, under that host's own ``workdir`` (pure)."""
    return {role: spec.workdir / campaign / run_id
            for role, spec in (("source", pair.source), ("destination", pair.destination))}


def run_order(cells: list[Cell], repetitions: int, order: str) -> list[tuple[Cell, int]]:
    """(cell, repetition) pairs in run order (pure).

    ``interleaved`` runs repetition 1 of every cell, then repetition 2 ..., with the variants of
    the same point next to each other (A B A B), so slow drift of the machine hits both alike.
    """
    reps = range(1, repetitions + 1)
    if order != "interleaved":
        return [(c, r) for c in cells for r in reps]
    points: dict[str, list[Cell]] = {}
    for c in cells:
        points.setdefault(coordinate_key(c, variant=False), []).append(c)
    grouped = [c for group in points.values() for c in group]
    return [(c, r) for r in reps for c in grouped]


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _Campaign:
    """What the pair workers share: the queue of runs, the output folder and its lock."""

    def __init__(self, matrix_path: Path, spec: MatrixSpec, hosts: HostsConfig, out: Path,
                 progress: Progress, image: GuestImage, todo: list[tuple[Cell, int]],
                 schedule: AdaptiveSchedule | None = None) -> None:
        self.matrix_path = matrix_path
        self.spec = spec
        self.hosts = hosts
        self.out = out
        self.progress = progress
        self.image = image
        self.queue: deque[tuple[Cell, int]] = deque(
            (c, r) for c, r in todo if not store.exists(out, c.id, r))
        # repetitions {min, max, ci}: the runs are decided as they finish, not listed up front
        self.schedule = schedule
        self.lock = threading.Lock()
        self.decided = threading.Condition(self.lock)  # a run finished: maybe one can start
        self.stop = threading.Event()
        # Ctrl-C: the runs in progress stop at their next wait, and one that ends now is not a
        # result.
        self.interrupted = Stop()
        self.written: list[Path] = []
        self.commit = harness_commit()
        self._summary: dict[tuple[str, int], store.Row] | None = None  # read once, then kept

    def next(self) -> tuple[Cell, int] | None:
        with self.lock:
            while self.schedule is not None and not self.stop.is_set():
                item = self.schedule.next()
                if item is None or isinstance(item, tuple):
                    if item is not None:
                        self.schedule.started(*item)
                    return item
                self.decided.wait(0.5)  # its point's runs in progress decide whether it runs
            if self.stop.is_set() or not self.queue:
                return None
            return self.queue.popleft()

    def pending(self) -> bool:
        """Are runs left to do?"""
        if self.schedule is not None:
            with self.lock:
                return self.schedule.pending()
        return bool(self.queue)

    def interrupt(self) -> None:
        """Hand out no more runs, and save none that finishes from now on."""
        self.interrupted.set()
        self.stop.set()

    def save(self, pair_name: str, cell: Cell, rep: int, record: RunRecord) -> None:
        """Store a finished run, unless the campaign was interrupted: a run cut short by Ctrl-C
        (its hosts' connections or QEMUs going away under it) is not a result, and it must run
        again on resume."""
        if self.interrupted.is_set():
            self.note(f"pair {pair_name}: {cell.id} repetition {rep} was interrupted: not "
                      "saved, it runs again on resume")
            with self.lock:
                self.finished(cell, rep, None)
            return
        update: dict[str, object] = {"harness": HarnessInfo(
            commit=self.commit, matrix_file=str(self.matrix_path), pair=pair_name)}
        if isinstance(self.spec.repetitions, Repetitions):
            r = self.spec.repetitions
            update["repetitions"] = RepetitionRule(min=r.min, max=r.max, ci=r.ci,
                                                    ci_ms=r.ci_ms)
        record = record.model_copy(update=update)
        with self.lock:
            try:
                self.written.append(store.write_run(self.out, record))
            except StoreError:
                self.finished(cell, rep, None)
                raise
            stopped = self.finished(cell, rep, RunFigures.of(record))
            try:
                self.write_summary(record)
            except StoreError:
                store.drop_summary(self.out)  # it misses the run just stored; a rerun rebuilds it
                raise
        if self.progress.run_finished:
            self.progress.run_finished(cell, rep, record)
        if self.progress.cell_stopped:
            for c, decision in stopped:
                self.progress.cell_stopped(c, decision)
        self.report_plan()

    def finished(self, cell: Cell, rep: int, figures: RunFigures | None
                 ) -> list[tuple[Cell, Decision]]:
        """Tell the schedule that a run ended (stored with ``figures``, or not) and wake the
        workers waiting on it; returns the cells this stopped. Call with the lock held."""
        if self.schedule is None:
            return []
        stopped = self.schedule.finished(cell, rep, figures)
        self.decided.notify_all()
        return stopped

    def report_plan(self) -> None:
        """Tell the progress display the runs done and the range of runs the campaign needs."""
        if self.schedule is not None and self.progress.planned:
            with self.lock:
                planned = self.schedule.planned()
            self.progress.planned(*planned)

    def write_summary(self, record: RunRecord | None = None) -> None:
        """Rewrite summary.csv with ``record`` added; the run files are read only the first time.

        Call with the lock held.
        """
        if self._summary is None:
            self._summary = store.summary_rows(self.out, summary_columns)
        elif record is not None:
            self._summary[(record.cell.id, record.repetition)] = store.summary_row(
                record, summary_columns)
        store.write_summary(self.out, self._summary)

    def note(self, message: str) -> None:
        message = terminal_text(message)  # it may quote a host, QEMU or a guest
        if self.progress.note:
            self.progress.note(message)
        else:
            log.warning("%s", message)


class _PairWorker:
    """Runs cells from the shared queue on one host pair, one migration at a time."""

    def __init__(self, name: str, pair: HostPair, camp: _Campaign) -> None:
        self.name = name
        self.pair = pair
        self.camp = camp
        self.source = make_host("source", pair.source)
        self.destination = make_host("destination", pair.destination)
        self.images: dict[str, GuestImage] = {}
        self.accel: dict[str, str] = {}
        self.error: str | None = None
        self.warm = WarmStarts(self.source, camp.note)  # issue 18: saved guests (run/warm.py)
        # starts each run's scratch folder name: a lab worker's own (it removes a killed
        # predecessor's by it, harness.lab.worker)
        self.scratch_tag = ""

    def setup(self) -> None:
        """Put the guest image on remote hosts and learn each host's accelerator.

        :raise HarnessError: the pair cannot be used.
        """
        for role, host in (("source", self.source), ("destination", self.destination)):
            placed, uploaded = place_image(host, self.camp.image)
            if uploaded:
                self.camp.note(f"pair {self.name}: uploaded {', '.join(uploaded)} to "
                               f"{host.label}:{placed.kernel.parent}")
            self.images[role] = placed
            self.accel[role] = host.accel().accel

    def unrunnable(self, cell: Cell, rep: int, src_build: QemuBuild, dst_build: QemuBuild
                   ) -> tuple[RunRecord | None, tuple[Probe, Probe] | None]:
        """(the record of a run that cannot start on this pair, or None if it can; the source's
        and destination's probes, when both answered).

        ``skipped`` when a host's QEMU or setup lacks what the cell needs (:func:`skip_reason`).
        ``failed`` when probing a host's QEMU failed (unreachable, probe timed out ...): that is
        a fault, not an answer about the cell, so it must not look like a capability lack.
        """
        probes = []
        for host, build in ((self.source, src_build), (self.destination, dst_build)):
            try:
                probes.append(probe(build, locations.probe_cache(), host=host))
            except HarnessError as exc:
                return skipped_record(cell, rep, self.camp.spec.name, f"probing QEMU failed: {exc}",
                                      None, src_build, self.source, self.destination,
                                      outcome="failed"), None
        pair = (probes[0], probes[1])
        reason = skip_reason(cell, *pair, self.accel["source"], self.accel["destination"],
                             self.pair)
        if not reason:
            return None, pair
        return skipped_record(cell, rep, self.camp.spec.name, reason, probes[0], src_build,
                              self.source, self.destination), pair

    def run(self) -> None:
        camp = self.camp
        progress = camp.progress
        try:
            self.setup()
        except HarnessError as exc:
            self.error = f"pair {self.name} skipped: {exc}"
            camp.note(self.error)
            self.close()
            return
        try:
            while (item := camp.next()) is not None:
                cell, rep = item
                if progress.run_started:
                    progress.run_started(cell, rep)
                camp.save(self.name, cell, rep, self.run_one(cell, rep))
        finally:
            self.close()

    def run_one(self, cell: Cell, rep: int) -> RunRecord:
        """One run of ``cell`` on this pair (after :meth:`setup`): its record, ``skipped`` or
        ``failed`` when it cannot start. The one per-run function: the lab's workers
        (:mod:`harness.lab`) call it too.

        A run that started carries its phases (:mod:`harness.analysis.overhead`): from here
        to its scratch folders removed, probes and warm-start preparation included."""
        begin = time.time()
        record = self._run_one(cell, rep)
        if not record.states:  # skipped, or failed before anything started
            return record
        return record.model_copy(update={"phases": phases(record.states, begin, time.time(),
                                                          record.boot_s)})

    def _run_one(self, cell: Cell, rep: int) -> RunRecord:
        camp = self.camp
        src_build = camp.hosts.build_for(self.pair.source, cell.build)
        dst_build = camp.hosts.build_for(self.pair.destination, cell.build)
        assert src_build is not None and dst_build is not None  # checked by plan()
        not_run, probes = self.unrunnable(cell, rep, src_build, dst_build)
        if not_run is not None:
            return not_run
        assert probes is not None  # a run that can start was probed on both hosts
        dirs = run_workdirs(self.pair, camp.spec.name,
                            f"{self.scratch_tag}{cell.id}-{rep}-{int(time.time())}-"
                            f"{secrets.token_hex(2)}")
        ctx = RunContext(
            cell=cell, repetition=rep, campaign=camp.spec.name, source=self.source,
            destination=self.destination, source_build=src_build,
            destination_build=dst_build, image=camp.image,
            workdir=dirs["source"], on_state=self.on_state,
            host_images=dict(self.images),
            workdirs={role: d / role for role, d in dirs.items()},
            build_ids={"source": probes[0].build_id, "destination": probes[1].build_id},
            stop=camp.interrupted,
        )
        # Warm or cold start (run/warm.py): may boot and save this guest the first time
        ctx = self.warm.prepare(ctx, camp.spec.start, probes[0])
        try:
            return run_migration(ctx)
        finally:
            self.remove_workdirs(dirs)

    def on_state(self, name: str) -> None:
        if self.camp.progress.state:
            self.camp.progress.state(name)

    def remove_workdirs(self, dirs: dict[str, Path]) -> None:
        """Remove a run's scratch folders, each on its own host (once if they are the same)."""
        done: set[tuple[str, Path]] = set()
        for role, host in (("source", self.source), ("destination", self.destination)):
            key = (host.identity, dirs[role])
            if key in done:
                continue
            done.add(key)
            with contextlib.suppress(HarnessError):  # unreachable: nothing more to do
                host.remove_tree(dirs[role])

    def close(self) -> None:
        self.warm.close()
        self.source.close()
        self.destination.close()


def _preflight(hosts: HostsConfig, names: list[str], builds: list[str],
               camp: _Campaign) -> list[tuple[str, HostPair]]:
    """The pairs that pass the quick checks (reachable, QEMU present); the others are noted."""
    from harness.hosts.provision import preflight

    usable = []
    problems = []
    for name in names:
        report = preflight(name, hosts.pairs[name], hosts, builds)
        if report.usable:
            usable.append((name, hosts.pairs[name]))
        else:
            lines = report.problems()
            problems += lines
            camp.note(f"pair {name} skipped: " + "; ".join(lines))
    if not usable:
        raise HostError("no usable host pair: " + "; ".join(problems))
    return usable


def run_matrix(
    matrix_path: Path, spec: MatrixSpec, hosts_path: Path, hosts: HostsConfig, out: Path,
    progress: Progress | None = None, image: GuestImage | None = None,
    pairs: list[str] | None = None,
) -> list[Path]:
    """Run every unfinished run of the matrix into ``out`` (the campaign folder).

    The runs are spread over the host pairs (``pairs``, default every pair in the hosts file):
    one worker per pair, each running one migration at a time, all pairs at once. A pair that
    fails its preflight (unreachable host, QEMU missing) or cannot take the guest image is
    reported through ``progress.note`` and skipped; the other pairs do its share.

    A run file or summary.csv that cannot be written (full, read-only or removed folder) ends
    the matrix: the runs in progress on other pairs finish and are stored if they can be, every
    run stored before stays, and summary.csv matches the run files (or is removed, to be
    rebuilt by the next run).

    :raise ConfigError: before anything boots, for a matrix or hosts problem.
    :raise HostError: no pair is usable.
    :raise StoreError: ``out`` cannot be written (before anything boots when it is visible then).
    """
    cells = plan(matrix_path, spec, hosts_path, hosts)
    progress = progress or Progress()
    names = list(pairs) if pairs else list(hosts.pairs)
    for n in names:
        if n not in hosts.pairs:
            raise ConfigError(hosts_path, "pairs", f"no pair {n!r}",
                              f"use one of {', '.join(hosts.pairs)}")
    store.check_writable(out)  # before the image, which may take minutes to build
    if image is None:
        image = ensure_image(locations.image_cache(),
                             fio=any(c.workload.fio is not None for c in cells),
                             debian=any(c.guest.image == "debian" for c in cells))
    camp = _campaign(matrix_path, spec, hosts, out, progress, image, cells)
    old = signal.signal(signal.SIGTERM, _sigterm)
    workers: list[_PairWorker] = []
    pending: BaseException | None = None
    try:
        if camp.pending():
            usable = _preflight(hosts, names, sorted({c.build for c in cells}), camp)
            workers = [_PairWorker(n, p, camp) for n, p in usable]
            _run_concurrently(workers, camp)
            if camp.pending() and not camp.stop.is_set():
                raise HostError("runs left undone, every pair failed: "
                                + "; ".join(w.error or w.name for w in workers))
    except BaseException as exc:
        pending = exc
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        for w in workers:
            w.close()
        _final_summary(camp, pending)
    return camp.written


def _campaign(matrix_path: Path, spec: MatrixSpec, hosts: HostsConfig, out: Path,
              progress: Progress, image: GuestImage, cells: list[Cell]) -> _Campaign:
    """The campaign's runs: a fixed list, or (``repetitions: {min, max, ci}``) a schedule that
    knows the runs stored before and decides the others as they finish."""
    reps = spec.repetitions
    if not isinstance(reps, Repetitions):
        todo = run_order(cells, reps, spec.order)
        done_before = len(_check_stored(out, todo))
        if progress.start:
            progress.start(len(todo), done_before)
        return _Campaign(matrix_path, spec, hosts, out, progress, image, todo)
    schedule = AdaptiveSchedule(cells, reps, spec.order)
    for c in cells:
        for rep, rec in _stored_runs(out, c.id):
            schedule.stored(c.id, rep, RunFigures.of(rec))
    done, lo, hi = schedule.planned()
    if progress.start:
        progress.start(hi, done)
    camp = _Campaign(matrix_path, spec, hosts, out, progress, image, [], schedule)
    camp.report_plan()
    return camp


def _check_stored(out: Path, todo: list[tuple[Cell, int]]) -> list[tuple[Cell, int]]:
    """The runs of ``todo`` already stored in the campaign folder, each file read: a damaged or
    hand-edited one is found before anything boots, not as the matrix ends (issue 13).

    :raise RecordError: a run file that does not hold its cell's valid record.
    """
    done = [(c, r) for c, r in todo if store.exists(out, c.id, r)]
    for c, r in done:
        store.load_stored(store.run_path(out, c.id, r))
    return done


def _stored_runs(out: Path, cell_id: str) -> list[tuple[int, RunRecord]]:
    """The runs of a cell already in the campaign folder (a resume decides on them).

    :raise RecordError: a run file that does not hold the cell's valid record.
    """
    folder = out / cell_id
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if re.fullmatch(r"[1-9][0-9]{0,5}", path.stem):
            found.append((int(path.stem), store.load_stored(path)))
    return found


def _final_summary(camp: _Campaign, pending: BaseException | None) -> None:
    """Rewrite summary.csv from every run file as the matrix ends.

    Not after a failed write (the folder is full, read-only or gone: summary.csv already matches
    what is stored, or was removed); a failure here does not hide the error that ends the run.
    """
    out = camp.out
    if isinstance(pending, StoreError):
        return
    if not ((out / "summary.csv").exists() or camp.written
            or any(out.glob("*/*.json"))):  # removed by a failed write: rebuild it
        return
    try:
        with camp.lock:
            camp.write_summary()
    except StoreError:
        if pending is None:
            raise


def _run_concurrently(workers: list[_PairWorker], camp: _Campaign) -> None:
    """One thread per pair (one pair too: signals then reach only this waiting thread);
    Ctrl-C / SIGTERM stops every pair's run (:func:`_stop_workers`)."""
    errors: list[BaseException] = []
    # Whether each thread has finished. Not Thread.is_alive(): a join() that Ctrl-C interrupts
    # marks a running thread as stopped (CPython 3.11, bpo-45274's fix).
    done = {w: threading.Event() for w in workers}

    def guard(w: _PairWorker) -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            camp.stop.set()
        finally:
            done[w].set()

    threads = {w: threading.Thread(target=guard, args=(w,), name=f"pair-{w.name}", daemon=True)
               for w in workers}
    for t in threads.values():
        t.start()
    try:
        for w in workers:
            while not done[w].wait(0.2):
                pass
    except KeyboardInterrupt:
        _stop_workers(threads, done, camp)
        raise
    if errors:
        raise errors[0]


def _stop_workers(threads: dict[_PairWorker, threading.Thread],
                  done: dict[_PairWorker, threading.Event], camp: _Campaign) -> None:
    """After Ctrl-C in the main thread: stop each pair's run as Ctrl-C stops a single pair's.

    No more runs start and none that ends is saved. The campaign's stop wakes every busy
    worker at its next wait, so run_migration tears its VMs down as usual (a worker already
    tearing down just finishes), within ``INTERRUPT_TEARDOWN_S``; then (or at a second Ctrl-C)
    whatever any pair's hosts still run is stopped, so no QEMU outlives the harness.
    """
    camp.interrupt()
    busy = [w for w in threads if not done[w].is_set()]
    if busy:
        camp.note(f"interrupted: stopping the runs on pair {', '.join(w.name for w in busy)} "
                  "(not saved: they run again on resume; Ctrl-C again to kill them at once)")
    try:
        deadline = time.monotonic() + INTERRUPT_TEARDOWN_S
        for w in busy:
            done[w].wait(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        for w in threads:
            for host in (w.source, w.destination):
                stopped = host.stop_processes()
                if stopped:
                    camp.note(f"pair {w.name}: killed {len(stopped)} process(es) its run left "
                              f"on {host.label}")
        for w in busy:
            done[w].wait(2.0)

