"""The two wire protocols the service load speaks, as pure encoders and incremental parsers.

Only what the load needs: GET and SET of one key, and their replies. Redis: RESP2 arrays of bulk
strings, replies ``+OK``, ``-ERR ...``, ``$n`` + data, ``$-1`` (no such key). Memcached: the text
protocol, ``get`` and ``set`` (flags 0, no expiry), replies ``STORED``, ``VALUE k f n`` + data +
``END``, ``END`` (no such key), and ``ERROR``/``CLIENT_ERROR``/``SERVER_ERROR`` lines.

A parser takes the bytes received so far and returns the first reply and how many bytes it used,
or None while the reply is incomplete; anything else the server sends is a :class:`ProtocolError`
(the connection cannot be trusted after it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["redis", "memcached"]
MAX_LINE = 4096  # a reply's first line longer than this is not one of ours


class ProtocolError(Exception):
    """The server sent something that is no reply to our requests."""


@dataclass(frozen=True)
class Reply:
    ok: bool  # False: the server answered with an error
    value: bytes | None = None  # GET: the value, None for a missing key
    error: str | None = None


def key_name(key: int) -> bytes:
    return b"mb:%d" % key


def value_of(key: int, version: int, size: int) -> bytes:
    """The value written to ``key`` the ``version``-th time: unique per (key, version) as far as
    ``size`` allows, and cheap to check."""
    stamp = b"%d.%d;" % (key, version)
    return (stamp * (size // len(stamp) + 1))[:size]


def encode_get(kind: Kind, key: int) -> bytes:
    k = key_name(key)
    if kind == "redis":
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k)
    return b"get %s\r\n" % k


def encode_set(kind: Kind, key: int, value: bytes) -> bytes:
    k = key_name(key)
    if kind == "redis":
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(value), value)
    return b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value)


def _line(buf: bytes | bytearray, start: int = 0) -> tuple[bytes, int] | None:
    end = buf.find(b"\r\n", start)
    if end < 0:
        if len(buf) - start > MAX_LINE:
            raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")
        return None
    return bytes(buf[start:end]), end + 2


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")[:200]


def parse_redis(buf: bytes | bytearray) -> tuple[Reply, int] | None:
    got = _line(buf)
    if got is None:
        return None
    line, pos = got
    if line.startswith(b"+"):
        return Reply(True), pos
    if line.startswith(b"-"):
        return Reply(False, error=_text(line[1:])), pos
    if line.startswith(b"$"):
        try:
            n = int(line[1:])
        except ValueError:
            raise ProtocolError(f"bad bulk length {_text(line)!r}") from None
        if n < 0:
            return Reply(True, None), pos
        if len(buf) < pos + n + 2:
            return None
        if buf[pos + n: pos + n + 2] != b"\r\n":
            raise ProtocolError("bulk string not followed by CRLF")
        return Reply(True, bytes(buf[pos:pos + n])), pos + n + 2
    raise ProtocolError(f"unexpected redis reply {_text(line)!r}")


def parse_memcached(buf: bytes | bytearray) -> tuple[Reply, int] | None:
    got = _line(buf)
    if got is None:
        return None
    line, pos = got
    if line in (b"STORED", b"END"):
        return Reply(True, None), pos
    if line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"NOT_STORED")):
        return Reply(False, error=_text(line)), pos
    if line.startswith(b"VALUE "):
        parts = line.split()
        try:
            n = int(parts[3])
        except (IndexError, ValueError):
            raise ProtocolError(f"bad VALUE line {_text(line)!r}") from None
        if len(buf) < pos + n + 7:
            return None
        if buf[pos + n: pos + n + 7] != b"\r\nEND\r\n":
            raise ProtocolError("VALUE data not followed by END")
        return Reply(True, bytes(buf[pos:pos + n])), pos + n + 7
    raise ProtocolError(f"unexpected memcached reply {_text(line)!r}")


def parse(kind: Kind, buf: bytes | bytearray) -> tuple[Reply, int] | None:
    return parse_redis(buf) if kind == "redis" else parse_memcached(buf)
