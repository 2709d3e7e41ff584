"""How many repetitions a cell gets: a fixed number, or a range that stops when the answer is sure.

``repetitions: 3`` runs every cell three times (as always). ``repetitions: {min: 3, max: 10,
ci: 5%}`` runs each cell at least ``min`` times; after that a cell stops as soon as its outcome is
unanimous and the 95 % interval of each primary metric is within ``ci`` of its mean (relative
half-width) or, with ``ci_ms: 5``, within 5 ms (whichever is wider), or at ``max`` runs. The
absolute floor is for downtimes of a few milliseconds: QEMU reports them in whole milliseconds and
they vary by several between runs, so ±5 % of 4 ms is never reached and such a cell would always
run to ``max``. The rule itself is :mod:`harness.analysis.stopping`; this module
only holds the validated setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    field_validator,
    model_validator,
)

MAX_REPETITIONS = 1000
_PERCENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%\s*$")


class Repetitions(BaseModel):
    """``repetitions: {min, max, ci}`` of a matrix file (``ci`` a fraction: 5% is 0.05)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    min: StrictInt = Field(3, ge=1, le=MAX_REPETITIONS)
    max: StrictInt = Field(10, ge=1, le=MAX_REPETITIONS)
    ci: float = 0.05
    ci_ms: float | None = Field(None, ge=0, le=3_600_000, strict=True)

    @field_validator("ci", mode="before")
    @classmethod
    def _ci(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(f"{v!r} is not a percentage: write e.g. 5%")
        given = v
        if isinstance(v, str):
            m = _PERCENT.match(v)
            if m is None:
                raise ValueError(f"{v[:40]!r} is not a percentage: write e.g. 5%")
            v = float(m.group(1)) / 100
        elif v >= 1:  # 5 could mean 5 % or 500 %: the file must say
            raise ValueError(f"{v!r} is ambiguous: write it as a percentage (e.g. 5%) or as a "
                             "fraction below 1 (0.05)")
        f = float(v)
        if not 0 < f < 1:
            raise ValueError(f"{given!r} must be above 0% and below 100% (the interval's relative "
                             "half-width, e.g. 5%)")
        return f

    @model_validator(mode="after")
    def _range(self) -> Repetitions:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min}): make max at least min")
        return self

    def __str__(self) -> str:
        return f"{self.min}..{self.max}"

    def describe(self) -> str:
        """One line for people: ``3..10, stopping when sure (95 % interval within ±5 %)``."""
        floor = f" or ±{self.ci_ms:g} ms" if self.ci_ms else ""
        return (f"{self.min}..{self.max}, stopping when sure (outcome unanimous, 95 % interval "
                f"of total time and downtime within ±{self.ci * 100:g} %{floor})")


def validate_repetitions(value: Any, context: Any) -> int | Repetitions:
    """The ``repetitions`` value of a matrix file: a whole number (1..1000) or a mapping.

    Raises pydantic's ValidationError, whose locations are relative to ``repetitions`` (so the
    one-line error names ``repetitions.min``, not a member of a union).
    """
    if isinstance(value, Repetitions):
        return value
    if isinstance(value, dict):
        return Repetitions.model_validate(value, context=context)
    count: int = _COUNT.validate_python(value, context=context)
    return count


_COUNT: TypeAdapter[int] = TypeAdapter(Annotated[StrictInt, Field(gt=0, le=MAX_REPETITIONS)])
