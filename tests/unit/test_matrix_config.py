"""harness.plan.matrix expansion and harness.plan.config loading: concrete cells, ids and error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import ConfigError, HarnessError
from harness.plan.config import load_hosts, load_matrix, plan
from harness.plan.matrix import ExpansionError, expand
from harness.plan.models import HostsConfig, MatrixSpec

REPO = Path(__file__).resolve().parents[2]
MiB = 1024**2


def spec(**kw: Any) -> MatrixSpec:
    return MatrixSpec.model_validate({"name": "t", **kw})


# --- expansion -------------------------------------------------------------------------------


def test_expansion_order_and_count() -> None:
    s = spec(
        variants={"a": {}, "b": {"build": "7.2"}},
        axes={"feature": ["precopy", "xbzrle"], "max-bandwidth": ["100mbit", "200mbit", "1gbit"]},
    )
    cells = expand(s, "10.0")
    assert len(cells) == 2 * 2 * 3
    got = [(c.variant, c.axes["feature"], c.axes["max-bandwidth"]) for c in cells]
    assert got[:6] == [
        ("a", "precopy", "100mbit"), ("a", "precopy", "200mbit"), ("a", "precopy", "1gbit"),
        ("a", "xbzrle", "100mbit"), ("a", "xbzrle", "200mbit"), ("a", "xbzrle", "1gbit"),
    ]
    assert [c.variant for c in cells] == ["a"] * 6 + ["b"] * 6
    assert [c.build for c in cells] == ["10.0"] * 6 + ["7.2"] * 6
    assert cells[1].migration.parameters["max-bandwidth"] == 25_000_000
    assert cells[3].feature == "xbzrle"
    assert cells[3].migration.capabilities == {"events": True, "xbzrle": True}
    assert cells[0].label == "a: feature=precopy, max-bandwidth=100mbit"
    assert all(c.matrix == "t" for c in cells)


def test_default_matrix_is_one_precopy_cell() -> None:
    cells = expand(spec(), "10.0")
    assert len(cells) == 1
    c = cells[0]
    assert (c.variant, c.feature, c.build) == ("default", "precopy", "10.0")
    assert c.workload_label() == "writer 64 MiB @ 32 MiB/s sparse"


def test_migration_precedence_matrix_variant_axis() -> None:
    s = spec(
        migration={"max-bandwidth": "100mbit", "downtime-limit": 300},
        variants={"v": {"migration": {"downtime-limit": 500, "max-bandwidth": "200mbit"}}},
        axes={"feature": ["precopy"], "max-bandwidth": ["1gbit"]},
    )
    (c,) = expand(s, "10.0")
    assert c.migration.parameters == {"max-bandwidth": 125_000_000, "downtime-limit": 500}


def test_ids_stable_and_sensitive() -> None:
    kw = {"axes": {"feature": ["precopy", "xbzrle"], "xbzrle-cache-size": ["64MiB", "128MiB"]}}
    a = [c.id for c in expand(spec(**kw), "10.0")]
    b = [c.id for c in expand(spec(**kw), "10.0")]
    assert a == b
    # precopy ignores xbzrle-cache-size: its two would-be cells collapse into one
    assert len(set(a)) == len(a) == 3
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in a)
    # one parameter changed -> a different id
    changed = [c.id for c in expand(spec(guest={"memory_mib": 1024}, **kw), "10.0")]
    assert not set(changed) & set(a)
    other_build = [c.id for c in expand(spec(**kw), "7.2")]
    assert not set(other_build) & set(a)
    other_limit = [c.id for c in expand(spec(limits={"max_time_s": 60}, **kw), "10.0")]
    assert not set(other_limit) & set(a)


def test_id_independent_of_matrix_name_and_unit_spelling() -> None:
    a = expand(spec(axes={"max-bandwidth": ["200mbit"]}), "10.0")[0]
    b = expand(MatrixSpec.model_validate({"name": "other", "axes": {"max-bandwidth": [25_000_000]}}),
               "10.0")[0]
    assert a.id == b.id


def test_aliasing_axis_values_do_not_produce_duplicate_ids() -> None:
    s = spec(axes={"feature": ["xbzrle"], "xbzrle-cache-size": ["100MiB", "64MiB"]})
    try:
        cells = expand(s, "10.0")
    except ExpansionError:
        return  # rejecting the aliasing values is an acceptable fix too
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids)


def test_exclude_rules() -> None:
    s = spec(
        variants={"a": {}, "b": {}},
        axes={"feature": ["precopy", "xbzrle"], "max-bandwidth": ["100mbit", "1gbit"]},
        exclude=[{"feature": "precopy", "max-bandwidth": "1gbit"}, {"variant": "b",
                                                                     "feature": "xbzrle"}],
    )
    got = [(c.variant, c.axes["feature"], c.axes["max-bandwidth"]) for c in expand(s, "10.0")]
    assert got == [
        ("a", "precopy", "100mbit"), ("a", "xbzrle", "100mbit"), ("a", "xbzrle", "1gbit"),
        ("b", "precopy", "100mbit"),
    ]


def test_variant_axis_selects_and_orders_variants() -> None:
    s = spec(
        variants={"a": {}, "b": {"build": "7.2"}, "c": {}},
        axes={"variant": ["c", "b"], "feature": ["precopy"]},
    )
    cells = expand(s, "10.0")
    assert [c.variant for c in cells] == ["c", "b"]
    assert [c.build for c in cells] == ["10.0", "7.2"]
    assert all("variant" not in c.axes for c in cells)


def test_variant_axis_unknown_variant() -> None:
    s = spec(variants={"a": {}}, axes={"variant": ["a", "zz"]})
    with pytest.raises(ExpansionError) as info:
        expand(s, "10.0")
    assert info.value.key == "axes.variant"
    assert "'zz'" in str(info.value)


def test_writer_rate_axis() -> None:
    s = spec(axes={"writer.rate_mib_s": [0, 16, 64]})
    cells = expand(s, "10.0")
    assert [c.workload.writer.rate_mib_s for c in cells if c.workload.writer] == [0, 16, 64]
    assert [c.workload_label() for c in cells] == [
        "writer 64 MiB @ max sparse",
        "writer 64 MiB @ 16 MiB/s sparse",
        "writer 64 MiB @ 64 MiB/s sparse",
    ]
    assert len({c.id for c in cells}) == 3
    # the matrix-level workload is not mutated
    assert s.workload.writer is not None and s.workload.writer.rate_mib_s == 32


def test_writer_axis_keeps_ping_and_fio_of_the_workload() -> None:
    base = {"writer": {"rate_mib_s": 16, "pattern": "text"}, "ping": {"interval_ms": 20},
            "fio": {"rw": "randread"}}
    s = spec(workload=base, axes={"writer.rate_mib_s": [8, 32]})
    cells = expand(s, "10.0")
    assert [c.workload.writer.rate_mib_s for c in cells if c.workload.writer] == [8, 32]
    for c in cells:
        assert c.workload.writer is not None and c.workload.writer.pattern == "text"
        assert c.workload.ping is not None and c.workload.ping.interval_ms == 20
        assert c.workload.fio is not None and c.workload.fio.rw == "randread"
    # the same holds for a named workload on a `workload` axis
    named = spec(workloads={"io": base}, axes={"workload": ["io"], "writer.working_set_mib": [32]})
    (c,) = expand(named, "10.0")
    assert c.workload.ping is not None and c.workload.fio is not None
    assert c.workload.writer is not None and c.workload.writer.working_set_mib == 32


def test_writer_axis_too_big_for_guest() -> None:
    s = spec(axes={"writer.working_set_mib": [64, 480]})
    with pytest.raises(ExpansionError) as info:
        expand(s, "10.0")
    assert info.value.key == "axes.writer.working_set_mib"


def test_unknown_axis_key() -> None:
    with pytest.raises(ExpansionError) as info:
        expand(spec(axes={"bandwidth": ["1gbit"]}), "10.0")
    assert info.value.key == "axes.bandwidth"
    assert "max-bandwidth" in str(info.value)


def test_shuffle_seed_deterministic() -> None:
    axes = {"max-bandwidth": [f"{n}mbit" for n in range(100, 2100, 100)]}
    plain = expand(spec(axes=axes), "10.0")
    s1 = [c.id for c in expand(spec(axes=axes, shuffle_seed=7), "10.0")]
    s2 = [c.id for c in expand(spec(axes=axes, shuffle_seed=7), "10.0")]
    s3 = [c.id for c in expand(spec(axes=axes, shuffle_seed=8), "10.0")]
    assert s1 == s2
    assert sorted(s1) == sorted(c.id for c in plain)
    assert s1 != [c.id for c in plain]
    assert s1 != s3


def test_cell_to_dict_roundtrips_json() -> None:
    import json

    (c,) = expand(spec(axes={"feature": ["xbzrle"]}), "10.0")
    d = json.loads(json.dumps(c.to_dict()))
    assert d["id"] == c.id
    assert d["migration"]["capabilities"] == {"events": True, "xbzrle": True}
    assert d["workload"]["writer"]["pattern"] == "sparse"


# --- config files ----------------------------------------------------------------------------


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def one_line(exc: ConfigError) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_text("#!/bin/sh\n")
    return write(tmp_path / "hosts.yaml", {
        "qemu_builds": {"x": {"binary": str(binary)}, "y": {"binary": "rel/qemu"}},
        "default_build": "x",
        "pairs": {"local": {"source": {}, "destination": {}}},
    })


@pytest.fixture
def hosts(hosts_file: Path) -> HostsConfig:
    return load_hosts(hosts_file)


def matrix_error(tmp_path: Path, data: Any) -> str:
    path = write(tmp_path / "m.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_matrix(path)
    assert isinstance(info.value, HarnessError)
    msg = one_line(info.value)
    assert str(path) in msg
    return msg


def plan_error(tmp_path: Path, hosts_file: Path, hosts: HostsConfig, data: Any) -> ConfigError:
    path = write(tmp_path / "m.yaml", data)
    s = load_matrix(path)
    with pytest.raises(ConfigError) as info:
        plan(path, s, hosts_file, hosts)
    one_line(info.value)
    return info.value


def test_missing_matrix_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_matrix(path)
    msg = one_line(info.value)
    assert msg.startswith(f"{path}: ")
    assert "not found" in msg


def test_invalid_yaml(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, "name: t\naxes: [feature: {\n")
    assert "not valid YAML" in msg and "line " in msg


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in matrix_error(tmp_path, "- a\n- b\n")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "repetitons": 3})
    assert ": repetitons: unknown key" in msg


def test_unknown_nested_key(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "limits": {"max_tme_s": 3}})
    assert ": limits.max_tme_s: unknown key" in msg


def test_missing_name(tmp_path: Path) -> None:
    assert ": name: required key is missing" in matrix_error(tmp_path, {"repetitions": 1})


def test_wrong_type(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "repetitions": "three"})
    assert ": repetitions: " in msg and "'three'" in msg


def test_bad_pattern(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "workload": {"writer": {"pattern": "ones"}}})
    assert ": workload.writer.pattern: " in msg
    assert "'ones'" in msg
    for p in ("zero", "text", "random", "sparse"):
        assert p in msg


def test_negative_rate(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "workload": {"writer": {"rate_mib_s": -1}}})
    assert ": workload.writer.rate_mib_s: " in msg and "greater than or equal to 0" in msg


def test_working_set_larger_than_ram(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "guest": {"memory_mib": 256},
                                  "workload": {"writer": {"working_set_mib": 300}}})
    assert ": workload.writer.working_set_mib: 300 MiB" in msg and "guest.memory_mib=256" in msg


def test_empty_axis(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "axes": {"feature": []}})
    assert ": axes: " in msg and "'feature' is empty" in msg


def test_duplicate_axis_value(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "axes": {"feature": ["precopy", "precopy"]}})
    assert ": axes: " in msg and "twice" in msg


def test_exclude_names_non_axis(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "axes": {"feature": ["precopy"]},
                                  "exclude": [{"featur": "precopy"}]})
    assert ": exclude[0]: names 'featur'" in msg and "not an axis" in msg


@pytest.mark.parametrize(("data", "key"), [
    ({"workload": {"writer": {"threads": -1}}}, "workload.writer.threads"),
    ({"workload": {"writer": {"threads": 0}}}, "workload.writer.threads"),
    ({"workloads": {"busy": {"writer": {"threads": -2}}}}, "workloads.busy.writer.threads"),
])
def test_negative_writer_threads(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    msg = matrix_error(tmp_path, {"name": "t", **data})
    assert f": {key}: " in msg and "greater than 0" in msg


@pytest.mark.parametrize(("data", "key"), [
    ({"axes": {"writer.threads": [1, -1]}}, "axes.writer.threads"),
    ({"migration": {"compress-threads": -1}}, "migration.compress-threads"),
    ({"axes": {"feature": ["compress"], "decompress-threads": [-1]}},
     "axes.decompress-threads"),
    ({"variants": {"old": {"migration": {"compress-threads": -1}}}},
     "variants.old.migration.compress-threads"),
])
def test_negative_threads_in_plan(tmp_path: Path, hosts_file: Path, hosts: HostsConfig,
                                  data: dict[str, Any], key: str) -> None:
    err = plan_error(tmp_path, hosts_file, hosts, {"name": "t", **data})
    assert err.key == key
    assert "-1" in str(err) and ("between 1 and 255" in str(err) or "greater than 0" in str(err))


@pytest.mark.parametrize("kind", ["include", "exclude"])
def test_rule_naming_no_axis(tmp_path: Path, kind: str) -> None:
    msg = matrix_error(tmp_path, {"name": "t", kind: [{"feature": "precopy"}, {}]})
    assert f": {kind}[1]: is empty: name at least one axis" in msg


def test_include_naming_a_non_axis(tmp_path: Path) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "axes": {"feature": ["precopy"]},
                                  "include": [{"max-bandwidth": "1gbit"}]})
    assert ": include[0]: names 'max-bandwidth'" in msg and "not an axis" in msg


@pytest.mark.parametrize(("text", "expected"), [
    ("name: t\nvariants:\n  old: {build: '7.2'}\n  new: {}\n  old: {}\n",
     "variants.old: duplicate key 'old': given at lines 3 and 5 (keep one)"),
    ("name: t\nworkloads:\n  busy: {}\n  busy: {writer: {rate_mib_s: 8}}\n"
     "axes: {workload: [busy]}\n",
     "workloads.busy: duplicate key 'busy': given at lines 3 and 4 (keep one)"),
    ("name: t\nexclude: [{feature: precopy, feature: xbzrle}]\n",
     "exclude[0].feature: duplicate key 'feature': given twice on line 2 (keep one)"),
    ("name: t\nrepetitions: 2\nrepetitions: 3\n",
     "repetitions: duplicate key 'repetitions': given at lines 2 and 3 (keep one)"),
])
def test_duplicate_names_in_yaml_mappings(tmp_path: Path, text: str, expected: str) -> None:
    assert matrix_error(tmp_path, text) == f"{tmp_path / 'm.yaml'}: {expected}"


def test_yaml_anchors_and_recursion_still_load(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", "name: t\nguest: &g {vcpus: 1}\ndescription: x\n"
                                      "limits: {max_time_s: 10}\n")
    assert load_matrix(path).guest.vcpus == 1
    # a structure that contains itself would expand forever: refused where the alias is
    msg = matrix_error(tmp_path, "name: t\naxes: &a {feature: *a}\n")
    assert "m.yaml: line 2, column 7: an alias refers to a node that contains it" in msg


@pytest.mark.parametrize("axis", [{"variant": ["a", "b", "a"]}, {"workload": ["w", "w"]}])
def test_duplicate_names_in_axis_lists(tmp_path: Path, axis: dict[str, Any]) -> None:
    msg = matrix_error(tmp_path, {"name": "t", "variants": {"a": {}, "b": {}},
                                  "workloads": {"w": {}}, "axes": axis})
    assert ": axes: " in msg and f"axis {next(iter(axis))!r} lists a value twice" in msg


def test_variants_must_be_a_mapping_of_names(tmp_path: Path) -> None:
    # a list of names (where a name could repeat) is not a form the file accepts
    msg = matrix_error(tmp_path, {"name": "t", "variants": ["a", "a"]})
    assert ": variants: " in msg and "dictionary" in msg


def test_plan_unknown_axis(tmp_path: Path, hosts_file: Path, hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts, {"name": "t", "axes": {"bandwidth": ["1gbit"]}})
    assert err.key == "axes.bandwidth"
    assert str(err).startswith(f"{tmp_path / 'm.yaml'}: axes.bandwidth: ")


def test_plan_unknown_variant(tmp_path: Path, hosts_file: Path, hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts,
                     {"name": "t", "variants": {"a": {}}, "axes": {"variant": ["b"]}})
    assert err.key == "axes.variant"
    assert str(tmp_path / "m.yaml") in str(err) and "'b'" in str(err)


def test_plan_xbzrle_cache_not_power_of_two(tmp_path: Path, hosts_file: Path,
                                            hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts,
                     {"name": "t", "axes": {"feature": ["xbzrle"],
                                            "xbzrle-cache-size": [100_000_000]}})
    msg = str(err)
    assert err.key == "axes.xbzrle-cache-size"
    assert str(tmp_path / "m.yaml") in msg
    assert "axes.xbzrle-cache-size" in msg and "67108864" in msg


def test_plan_bad_size_on_axis_names_the_axis(tmp_path: Path, hosts_file: Path,
                                              hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts,
                     {"name": "t", "axes": {"max-bandwidth": ["fast"]}})
    assert err.key == "axes.max-bandwidth"


def test_plan_bad_writer_axis_value_says_why(tmp_path: Path, hosts_file: Path,
                                             hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts,
                     {"name": "t", "axes": {"writer.pattern": ["ones"]}})
    assert err.key == "axes.writer.pattern"
    assert "errors.pydantic.dev" not in str(err)
    assert "sparse" in str(err)


@pytest.mark.parametrize(("data", "key", "problem"), [
    ({"variants": {"old": {"migration": {"max-bandwidth": "fast"}}}},
     "variants.old.migration.max-bandwidth", "cannot parse size 'fast'"),
    ({"variants": {"old": {"migration": {"compress-level": 12}}}},
     "variants.old.migration.compress-level", "must be between 0 and 9, got 12"),
    ({"destination_migration": {"max-bandwidth": "fast"}},
     "destination_migration.max-bandwidth", "cannot parse size 'fast'"),
    ({"migration": {"max-bandwidth": "fast"}}, "migration.max-bandwidth", "cannot parse size"),
    ({"migration": {"max-bandwith": "1gbit"}}, "migration.max-bandwith",
     "is not a migration parameter; did you mean max-bandwidth? known: "),
    ({"migration": {"xbzrle-cache-size": 100_000_000}, "axes": {"feature": ["xbzrle"]}},
     "migration.xbzrle-cache-size", "100000000 is not a power of two; use e.g. 67108864"),
    ({"axes": {"feature": ["xbzrle"], "xbzrle-cache-size": ["100000000"]}},
     "axes.xbzrle-cache-size", "100000000 is not a power of two; use e.g. 67108864"),
    ({"axes": {"multifd-channels": [2]}, "include": [{"multifd-channels": 0}]},
     "include[0].multifd-channels", "must be between 1 and 255, got 0"),
    ({"axes": {"feature": ["multifd"], "multifd-channels": [2]},
      "include": [{"feature": "multifd"}, {"multifd-channels": "four"}]},
     "include[1].multifd-channels", "must be an integer, got 'four'"),
    ({"axes": {"feature": ["precopy"]}, "include": [{"feature": "xbzlre"}]},
     "include[0].feature", "unknown feature 'xbzlre'"),
    ({"axes": {"writer.pattern": ["text"]}, "include": [{"writer.pattern": "ones"}]},
     "include[0].writer.pattern", "Input should be 'zero', 'text', 'random' or 'sparse'"),
    ({"axes": {"writer.working_set_mib": [32]}, "include": [{"writer.working_set_mib": 480}]},
     "include[0].writer.working_set_mib", "480 MiB does not fit in a 512 MiB guest"),
    ({"axes": {"feature": ["precopy", "compress+multifd"]}},
     "axes.feature", "feature 'compress+multifd': QEMU refuses compress with multifd"),
])
def test_plan_error_names_the_exact_key(tmp_path: Path, hosts_file: Path, hosts: HostsConfig,
                                        data: dict[str, Any], key: str, problem: str) -> None:
    err = plan_error(tmp_path, hosts_file, hosts, {"name": "t", **data})
    assert err.key == key
    msg = str(err)
    assert msg.startswith(f"{tmp_path / 'm.yaml'}: {key}: ")
    rest = msg.removeprefix(f"{tmp_path / 'm.yaml'}: {key}: ")
    assert rest.startswith(problem), rest
    # a knob is named once, by the key, not again as a prefix of the problem
    knob = key.rsplit(".", 1)[-1]
    assert knob == "feature" or not rest.startswith(knob), rest


def test_plan_variant_build_not_defined(tmp_path: Path, hosts_file: Path,
                                        hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts, {"name": "t", "variants": {"v": {"build": "9"}}})
    assert err.key == "variants.v.build"
    assert str(hosts_file) in str(err)


def test_plan_missing_binary(tmp_path: Path, hosts_file: Path, hosts: HostsConfig) -> None:
    err = plan_error(tmp_path, hosts_file, hosts, {"name": "t", "variants": {"v": {"build": "y"}}})
    msg = str(err)
    assert msg.startswith(f"{hosts_file}: qemu_builds.y.binary: ")
    assert str(tmp_path / "rel" / "qemu") in msg  # resolved against the hosts file's folder
    assert "make qemu" in msg
    assert "'v'" in msg


def test_plan_ok(tmp_path: Path, hosts_file: Path, hosts: HostsConfig) -> None:
    path = write(tmp_path / "m.yaml", {"name": "t", "axes": {"feature": ["precopy", "xbzrle"]}})
    cells = plan(path, load_matrix(path), hosts_file, hosts)
    assert [c.feature for c in cells] == ["precopy", "xbzrle"]
    assert {c.build for c in cells} == {"x"}


# --- hosts.yaml ------------------------------------------------------------------------------


def test_hosts_paths_resolved(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yaml", {
        "qemu_builds": {"b": {"binary": "q/bin/qemu", "datadirs": ["q/share", "/abs/fw"],
                              "moduledir": "q/mod"}},
        "default_build": "b",
        "pairs": {"p": {"source": {"accel": "tcg"}, "destination": {}}},
    })
    cfg = load_hosts(path)
    qb = cfg.qemu_builds["b"]
    assert qb.binary == (tmp_path / "q/bin/qemu").resolve()
    assert qb.datadirs == ((tmp_path / "q/share").resolve(), Path("/abs/fw"))
    assert qb.moduledir == (tmp_path / "q/mod").resolve()
    assert cfg.pairs["p"].source.accel == "tcg"
    assert cfg.pairs["p"].destination.accel == "auto"


def test_hosts_default_build_not_defined(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yaml", {
        "qemu_builds": {"10.0": {"binary": "/bin/true"}},
        "default_build": "9.0",
        "pairs": {"local": {"source": {}, "destination": {}}},
    })
    with pytest.raises(ConfigError) as info:
        load_hosts(path)
    msg = one_line(info.value)
    assert msg.startswith(f"{path}: default_build: ")
    assert "'9.0'" in msg and "10.0" in msg


def test_hosts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_hosts(tmp_path / "hosts.yaml")
    assert str(tmp_path / "hosts.yaml") in one_line(info.value)


def test_hosts_bad_accel(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yaml", {
        "qemu_builds": {"x": {"binary": "/bin/true"}}, "default_build": "x",
        "pairs": {"local": {"source": {"accel": "hvf"}, "destination": {}}},
    })
    with pytest.raises(ConfigError) as info:
        load_hosts(path)
    msg = one_line(info.value)
    assert ": pairs.local.source.accel: " in msg and "'hvf'" in msg


def test_hosts_needs_a_pair(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.yaml", {"qemu_builds": {}, "pairs": {}})
    with pytest.raises(ConfigError) as info:
        load_hosts(path)
    assert "at least one host pair" in one_line(info.value)


# --- the repository's own files --------------------------------------------------------------


def test_repo_demo_matrix_loads() -> None:
    s = load_matrix(REPO / "matrices" / "demo.yaml")
    assert s.name == "demo"
    assert s.repetitions == 2
    assert s.guest.memory_mib == 512
    assert s.workload.writer is not None and s.workload.writer.pattern == "sparse"
    cells = expand(s, "10.0")
    assert [c.feature for c in cells] == ["precopy", "xbzrle"]
    for c in cells:
        assert c.migration.parameters["max-bandwidth"] == 25_000_000
        assert c.migration.parameters["downtime-limit"] == 300
        if c.feature == "xbzrle":
            assert c.migration.parameters["xbzrle-cache-size"] == 128 * MiB
        else:
            assert "xbzrle-cache-size" not in c.migration.parameters


def test_repo_hosts_loads() -> None:
    cfg = load_hosts(REPO / "hosts.yaml")
    assert cfg.default_build == "10.0"
    assert set(cfg.qemu_builds) >= {"10.0", "7.2"}
    assert cfg.qemu_builds["10.0"].binary == REPO / "build/qemu-10.0/usr/bin/qemu-system-x86_64"
    assert "local" in cfg.pairs


@pytest.mark.skipif(not (REPO / "build" / "qemu-10.0").exists(),
                    reason="build/qemu-10.0 is absent (run `make qemu`)")
def test_repo_plan() -> None:
    hosts_path = REPO / "hosts.yaml"
    matrix_path = REPO / "matrices" / "demo.yaml"
    cells = plan(matrix_path, load_matrix(matrix_path), hosts_path, load_hosts(hosts_path))
    assert len(cells) == 2
    assert {c.build for c in cells} == {"10.0"}
