"""One run as it travels to a worker (pure): the matrix, the cell's id, the repetition.

The worker expands the matrix itself (:func:`harness.plan.matrix.expand`, the same pure code
as the submitter's) and finds the cell by id, so a task names a cell only by what the planner
computes; the matrix travels as the validated model, and is validated again on arrival (the
broker is shared).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import HarnessError
from harness.plan.matrix import Cell, expand
from harness.plan.models import FILE_INPUT, NAME_PATTERN, MatrixSpec

MAX_REDELIVERIES = 10


class Job(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    spec: MatrixSpec
    default_build: Annotated[str, Field(pattern=NAME_PATTERN)]
    cell_id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    repetition: Annotated[int, Field(ge=1, le=100_000)]
    matrix_file: Annotated[str, Field(max_length=4096)]
    redeliveries: Annotated[int, Field(ge=0, le=MAX_REDELIVERIES)]

    @classmethod
    def parse(cls, payload: Any) -> Job:
        """:raise HarnessError: the task's payload is not a job (one line)."""
        try:  # the file rules too (names are patterns): a shared broker is no trusted author
            return cls.model_validate(payload, context=FILE_INPUT)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HarnessError(f"a task that is not a migbench run ({where}: "
                               f"{first['msg'][:160]})") from None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data


def spec_json(spec: MatrixSpec) -> str:
    return spec.model_dump_json()


class Cells:
    """The cells of the matrices this worker has seen, by the matrix's digest (expanding a
    matrix of hundreds of cells once, not per run)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, Cell]] = {}

    def find(self, job: Job) -> Cell:
        """:raise HarnessError: the matrix has no such cell (another planner's id)."""
        key = hashlib.sha256((spec_json(job.spec) + job.default_build).encode()).hexdigest()
        cells = self._seen.get(key)
        if cells is None:
            try:
                cells = {c.id: c for c in expand(job.spec, job.default_build)}
            except ValueError as exc:
                raise HarnessError(f"matrix {job.spec.name}: {str(exc)[:200]}") from None
            self._seen = {key: cells}  # one campaign at a time in practice: keep the last
        cell = cells.get(job.cell_id)
        if cell is None:
            raise HarnessError(f"matrix {job.spec.name} has no cell {job.cell_id} here: the "
                               "submitter's migbench plans other cells than this worker's")
        return cell
