"""Parsing of human-readable sizes and rates used in config files ("64MiB", "200mbit")."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_BIT_UNITS = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*(?:/s)?\s*$")


def parse_bytes(value: object) -> int:
    """Parse a size in bytes: an int, or a string like ``64MiB``, ``1.5GiB``, ``200mbit``.

    Bit units (``kbit``, ``mbit``, ``gbit``) are converted to bytes, which is what QEMU's
    ``max-bandwidth`` wants for a link rate.

    :raise ValueError: with a message suitable for a config error.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"size must be a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 64MiB or 200mbit, got {value!r}")
    m = _RE.match(value)
    if not m:
        raise ValueError(f"cannot parse size {value!r}: use e.g. 64MiB, 2GiB, 200mbit or bytes")
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit in _BIT_UNITS:
        return int(number * _BIT_UNITS[unit] / 8)
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown unit {m.group(2)!r} in {value!r}: use B, KiB, MiB, GiB, TiB or mbit, gbit")
    return int(number * _SIZE_UNITS[unit])


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
