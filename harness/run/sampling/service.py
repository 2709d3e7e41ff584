"""The load on a service in the guest: a fixed request rate from this machine, every request kept.

Why our own client and not ``redis-benchmark`` or ``memaslap``: both are closed-loop (each
connection sends its next request when the previous reply came), so while the guest is paused
for the switchover they stop sending, and the requests a real client population would have sent
are never counted (coordinated omission): their p99 hides exactly the downtime we measure. Here
``clients`` connections send on a fixed schedule (open loop: request ``n`` of client ``i`` is due
at ``start + (n * clients + i) / rate``), pipelined when replies are late, and a request's latency
runs from when it was *due*, not when it was written. One asyncio loop in one thread holds a few
thousand requests per second on one core, which is what a TCG guest can serve.

Each client owns the keys ``k`` with ``k % clients == i``, so the last write of a key is the last
acknowledged SET on one connection (replies come in order): after the migration
:meth:`ServiceLoad.check_dataset` reads every key back and compares it with that write (or, for a
key whose last SET was never answered, with any version that might have landed).

Pure summaries (per 100 ms, per phase) are in :mod:`harness.run.sampling.servicestats`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.errors import HarnessError
from harness.plan.models import ServiceSpec
from harness.run.cancel import Stop
from harness.run.sampling import service_proto as proto

Status = Literal["ok", "late", "error", "lost"]
MAX_BACKLOG = 50_000  # requests in flight on one connection before new ones are refused
RECONNECT_S = 0.2
CHECK_BATCH = 500


@dataclass
class Request:
    due: float  # epoch seconds (host clock) the request was due
    op: Literal["get", "set"]
    key: int
    version: int = 0  # SET: which version of the key's value
    done: float | None = None  # epoch seconds the reply (or the error) arrived
    status: Status = "lost"
    error: str | None = None
    keep: bool = False  # keep the value read (the dataset check)
    sent: float | None = None  # epoch seconds it was written (late when this machine was busy)
    value: bytes | None = None

    @property
    def latency_ms(self) -> float | None:
        if self.done is None or self.status not in ("ok", "late"):
            return None
        return (self.done - self.due) * 1000.0


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: collections.deque[Request] = field(default_factory=collections.deque)
    broken: bool = False
    task: asyncio.Task[None] | None = None


class ServiceLoad:
    """A fixed-rate GET/SET load on ``target:port`` until :meth:`stop`.

    :meth:`preload` (writes every key once, waiting for the server to answer) and :meth:`start`
    raise :class:`HarnessError` when the service cannot be reached. Their waits and
    :meth:`check_dataset`'s wake on ``stop`` (the run's) and raise ``Cancelled``; :meth:`stop`'s
    does not (it is part of a teardown).
    """

    def __init__(self, kind: proto.Kind, target: str, port: int, spec: ServiceSpec, *,
                 source: str | None = None, seed: int = 0, stop: Stop | None = None) -> None:
        self.kind, self.target, self.port, self.spec = kind, target, port, spec
        self.cancel = stop
        self.source = source
        self.seed = seed
        self.timeout_s = spec.timeout_ms / 1000.0
        self._requests: list[Request] = []
        self._acked: dict[int, int] = {}  # key -> version of its last acknowledged SET
        self._maybe: dict[int, set[int]] = collections.defaultdict(set)  # unanswered SETs
        self._versions: dict[int, int] = collections.defaultdict(int)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="service-load",
                                        daemon=True)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[_Conn] = []
        self._epoch0, self._mono0 = time.time(), time.monotonic()
        self.started: float | None = None

    # ----------------------------------------------------------------- public, any thread

    def preload(self, timeout_s: float) -> None:
        """Write version 0 of every key, retrying the connection until the server answers."""
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._preload(timeout_s), timeout_s + 5)

    def start(self) -> None:
        """Start the clients (after :meth:`preload`)."""
        self.started = self._now()
        self._call(self._start_clients(), 10)

    def stop(self) -> list[Request]:
        """Stop sending, wait up to the timeout for replies in flight, close; every request."""
        if self._thread.is_alive():
            with contextlib.suppress(HarnessError):
                self._call(self._stop(), self.timeout_s + 10, wake=False)
        return list(self._requests)

    def check_dataset(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Read every key back; the verdict (``ok``, ``corrupted`` or ``unchecked``)."""
        try:
            verdict: dict[str, Any] = self._call(self._check(), timeout_s)
            return verdict
        except HarnessError as exc:
            return {"verdict": "unchecked", "keys": self.spec.keys, "reason": str(exc)}

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    # ----------------------------------------------------------------- in the loop

    def _call(self, coro: Any, timeout_s: float, wake: bool = True) -> Any:
        if not self._thread.is_alive():
            self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        cancel = self.cancel if wake else None
        try:
            with cancel.waking(fut.cancel) if cancel else contextlib.nullcontext():
                return fut.result(timeout_s)
        except concurrent.futures.CancelledError:
            if cancel is not None:
                cancel.check()
            raise
        except TimeoutError:
            fut.cancel()
            raise HarnessError(f"{self.kind} at {self.target}:{self.port}: no answer within "
                               f"{timeout_s:.0f} s") from None
        except (OSError, proto.ProtocolError) as exc:
            raise HarnessError(f"{self.kind} at {self.target}:{self.port}: {exc}") from exc

    def _now(self) -> float:
        return self._epoch0 + (time.monotonic() - self._mono0)

    async def _connect(self, timeout_s: float) -> _Conn:
        local = (self.source, 0) if self.source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.target, self.port, local_addr=local), timeout_s)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(reader, writer)
        conn.task = asyncio.create_task(self._read(conn))
        self._conns.append(conn)
        return conn

    async def _preload(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = await self._connect(min(2.0, max(0.1, deadline - time.monotonic())))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        waits = []
        for key in range(self.spec.keys):
            req = Request(due=self._now(), op="set", key=key, version=0)
            self._maybe[key].add(0)
            conn.pending.append(req)
            conn.writer.write(proto.encode_set(self.kind, key,
                                               proto.value_of(key, 0, self.spec.value_bytes)))
            waits.append(req)
            if len(waits) % CHECK_BATCH == 0:
                await conn.writer.drain()
        await conn.writer.drain()
        while any(r.done is None for r in waits) and not conn.broken:
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.01)
        # A late reply still acknowledges its SET: the preload has no latency budget (2000
        # pipelined SETs took over timeout_ms in a slow guest on a busy machine)
        bad = [r for r in waits if r.status not in ("ok", "late")]
        if bad:
            raise OSError(f"preloading {len(bad)} of {len(waits)} keys failed "
                          f"({bad[0].error or bad[0].status})")
        await self._close(conn)

    async def _start_clients(self) -> None:
        mono0 = time.monotonic() + 0.05
        conns = [await self._connect(5.0) for _ in range(self.spec.clients)]
        self._tasks = [asyncio.create_task(self._client(i, conns[i], mono0))
                       for i in range(self.spec.clients)]

    async def _client(self, i: int, conn: _Conn | None, mono0: float) -> None:
        spec = self.spec
        rng = random.Random(self.seed * 1_000_003 + i)
        keys = range(i, spec.keys, spec.clients)
        set_fraction = spec.set_fraction()
        n, last_try = 0, 0.0
        while not self._stopping:
            due_mono = mono0 + (n * spec.clients + i) / spec.rate_ops
            n += 1
            delay = due_mono - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stopping:
                break
            key = rng.choice(keys)
            req = Request(due=self._epoch0 + (due_mono - self._mono0),
                          op="set" if rng.random() < set_fraction else "get", key=key)
            self._requests.append(req)
            if (conn is None or conn.broken) and time.monotonic() - last_try > RECONNECT_S:
                last_try = time.monotonic()
                try:
                    conn = await self._connect(1.0)
                except (OSError, TimeoutError) as exc:
                    conn = None
                    req.error = f"connect: {exc}"
            if conn is None or conn.broken or len(conn.pending) >= MAX_BACKLOG:
                req.status, req.done = "error", self._now()
                req.error = req.error or ("backlog" if conn and not conn.broken else "no connection")
                continue
            self._send(conn, req)

    def _send(self, conn: _Conn, req: Request) -> None:
        if req.op == "set":
            self._versions[req.key] += 1
            req.version = self._versions[req.key]
            self._maybe[req.key].add(req.version)
            data = proto.encode_set(self.kind, req.key,
                                    proto.value_of(req.key, req.version, self.spec.value_bytes))
        else:
            data = proto.encode_get(self.kind, req.key)
        conn.pending.append(req)
        conn.writer.write(data)
        req.sent = self._now()

    async def _read(self, conn: _Conn) -> None:
        buf = bytearray()
        try:
            while True:
                chunk = await conn.reader.read(65536)
                if not chunk:
                    raise ConnectionResetError("closed by the server")
                buf += chunk
                while (got := proto.parse(self.kind, buf)) is not None:
                    reply, used = got
                    del buf[:used]
                    if not conn.pending:
                        raise proto.ProtocolError("a reply to no request")
                    self._answered(conn.pending.popleft(), reply)
        except (OSError, proto.ProtocolError, asyncio.IncompleteReadError) as exc:
            conn.broken = True
            now = self._now()
            while conn.pending:
                req = conn.pending.popleft()
                req.status, req.done, req.error = "error", now, f"connection: {exc}"
        except asyncio.CancelledError:
            conn.broken = True
            raise

    def _answered(self, req: Request, reply: proto.Reply) -> None:
        req.done = self._now()
        if not reply.ok:
            req.status, req.error = "error", reply.error
            return
        req.status = "late" if req.done - req.due > self.timeout_s else "ok"
        if req.keep:
            req.value = reply.value
        if req.op == "set":
            self._acked[req.key] = req.version
            # Replies come in order: every earlier SET of this key on this connection landed.
            self._maybe[req.key] = {v for v in self._maybe[req.key] if v > req.version}

    async def _stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        deadline = time.monotonic() + self.timeout_s
        while any(c.pending and not c.broken for c in self._conns) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self._conns):
            await self._close(c)

    async def _close(self, conn: _Conn) -> None:
        if conn.task is not None:
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.task
        conn.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.writer.wait_closed(), 1.0)
        if conn in self._conns:
            self._conns.remove(conn)

    async def _check(self) -> dict[str, Any]:
        conn = await self._connect(5.0)
        got: dict[int, bytes | None] = {}
        try:
            for lo in range(0, self.spec.keys, CHECK_BATCH):
                batch = list(range(lo, min(lo + CHECK_BATCH, self.spec.keys)))
                reqs = [Request(due=self._now(), op="get", key=k, keep=True) for k in batch]
                for r in reqs:
                    conn.pending.append(r)
                    conn.writer.write(proto.encode_get(self.kind, r.key))
                await conn.writer.drain()
                while any(r.done is None for r in reqs) and not conn.broken:
                    await asyncio.sleep(0.005)
                if conn.broken:
                    raise OSError("connection lost while reading the keys back")
                if any(r.status == "error" for r in reqs):
                    raise OSError(f"the server refused a GET: {reqs[0].error}")
                got.update((r.key, r.value) for r in reqs)
        finally:
            await self._close(conn)
        return judge_dataset(got, self._acked, self._maybe, self.spec.value_bytes)


def judge_dataset(got: dict[int, bytes | None], acked: dict[int, int],
                  maybe: dict[int, set[int]], size: int) -> dict[str, Any]:
    """Compare what every key reads back with what was written to it (pure).

    A key must hold its last acknowledged version, or one written after it whose reply never
    came (it may or may not have landed)."""
    missing, wrong, ambiguous = [], [], 0
    for key, value in sorted(got.items()):
        allowed = {acked[key]} if key in acked else set()
        allowed |= maybe.get(key, set())
        if len(allowed) > 1:
            ambiguous += 1
        if value is None:
            missing.append(key)
        elif value not in {proto.value_of(key, v, size) for v in allowed}:
            wrong.append(key)
    bad = missing + wrong
    return {"verdict": "corrupted" if bad else "ok", "keys": len(got), "missing": len(missing),
            "wrong": len(wrong), "ambiguous": ambiguous, "first_bad": sorted(bad)[:10]}
