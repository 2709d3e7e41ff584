"""The leaf types of a run record: bounded integers, finite numbers, open JSON values.

Every number in a record goes through these, so the rules hold everywhere: a string is never a
number, a boolean is never a number, integers fit in 64 bits, and a non-finite float (NaN,
Infinity, which Python's JSON reader accepts) becomes null. Open values (QEMU parameters, QMP
event data, axis values) are JSON of bounded depth with the same rules for their numbers.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, Strict

INT_MAX = 2**63 - 1
INT_MIN = -(2**63)
#: Open JSON values nest no deeper than this (QEMU's own replies nest three or four levels).
MAX_DEPTH = 20


class HugeInt:
    """An integer literal too long to be one of ours, as the JSON reader leaves it (converting
    thousands of digits costs quadratic time, and CPython refuses beyond 4300 digits)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


class Frozen(BaseModel):
    """A part of the record whose shape migbench owns: no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_alias=True,
                              validate_by_name=True, serialize_by_alias=True)


def _digits(v: int) -> int:
    # str() of an int beyond 4300 digits raises; the bit length gives the count closely enough.
    bits = abs(v).bit_length()
    return len(str(abs(v))) if bits < 13000 else int(bits * math.log10(2)) + 1


def _number(v: object) -> object:
    """Non-finite floats become None; integers beyond 64 bits are refused."""
    if isinstance(v, HugeInt):
        raise ValueError(f"expected a number within 64 bits, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, int) and not isinstance(v, bool) and not INT_MIN <= v <= INT_MAX:
        raise ValueError(f"expected a number within 64 bits, got an integer of {_digits(v)} digits")
    return v


def _json(v: object, depth: int = 0) -> JsonValue:
    """``v`` as a JSON value: bounded depth, string keys, numbers as :func:`_number` has them."""
    if depth > MAX_DEPTH:
        raise ValueError(f"expected a JSON value nested at most {MAX_DEPTH} levels deep")
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (int, float, HugeInt)):
        n = _number(v)
        assert n is None or isinstance(n, (int, float))
        return n
    if isinstance(v, (list, tuple)):
        return [_json(x, depth + 1) for x in v]
    if isinstance(v, dict):
        out: dict[str, JsonValue] = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError(f"expected string keys, got {type(k).__name__} {k!r}")
            out[k] = _json(x, depth + 1)
        return out
    raise ValueError(f"expected a JSON value, got {type(v).__name__}")


def _open(v: object) -> object:
    return _json(v)  # one parameter: pydantic would pass its ValidationInfo as `depth`


def plain(v: object) -> object:
    """A model's input as checked JSON: a model instance (a Cell's WorkloadSpec) is dumped first,
    so that it is validated again by the record's stricter subclass."""
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="python")
    return _json(v)


#: An integer of at most 64 bits; never a string, float or boolean.
Int = Annotated[int, Strict(), BeforeValidator(_number)]
OptInt = Annotated[Annotated[int, Strict()] | None, BeforeValidator(_number)]
#: A finite number (an integer is taken as one); NaN and Infinity arrive as null.
Float = Annotated[float, Strict(), BeforeValidator(_number)]
OptFloat = Annotated[Annotated[float, Strict()] | None, BeforeValidator(_number)]
Bool = Annotated[bool, Strict()]
#: An open JSON value (bounded depth, finite numbers): for what QEMU or a matrix file decides.
Json = Annotated[JsonValue, BeforeValidator(_open)]
JsonObject = dict[str, Json]

#: UTC time as the harness writes it, e.g. ``2026-11-26T00:48:01.391Z``.
Utc = Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")]


def utc(t: float) -> str:
    """Epoch seconds ``t`` as :data:`Utc` text, to the millisecond."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


#: A cell id as :func:`harness.plan.matrix.cell_id` makes it: 12 hex digits of a SHA-256.
CELL_ID_PATTERN = r"^[0-9a-f]{12}$"
CellId = Annotated[str, Field(pattern=CELL_ID_PATTERN)]
#: A matrix (campaign) name, as ``MatrixSpec.name`` allows it.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Role = Literal["source", "destination"]
Verdict = Literal["ok", "corrupted", "unchecked"]
