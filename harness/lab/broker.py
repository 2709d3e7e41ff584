"""The lab's Celery app and its keys on the Redis broker.

One Redis serves as Celery's broker (the queues) and result backend (records coming back), and
holds the lab's own few keys under ``migbench:lab:``:

- ``worker:<name>``: a worker's :class:`~harness.lab.caps.WorkerInfo`, with a time to live that
  its heartbeat renews (a killed worker's declaration expires by itself);
- ``deliveries:<task id>`` and ``attempts:<task id>``: how often a run was delivered and to whom
  (a run lost more than the allowed number of times is recorded ``failed`` with that list);
- ``campaign:<key>:submitted``: the runs a campaign has submitted (a resumed or reattached
  submitter sends none twice), ``campaign:<key>:default-build``: the hosts file's default build
  it was planned with (a reattached submitter needs no hosts file).

A task's id is ``mb-<campaign key>-<cell id>-<repetition>``: the idempotency key of a run.

Durability is Celery's: late acknowledgement, ``task_reject_on_worker_lost``, a prefetch of one.
Redis has no consumer liveness, so an unacknowledged message comes back to the queue when its
*lease* (kombu's ``visibility_timeout``) runs out; a busy worker renews the lease of the run it
holds (:func:`renew_lease`), so the lease can be short (a killed worker's run is redelivered in
about a lease) without ever handing a long run to a second worker while the first still runs it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.errors import HarnessError, HostError

PREFIX = "migbench:lab:"
ENGINE_PREFIX = "celery://"
LOCAL_ENGINE = "local"  # the default: this process runs the matrix (harness.run.runner)
DEFAULT_LEASE_S = 60.0
HEARTBEAT_S = 5.0  # a worker's declaration is refreshed this often
DECLARATION_TTL_S = 20  # and expires this long after its last refresh
RESULT_TTL_S = 30 * 24 * 3600  # records wait this long for a submitter to collect them
TASK_NAME = "migbench.run"
UNACKED_INDEX = "unacked_index"  # kombu's default key for the leases (set explicitly below)
_SCHEMES = ("redis", "rediss")
_HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}$|^\[[0-9A-Fa-f:.]{2,45}\]$")


def broker_problem(url: str) -> str:
    """What is wrong with a broker URL (pure), or "": ``redis[s]://[[user]:password@]host[:port][/db]``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in _SCHEMES:
        return "use redis://HOST:PORT/DB (or rediss:// for TLS)"
    host = parts.netloc.rpartition("@")[2].rsplit(":", 1)[0] if port else \
        parts.netloc.rpartition("@")[2]
    if not _HOST.fullmatch(host or ""):
        return "needs a host name or address, e.g. redis://127.0.0.1:6379/0"
    if port is not None and not 0 < port < 65536:
        return "the port must be 1-65535"
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and int(db) < 16):
        return "the database must be a number 0-15, e.g. redis://host:6379/0"
    if parts.query or parts.fragment:
        return "takes no ?options or #fragment"
    return ""


def engine_broker(engine: str | None, broker: str | None) -> str | None:
    """The broker URL of ``--engine celery://URL`` or ``--broker URL``; None for the local
    engine (the default). Both flags are checked in harness.checks first."""
    if broker:
        return broker
    if engine and engine.startswith(ENGINE_PREFIX):
        return engine[len(ENGINE_PREFIX):]
    return None


def shown(url: str) -> str:
    """``url`` for output: a password in it is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    return url.replace(f"{user}:{parts.password}@", f"{user}:***@", 1)


def make_app(url: str, lease_s: float = DEFAULT_LEASE_S) -> Any:
    """The Celery app for the broker at ``url`` (also the result backend)."""
    from celery import Celery

    app = Celery("migbench", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_track_started=True, result_expires=RESULT_TTL_S,
        broker_transport_options={
            "visibility_timeout": lease_s, "unacked_index_key": UNACKED_INDEX,
            # sweep for expired leases every few seconds, not every 100 s (kombu's default)
            "unacked_restore_interval": max(1.0, min(10.0, lease_s / 10)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True, broker_connection_max_retries=10,
        worker_enable_remote_control=False, worker_send_task_events=False,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
        task_default_queue="migbench.unrouted",
    )
    return app


def client(url: str) -> Any:
    """A redis-py client for the broker, checked with a PING.

    :raise HostError: the broker cannot be reached.
    """
    import redis

    c = redis.Redis.from_url(url, socket_timeout=15, socket_connect_timeout=5)
    try:
        c.ping()
    except redis.RedisError as exc:
        raise HostError(f"broker {shown(url)}: cannot reach it ({str(exc)[:200]}); start it "
                        "(e.g. `redis-server --bind 127.0.0.1 --port 6379`) or fix --broker"
                        ) from None
    return c


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def deliveries_key(task_id: str) -> str:
    return f"{PREFIX}deliveries:{task_id}"


def attempts_key(task_id: str) -> str:
    return f"{PREFIX}attempts:{task_id}"


def submitted_key(campaign: str) -> str:
    return f"{PREFIX}campaign:{campaign}:submitted"


def campaign_key(spec_json: str, out: Path) -> str:
    """A campaign's identity on the broker: its matrix and its folder on this machine."""
    text = "\n".join([spec_json, socket.gethostname(), str(out.resolve())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_key(campaign: str) -> str:
    """The default QEMU build a campaign's cells were planned with (``--attach`` plans the same
    cells from it, without the hosts file)."""
    return f"{PREFIX}campaign:{campaign}:default-build"


def task_id(campaign: str, cell_id: str, repetition: int) -> str:
    """A run's task id: its idempotency key."""
    return f"mb-{campaign}-{cell_id}-{repetition}"


def renew_lease(c: Any, delivery_tag: str) -> bool:
    """Push the lease of the message ``delivery_tag`` a full lease ahead; False when it is no
    longer held (it was redelivered already)."""
    return bool(c.zadd(UNACKED_INDEX, {delivery_tag: time.time()}, xx=True, ch=True)) or \
        c.zscore(UNACKED_INDEX, delivery_tag) is not None


def declarations(c: Any) -> list[tuple[str, bytes]]:
    """(key, value) of every live worker declaration."""
    keys = sorted(c.scan_iter(match=f"{PREFIX}worker:*", count=500))
    values = c.mget(keys) if keys else []
    return [(k.decode(errors="replace"), v) for k, v in zip(keys, values, strict=True)
            if v is not None]


def queue_depth(c: Any, queue: str) -> int:
    """Messages waiting in ``queue`` (not the ones being run)."""
    return int(c.llen(queue))


#: Moves one message from a queue to another, if it is still there (another worker may have
#: taken it first): atomic on the server.
_MOVE = """if redis.call('lrem', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('rpush', KEYS[2], ARGV[2])
  return 1
end
return 0"""
MAX_MESSAGE_BYTES = 4 << 20  # a run's message carries its matrix: far below this


def waiting_runs(c: Any, queue: str, limit: int = 100) -> list[tuple[bytes, str, Any]]:
    """(raw message, task id, the task's first argument) of the runs waiting in ``queue``,
    next to run first; messages that are not migbench runs are left out. The broker is shared:
    nothing here is trusted beyond its shape (:meth:`harness.lab.job.Job.parse` validates)."""
    out = []
    for raw in reversed(c.lrange(queue, -limit, -1)):  # kombu pops from the right
        if len(raw) > MAX_MESSAGE_BYTES:
            continue
        try:
            msg = json.loads(raw)
            headers, props = msg["headers"], msg["properties"]
            if headers.get("task") != TASK_NAME or props.get("body_encoding") != "base64":
                continue
            args = json.loads(base64.b64decode(msg["body"], validate=True))[0]
            out.append((raw, str(headers["id"]), args[0]))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
    return out


def move_run(c: Any, raw: bytes, source: str, dest: str) -> bool:
    """Move the waiting message ``raw`` from queue ``source`` to the front of ``dest`` (its
    routing key too, so that a lease that runs out brings it back to ``dest``); False when it
    is no longer waiting there."""
    msg = json.loads(raw)
    msg["properties"]["delivery_info"] = {"exchange": "", "routing_key": dest}
    return bool(c.eval(_MOVE, 2, source, dest, raw, json.dumps(msg)))


def check_url(url: str) -> None:
    """:raise HarnessError: ``url`` is not a broker URL."""
    problem = broker_problem(url)
    if problem:
        raise HarnessError(f"broker {shown(url)[:200]}: {problem}")
