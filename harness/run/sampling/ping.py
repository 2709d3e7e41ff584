"""The prober beside the guest: a UDP or ICMP echo every few ms, every probe recorded.

:class:`Prober` sends probes on a fixed schedule from a sender thread and matches replies in a
receiver thread; each :class:`Probe` keeps its send time (epoch seconds, host clock) and, when
answered, the reply's arrival time. :func:`summarise` (pure) splits them into before / during /
after a migration: probes sent and lost, the longest gap between two replies (the
network-visible downtime), and RTT percentiles (:func:`harness.analysis.stats.percentile`, linear between
ranks since issue 13; runs stored before kept their nearest-rank figures).

UDP probes go to the guest's echo responder (``workloads/udpecho.c``); ICMP probes need a raw
socket (root) and are answered by the guest kernel.
"""

from __future__ import annotations

import math
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, Self

from harness.analysis.stats import percentile
from harness.errors import HostError

MAGIC = b"MBPG"
PAYLOAD = struct.Struct(">4sIQ")  # magic, seq, send time in ns (monotonic)


@dataclass
class Probe:
    seq: int
    sent: float  # epoch seconds (host clock)
    received: float | None = None  # epoch seconds of the reply's arrival

    @property
    def rtt_ms(self) -> float | None:
        return None if self.received is None else (self.received - self.sent) * 1000.0

    def to_dict(self) -> dict[str, Any]:
        rtt = self.rtt_ms
        return {"seq": self.seq, "t": round(self.sent, 6),
                "rtt_ms": None if rtt is None else round(rtt, 3)}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


def icmp_echo(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request with a valid checksum."""
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
    csum = _checksum(head + payload)
    return struct.pack("!BBHHH", 8, 0, csum, ident, seq & 0xFFFF) + payload


class Prober:
    """Probes ``target`` every ``interval_s`` until :meth:`stop`; a context manager.

    :raise HostError: from :meth:`start` when the socket cannot be opened (ICMP needs root).
    """

    def __init__(self, target: str, *, interval_s: float = 0.01,
                 mode: Literal["udp", "icmp"] = "udp", port: int = 7777,
                 source: str | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.target = target
        self.interval_s = interval_s
        self.mode = mode
        self.port = port
        self.source = source
        self._probes: list[Probe] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self._ident = (os.getpid() ^ random.getrandbits(16)) & 0xFFFF
        # epoch = _epoch0 + (monotonic - _mono0): a steady clock expressed as epoch seconds
        self._epoch0 = 0.0
        self._mono0 = 0.0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _now(self) -> float:
        return self._epoch0 + (time.monotonic() - self._mono0)

    def start(self) -> None:
        if self._threads:
            return
        try:
            if self.mode == "udp":
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                if self.source:
                    sock.bind((self.source, 0))
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                if self.source:
                    sock.bind((self.source, 0))
        except OSError as exc:
            raise HostError(
                f"cannot open a {self.mode} probe socket to {self.target}: {exc.strerror}"
                + ("; ICMP probes need root (or use mode: udp)" if self.mode == "icmp" else "")
            ) from exc
        sock.settimeout(0.1)
        self._sock = sock
        self._epoch0, self._mono0 = time.time(), time.monotonic()
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._send_loop, name="ping-send", daemon=True),
            threading.Thread(target=self._recv_loop, name="ping-recv", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> list[Probe]:
        """Stop probing (idempotent) and return every probe sent."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.probes()

    def probes(self) -> list[Probe]:
        with self._lock:
            return [Probe(p.seq, p.sent, p.received) for p in self._probes]

    def _send_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        start = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            mono = time.monotonic()
            payload = PAYLOAD.pack(MAGIC, seq, int(mono * 1e9))
            probe = Probe(seq, self._epoch0 + (mono - self._mono0))
            with self._lock:
                self._probes.append(probe)
            try:
                if self.mode == "udp":
                    sock.sendto(payload, (self.target, self.port))
                else:
                    sock.sendto(icmp_echo(self._ident, seq, payload), (self.target, 0))
            except OSError:
                pass  # e.g. no ARP answer yet (EHOSTUNREACH): the probe counts as lost
            seq += 1
            # Absolute schedule: a late wake-up does not shift later probes.
            nxt = start + seq * self.interval_s
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _recv_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data, _ = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            now = self._now()
            if self.mode == "icmp":
                if len(data) < 20:
                    continue
                ihl = (data[0] & 0x0F) * 4
                icmp = data[ihl:]
                if len(icmp) < 8 + PAYLOAD.size or icmp[0] != 0:
                    continue
                ident = struct.unpack("!H", icmp[4:6])[0]
                if ident != self._ident:
                    continue
                data = icmp[8:]
            if len(data) < PAYLOAD.size:
                continue
            magic, seq, _ = PAYLOAD.unpack_from(data)
            if magic != MAGIC:
                continue
            with self._lock:
                if seq < len(self._probes) and self._probes[seq].received is None:
                    self._probes[seq].received = now


# --------------------------------------------------------------------------- summaries (pure)


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def _phase(probes: Sequence[Probe], replies: Sequence[float], lo: float, hi: float,
           timeout_s: float, undetermined_after: float) -> dict[str, Any]:
    """Summary of probes sent in [lo, hi); gaps between replies that start in [lo, hi)."""
    sent = [p for p in probes if lo <= p.sent < hi and not (
        p.received is None and p.sent >= undetermined_after)]
    ok = [p for p in sent if p.received is not None and p.received - p.sent <= timeout_s]
    rtts = [p.rtt_ms for p in ok if p.rtt_ms is not None]
    gap = 0.0
    for a, b in pairwise(replies):
        if lo <= a < hi:
            gap = max(gap, b - a)
    # the longest run of consecutive lost probes
    answered = {p.seq for p in ok}
    run = best = 0
    for p in sent:
        if p.seq in answered:
            run = 0
        else:
            run += 1
            best = max(best, run)
    return {
        "sent": len(sent),
        "lost": len(sent) - len(ok),
        "max_lost_run": best,
        "max_gap_ms": _r(gap * 1000.0, 1) if len(sent) else None,
        "rtt_p50_ms": _r(percentile(rtts, 50)),
        "rtt_p99_ms": _r(percentile(rtts, 99)),
        "rtt_max_ms": _r(max(rtts) if rtts else None),
    }


def summarise(probes: Sequence[Probe], migrate_start: float, switchover: float | None,
              end: float, *, interval_s: float = 0.01, timeout_s: float = 1.0) -> dict[str, Any]:
    """Before / during / after / total summaries of ``probes`` (all times epoch seconds).

    * before: probes sent before ``migrate_start``; during: from then until ``switchover`` (the
      guest's resume on the destination; None when it never moved: during lasts until ``end``);
      after: from ``switchover`` to ``end``.
    * A probe is lost when no reply came within ``timeout_s``; unanswered probes sent in the
      last ``timeout_s`` before ``end`` are undetermined and not counted.
    * ``max_gap_ms``: longest time between two consecutive replies (host arrival), attributed to
      the phase in which the gap began; with no loss it is about ``interval_s``.
    * ``max_gap`` (top level): the longest gap of the run with its epoch start and end.
    """
    probes = sorted(probes, key=lambda p: p.sent)
    replies = sorted(p.received for p in probes if p.received is not None)
    undetermined = end - timeout_s
    sw = switchover if switchover is not None else math.inf
    first = probes[0].sent if probes else migrate_start
    out: dict[str, Any] = {
        "interval_ms": round(interval_s * 1000, 3),
        "timeout_ms": round(timeout_s * 1000, 3),
        "before": _phase(probes, replies, -math.inf, migrate_start, timeout_s, undetermined),
        "during": _phase(probes, replies, migrate_start, min(sw, end), timeout_s, undetermined),
        "after": _phase(probes, replies, sw, end, timeout_s, undetermined),
        "total": _phase(probes, replies, -math.inf, end, timeout_s, undetermined),
        "first_probe": _r(first, 6),
    }
    best: tuple[float, float, float] | None = None
    for a, b in pairwise(replies):
        if a <= end and (best is None or b - a > best[0]):
            best = (b - a, a, b)
    out["max_gap"] = None if best is None else {
        "ms": round(best[0] * 1000, 1), "start": round(best[1], 6), "end": round(best[2], 6)}
    answered_after = [p for p in probes if p.received is not None and p.sent >= sw]
    out["replies_after_switchover"] = len(answered_after)
    return out


def timeline(probes: Sequence[Probe], t0: float) -> list[dict[str, Any]]:
    """Every probe for the run JSON: ``t`` relative to ``t0`` (the migrate command), rtt or None."""
    return [{"seq": p.seq, "t": round(p.sent - t0, 4),
             "rtt_ms": None if p.rtt_ms is None else round(p.rtt_ms, 3)} for p in probes]
