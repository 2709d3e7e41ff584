"""Validated, frozen models for hosts and matrix files, and the Cell a run executes.

Everything past :mod:`harness.config` is one of these models: no raw dicts from YAML travel further.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.units import parse_bytes

KEBAB = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------
# hosts.yaml


class QemuBuild(Frozen):
    """One QEMU build on a host: the binary, and where its firmware and modules live."""

    binary: Path
    datadirs: tuple[Path, ...] = ()  # each passed as -L (QEMU data, then firmware)
    moduledir: Path | None = None  # QEMU_MODULE_DIR for a build unpacked outside /usr


class HostSpec(Frozen):
    """One host of a pair."""

    transport: Literal["local"] = "local"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    workdir: Path = Path("/tmp/migbench")
    migration_address: str = "127.0.0.1"
    qemu: dict[str, QemuBuild] = Field(default_factory=dict)


class HostPair(Frozen):
    source: HostSpec
    destination: HostSpec


class HostsConfig(Frozen):
    """Contents of hosts.yaml (paths already resolved against the file's folder)."""

    qemu_builds: dict[str, QemuBuild] = Field(default_factory=dict)
    default_build: str = "10.0"
    pairs: dict[str, HostPair]

    @model_validator(mode="after")
    def _check(self) -> HostsConfig:
        if not self.pairs:
            raise ValueError("at least one host pair is needed under 'pairs'")
        return self

    def build_for(self, host: HostSpec, name: str) -> QemuBuild | None:
        return host.qemu.get(name) or self.qemu_builds.get(name)


# ---------------------------------------------------------------------------------------------
# matrix files

Pattern = Literal["zero", "text", "random", "sparse"]


class WriterSpec(Frozen):
    """The guest memory writer."""

    working_set_mib: int = Field(64, gt=0)
    rate_mib_s: float = Field(32.0, ge=0)  # 0: as fast as it can
    pattern: Pattern = "sparse"
    threads: int | None = Field(None, gt=0)  # default: one per vCPU


class WorkloadSpec(Frozen):
    writer: WriterSpec | None = None


class GuestSpec(Frozen):
    vcpus: int = Field(1, gt=0, le=64)
    memory_mib: int = Field(512, ge=128)


class Limits(Frozen):
    max_time_s: float = Field(120.0, gt=0)  # cancel and record not-converged after this
    max_dirty_syncs: int | None = Field(None, gt=0)  # ... or after this many dirty syncs
    steady_timeout_s: float = Field(60.0, gt=0)  # wait for the workload's steady rate
    boot_timeout_s: float = Field(60.0, gt=0)
    observe_after_s: float = Field(3.0, ge=0)  # keep reading the workload on the destination
    sample_hz: float = Field(20.0, ge=10, le=100)  # query-migrate samples per second


class Variant(Frozen):
    """A named QEMU build and/or extra QEMU arguments; the unit of before/after comparisons."""

    build: str | None = None  # name in hosts.yaml qemu_builds; default: hosts' default_build
    qemu_args: tuple[str, ...] = ()
    migration: dict[str, Any] = Field(default_factory=dict)


class MatrixSpec(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    repetitions: int = Field(3, gt=0, le=1000)
    guest: GuestSpec = GuestSpec()
    limits: Limits = Limits()
    integrity: Literal["stamps", "ram"] = "stamps"
    workload: WorkloadSpec = WorkloadSpec(writer=WriterSpec())
    migration: dict[str, Any] = Field(default_factory=dict)  # applied to every cell
    variants: dict[str, Variant] = Field(default_factory=lambda: {"default": Variant()})
    axes: dict[str, list[Any]] = Field(default_factory=lambda: {"feature": ["precopy"]})
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    shuffle_seed: int | None = None

    @field_validator("axes")
    @classmethod
    def _axes_nonempty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty: list at least one value")
            if len({repr(x) for x in values}) != len(values):
                raise ValueError(f"axis {key!r} lists a value twice")
        return v

    @field_validator("variants")
    @classmethod
    def _variants_nonempty(cls, v: dict[str, Variant]) -> dict[str, Variant]:
        if not v:
            raise ValueError("list at least one variant")
        return v

    @model_validator(mode="after")
    def _check(self) -> MatrixSpec:
        w = self.workload.writer
        if w is not None and w.working_set_mib >= self.guest.memory_mib - 64:
            raise ValueError(
                f"workload.writer.working_set_mib={w.working_set_mib} does not fit in "
                f"guest.memory_mib={self.guest.memory_mib} (leave 64 MiB for the guest kernel)"
            )
        for i, rule in enumerate(self.exclude):
            for key in rule:
                if key not in self.axes and key != "variant":
                    raise ValueError(f"exclude[{i}] names {key!r}, which is not an axis")
        return self


def bandwidth_param(value: object) -> int:
    """``max-bandwidth`` in bytes/s from an int or "200mbit"/"25MiB"."""
    return parse_bytes(value)
