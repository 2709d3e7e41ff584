"""A run record's bytes: the one way to read them and the one way to write them.

Reading (:func:`loads`, :func:`read`) is for files anyone may have edited or damaged, so it never
fails with anything but a :class:`RecordError` of one line. Python's JSON reader accepts more than
JSON; what it accepts is turned into what the model expects:

* ``NaN``, ``Infinity`` and ``-Infinity``, and float literals too large for a double (``1e999``),
  are read as null: a record stores non-finite numbers as null (version 1 could write them), and
  a null where a number is required is then an error naming the field;
* integer literals longer than 40 digits are not converted (CPython refuses beyond 4300 digits,
  and converting costs quadratic time): the model refuses them, naming the field;
* an object that names a key twice, text that is not UTF-8, and nesting deeper than Python's
  recursion limit are errors of the file.

Writing (:func:`dump`) gives canonical bytes: keys sorted, ``indent=1``, ASCII, a final newline;
``loads(dump(r)) == r`` and ``dump(loads(dump(r))) == dump(r)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import ValidationError

from harness.errors import ConfigError
from harness.inputs import read_bytes
from harness.results.record.errors import BUG, DELETE, RecordError, explain
from harness.results.record.model import RunRecord
from harness.results.record.scalars import HugeInt
from harness.results.record.upgrade import upgrade

_MAX_INT_DIGITS = 40
#: A run file larger than this was not written by migbench (a long run with 20 Hz samples,
#: consoles and guest series is a few MB).
MAX_BYTES = 64 * 1024**2


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _int(text: str) -> int | HugeInt:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= _MAX_INT_DIGITS else HugeInt(digits)


def _float(text: str) -> float | None:
    v = float(text)
    return v if math.isfinite(v) else None


def _constant(_name: str) -> None:
    return None  # NaN, Infinity, -Infinity


def parse(data: bytes | str) -> object:
    """The JSON value of ``data`` under the rules above.

    :raise RecordError: not JSON (with the line), a key named twice, nesting too deep.
    """
    try:
        return json.loads(data, object_pairs_hook=_object, parse_int=_int, parse_float=_float,
                          parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise RecordError(f"line {exc.lineno}", f"not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise RecordError("", "not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise RecordError("", "not a run record (JSON nested too deep)") from None
    except _DuplicateKey as exc:
        raise RecordError("", f"not a run record (an object names the key {exc.key[:40]!r} twice)"
                          ) from None


def loads(data: bytes | str, source: str = "") -> RunRecord:
    """The record in ``data`` (JSON of any schema version migbench wrote), upgraded.

    :raise RecordError: one line naming ``source``, the field, what was expected and the fix.
    """
    try:
        return upgrade(parse(data))
    except RecordError as exc:
        raise exc.in_file(source) from None


def read(path: Path) -> RunRecord:
    """The record in the file ``path``: a regular file (a FIFO would block the reader) of at most
    :data:`MAX_BYTES`.

    :raise RecordError: the file cannot be read or does not hold a valid record (one line).
    """
    try:
        data = read_bytes(path, "result", MAX_BYTES)
    except ConfigError as exc:
        missing = not path.exists() and not path.is_symlink()
        raise RecordError("", f"cannot read result: {exc.problem}",
                          "check the path" if missing else DELETE, str(path)) from None
    return loads(data, str(path))


def dump(record: RunRecord) -> bytes:
    """The canonical bytes of ``record``, as run files store it.

    The record is validated again on its way out: ``model_copy(update=...)`` (the runner adds
    the phases and the repetition rule so) and a part passed in as a model instance skip
    validation, so without it a NaN there would fail the write, or bytes no reader accepts
    would be stored. A non-finite number where one may be missing is stored as null.

    :raise RecordError: ``record`` holds what no reader would accept (one line; a migbench bug).
    """
    try:
        checked = RunRecord.model_validate(record.model_dump(mode="json", by_alias=True))
    except ValidationError as exc:
        field, problem = explain(exc)
        raise RecordError(field, f"not stored: {problem}", BUG) from None
    data = checked.model_dump(mode="json", by_alias=True)
    return (json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
