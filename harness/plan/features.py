"""Migration features and knobs -> QEMU capabilities and parameters (pure).

A cell names one ``feature`` (a preset of capabilities, e.g. ``xbzrle``) and any number of knobs,
which are QEMU migration parameter names (``max-bandwidth``, ``xbzrle-cache-size`` ...). This module
turns them into the exact ``migrate-set-capabilities`` / ``migrate-set-parameters`` arguments, with
human units resolved (``200mbit``, ``64MiB``, ``25%`` of guest RAM).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import shorten
from harness.plan.units import U64_MAX, ZeroSize, is_power_of_two, parse_bytes, round_down_pow2

#: QEMU's own default (128 MiB/s) silently caps every run; ours is explicit and recorded.
DEFAULT_MAX_BANDWIDTH = 1024**3
DEFAULT_XBZRLE_CACHE = 64 * 1024**2
#: How a matrix asks for no rate limit: QEMU takes 0 for that, and a bare 0 is too easily a
#: mistake (a fraction rounded down, a unit forgotten) to accept.
UNLIMITED = "unlimited"


@dataclass(frozen=True)
class Knob:
    kind: str  # size | int | bool | enum
    lo: int | None = None
    hi: int | None = None
    choices: tuple[str, ...] = ()
    zero: str = ""  # size knobs: what 0 means to QEMU, and how to ask for that instead
    unlimited: bool = False  # size knobs: `unlimited` is accepted (sent to QEMU as 0)


_NO_LIMIT = f"to QEMU 0 means no limit: write `{UNLIMITED}` for that, or a rate such as 200mbit"

# Ranges are QEMU's own (migrate_params_check and the QAPI types: sizes are uint64).
KNOBS: dict[str, Knob] = {
    "max-bandwidth": Knob("size", 1, U64_MAX, zero=_NO_LIMIT, unlimited=True),
    "downtime-limit": Knob("int", 0, 2000000),
    "xbzrle-cache-size": Knob("size", 4096, U64_MAX),  # and at most the guest's RAM
    "avail-switchover-bandwidth": Knob(
        "size", 1, U64_MAX,
        zero="to QEMU 0 means \"estimate it\": leave the parameter out for that"),
    "max-postcopy-bandwidth": Knob("size", 1, U64_MAX, zero=_NO_LIMIT, unlimited=True),
    "compress-level": Knob("int", 0, 9),
    "compress-threads": Knob("int", 1, 255),
    "decompress-threads": Knob("int", 1, 255),
    "compress-wait-thread": Knob("bool"),
    "multifd-channels": Knob("int", 1, 255),
    "multifd-compression": Knob("enum", choices=("none", "zlib", "zstd", "qpl", "uadk", "qatzip")),
    "multifd-zlib-level": Knob("int", 0, 9),
    "multifd-zstd-level": Knob("int", 0, 20),
    "multifd-qatzip-level": Knob("int", 1, 9),  # QEMU 9.2+
    "zero-page-detection": Knob("enum", choices=("none", "legacy", "multifd")),
    "cpu-throttle-initial": Knob("int", 1, 99),
    "cpu-throttle-increment": Knob("int", 1, 99),
    "cpu-throttle-tailslow": Knob("bool"),
    "max-cpu-throttle": Knob("int", 1, 99),
    "throttle-trigger-threshold": Knob("int", 1, 100),
    "x-vcpu-dirty-limit-period": Knob("int", 1, 1000),
    "vcpu-dirty-limit": Knob("int", 1, 1 << 30),  # MB/s per vCPU
}


#: Harness-side knobs: not QEMU parameters, but how the harness drives the migration.
HARNESS_KNOBS: dict[str, Knob] = {
    "postcopy-after-syncs": Knob("int", 1, 1000),  # migrate-start-postcopy after N dirty syncs
    "postcopy-after-s": Knob("int", 0, 3600),  # ... or after S seconds (whichever first)
    "pause-after-syncs": Knob("int", 1, 1000),  # `stop` the guest after N dirty syncs
}

#: Knobs that only act when a feature is on; elsewhere they are dropped (they would change nothing).
KNOB_NEEDS: dict[str, str] = {
    "xbzrle-cache-size": "xbzrle",
    "compress-level": "compress",
    "compress-threads": "compress",
    "decompress-threads": "compress",
    "compress-wait-thread": "compress",
    "multifd-channels": "multifd",
    "multifd-compression": "multifd",
    "multifd-zlib-level": "multifd",
    "multifd-zstd-level": "multifd",
    "multifd-qatzip-level": "multifd",
    "cpu-throttle-initial": "auto-converge",
    "cpu-throttle-increment": "auto-converge",
    "cpu-throttle-tailslow": "auto-converge",
    "max-cpu-throttle": "auto-converge",
    "throttle-trigger-threshold": "auto-converge",
    "max-postcopy-bandwidth": "postcopy",
    "postcopy-after-syncs": "postcopy",
    "postcopy-after-s": "postcopy",
    "x-vcpu-dirty-limit-period": "dirty-limit",
    "vcpu-dirty-limit": "dirty-limit",
    "pause-after-syncs": "pause",
}


def split_feature(feature: str) -> list[str]:
    """``"xbzrle+auto-converge"`` -> ``["xbzrle", "auto-converge"]``."""
    return [f.strip() for f in feature.split("+") if f.strip()]


def knob_applies(name: str, feature: str) -> bool:
    """Whether knob ``name`` has any effect under ``feature`` (which may combine features)."""
    need = KNOB_NEEDS.get(name)
    return need is None or need in split_feature(feature)


@dataclass(frozen=True)
class Feature:
    """A preset: capabilities to enable, default parameters, and what QEMU must support."""

    name: str
    capabilities: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    needs_kvm: str = ""  # reason, when the feature only works with KVM


FEATURES: dict[str, Feature] = {
    "precopy": Feature("precopy", description="plain precopy"),
    "xbzrle": Feature(
        "xbzrle", ("xbzrle",), {"xbzrle-cache-size": DEFAULT_XBZRLE_CACHE},
        "XOR-based zero run-length encoding of re-sent pages",
    ),
    "compress": Feature(
        "compress", ("compress",), {},
        "legacy multithread compression (QEMU up to 9.0; removed in 9.1)",
    ),
    "multifd": Feature(
        "multifd", ("multifd",), {"multifd-channels": 2},
        "parallel migration channels, optionally compressed (zlib, zstd, qpl, uadk, qatzip)",
    ),
    "auto-converge": Feature(
        "auto-converge", ("auto-converge",), {}, "throttle the vCPUs until the migration converges",
    ),
    "postcopy": Feature(
        "postcopy", ("postcopy-ram",), {"postcopy-after-syncs": 2},
        "switch to postcopy after some precopy passes; pages fault in on the destination",
    ),
    "postcopy-preempt": Feature(
        "postcopy-preempt", ("postcopy-preempt",), {},
        "a separate channel for postcopy page requests (with postcopy)",
    ),
    "dirty-limit": Feature(
        "dirty-limit", ("dirty-limit",), {}, "limit each vCPU's dirty rate (KVM dirty ring)",
        needs_kvm="dirty-limit needs KVM with the dirty ring (accel kvm,dirty-ring-size=N)",
    ),
    "pause": Feature(
        "pause", (), {"pause-after-syncs": 5},
        "stop the guest after N dirty syncs so that the migration finishes (a baseline)",
    ),
}

#: Pairs QEMU refuses to combine (migrate_caps_check), refused here before anything boots.
INCOMPATIBLE: dict[frozenset[str], str] = {
    frozenset({"compress", "multifd"}): "QEMU refuses compress with multifd",
    frozenset({"compress", "postcopy"}): "QEMU refuses compress with postcopy",
    frozenset({"compress", "xbzrle"}): "legacy compress and xbzrle cannot be combined",
    frozenset({"dirty-limit", "auto-converge"}): "QEMU refuses dirty-limit with auto-converge",
    frozenset({"pause", "postcopy"}): "pause and postcopy are alternative endings",
}

#: Migration statuses in which the source has switched over to postcopy.
POSTCOPY_STATES = ("postcopy-active", "postcopy-paused", "postcopy-recover",
                   "postcopy-recover-setup")


@dataclass(frozen=True)
class MigrationConfig:
    """What to set on QEMU for one cell."""

    feature: str
    capabilities: dict[str, bool]
    parameters: dict[str, Any]  # QEMU migration parameters only
    harness: dict[str, Any] = field(default_factory=dict)  # postcopy-after-*, pause-after-syncs
    destination: dict[str, Any] | None = None  # destination parameters when they differ
    # parameters given as `unlimited` (QEMU gets 0), so that results say what was meant
    unlimited: tuple[str, ...] = ()

    @property
    def destination_parameters(self) -> dict[str, Any]:
        return dict(self.destination if self.destination is not None else self.parameters)

    @property
    def features(self) -> list[str]:
        return split_feature(self.feature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "capabilities": dict(self.capabilities),
            "parameters": dict(self.parameters),
            "harness": dict(self.harness),
            **({"destination": dict(self.destination)} if self.destination is not None else {}),
            **({"unlimited": list(self.unlimited)} if self.unlimited else {}),
        }


class KnobError(ValueError):
    """A bad knob name or value.

    ``str()`` names the knob; ``problem`` does not, for callers that name the exact key
    themselves (``variants.old.migration.max-bandwidth: cannot parse size ...``).
    """

    def __init__(self, knob: str, problem: str, message: str | None = None) -> None:
        self.knob = knob
        self.problem = problem
        super().__init__(message if message is not None else f"{knob} {problem}")


def knob_value(name: str, value: object, guest_ram: int) -> Any:
    """Validate and normalise one knob value.

    :raise KnobError: unknown knob or bad value, with the fix in the message.
    """
    knob = KNOBS.get(name) or HARNESS_KNOBS.get(name)
    if knob is None:
        names = sorted([*KNOBS, *HARNESS_KNOBS])
        known = ", ".join(names)
        close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
        hint = f"did you mean {close[0]}? " if close else ""
        raise KnobError(name, f"is not a migration parameter; {hint}known: {known}",
                        f"unknown migration parameter {shorten(name)}; {hint}known: {known}")
    if knob.kind == "size":
        if knob.unlimited and value == UNLIMITED:
            return 0
        try:
            if name == "xbzrle-cache-size":
                return xbzrle_cache_size(value, guest_ram)
            return parse_bytes(value, maximum=knob.hi or U64_MAX)
        except ValueError as exc:
            msg = str(exc)
            if isinstance(exc, ZeroSize) and knob.zero:
                msg = msg.partition(": ")[0] + ": " + knob.zero
            if msg.startswith(f"{name} "):  # xbzrle_cache_size names itself
                raise KnobError(name, msg.removeprefix(f"{name} "), msg) from None
            raise KnobError(name, msg, f"{name}: {msg}") from None
    if knob.kind == "bool":
        if not isinstance(value, bool):
            raise KnobError(name, f"must be true or false, got {shorten(value)}")
        return value
    if knob.kind == "enum":
        if not isinstance(value, str) or value not in knob.choices:
            raise KnobError(name, f"must be one of {', '.join(knob.choices)}, got {shorten(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise KnobError(name, f"must be an integer, got {shorten(value)}")
    if (knob.lo is not None and value < knob.lo) or (knob.hi is not None and value > knob.hi):
        raise KnobError(name, f"must be between {knob.lo} and {knob.hi}, got {shorten(value)}")
    return value


def xbzrle_cache_size(value: object, guest_ram: int) -> int:
    """``xbzrle-cache-size`` in bytes: "64MiB", or "25%" of guest RAM rounded down to a power of two.

    A value given in plain bytes (a number, or a string of digits with no unit or ``B``) must
    already be a power of two (QEMU requires it); sizes given with a larger unit or as a
    percentage are rounded down, since the user asked for "about" that much.
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"xbzrle-cache-size {shorten(value)} is not a percentage like 25%"
                             ) from None
        if not 0 < pct <= 100:  # also refuses nan
            raise ValueError(f"xbzrle-cache-size percentage must be in (0, 100], got "
                             f"{shorten(value)}")
        return round_down_pow2(max(4096, int(guest_ram * pct / 100)))
    try:
        size = parse_bytes(value)
    except ZeroSize:
        size = 0
    if size < 4096:
        raise ValueError(f"xbzrle-cache-size must be at least 4KiB, got {shorten(value)}")
    # The cache holds copies of guest pages: beyond the guest's RAM it only costs host memory.
    if size > guest_ram:
        raise ValueError(f"xbzrle-cache-size {shorten(value)} is larger than the guest's RAM "
                         f"({guest_ram // 1024**2} MiB): use at most that, or a percentage "
                         "like 25%")
    if _plain_bytes(value) and not is_power_of_two(size):
        raise ValueError(
            f"xbzrle-cache-size {size} is not a power of two; use e.g. {round_down_pow2(size)}"
        )
    return round_down_pow2(size)


def _plain_bytes(value: object) -> bool:
    """Whether ``value`` is a size in bytes (``100000000``, ``"100000000"``, ``"4096B"``)."""
    if isinstance(value, str):
        return re.fullmatch(r"\s*[0-9]+(?:\.[0-9]+)?\s*[bB]?\s*", value) is not None
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def migration_config(feature: str, knobs: Mapping[str, Any], guest_ram: int) -> MigrationConfig:
    """Combine feature presets (``a+b`` combines) with knobs into QEMU arguments.

    :raise KnobError: an unknown knob or a bad knob value.
    :raise ValueError: an unknown feature, or features QEMU will not combine.
    """
    names = split_feature(feature)
    if not names:
        raise ValueError("empty feature name")
    for name in names:
        if name not in FEATURES:
            raise ValueError(f"unknown feature {shorten(name)}; known: {', '.join(sorted(FEATURES))}")
    if len(set(names)) != len(names):
        raise ValueError(f"feature {shorten(feature)} names a feature twice")
    for pair, why in INCOMPATIBLE.items():
        if pair <= set(names):
            raise ValueError(f"feature {shorten(feature)}: {why}")
    if "postcopy-preempt" in names and "postcopy" not in names:
        raise ValueError("feature postcopy-preempt needs postcopy: use postcopy+postcopy-preempt")
    params: dict[str, Any] = {"max-bandwidth": DEFAULT_MAX_BANDWIDTH}
    harness: dict[str, Any] = {}
    caps = {"events": True}
    for name in names:
        preset = FEATURES[name]
        for cap in preset.capabilities:
            caps[cap] = True
        for k, v in preset.defaults.items():
            (harness if k in HARNESS_KNOBS else params)[k] = v
    canonical = "+".join(names)
    unlimited: list[str] = []
    for name, given in knobs.items():
        value = knob_value(name, given, guest_ram)
        if knob_applies(name, canonical):
            (harness if name in HARNESS_KNOBS else params)[name] = value
            if given == UNLIMITED:
                unlimited.append(name)
    return MigrationConfig(feature=canonical, capabilities=caps, parameters=params, harness=harness,
                           unlimited=tuple(sorted(unlimited)))


def kvm_requirement(config: MigrationConfig) -> str:
    """Why this configuration needs KVM, or "" when TCG will do."""
    for name in config.features:
        if FEATURES[name].needs_kvm:
            return FEATURES[name].needs_kvm
    return ""
