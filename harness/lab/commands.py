"""The lab's commands: ``migbench worker`` and ``migbench lab status`` (``run --engine`` is in
harness.cli, beside the local run it shares its progress bar with)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from harness.lab import broker

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def cmd_worker(args: argparse.Namespace) -> int:
    from harness.lab.worker import LabWorker
    from harness.plan.config import hosts_path, load_hosts

    hosts_file = hosts_path(args.hosts)
    hosts = load_hosts(hosts_file)
    pair = args.pair or next(iter(hosts.pairs))
    worker = LabWorker(args.broker or DEFAULT_BROKER, hosts_file, hosts, pair,
                       args.worker_name or pair, args.lease_s, say=_say)
    return worker.serve()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def status_lines(url: str) -> list[str]:
    """Workers (pair, capabilities, run in flight), queue depths, of the lab at ``url``."""
    from harness.lab.submit import workers

    c = broker.client(url)
    lines: list[str] = []
    live = workers(c, lambda m: lines.append(f"! {m}"))
    now = time.time()
    lines.append(f"lab {broker.shown(url)}: {len(live)} workers")
    queues: dict[str, int] = {}
    for w in sorted(live, key=lambda w: w.name):
        queues[w.queue] = queues.get(w.queue, 0) + 1
        builds = ", ".join(f"{b} (QEMU {x.source.version}/{x.destination.version})"
                           for b, x in sorted(w.builds.items()))
        lines.append(f"  {w.name}: pair {w.pair} on {w.machine} pid {w.pid}, accel "
                     f"{w.source_accel}/{w.destination_accel}, builds {builds}; queue "
                     f"{w.queue}; {w.done} runs done; seen {now - w.heartbeat:.0f} s ago")
        if w.current is not None:
            cur = w.current
            lines.append(f"    running {cur.cell_id} rep {cur.repetition} ({cur.label}), "
                         f"delivery {cur.delivery}, for {now - cur.started:.0f} s")
        else:
            lines.append("    idle")
    waiting = sorted(q.decode() for q in c.scan_iter(match=f"{_caps_prefix()}*", count=500))
    for q in sorted(set(waiting) | set(queues)):
        if c.type(q) != b"list" and q not in queues:
            continue
        lines.append(f"  queue {q}: {broker.queue_depth(c, q)} waiting, "
                     f"{queues.get(q, 0)} workers")
    in_flight = sum(1 for w in live if w.current is not None)
    unacked = int(c.zcard(broker.UNACKED_INDEX))
    lines.append(f"runs in flight: {in_flight} on live workers, {unacked} held by the broker "
                 "(a lost worker's run comes back when its lease runs out)")
    return lines


def _caps_prefix() -> str:
    from harness.lab.caps import QUEUE_PREFIX

    return QUEUE_PREFIX


def cmd_lab_status(args: argparse.Namespace) -> int:
    from harness.output import terminal_text

    for line in status_lines(args.broker or DEFAULT_BROKER):
        print(terminal_text(line))
    return 0


def register(subparsers: Any) -> None:
    w = subparsers.add_parser(
        "worker", help="serve one host pair to a lab (Celery worker)",
        description="Own one host pair of the hosts file and run the lab's runs on it, one at a "
                    "time: declare its capabilities on the broker, consume the matching queue "
                    "with late acknowledgement, renew the lease of the run in progress. SIGTERM "
                    "or Ctrl-C: the run in progress is torn down and goes back to the queue.")
    w.add_argument("--hosts", metavar="HOSTS.yaml", help="hosts file (as for run)")
    w.add_argument("--pair", metavar="NAME", help="the pair this worker owns (default: the first)")
    w.add_argument("--broker", metavar="URL", help=f"Redis broker (default {DEFAULT_BROKER})")
    w.add_argument("--name", dest="worker_name", metavar="NAME",
                   help="worker name on the lab (default: the pair's name; unique per lab)")
    w.add_argument("--lease-s", type=float, default=broker.DEFAULT_LEASE_S, metavar="S",
                   help="a lost worker's run is redelivered this long after its last renewal "
                        f"(default {broker.DEFAULT_LEASE_S:g}; same on every worker of a lab)")
    w.set_defaults(func=cmd_worker)

    lab = subparsers.add_parser("lab", help="the lab of host pairs (status)")
    lsub = lab.add_subparsers(dest="lab_command", required=True, metavar="SUBCOMMAND")
    st = lsub.add_parser("status", help="workers, their pairs and capabilities, queues, runs "
                                        "in flight")
    st.add_argument("--broker", metavar="URL", help=f"Redis broker (default {DEFAULT_BROKER})")
    st.set_defaults(func=cmd_lab_status)

