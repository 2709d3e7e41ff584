"""QMP replies kept in a run record, parsed once: ``query-migrate`` answers and QMP events.

The statistics QEMU reports differ between versions (7.2 has ``compression`` and ``ram.skipped``,
9.x adds ``dirty-limit-*``), so a reply keeps every field QEMU sent: the ones migbench reads are
typed attributes (``info.ram.transferred``, ``info.xbzrle_cache.cache_miss_rate``), the others
stay in ``model_extra`` as JSON values. A field QEMU did not send stays absent when the record is
written again, so a stored reply says what QEMU said.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    RootModel,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from harness.errors import QmpError
from harness.results.record.errors import explain
from harness.results.record.scalars import Bool, Float, Frozen, Json, JsonObject, OptFloat, OptInt

M = TypeVar("M", bound=BaseModel)


def from_qmp(model: type[M], reply: object, command: str) -> M:
    """QEMU's answer to ``command`` as ``model``: checked once, where it arrives.

    :raise QmpError: the answer does not have the shape QEMU documents (one line: the field and
        what was expected).
    """
    try:
        return model.model_validate(reply)
    except ValidationError as exc:
        field, problem = explain(exc)
        raise QmpError(f"QEMU's answer to {command} is not what migbench reads: {field}: "
                       f"{problem}") from None


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class QmpReply(BaseModel):
    """A QMP reply: known fields typed, unknown fields kept (validated as JSON values)."""

    model_config = ConfigDict(frozen=True, extra="allow", alias_generator=_kebab,
                              validate_by_alias=True, validate_by_name=False,
                              serialize_by_alias=True)
    __pydantic_extra__: dict[str, Json]

    @model_serializer(mode="wrap")
    def _as_sent(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        absent = {f.alias or n for n, f in type(self).model_fields.items()
                  if n not in self.model_fields_set}
        return {k: v for k, v in out.items() if k not in absent}


class RamStats(QmpReply):
    """``query-migrate``'s ``ram`` block (bytes, pages, rates as QEMU counts them)."""

    total: OptInt = None
    remaining: OptInt = None
    transferred: OptInt = None
    duplicate: OptInt = None
    normal: OptInt = None
    normal_bytes: OptInt = None
    dirty_pages_rate: OptInt = None
    mbps: OptFloat = None
    dirty_sync_count: OptInt = None
    pages_per_second: OptInt = None
    page_size: OptInt = None
    precopy_bytes: OptInt = None
    downtime_bytes: OptInt = None
    postcopy_bytes: OptInt = None
    multifd_bytes: OptInt = None
    postcopy_requests: OptInt = None


class XbzrleStats(QmpReply):
    """``query-migrate``'s ``xbzrle-cache`` block."""

    cache_size: OptInt = None
    bytes: OptInt = None
    pages: OptInt = None
    cache_miss: OptInt = None
    cache_miss_rate: OptFloat = None
    encoding_rate: OptFloat = None
    overflow: OptInt = None


class CompressionStats(QmpReply):
    """``query-migrate``'s ``compression`` block (legacy compress, QEMU <= 9.0)."""

    pages: OptInt = None
    busy: OptInt = None
    busy_rate: OptFloat = None
    compressed_size: OptInt = None
    compression_rate: OptFloat = None


class MigrationInfo(QmpReply):
    """One ``query-migrate`` answer of the source (``{}`` before a migration has started)."""

    status: str | None = None
    total_time: OptInt = None
    downtime: OptInt = None
    expected_downtime: OptInt = None
    setup_time: OptInt = None
    cpu_throttle_percentage: OptInt = None
    error_desc: str | None = None
    ram: RamStats | None = None
    xbzrle_cache: XbzrleStats | None = None
    compression: CompressionStats | None = None


class TimelineSample(MigrationInfo):
    """A ``query-migrate`` answer of the timeline, ``t`` seconds after the migrate command."""

    t: Float

    @classmethod
    def at(cls, info: MigrationInfo, t: float) -> TimelineSample:
        """``info`` as the sample taken ``t`` seconds after the migrate command."""
        return cls.model_validate({**info.model_dump(mode="json"), "t": t})


class CapabilityStatus(QmpReply):
    """One entry of ``query-migrate-capabilities``."""

    capability: str
    state: Bool


class CapabilityList(RootModel[tuple[CapabilityStatus, ...]]):
    """``query-migrate-capabilities``: every migration capability and whether it is on."""

    model_config = ConfigDict(frozen=True)


class MigrationParameters(RootModel[JsonObject]):
    """``query-migrate-parameters``: kept as QEMU sent it (the set differs between versions)."""

    model_config = ConfigDict(frozen=True)


class QmpEvent(Frozen):
    """A QMP event as the harness received it: QEMU's timestamp and the host's (epoch s)."""

    event: str
    data: JsonObject = {}
    qemu_time: Float
    host_time: Float
