"""Any run record migbench has written, as a version-2 :class:`RunRecord`.

Version 1 (every file before the record model) was built as a dict in two places: a migration's
record in ``harness.run.migration`` and the record of a run that never started (skipped, or its probe
failed) in ``harness.run.runner``, which lacks the image, states, VMs and CPU. Version 2 differs:

* ``integrity`` (the verdict) and ``integrity_detail`` (the checks) are one ``integrity`` object:
  ``{"verdict": ..., "stamps": ..., "ram": ..., "guest_crash": ..., "guest_silent": ...}``;
* ``migration`` becomes ``applied`` (``{"source", "destination", "uri"}``): its ``requested`` part
  was a copy of ``cell.migration`` and is dropped;
* ``events``, ``console`` and ``vms`` always have both sides (empty, or null for a VM never made);
  ``guest`` always has its three series, ``guest_impact`` is an object (``{}`` if no ping or fio);
* every figure QEMU or the harness did not record is null (a skipped run's ``metrics: {}`` has
  every metric, null), and so is an empty ``image`` or ``migration.applied``; non-finite numbers
  are null.

Values are not recomputed: an upgraded record has the figures its file had, but for one that
version 1 got wrong: the guest-visible downtime of a run that never switched over (it did not
converge, or failed) is null, as version 2 defines it (:func:`harness.results.record.model.
guest_visible_downtime`). A file without ``qemu`` (its run failed before a QEMU answered) gets
the cell's build.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from harness.results.record.errors import NEWER, Loc, RecordError, from_validation, path, shown
from harness.results.record.model import SCHEMA_VERSION, RunRecord, switched_over

_CHECKS = ("stamps", "ram", "guest_crash", "guest_silent")
_GVD = "guest_visible_downtime_ms"
_SIDES = ("source", "destination")


def upgrade(raw: object) -> RunRecord:
    """``raw`` (a run file's JSON object, of any version migbench wrote) as a v2 record.

    :raise RecordError: ``raw`` is not a record of a known version, or does not validate (one
        line: field path, what was expected, and the fix; the caller adds the file).
    """
    if not isinstance(raw, Mapping):
        raise RecordError("", f"expected a run record (a JSON object), got {shown(raw)}")
    if "schema_version" not in raw:
        raise RecordError("schema_version", "missing")
    version = raw["schema_version"]
    if type(version) is int and version > SCHEMA_VERSION:
        raise RecordError("schema_version", f"{version} is newer than this migbench reads "
                          f"({SCHEMA_VERSION})", NEWER)
    if type(version) is not int or version < 1:
        raise RecordError("schema_version", f"expected 1 or {SCHEMA_VERSION}, got {shown(version)}")
    data = raw if version == SCHEMA_VERSION else _from_v1(raw)
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, None if version == SCHEMA_VERSION else v1_loc) from None


def _section(raw: Mapping[str, object], key: str, where: str = "") -> Mapping[str, object] | None:
    """``raw[key]`` when it is an object, None when absent or null."""
    v = raw.get(key)
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise RecordError(where or key, f"expected an object, got {shown(v)}")
    return v


def _refuse(section: Mapping[str, object], keys: tuple[str, ...], where: str) -> None:
    """Refuse a key version 1 never had where the upgrade would move it (or lose it)."""
    for key in keys:
        if key in section:
            raise RecordError(path((*where.split("."), key)), "unknown field")


def _sides(v: object, missing: object) -> object:
    """A per-side object with both sides (v1 left out a side that never ran)."""
    if not isinstance(v, Mapping):
        return v  # validation names the field and what it is
    return {**{side: missing for side in _SIDES}, **v}


def _from_v1(raw: Mapping[str, object]) -> dict[str, object]:
    data = {k: v for k, v in raw.items()
            if k not in ("integrity", "integrity_detail", "migration", "guest", "guest_series",
                         "guest_impact")}
    data["schema_version"] = SCHEMA_VERSION
    if "integrity" in raw:
        detail = _section(raw, "integrity_detail") or {}
        _refuse(detail, ("verdict",), "integrity_detail")
        data["integrity"] = {**detail, "verdict": raw["integrity"]}
    mig = _section(raw, "migration")
    if mig is not None:
        _refuse(mig, tuple(k for k in mig if k not in ("requested", "applied", "uri")),
                "migration")
        applied = _section(mig, "applied", "migration.applied") or {}
        _refuse(applied, ("uri",), "migration.applied")
        # `{}`: nothing recorded (trimmed files in tests/data/campaign-seed have it)
        data["applied"] = {**applied, "uri": mig.get("uri")} if applied or mig.get("uri") else None
    if raw.get("image") == {}:
        data["image"] = None
    cell = raw.get("cell")
    if "qemu" not in raw and isinstance(cell, Mapping):
        # a run that failed before a QEMU answered (its launch, the guest's boot) had none
        data["qemu"] = {"build": cell.get("build")}
    metrics = raw.get("metrics")
    if isinstance(metrics, Mapping) and metrics.get(_GVD) is not None \
            and not switched_over(str(raw.get("outcome"))):
        # version 1 gave a run that never switched over the writer's longest stall as its
        # guest-visible downtime; the guest never stopped: it has none
        data["metrics"] = {**metrics, _GVD: None}
    # The run's writer series, and ping / fio series that a run cut short left unmerged.
    guest = {**(_section(raw, "guest_series") or {}), **(_section(raw, "guest") or {})}
    if guest:
        data["guest"] = guest
    impact = raw.get("guest_impact")
    if impact is not None:
        data["guest_impact"] = impact
    for key, missing in (("events", []), ("console", []), ("vms", None)):
        if key in raw:
            data[key] = _sides(raw[key], missing)
    return data


def v1_loc(loc: Loc) -> Loc:
    """Where a field of an upgraded record was in its version-1 file."""
    head, rest = loc[:1], loc[1:]
    if head == ("integrity",) and rest:
        return ("integrity", *rest[1:]) if rest[0] == "verdict" else ("integrity_detail", *rest)
    if head == ("applied",):
        if rest[:1] == ("uri",):
            return ("migration", *rest)
        return ("migration", "applied", *rest) if rest else ("migration",)
    return loc
