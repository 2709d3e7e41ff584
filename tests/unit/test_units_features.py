"""harness.plan.units and harness.plan.features: sizes, rates, and QEMU migration settings (pure)."""

from __future__ import annotations

import pytest

from harness.plan.features import (
    DEFAULT_MAX_BANDWIDTH,
    DEFAULT_XBZRLE_CACHE,
    KnobError,
    knob_value,
    migration_config,
    xbzrle_cache_size,
)
from harness.plan.units import ZeroSize, human_bytes, is_power_of_two, parse_bytes, round_down_pow2

MiB = 1024**2
GiB = 1024**3
GUEST_RAM = 512 * MiB


# --- parse_bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MiB", 64 * MiB),
        ("64 MiB", 64 * MiB),
        ("64mib", 64 * MiB),
        ("64M", 64 * MiB),
        ("64MB", 64_000_000),
        ("1.5GiB", int(1.5 * GiB)),
        ("2GiB", 2 * GiB),
        ("4KiB", 4096),
        ("4kb", 4000),
        ("512", 512),
        ("512B", 512),
        ("200mbit", 25_000_000),
        ("200Mbit/s", 25_000_000),
        ("1gbit", 125_000_000),
        ("8kbit", 1000),
        ("800bit", 100),
    ],
)
def test_parse_bytes_strings(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_parse_bytes_numbers() -> None:
    assert parse_bytes(12345) == 12345
    assert parse_bytes(1024.0) == 1024
    assert parse_bytes(2**64 - 1) == 2**64 - 1


@pytest.mark.parametrize("zero", [0, 0.0, "0", "0MiB", "1bit", "7bit"])
def test_parse_bytes_refuses_zero_and_what_rounds_to_it(zero: object) -> None:
    with pytest.raises(ZeroSize, match="0 bytes"):
        parse_bytes(zero)


@pytest.mark.parametrize("bad", [1024.9, 0.5, "0.5", "1.5B"])
def test_parse_bytes_refuses_fractions_of_a_byte(bad: object) -> None:
    with pytest.raises(ValueError, match="not a whole number of bytes"):
        parse_bytes(bad)


@pytest.mark.parametrize("huge", [2**64, "20000000TiB", 10**30])
def test_parse_bytes_refuses_beyond_64_bits(huge: object) -> None:
    with pytest.raises(ValueError, match="beyond QEMU's 64-bit limit"):
        parse_bytes(huge)


@pytest.mark.parametrize("bad", ["", "fast", "64 parsecs", "MiB", "1..5GiB", "-5MiB", "64MiB!"])
def test_parse_bytes_rejects_bad_strings(bad: str) -> None:
    with pytest.raises(ValueError, match="size|unit"):
        parse_bytes(bad)


def test_parse_bytes_unknown_unit_names_the_unit() -> None:
    with pytest.raises(ValueError, match="unknown unit 'parsecs'"):
        parse_bytes("64parsecs")


@pytest.mark.parametrize("bad", [-1, -1.5])
def test_parse_bytes_rejects_negatives(bad: float) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_bytes(bad)


@pytest.mark.parametrize("bad", [True, False, None, [64], {"a": 1}])
def test_parse_bytes_rejects_non_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_parse_bytes_infinity_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_bytes(float("inf"))


def test_power_of_two_helpers() -> None:
    assert [n for n in range(20) if is_power_of_two(n)] == [1, 2, 4, 8, 16]
    assert round_down_pow2(1) == 1
    assert round_down_pow2(100 * MiB) == 64 * MiB
    assert round_down_pow2(128 * MiB) == 128 * MiB
    assert round_down_pow2(128 * MiB + 1) == 128 * MiB


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(64 * MiB) == "64.0 MiB"
    assert human_bytes(1.5 * GiB) == "1.5 GiB"


# --- xbzrle_cache_size -----------------------------------------------------------------------


def test_xbzrle_cache_size_units() -> None:
    assert xbzrle_cache_size("64MiB", GUEST_RAM) == 64 * MiB
    assert xbzrle_cache_size("128MiB", GUEST_RAM) == 128 * MiB
    assert xbzrle_cache_size(64 * MiB, GUEST_RAM) == 64 * MiB


def test_xbzrle_cache_size_percentage_of_guest_ram() -> None:
    assert xbzrle_cache_size("25%", GUEST_RAM) == 128 * MiB
    assert xbzrle_cache_size(" 50% ", GUEST_RAM) == 256 * MiB
    assert xbzrle_cache_size("100%", GUEST_RAM) == 512 * MiB
    # 30% of 512 MiB = 153.6 MiB -> rounded down to a power of two
    assert xbzrle_cache_size("30%", GUEST_RAM) == 128 * MiB


@pytest.mark.parametrize("bad", ["0%", "101%", "-5%"])
def test_xbzrle_cache_size_percentage_out_of_range(bad: str) -> None:
    with pytest.raises(ValueError, match=r"percentage must be in \(0, 100\]"):
        xbzrle_cache_size(bad, GUEST_RAM)


def test_xbzrle_cache_size_unit_value_is_rounded_down() -> None:
    assert xbzrle_cache_size("100MiB", GUEST_RAM) == 64 * MiB
    assert xbzrle_cache_size("200MB", GUEST_RAM) == 128 * MiB


def test_xbzrle_cache_size_plain_int_must_be_power_of_two() -> None:
    with pytest.raises(ValueError) as info:
        xbzrle_cache_size(100_000_000, GUEST_RAM)
    msg = str(info.value)
    assert "not a power of two" in msg
    assert str(64 * MiB) in msg  # suggests the lower power of two: 67108864


@pytest.mark.parametrize("given", ["100000000", " 100000000 ", "100000000B", 100_000_000,
                                   100_000_000.0])
def test_xbzrle_cache_size_bytes_as_string_must_be_power_of_two(given: object) -> None:
    """Bytes are bytes whether YAML gives an int or a quoted string: never silently rounded."""
    with pytest.raises(ValueError) as info:
        xbzrle_cache_size(given, GUEST_RAM)
    assert str(info.value) == (
        "xbzrle-cache-size 100000000 is not a power of two; use e.g. 67108864")


def test_xbzrle_cache_size_bytes_as_string_power_of_two_accepted() -> None:
    assert xbzrle_cache_size("67108864", GUEST_RAM) == 64 * MiB
    assert xbzrle_cache_size("4096B", GUEST_RAM) == 4096
    assert knob_value("xbzrle-cache-size", "134217728", GUEST_RAM) == 128 * MiB


def test_xbzrle_cache_size_bad_percentage_says_so() -> None:
    with pytest.raises(ValueError, match="'abc%' is not a percentage like 25%"):
        xbzrle_cache_size("abc%", GUEST_RAM)


def test_xbzrle_cache_size_minimum() -> None:
    with pytest.raises(ValueError, match="at least 4KiB"):
        xbzrle_cache_size(2048, GUEST_RAM)
    assert xbzrle_cache_size(4096, GUEST_RAM) == 4096


# --- knob_value / migration_config -----------------------------------------------------------


def test_precopy_defaults() -> None:
    cfg = migration_config("precopy", {}, GUEST_RAM)
    assert cfg.feature == "precopy"
    assert cfg.capabilities == {"events": True}
    assert cfg.parameters == {"max-bandwidth": DEFAULT_MAX_BANDWIDTH}
    assert DEFAULT_MAX_BANDWIDTH == GiB  # explicit, not QEMU's silent 128 MiB/s
    assert cfg.to_dict() == {
        "feature": "precopy",
        "capabilities": {"events": True},
        "parameters": {"max-bandwidth": GiB},
        "harness": {},
    }


def test_precopy_with_knobs() -> None:
    cfg = migration_config(
        "precopy", {"max-bandwidth": "200mbit", "downtime-limit": 300}, GUEST_RAM
    )
    assert cfg.parameters == {"max-bandwidth": 25_000_000, "downtime-limit": 300}
    assert "xbzrle" not in cfg.capabilities


def test_xbzrle_enables_capability_and_default_cache() -> None:
    cfg = migration_config("xbzrle", {}, GUEST_RAM)
    assert cfg.capabilities == {"events": True, "xbzrle": True}
    assert cfg.parameters["xbzrle-cache-size"] == DEFAULT_XBZRLE_CACHE == 64 * MiB
    assert cfg.parameters["max-bandwidth"] == DEFAULT_MAX_BANDWIDTH


def test_xbzrle_cache_knob_overrides_default() -> None:
    cfg = migration_config("xbzrle", {"xbzrle-cache-size": "25%"}, GUEST_RAM)
    assert cfg.parameters["xbzrle-cache-size"] == 128 * MiB


def test_to_dict_is_a_copy() -> None:
    cfg = migration_config("xbzrle", {}, GUEST_RAM)
    d = cfg.to_dict()
    d["capabilities"]["xbzrle"] = False
    d["parameters"].clear()
    assert cfg.capabilities["xbzrle"] is True
    assert cfg.parameters["xbzrle-cache-size"] == 64 * MiB


def test_unknown_feature_lists_known() -> None:
    with pytest.raises(ValueError) as info:
        migration_config("postcopy-magic", {}, GUEST_RAM)
    msg = str(info.value)
    assert "unknown feature 'postcopy-magic'" in msg
    assert "precopy, xbzrle" in msg


def test_unknown_knob_lists_known() -> None:
    with pytest.raises(ValueError) as info:
        migration_config("precopy", {"max-bandwith": "1gbit"}, GUEST_RAM)
    msg = str(info.value)
    assert "unknown migration parameter 'max-bandwith'" in msg
    assert "max-bandwidth" in msg and "xbzrle-cache-size" in msg


@pytest.mark.parametrize(
    ("name", "value", "pattern"),
    [
        ("compress-level", 12, "compress-level must be between 0 and 9, got 12"),
        ("compress-level", -1, "compress-level must be between 0 and 9, got -1"),
        ("multifd-channels", 0, "multifd-channels must be between 1 and 255, got 0"),
        ("downtime-limit", 2_000_001, "downtime-limit must be between 0 and 2000000"),
        ("compress-level", "9", "compress-level must be an integer"),
        ("compress-level", True, "compress-level must be an integer"),
        ("compress-wait-thread", "yes", "must be true or false"),
        ("multifd-compression", "lz4", "must be one of none, zlib, zstd"),
        ("max-bandwidth", "fast", "cannot parse size"),
    ],
)
def test_knob_errors(name: str, value: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        migration_config("precopy", {name: value}, GUEST_RAM)


def test_knob_error_names_the_knob_once() -> None:
    with pytest.raises(KnobError) as info:
        migration_config("xbzrle", {"xbzrle-cache-size": 100_000_000}, GUEST_RAM)
    assert str(info.value) == "xbzrle-cache-size 100000000 is not a power of two; use e.g. 67108864"
    assert info.value.knob == "xbzrle-cache-size"
    assert info.value.problem == "100000000 is not a power of two; use e.g. 67108864"
    with pytest.raises(KnobError) as info:
        knob_value("max-bandwidth", "fast", GUEST_RAM)
    assert str(info.value).startswith("max-bandwidth: cannot parse size 'fast'")
    assert info.value.problem.startswith("cannot parse size 'fast'")
    with pytest.raises(KnobError) as info:
        knob_value("compress-threads", -1, GUEST_RAM)
    assert str(info.value) == "compress-threads must be between 1 and 255, got -1"
    assert info.value.problem == "must be between 1 and 255, got -1"


def test_knob_boundaries_accepted() -> None:
    assert knob_value("compress-level", 0, GUEST_RAM) == 0
    assert knob_value("compress-level", 9, GUEST_RAM) == 9
    assert knob_value("multifd-zstd-level", 20, GUEST_RAM) == 20
    assert knob_value("compress-wait-thread", False, GUEST_RAM) is False
    assert knob_value("multifd-compression", "zstd", GUEST_RAM) == "zstd"
    assert knob_value("avail-switchover-bandwidth", "1gbit", GUEST_RAM) == 125_000_000
