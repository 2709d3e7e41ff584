"""``migbench run MATRIX --engine celery://URL``: submit a matrix's runs to the lab, store what
comes back.

The same plan, order and resume rule as the local runner: runs already in the campaign folder
are skipped, the others become one task each (id: the run's idempotency key, see
:func:`harness.lab.broker.task_id`) on the queue of the workers able to run the cell. A run
this campaign submitted before (a killed submitter, a rerun) is not sent again, only collected;
``--attach`` sends nothing and collects what the lab finished or still runs.

Records come back as JSON through Celery's result backend and are treated as hostile input:
validated through the store's one door (:func:`harness.results.store.receive_run`), checked to
be the run that was asked for (cell, repetition, campaign), then written like a local run's
(never overwriting, summary.csv kept in step). A cell no worker can run is reported, not queued:
it stays unstored and the command ends with an error naming it and each worker's reason.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from harness.analysis.diagnosis import summary_columns
from harness.errors import ConfigError, HarnessError, StoreError
from harness.lab import broker
from harness.lab.caps import WorkerInfo, route, unroutable_line
from harness.lab.job import Job
from harness.output import terminal_text
from harness.plan.config import plan
from harness.plan.matrix import Cell, ExpansionError, expand
from harness.plan.models import NAME_PATTERN, HostsConfig, MatrixSpec
from harness.results import store
from harness.results.record.model import CellRecord, RunRecord
from harness.run.runner import Progress, run_order

POLL_S = 1.0
QUEUE_CHECK_S = 15.0  # how often the submitter looks for queues nobody consumes


@dataclass
class _Submission:
    """A campaign on the lab: the runs it waits for and what went wrong."""

    spec: MatrixSpec
    out: Path
    progress: Progress
    pending: dict[str, tuple[Cell, int, str]] = field(default_factory=dict)  # id -> cell, rep, q
    started: set[str] = field(default_factory=set)
    steps: dict[str, str | None] = field(default_factory=dict)  # the step each run is at
    problems: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    summary: dict[tuple[str, int], store.Row] | None = None
    forget: Callable[[str], None] | None = None  # drops a stored run's answer from the broker

    def note(self, message: str) -> None:
        if self.progress.note:
            self.progress.note(terminal_text(message))


def workers(c: Any, note: Any) -> list[WorkerInfo]:
    """The live workers' declarations; one that does not validate is noted and left out."""
    found = []
    for key, value in broker.declarations(c):
        try:
            found.append(WorkerInfo.parse(value, key))
        except HarnessError as exc:
            note(str(exc))
    return found


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def attach_cells(url: str, matrix_path: Path, spec: MatrixSpec, out: Path) -> tuple[str, list[Cell]]:
    """(default build, cells) of a campaign submitted before to the lab at ``url`` from this
    machine into ``out``: ``--attach`` without a hosts file plans with the build the submission
    recorded.

    :raise HostError: the broker cannot be reached.
    :raise HarnessError: the broker knows no such campaign.
    """
    c = broker.client(url)
    key = broker.campaign_key(spec.model_dump_json(), out)
    build = c.get(broker.build_key(key))
    text = build.decode(errors="replace") if build else ""
    if not re.fullmatch(NAME_PATTERN, text):
        raise HarnessError(f"--attach: lab {broker.shown(url)} has no campaign of "
                           f"{matrix_path} into {out} submitted from this machine; submit it "
                           "first (the same command without --attach, with its hosts file)")
    try:
        return text, expand(spec, text)
    except ExpansionError as exc:
        raise ConfigError(matrix_path, exc.key, str(exc)) from None


def run_lab(matrix_path: Path, spec: MatrixSpec, hosts_path: Path | None,
            hosts: HostsConfig | None, out: Path, url: str, progress: Progress | None = None, *,
            attach: bool = False, redeliveries: int = 2) -> list[Path]:
    """Submit the unfinished runs of the matrix to the lab at ``url`` and store the records as
    they come back into ``out``; returns the files written. ``--attach`` needs no hosts file
    (``hosts`` None): it plans with the default build the submission recorded on the broker.

    :raise ConfigError: before anything is sent, for a matrix or hosts problem.
    :raise HostError: the broker cannot be reached.
    :raise HarnessError: runs left unstored (no worker can run them, or a worker refused the
        task); everything that came back is stored first.
    """
    if hosts is None or hosts_path is None:
        if not attach:
            raise HarnessError("submitting to the lab needs the hosts file (its default build "
                               "plans the cells); only --attach goes without it")
        default_build, cells = attach_cells(url, matrix_path, spec, out)
    else:
        default_build, cells = hosts.default_build, plan(matrix_path, spec, hosts_path, hosts)
    if not isinstance(spec.repetitions, int):
        raise ConfigError(matrix_path, "repetitions", "a range of repetitions is decided run by "
                          "run by the local runner; the lab runs a fixed number",
                          "use a number (e.g. repetitions: 5) with --engine, or run locally")
    store.check_writable(out)
    c = broker.client(url)
    app = broker.make_app(url)
    sub = _Submission(spec, out, progress or Progress(), forget=lambda tid: _forget(c, app, tid))
    todo = run_order(cells, spec.repetitions, spec.order)
    done_before = sum(1 for cell, rep in todo if store.exists(out, cell.id, rep))
    if sub.progress.start:
        sub.progress.start(len(todo), done_before)
    old = signal.signal(signal.SIGTERM, _sigterm)
    try:
        _submit(c, app, sub, todo, matrix_path, default_build, attach, redeliveries)
        _collect(c, app, sub)
    except KeyboardInterrupt:
        if sub.pending:
            sub.note(f"submitter stopped: {len(sub.pending)} runs go on in the lab; collect "
                     "them with the same command and --attach")
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        _final_summary(sub)
    if sub.problems:
        raise HarnessError(f"{len(sub.problems)} runs not stored: " + "; ".join(sub.problems))
    return sub.written


def _submit(c: Any, app: Any, sub: _Submission, todo: list[tuple[Cell, int]], matrix_path: Path,
            default_build: str, attach: bool, redeliveries: int) -> None:
    """Send each unfinished run not sent before to its queue; note what cannot be routed."""
    key = broker.campaign_key(sub.spec.model_dump_json(), sub.out)
    skey = broker.submitted_key(key)
    sent_before = {m.decode() for m in c.smembers(skey)}
    live = workers(c, sub.note)
    unsent = 0
    for cell, rep in todo:
        if store.exists(sub.out, cell.id, rep):
            continue
        tid = broker.task_id(key, cell.id, rep)
        if tid in sent_before:
            sub.pending[tid] = (cell, rep, "")
            continue
        if attach:
            unsent += 1
            continue
        queue, reasons = route(cell, live)
        if queue is None:
            sub.problems.append(unroutable_line(cell, reasons))
            sub.note(f"not submitted: {sub.problems[-1]}")
            continue
        job = Job(spec=sub.spec, default_build=default_build, cell_id=cell.id, repetition=rep,
                  matrix_file=str(matrix_path), redeliveries=redeliveries)
        if c.sadd(skey, tid):  # another submitter of this campaign may have sent it just now
            app.send_task(broker.TASK_NAME, args=[job.payload()], task_id=tid, queue=queue)
        sub.pending[tid] = (cell, rep, queue)
    c.expire(skey, broker.RESULT_TTL_S)
    if not attach:
        c.set(broker.build_key(key), default_build, ex=broker.RESULT_TTL_S)
    if unsent:
        sub.problems.append(f"{unsent} runs were never submitted (--attach sends none): rerun "
                            "without --attach to submit them")
        sub.note(sub.problems[-1])
    sub.note(f"lab {broker.shown(url_of(app))}: {len(sub.pending)} runs submitted or in flight, "
             f"{len(live)} workers live")


def url_of(app: Any) -> str:
    return str(app.conf.broker_url)


def _collect(c: Any, app: Any, sub: _Submission) -> None:
    """Wait for every pending run's record and store it."""
    next_check = time.monotonic() + QUEUE_CHECK_S
    warned: set[str] = set()
    while sub.pending:
        for tid, (cell, rep, _q) in list(sub.pending.items()):
            meta = app.backend.get_task_meta(tid)
            state = meta.get("status")
            if state == "STARTED":
                _started(sub, tid, cell, rep, meta.get("result"))
            elif state == "SUCCESS":
                del sub.pending[tid]
                _store(sub, tid, cell, rep, meta.get("result"))
            elif state in ("FAILURE", "REVOKED"):
                del sub.pending[tid]
                sub.problems.append(f"{cell.id} rep {rep}: the worker refused it "
                                    f"({str(meta.get('result'))[:200]})")
                sub.note(sub.problems[-1])
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + QUEUE_CHECK_S
            _warn_unserved(c, sub, warned)
        if sub.pending:
            time.sleep(POLL_S)


def _started(sub: _Submission, tid: str, cell: Cell, rep: int, info: object) -> None:
    """A run began, or moved to its next step (the worker's ``{"step": ...}``)."""
    step = info.get("step") if isinstance(info, dict) else None
    step = step if isinstance(step, str) else None
    if tid in sub.started and sub.steps.get(tid) == step:
        return
    sub.started.add(tid)
    sub.steps[tid] = step
    if sub.progress.run_started:
        sub.progress.run_started(cell, rep)
    if step and sub.progress.state:
        sub.progress.state(terminal_text(step[:40]))


def _warn_unserved(c: Any, sub: _Submission, warned: set[str]) -> None:
    """Say once per queue when runs wait on a queue no live worker consumes."""
    queues = {q for _, _, q in sub.pending.values() if q}
    served = {w.queue for w in workers(c, lambda _m: None)}
    for q in sorted(queues - served - warned):
        warned.add(q)
        sub.note(f"runs wait on {q}, which no live worker consumes: an idle worker able to "
                 "run them takes them over; if none is, start a worker whose pair has those "
                 "capabilities (`migbench lab status` lists them)")


def _store(sub: _Submission, tid: str, cell: Cell, rep: int, result: object) -> None:
    """Validate a returned record and write it, unless the run is stored already."""
    try:
        if not isinstance(result, str):
            raise HarnessError(f"task {tid}: the answer is not a run record")
        record = store.receive_run(result.encode(), f"task {tid}")
        _check_identity(record, cell, rep, sub.spec.name, tid)
    except HarnessError as exc:
        sub.problems.append(f"{cell.id} rep {rep}: {exc}")
        sub.note(sub.problems[-1])
        return
    if store.exists(sub.out, cell.id, rep):  # another submitter of this campaign stored it
        return
    sub.written.append(store.write_run(sub.out, record))
    if sub.forget:
        sub.forget(tid)
    try:
        if sub.summary is None:
            sub.summary = store.summary_rows(sub.out, summary_columns)
        else:
            sub.summary[(record.cell.id, record.repetition)] = store.summary_row(
                record, summary_columns)
        store.write_summary(sub.out, sub.summary)
    except StoreError:
        store.drop_summary(sub.out)  # it misses the run just stored; a rerun rebuilds it
        raise
    if sub.progress.run_finished:
        sub.progress.run_finished(cell, rep, record)


def _forget(c: Any, app: Any, tid: str) -> None:
    """A stored run's record and counters leave the broker (records are large; Redis holds
    them in memory). Not its place in the submitted set: a rerun must not send it again."""
    app.backend.forget(tid)
    c.delete(broker.deliveries_key(tid), broker.attempts_key(tid))


def _check_identity(record: RunRecord, cell: Cell, rep: int, campaign: str, tid: str) -> None:
    """:raise HarnessError: the record is not of the run that was asked for."""
    expected = CellRecord.model_validate(cell.to_dict())
    if (record.cell != expected or record.repetition != rep or record.campaign != campaign):
        raise HarnessError(f"task {tid}: the record is of another run (cell "
                           f"{record.cell.id} rep {record.repetition} of {record.campaign!r}); "
                           "not stored")


def _final_summary(sub: _Submission) -> None:
    """summary.csv rebuilt from every run file (as the local runner ends)."""
    if not (sub.written or (sub.out / "summary.csv").exists()):
        return
    try:
        store.write_summary(sub.out, store.summary_rows(sub.out, summary_columns))
    except StoreError:
        pass  # the folder is full or gone: the error that ends the run says so
