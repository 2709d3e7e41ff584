"""Parsing of human-readable sizes and rates used in config files ("64MiB", "200mbit")."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from harness.errors import shorten

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_BIT_UNITS = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
# at most 30 digits each side of the point: more cannot be a size (and Python refuses to turn
# thousands of digits into a number)
_RE = re.compile(r"^\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([a-zA-Z]*)\s*(?:/s)?\s*$")

#: QEMU's sizes and rates are uint64 (QAPI ``size``).
U64_MAX = 2**64 - 1


class ZeroSize(ValueError):
    """A size that is, or rounds down to, 0 bytes (to QEMU's rates 0 means "no limit")."""


def parse_bytes(value: object, maximum: int = U64_MAX) -> int:
    """Parse a size in bytes: an int, or a string like ``64MiB``, ``1.5GiB``, ``200mbit``.

    Bit units (``kbit``, ``mbit``, ``gbit``) are converted to bytes, which is what QEMU's
    ``max-bandwidth`` wants for a link rate. A size with a unit is rounded down to whole bytes;
    a plain number of bytes must be whole. The result is between 1 and ``maximum``.

    :raise ZeroSize: the size is 0 or rounds down to 0.
    :raise ValueError: anything else, with a message suitable for a config error.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 64MiB or 200mbit, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"size must be a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        if not value.is_integer():
            raise ValueError(f"{value} is not a whole number of bytes: write an integer or use a "
                             "unit (e.g. 1.5MiB)")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {shorten(value)}")
        return _in_range(value, value, maximum)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 64MiB or 200mbit, got {shorten(value)}")
    m = _RE.match(value)
    if not m:
        raise ValueError(f"cannot parse size {shorten(value)}: use e.g. 64MiB, 2GiB, 200mbit or "
                         "bytes")
    number, unit = Fraction(m.group(1)), m.group(2).lower()
    if unit in _BIT_UNITS:
        return _in_range(value, math.floor(number * _BIT_UNITS[unit] / 8), maximum)
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown unit {shorten(m.group(2))} in {shorten(value)}: use B, KiB, "
                         "MiB, GiB, TiB or mbit, gbit")
    if _SIZE_UNITS[unit] == 1 and number.denominator != 1:
        raise ValueError(f"{shorten(value)} is not a whole number of bytes: write an integer or "
                         "use a unit (e.g. 1.5MiB)")
    return _in_range(value, math.floor(number * _SIZE_UNITS[unit]), maximum)


def _in_range(given: object, size: int, maximum: int) -> int:
    if size == 0:
        what = "is 0 bytes" if given in (0, "0") else "rounds down to 0 bytes"
        raise ZeroSize(f"{shorten(given)} {what}: give at least 1 byte")
    if size > maximum:
        what = f"{size} bytes" if isinstance(given, int) else f"{shorten(given)} ({size} bytes)"
        limit = "QEMU's 64-bit limit" if maximum == U64_MAX else "the limit"
        raise ValueError(f"{what} is beyond {limit} of {maximum} bytes")
    return size


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def round_down_pow2(n: int) -> int:
    """The largest power of two <= n (n >= 1)."""
    return 1 << (n.bit_length() - 1)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
