"""Feature combinations, include rules, named workloads, run order and capability gating (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.cli import smoke
from harness.errors import ConfigError
from harness.hosts.probe import Probe, unsupported_reason
from harness.plan.config import load_matrix
from harness.plan.features import migration_config
from harness.plan.matrix import ExpansionError, expand
from harness.plan.models import MatrixSpec
from harness.run.runner import run_order

RAM = 512 * 1024**2


def spec(**kw: Any) -> MatrixSpec:
    return MatrixSpec.model_validate({"name": "t", **kw})


@pytest.mark.parametrize("feature,why", [
    ("compress+multifd", "compress with multifd"),
    ("multifd+compress", "compress with multifd"),
    ("dirty-limit+auto-converge", "dirty-limit with auto-converge"),
    ("compress+postcopy", "compress with postcopy"),
    ("xbzrle+xbzrle", "twice"),
    ("postcopy-preempt", "needs postcopy"),
])
def test_refused_combinations(feature: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        migration_config(feature, {}, RAM)


def test_allowed_combinations_merge_capabilities_and_knobs() -> None:
    cfg = migration_config("xbzrle+auto-converge", {"cpu-throttle-initial": 40,
                                                    "xbzrle-cache-size": "32MiB"}, RAM)
    assert cfg.capabilities == {"events": True, "xbzrle": True, "auto-converge": True}
    assert cfg.parameters["cpu-throttle-initial"] == 40
    assert cfg.parameters["xbzrle-cache-size"] == 32 * 1024**2
    mp = migration_config("multifd+postcopy", {"postcopy-after-s": 3}, RAM)
    assert mp.capabilities["multifd"] and mp.capabilities["postcopy-ram"]
    assert mp.harness == {"postcopy-after-syncs": 2, "postcopy-after-s": 3}
    assert "postcopy-after-s" not in mp.parameters  # harness knobs never reach QEMU


def test_knobs_of_other_features_are_dropped() -> None:
    cfg = migration_config("precopy", {"compress-threads": 4, "multifd-channels": 8,
                                       "cpu-throttle-initial": 30}, RAM)
    assert set(cfg.parameters) == {"max-bandwidth"}


def test_include_adds_points_and_workloads_axis() -> None:
    s = spec(
        workloads={"a": {"writer": {"rate_mib_s": 8}}, "b": {"writer": {"rate_mib_s": 16}}},
        axes={"workload": ["a", "b"], "feature": ["precopy"]},
        include=[{"workload": "b", "feature": "pause"}],
    )
    cells = expand(s, "10.0")
    got = [(c.axes["workload"], c.feature) for c in cells]
    assert got == [("a", "precopy"), ("b", "precopy"), ("b", "pause")]
    assert [c.workload.writer.rate_mib_s for c in cells if c.workload.writer] == [8, 16, 16]


@pytest.mark.parametrize("kind", ["include", "exclude"])
@pytest.mark.parametrize(("rule", "key", "message"), [
    ({"variant": "zz"}, "variant", "names unknown variant 'zz'; defined: a, b"),
    ({"variant": "zz", "feature": "precopy"}, "variant",
     "names unknown variant 'zz'; defined: a, b"),
    ({"workload": "zz"}, "workload", "names unknown workload 'zz'; defined: w1, w2"),
    ({"feature": "xbzlre"}, "feature", "unknown feature 'xbzlre'; known: "),
    ({"feature": "precopy", "max-bandwidth": "fast"}, "max-bandwidth", "cannot parse size 'fast'"),
])
def test_include_and_exclude_refuse_the_same_mistakes(kind: str, rule: dict[str, Any], key: str,
                                                      message: str) -> None:
    s = spec(variants={"a": {}, "b": {}},
             workloads={"w1": {"writer": {"rate_mib_s": 8}}, "w2": {"writer": {"rate_mib_s": 16}}},
             axes={"workload": ["w1", "w2"], "feature": ["precopy", "xbzrle"],
                   "max-bandwidth": ["1gbit"]},
             **{kind: [{"feature": "xbzrle"}, rule]})
    with pytest.raises(ExpansionError) as info:
        expand(s, "10.0")
    assert info.value.key == f"{kind}[1].{key}"
    assert str(info.value).startswith(message)


def test_exclude_of_a_valid_value_off_the_axis_is_accepted() -> None:
    # like include, which adds such values: e.g. a feature taken off the axis for one run
    s = spec(variants={"a": {}, "b": {}}, axes={"feature": ["precopy"]},
             exclude=[{"variant": "b", "feature": "compress"}])
    assert [(c.variant, c.feature) for c in expand(s, "10.0")] == [("a", "precopy"),
                                                                    ("b", "precopy")]


def test_exclude_unknown_variant_through_plan_is_one_line(tmp_path: Path) -> None:
    from harness.plan.config import load_hosts, plan

    binary = tmp_path / "qemu"
    binary.write_text("")
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(f"qemu_builds: {{x: {{binary: {binary}}}}}\ndefault_build: x\n"
                     "pairs: {local: {source: {}, destination: {}}}\n")
    m = tmp_path / "m.yaml"
    m.write_text("name: t\nvariants: {old: {}, new: {}}\nexclude: [{variant: zz}]\n")
    with pytest.raises(ConfigError) as info:
        plan(m, load_matrix(m), hosts, load_hosts(hosts))
    assert str(info.value) == (f"{m}: exclude[0].variant: names unknown variant 'zz'; "
                               "defined: old, new")


def test_unknown_named_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="axes.workload"):
        spec(workloads={"a": {}}, axes={"workload": ["a", "zz"]})


def test_destination_multifd_channels_must_match() -> None:
    s = spec(axes={"feature": ["multifd"]}, migration={"multifd-channels": 4},
             destination_migration={"multifd-channels": 2})
    with pytest.raises(ExpansionError, match="same channel count"):
        expand(s, "10.0")
    ok = spec(axes={"feature": ["multifd"]}, destination_migration={"max-bandwidth": "1gbit"})
    [cell] = expand(ok, "10.0")
    assert cell.migration.destination_parameters["max-bandwidth"] == 125_000_000


def test_duplicate_yaml_key_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("name: x\nrepetitions: 2\nrepetitions: 3\n")
    with pytest.raises(ConfigError, match="duplicate key 'repetitions'") as err:
        load_matrix(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_interleaved_order_alternates_variants() -> None:
    s = spec(repetitions=2, order="interleaved", variants={"A": {}, "B": {}},
             axes={"feature": ["precopy", "xbzrle"]})
    order = [(c.variant, c.feature, r) for c, r in run_order(expand(s, "10.0"), 2, s.order)]
    assert order[:4] == [("A", "precopy", 1), ("B", "precopy", 1), ("A", "xbzrle", 1),
                         ("B", "xbzrle", 1)]
    assert [r for _, _, r in order] == [1, 1, 1, 1, 2, 2, 2, 2]
    cells_first = run_order(expand(s, "10.0"), 2, "cells")
    assert [r for _, r in cells_first][:2] == [1, 2]


def test_smoke_shortens_limits() -> None:
    s = smoke(spec(repetitions=5, limits={"max_time_s": 60, "observe_after_s": 3}))
    assert s.repetitions == 1 and s.limits.max_time_s == 8 and s.name == "t-smoke"


def _probe(version: str, caps: tuple[str, ...], params: tuple[str, ...]) -> Probe:
    return Probe(binary="/q", version=version, package="", capabilities=caps, parameters=params,
                 commands=("migrate-start-postcopy",), multifd_compression=("none", "zlib"))


def test_unsupported_reasons() -> None:
    q10 = _probe("10.0.2", ("events", "xbzrle", "multifd", "dirty-limit"),
                 ("max-bandwidth", "multifd-channels", "multifd-compression"))
    comp = migration_config("compress", {}, RAM)
    assert "removed in QEMU 9.1" in unsupported_reason(q10, comp, "tcg")
    zstd = migration_config("multifd", {"multifd-compression": "zstd"}, RAM)
    assert "no multifd compression 'zstd'" in unsupported_reason(q10, zstd, "tcg")
    dl = migration_config("dirty-limit", {}, RAM)
    assert "KVM" in unsupported_reason(q10, dl, "tcg")
    assert unsupported_reason(q10, dl, "kvm") == ""
    assert unsupported_reason(q10, migration_config("precopy", {}, RAM), "tcg") == ""
    # a 9.2+ knob on a QEMU without it: skipped with the parameter named, not a runtime failure
    qat = migration_config("multifd", {"multifd-qatzip-level": 5}, RAM)
    assert qat.parameters["multifd-qatzip-level"] == 5
    assert "no migration parameter 'multifd-qatzip-level'" in unsupported_reason(q10, qat, "tcg")
