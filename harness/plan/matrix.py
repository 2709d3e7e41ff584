"""Pure expansion of a matrix file into ordered Cells with stable ids.

Axes are expanded as a Cartesian product in the order the file lists them, times the variants.
An axis key is ``feature``, ``variant`` (a subset of the named variants), ``workload`` (names under
``workloads``), a QEMU migration parameter (``max-bandwidth``, ``xbzrle-cache-size`` ...), a harness
knob (``postcopy-after-syncs`` ...), or ``writer.<field>`` to vary the memory writer.
A cell's id is a hash of its canonical parameters, so the same cell in a rerun, or in another
matrix file, has the same id and its results join up.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from harness.errors import shorten
from harness.plan.features import (
    HARNESS_KNOBS,
    KNOBS,
    KnobError,
    MigrationConfig,
    knob_applies,
    knob_value,
    migration_config,
)
from harness.plan.models import (
    GuestSpec,
    Limits,
    MatrixSpec,
    StorageSpec,
    Variant,
    WorkloadSpec,
    WriterSpec,
    workload_label,
)

#: Cells one matrix may expand to (axes product x variants, plus includes): more is a typo
#: in an axis, not a campaign, and would only fill memory before anything ran.
MAX_CELLS = 10_000


class ExpansionError(ValueError):
    """A matrix that validates but cannot be expanded; ``key`` names where."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class Cell:
    id: str
    matrix: str
    variant: str
    variant_spec: Variant
    build: str
    axes: dict[str, Any]
    workload: WorkloadSpec
    guest: GuestSpec
    limits: Limits
    integrity: str
    migration: MigrationConfig
    storage: StorageSpec = StorageSpec()

    @property
    def feature(self) -> str:
        return self.migration.feature

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.axes.items()]
        return f"{self.variant}: " + (", ".join(parts) if parts else "base")

    def workload_label(self) -> str:
        return workload_label(self.workload)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matrix": self.matrix,
            "variant": self.variant,
            "variant_spec": self.variant_spec.model_dump(mode="json"),
            "build": self.build,
            "axes": dict(self.axes),
            "workload": self.workload.model_dump(mode="json"),
            "guest": self.guest.model_dump(mode="json"),
            "limits": self.limits.model_dump(mode="json"),
            "integrity": self.integrity,
            "migration": self.migration.to_dict(),
            # only when not the default, so that a shared-storage cell's record is unchanged
            **({"storage": self.storage.model_dump(mode="json")}
               if self.storage != StorageSpec() else {}),
        }


def canonical(value: object) -> str:
    """``value`` as canonical JSON text (sorted keys, no spaces): equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cell_id(payload: dict[str, Any]) -> str:
    """A cell's id: 12 hex digits of the SHA-256 of its canonical parameters (``payload``)."""
    return hashlib.sha256(canonical(payload).encode()).hexdigest()[:12]


class Coordinates(Protocol):
    """Where a cell stands in the experiment: a :class:`Cell`, or a run record's cell."""

    @property
    def matrix(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def axes(self) -> Mapping[str, object]: ...
    @property
    def workload(self) -> WorkloadSpec: ...
    @property
    def guest(self) -> GuestSpec: ...


def coordinate_key(cell: Coordinates, *, variant: bool = True, matrix: bool = True,
                   axes: Mapping[str, object] | None = None) -> str:
    """The identity of a cell's point in the experiment (canonical JSON): matrix name, variant,
    axes, workload and guest, not the cell id, which hashes every QEMU parameter, so a cell
    keeps its coordinates when the matrix's fixed settings change.

    What stays out when two sets of runs are put side by side: ``variant=False`` (it is what
    differs between two variants, and what run order interleaves), ``matrix=False`` (two
    results folders may come from differently named matrices). ``axes`` replaces the cell's
    axes (compare pairs cells whose axes changed by their feature alone).
    """
    ident: dict[str, object] = {
        "axes": dict(cell.axes if axes is None else axes),
        "workload": cell.workload.model_dump(mode="json"),
        "guest": cell.guest.model_dump(mode="json")}
    if matrix:
        ident["matrix"] = cell.matrix
    if variant:
        ident["variant"] = cell.variant
    return canonical(ident)


def _excluded(point: dict[str, Any], rules: list[dict[str, Any]]) -> bool:
    for rule in rules:
        if all(point.get(k) == v for k, v in rule.items()):
            return True
    return False


def expand(spec: MatrixSpec, default_build: str) -> list[Cell]:
    """Expand ``spec`` into cells (deterministic; shuffled only with ``shuffle_seed``).

    :raise ExpansionError: an axis or value that cannot be turned into QEMU settings.
    """
    guest_ram = spec.guest.memory_mib * 1024**2
    axes, variant_names = _axes(spec, guest_ram)
    _check_values(spec, axes, variant_names, guest_ram)
    dst_only = {k: knob_value(k, v, guest_ram) for k, v in spec.destination_migration.items()}
    cells: list[Cell] = []
    seen_points: set[tuple[str, str]] = set()
    settings: dict[str, Cell] = {}  # same variant, QEMU settings and workload -> first cell
    for vname, point, origin in _points(spec, axes, variant_names):
        feature = str(point.get("feature", "precopy"))
        # A knob axis that does nothing under this feature (xbzrle-cache-size for precopy)
        # would only make copies of the same cell: keep one, without that coordinate.
        point = {k: v for k, v in point.items()
                 if (k not in KNOBS and k not in HARNESS_KNOBS) or knob_applies(k, feature)}
        key_repr = (vname, _point_key(point))
        if key_repr in seen_points:
            continue
        seen_points.add(key_repr)
        cell = _cell(spec, vname, point, origin, default_build, dst_only)
        same = cell_id({"variant": vname, "migration": cell.migration.to_dict(),
                        "workload": cell.workload.model_dump(mode="json")})
        twin = settings.get(same)
        if twin is not None:
            raise ExpansionError(
                "axes", f"cells {twin.label!r} and {vname}: "
                + ", ".join(f"{k}={v}" for k, v in point.items())
                + " give the same QEMU settings; list each value once",
            )
        cells.append(cell)
        settings[same] = cell
    if spec.shuffle_seed is not None:
        random.Random(spec.shuffle_seed).shuffle(cells)
    return cells


def _axes(spec: MatrixSpec, guest_ram: int) -> tuple[dict[str, list[Any]], list[str]]:
    """The matrix's axes without ``variant``, and the variant names (the ``variant`` axis, or
    every variant); refuses a key that is not an axis."""
    axes = dict(spec.axes)
    variant_names = list(spec.variants)
    if "variant" in axes:
        for v in axes["variant"]:
            _check_value("axes.variant", "variant", v, spec, guest_ram)
        variant_names = [str(v) for v in axes.pop("variant")]
    for key in axes:
        if key in ("feature", "workload") or key in KNOBS or key in HARNESS_KNOBS:
            continue
        if key.startswith("writer.") and key[7:] in WriterSpec.model_fields:
            continue
        raise ExpansionError(
            f"axes.{key}",
            "is not an axis: use feature, variant, workload, writer.<field> or a migration parameter "
            f"({', '.join(sorted(KNOBS))})",
        )
    return axes, variant_names


def _check_values(spec: MatrixSpec, axes: dict[str, list[Any]], variant_names: list[str],
                  guest_ram: int) -> None:
    """Refuse too many cells, and every value that could never be used, before expanding."""
    points_total = len(variant_names)
    for values in axes.values():
        points_total *= len(values)
    if points_total + len(spec.include) * len(variant_names) > MAX_CELLS:
        raise ExpansionError(
            "axes", f"the axes and variants make {points_total} combinations, more than "
            f"{MAX_CELLS}: split the matrix, or use include for the points you need")
    for key, values in axes.items():
        for v in values:  # validate even values that some features will ignore
            _check_value(f"axes.{key}", key, v, spec, guest_ram)
    # include and exclude refuse the same mistakes: an unknown variant or workload, a value
    # the axis could never take. A valid value off the axis is fine in both (include adds it;
    # exclude may outlive a value taken off the axis for one run).
    for name, rules in (("include", spec.include), ("exclude", spec.exclude)):
        for i, rule in enumerate(rules):
            for key, v in rule.items():
                _check_value(f"{name}[{i}].{key}", key, v, spec, guest_ram)
    _check_knobs("migration", spec.migration, guest_ram)
    for vname, variant in spec.variants.items():
        _check_knobs(f"variants.{vname}.migration", variant.migration, guest_ram)
    _check_knobs("destination_migration", spec.destination_migration, guest_ram)


def _points(spec: MatrixSpec, axes: dict[str, list[Any]], variant_names: list[str]
            ) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every (variant, point) of the axes not excluded, then the included ones not listed yet;
    each with where its coordinates come from (axes.<k> or include[i].<k>), for errors."""
    keys = list(axes)
    points: list[tuple[str, dict[str, Any], dict[str, str]]] = []
    axis_origin = {k: f"axes.{k}" for k in keys}
    for vname in variant_names:
        for combo in itertools.product(*(axes[k] for k in keys)):
            point: dict[str, Any] = dict(zip(keys, combo))
            if not _excluded({**point, "variant": vname}, spec.exclude):
                points.append((vname, point, axis_origin))
    listed = {(pv, _point_key(pp)) for pv, pp, _ in points}
    for i, rule in enumerate(spec.include):
        extra = {k: axes[k][0] for k in keys}
        extra.update({k: v for k, v in rule.items() if k != "variant"})
        origin = {**axis_origin, **{k: f"include[{i}].{k}" for k in rule}}
        for vname in ([str(rule["variant"])] if "variant" in rule else variant_names):
            if (vname, _point_key(extra)) not in listed:
                listed.add((vname, _point_key(extra)))
                points.append((vname, dict(extra), origin))
    return points


def _cell(spec: MatrixSpec, vname: str, point: dict[str, Any], origin: dict[str, str],
          default_build: str, dst_only: dict[str, Any]) -> Cell:
    """The cell of one point of variant ``vname``."""
    variant = spec.variants[vname]
    knobs, knob_origin, workload = _settings(spec, vname, point, origin)
    mig = _migration(spec, str(point.get("feature", "precopy")), knobs, knob_origin, origin,
                     dst_only)
    build = variant.build or default_build
    ident = {
        "variant": vname,
        "build": build,
        "qemu_args": list(variant.qemu_args),
        "migration": mig.to_dict(),
        "workload": workload.model_dump(mode="json"),
        "guest": spec.guest.model_dump(mode="json"),
        "integrity": spec.integrity,
        "max_time_s": spec.limits.max_time_s,
        "max_dirty_syncs": spec.limits.max_dirty_syncs,
    }
    if spec.storage != StorageSpec():  # shared-storage cells keep the ids they always had
        ident["storage"] = spec.storage.model_dump(mode="json")
    return Cell(id=cell_id(ident), matrix=spec.name, variant=vname, variant_spec=variant,
                build=build, axes=point, workload=workload, guest=spec.guest,
                limits=spec.limits, integrity=spec.integrity, migration=mig,
                storage=spec.storage)


def _settings(spec: MatrixSpec, vname: str, point: dict[str, Any], origin: dict[str, str]
              ) -> tuple[dict[str, Any], dict[str, str], WorkloadSpec]:
    """The point's knobs (matrix, then variant, then the point's own), where each comes from,
    and its workload with the point's ``writer.*`` values."""
    variant = spec.variants[vname]
    knobs: dict[str, Any] = dict(spec.migration)
    knob_origin = {k: f"migration.{k}" for k in spec.migration}
    knobs.update(variant.migration)
    knob_origin.update({k: f"variants.{vname}.migration.{k}" for k in variant.migration})
    workload = spec.workloads[str(point["workload"])] if "workload" in point else spec.workload
    for k, v in point.items():
        if k in KNOBS or k in HARNESS_KNOBS:
            knobs[k] = v
            knob_origin[k] = origin[k]
        elif k.startswith("writer."):
            base = workload.writer or WriterSpec()
            try:
                writer = WriterSpec.model_validate({**base.model_dump(), k[7:]: v})
            except ValueError as exc:
                raise ExpansionError(origin[k], _first_line(exc)) from exc
            workload = workload.model_copy(update={"writer": writer})  # keeps ping, fio
    w = workload.writer
    if w is not None and w.working_set_mib >= spec.guest.memory_mib - 64:
        raise ExpansionError(
            origin.get("writer.working_set_mib", "axes.writer.working_set_mib"),
            f"{w.working_set_mib} MiB does not fit in a {spec.guest.memory_mib} MiB guest",
        )
    return knobs, knob_origin, workload


def _migration(spec: MatrixSpec, feature: str, knobs: dict[str, Any],
               knob_origin: dict[str, str], origin: dict[str, str],
               dst_only: dict[str, Any]) -> MigrationConfig:
    """QEMU's settings for ``feature`` with ``knobs``, and the destination-only parameters."""
    try:
        mig = migration_config(feature, knobs, spec.guest.memory_mib * 1024**2)
    except KnobError as exc:  # values are checked above: kept as a safety net
        raise ExpansionError(knob_origin.get(exc.knob, "migration"), exc.problem) from exc
    except ValueError as exc:
        raise ExpansionError(origin.get("feature", "axes.feature"), str(exc)) from exc
    if not dst_only:
        return mig
    if "multifd" in mig.features and dst_only.get(
            "multifd-channels", mig.parameters["multifd-channels"]
    ) != mig.parameters["multifd-channels"]:
        raise ExpansionError(
            "destination_migration.multifd-channels",
            f"{dst_only['multifd-channels']} differs from the source's "
            f"{mig.parameters['multifd-channels']}: multifd needs the same channel "
            "count on both sides")
    return MigrationConfig(mig.feature, mig.capabilities, mig.parameters, mig.harness,
                           destination={**mig.parameters, **dst_only},
                           unlimited=mig.unlimited)


def _point_key(point: dict[str, Any]) -> str:
    return repr(sorted(point.items(), key=lambda kv: kv[0]))


def _first_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first["msg"]).removeprefix("Value error, ") + f", got {shorten(first.get('input'))}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)


def _check_knobs(where: str, knobs: dict[str, Any], guest_ram: int) -> None:
    """Refuse a bad knob under ``where`` (``migration``, ``variants.<v>.migration`` ...)."""
    for k, v in knobs.items():
        try:
            knob_value(k, v, guest_ram)
        except KnobError as exc:
            raise ExpansionError(f"{where}.{k}", exc.problem) from exc


def _check_value(where: str, axis: str, value: Any, spec: MatrixSpec, guest_ram: int) -> None:
    """Refuse a value that axis ``axis`` cannot take; ``where`` is the key to blame."""
    if axis == "variant":  # a list or mapping is no name (and `in` a dict raises TypeError)
        if not isinstance(value, str) or value not in spec.variants:
            raise ExpansionError(where, f"names unknown variant {shorten(value)}; "
                                        f"defined: {', '.join(spec.variants)}")
    elif axis == "workload":
        if not isinstance(value, str) or value not in spec.workloads:
            raise ExpansionError(where, f"names unknown workload {shorten(value)}; "
                                        f"defined: {', '.join(spec.workloads) or 'none'}")
    elif axis == "feature":
        try:
            migration_config(str(value), {}, guest_ram)
        except ValueError as exc:
            raise ExpansionError(where, str(exc)) from exc
    elif axis in KNOBS or axis in HARNESS_KNOBS:
        try:
            knob_value(axis, value, guest_ram)
        except KnobError as exc:
            raise ExpansionError(where, exc.problem) from exc
    elif axis.startswith("writer."):
        try:
            WriterSpec.model_validate({axis[7:]: value})
        except ValueError as exc:
            raise ExpansionError(where, _first_line(exc)) from exc
