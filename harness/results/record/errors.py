"""A result file that cannot be read, as one line: ``FILE: field path: what was expected; fix``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from harness.errors import HarnessError

#: The fix for a damaged or hand-edited run file: the runner reruns a repetition whose file is gone.
DELETE = "delete it to rerun that repetition"
#: The fix for a file of a newer schema.
NEWER = "written by a newer migbench: upgrade"
#: The fix for a field this migbench does not know: version 2 has gained optional parts since it
#: was first written (issues 16-18), so a file of a newer migbench may hold one.
UNKNOWN = f"if a newer migbench wrote it, upgrade; else {DELETE}"
#: The fix for a record the harness built that it cannot store.
BUG = "a migbench bug: please report it with the run's log"

Loc = tuple[int | str, ...]


class RecordError(HarnessError):
    """A run record that does not validate; ``str()`` is the one line for the user."""

    def __init__(self, field: str, problem: str, fix: str = DELETE, file: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        self.file = file
        parts = [p for p in (file, field) if p]
        super().__init__(": ".join([*parts, problem]) + f"; {fix}")

    def in_file(self, file: str) -> RecordError:
        """The same error, naming ``file``."""
        return RecordError(self.field, self.problem, self.fix, file)


def path(loc: Loc) -> str:
    """``('timeline', 3, 'ram', 'total')`` -> ``timeline[3].ram.total``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() or all(c.isalnum() or c in "_-" for c in part) and part:
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"  # an axis "writer.rate_mib_s", or a hostile key
    return out or "(top level)"


def shown(v: object) -> str:
    """A short, terminal-safe description of a value from a file."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    if isinstance(v, int) and v.bit_length() > 64:
        return "an integer beyond 64 bits"
    text = repr(v)  # escapes control characters
    return text if len(text) <= 40 else text[:37] + "..."


_EXPECTED = {
    "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string", "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "dict_type": "expected an object", "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "list_type": "expected a list", "tuple_type": "expected a list",
    "missing": "missing", "extra_forbidden": "unknown field",
}


def _problem(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err["input"]
    if kind in ("value_error", "assertion_error"):
        return err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        expected = f"expected {ctx.get('expected')}"
    elif kind == "string_pattern_mismatch":
        expected = f"expected text matching {ctx.get('pattern')}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        expected = f"expected a value {op} {bound}"
    elif kind in ("too_short", "too_long"):
        return err["msg"][:1].lower() + err["msg"][1:]  # "tuple should have at most 2 items ..."
    else:
        expected = _EXPECTED.get(kind) or err["msg"].replace("Input should be", "expected")
    return f"{expected}, got {shown(value)}"


def explain(exc: ValidationError, where: Callable[[Loc], Loc] | None = None) -> tuple[str, str]:
    """(field path, what was expected) of the first error of ``exc``, noting how many more.

    ``where`` maps an error location to the one to report (the upgrade of a version-1 file
    names the field as that file has it).
    """
    errors: Sequence[ErrorDetails] = exc.errors()
    first = errors[0]
    loc: Loc = tuple(first["loc"])
    if where is not None:
        loc = where(loc)
    more = len(errors) - 1
    problem = _problem(first) + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
    return path(loc), problem


def from_validation(exc: ValidationError, where: Callable[[Loc], Loc] | None = None,
                    file: str = "") -> RecordError:
    """``exc`` as a :class:`RecordError` (one line) with the fix for a damaged file."""
    field, problem = explain(exc, where)
    unknown = exc.errors()[0]["type"] == "extra_forbidden"
    return RecordError(field, problem, UNKNOWN if unknown else DELETE, file)


def validation_line(file: str, exc: ValidationError) -> str:
    """``FILE: field path: what was expected; fix`` for a record that did not validate."""
    return str(from_validation(exc, file=file))
