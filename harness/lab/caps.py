"""What a worker declares it can run, and where a cell goes (pure).

A worker publishes a :class:`WorkerInfo`: its pair (the hosts file's entry), each host's
accelerator, and the probe of every QEMU build both hosts have. Workers whose declarations
match in everything that decides whether a cell can run (:func:`signature`: builds and their
capabilities, accelerators, the VM network) share one queue, so a run lost with one worker is
redelivered to another of the same kind (or taken over by another kind able to run it when
none of its own is left: :meth:`harness.lab.worker.LabWorker.adopt`). The submitter routes each
cell with the local runner's own test (:func:`harness.run.runner.skip_reason`) against the live
workers' declarations; a cell that no worker can run is reported with each worker's reason,
never queued.

Declarations come from the broker, which several people share: they are validated
(:meth:`WorkerInfo.parse`) before anything reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import HarnessError
from harness.hosts.netsetup import private_network
from harness.hosts.probe import Probe
from harness.plan.matrix import Cell
from harness.plan.models import NAME_PATTERN, HostPair
from harness.run.runner import skip_reason

QUEUE_PREFIX = "migbench.caps."
#: A worker's name: the pair's name, or given with ``--name``; also part of broker keys.
WorkerName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]
Accel = Annotated[str, Field(pattern=r"^(kvm|tcg)$")]
Text = Annotated[str, Field(max_length=300)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class BuildCaps(_Model):
    """One QEMU build as both hosts of the pair have it."""

    source: Probe
    destination: Probe


class Current(_Model):
    """The run a worker is busy with."""

    task_id: Annotated[str, Field(max_length=200)]
    cell_id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    repetition: Annotated[int, Field(ge=1, le=100_000)]
    label: Text
    started: float
    delivery: Annotated[int, Field(ge=1, le=1000)]


class WorkerInfo(_Model):
    """What a worker tells the lab about itself (refreshed while it lives)."""

    name: WorkerName
    pair: WorkerName
    machine: Text  # where the worker process runs
    pid: Annotated[int, Field(ge=1)]
    hosts: HostPair
    source_accel: Accel
    destination_accel: Accel
    builds: dict[WorkerName, BuildCaps]
    queue: Annotated[str, Field(pattern=r"^migbench\.caps\.[0-9a-f]{12}$")]
    started: float
    heartbeat: float
    lease_s: Annotated[float, Field(ge=10, le=24 * 3600)]  # the same on every worker of a lab
    done: Annotated[int, Field(ge=0)] = 0
    current: Current | None = None

    @classmethod
    def parse(cls, data: bytes | str, key: str) -> WorkerInfo:
        """A declaration read from the broker.

        :raise HarnessError: it is not a valid declaration (one line naming the key).
        """
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HarnessError(f"broker key {key}: not a worker declaration ({where}: "
                               f"{first['msg'][:120]}); stop that worker or delete the key"
                               ) from None


def _routing_probe(p: Probe) -> dict[str, object]:
    """What of a probe decides whether a cell can run (not where or which binary)."""
    d = asdict(p)
    for identity in ("binary", "host", "build_id", "package"):
        d.pop(identity)
    return d


def guest_network(hosts: HostPair) -> bool:
    """Can the pair run guests on a network (ping workloads)? What
    :func:`harness.run.runner.skip_reason` asks, as one answer: the private bridge of a local
    pair, or a VM bridge on both hosts and the VM network's subnet (tests/unit/test_lab.py
    checks that both agree)."""
    src, dst = hosts.source, hosts.destination
    return private_network(src, dst) or bool(src.vm_bridge and dst.vm_bridge
                                              and (src.vm_network or dst.vm_network))


def signature(hosts: HostPair, source_accel: str, destination_accel: str,
              builds: dict[str, BuildCaps]) -> str:
    """The queue of workers with these capabilities: ``migbench.caps.<12 hex digits>``."""
    data = {
        "accel": [source_accel, destination_accel],
        "builds": {name: [_routing_probe(b.source), _routing_probe(b.destination)]
                   for name, b in sorted(builds.items())},
        "network": guest_network(hosts),
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return QUEUE_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:12]


def reason(cell: Cell, worker: WorkerInfo) -> str:
    """Why ``worker`` cannot run ``cell``, or ""."""
    caps = worker.builds.get(cell.build)
    if caps is None:
        return f"pair {worker.pair} has no QEMU build {cell.build!r} on both hosts"
    return skip_reason(cell, caps.source, caps.destination, worker.source_accel,
                       worker.destination_accel, worker.hosts)


def route(cell: Cell, workers: list[WorkerInfo]) -> tuple[str | None, dict[str, str]]:
    """(the queue ``cell`` goes to, or None; each unable worker's reason).

    The queue with the most workers able to run the cell, so that a run lost with one worker
    has the most others to go to."""
    able: Counter[str] = Counter()
    reasons = {}
    for w in workers:
        why = reason(cell, w)
        if why:
            reasons[w.name] = why
        else:
            able[w.queue] += 1
    if not able:
        return None, reasons
    best = max(sorted(able), key=lambda q: able[q])
    return best, reasons


def unroutable_line(cell: Cell, reasons: dict[str, str]) -> str:
    """One line for a cell no live worker can run."""
    if not reasons:
        return f"{cell.id} ({cell.label}): no worker is registered with the broker"
    why = "; ".join(f"{name}: {text}" for name, text in sorted(reasons.items()))
    return f"{cell.id} ({cell.label}): no worker can run it ({why})"
