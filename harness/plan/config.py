"""Load and validate hosts.yaml and matrix files, once, at the boundary.

Every problem becomes a :class:`ConfigError` whose one-line message names the file, the key and,
where we can tell, the fix. Nothing past this module sees raw YAML.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from harness import locations
from harness.errors import ConfigError, shorten
from harness.inputs import load_yaml
from harness.plan.matrix import Cell, ExpansionError, expand
from harness.plan.models import FILE_INPUT, HostsConfig, MatrixSpec

M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data, context=FILE_INPUT)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        etype = err["type"]
        given = err.get("input")
        msg = err["msg"]
        msg = msg.removeprefix("Value error, ")
        fix = "" if etype == "value_error" or isinstance(given, dict) else f"got {shorten(given)}"
        head, sep, rest = msg.partition(": ")
        if not err["loc"] and sep and " " not in head:
            key, msg = head, rest  # a whole-file check that names its own key
        if etype == "extra_forbidden":
            msg = "unknown key"
            fix = "remove it or fix its spelling; see the example files in the repository"
        elif etype == "missing":
            msg = "required key is missing"
            fix = "add it"
        elif etype == "int_type":  # strict: YAML's yes/no and 1.5 are not silently made ints
            msg = ("a boolean where a whole number belongs" if isinstance(given, bool)
                   else "must be a whole number")
        elif etype == "float_type":
            msg = "a boolean where a number belongs" if isinstance(given, bool) else "must be a number"
            if isinstance(given, str) and _yaml_1_1_float(given):  # YAML 1.1 reads 1e3 as text
                fix = f"got {shorten(given)}: write it with a dot and a signed exponent, e.g. " \
                      f"{float(given):.1e}".replace("e+0", "e+").replace("e-0", "e-")
        elif etype == "finite_number":
            msg = "must be a finite number (not .inf or .nan)"
        raise ConfigError(path, key, msg, fix) from None


def _yaml_1_1_float(text: str) -> bool:
    """``text`` is a number in the usual notation that YAML 1.1 (PyYAML) reads as a string:
    an exponent without a dot or without a sign (``1e3``, ``2.5e3``)."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and "e" in text.lower()


def _resolve_paths(node: Any, base: Path) -> Any:
    """Resolve relative ``binary``/``datadirs``/``moduledir`` and ``identity_file``/
    ``known_hosts`` against the hosts file's folder (``~`` is the user's home)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in ("identity_file", "known_hosts") and isinstance(v, str):
                out[k] = str((base / Path(v).expanduser()).resolve())
            elif k in ("binary", "moduledir") and isinstance(v, str) and not v.startswith("/"):
                out[k] = str((base / v).resolve())
            elif k == "datadirs" and isinstance(v, list):
                out[k] = [str((base / d).resolve()) if isinstance(d, str) and not d.startswith("/")
                          else d for d in v]
            else:
                out[k] = _resolve_paths(v, base)
        return out
    if isinstance(node, list):
        return [_resolve_paths(v, base) for v in node]
    return node


def hosts_path(arg: str | Path | None = None) -> Path:
    """The hosts file to use: ``arg`` (``--hosts``) when given, else the first that exists of
    :func:`harness.locations.hosts_candidates` ($MIGBENCH_HOSTS, ./hosts.yaml, the config folder's,
    a checkout's).

    :raise ConfigError: none exists (the fix names ``migbench init``).
    """
    if arg:
        return Path(arg)
    candidates = locations.hosts_candidates()
    env = os.environ.get(locations.HOSTS_ENV)
    if env:  # named explicitly: a missing file is an error, not a reason to look elsewhere
        return Path(env)
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError("hosts.yaml", "", "no hosts file found (looked for "
                      + ", ".join(str(c) for c in candidates) + ")",
                      f"pass --hosts FILE, set {locations.HOSTS_ENV}, or run `migbench init`")


def load_hosts(path: Path) -> HostsConfig:
    """Load hosts.yaml.

    :raise ConfigError: missing file, bad YAML, unknown key, or bad value.
    """
    data = load_yaml(path, "hosts")
    cfg = _validate(HostsConfig, _resolve_paths(data, path.resolve().parent), path)
    if cfg.default_build not in cfg.qemu_builds and not all(
        cfg.default_build in h.qemu for p in cfg.pairs.values() for h in (p.source, p.destination)
    ):
        raise ConfigError(
            path, "default_build", f"names {cfg.default_build!r}, which is not under qemu_builds",
            f"use one of {', '.join(cfg.qemu_builds) or '(none defined)'}",
        )
    return cfg


def load_matrix(path: Path) -> MatrixSpec:
    """Load a matrix file.

    :raise ConfigError: missing file, bad YAML, unknown key, or bad value.
    """
    return _validate(MatrixSpec, load_yaml(path, "matrix"), path)


def plan(matrix_path: Path, spec: MatrixSpec, hosts_path: Path, hosts: HostsConfig) -> list[Cell]:
    """Expand the matrix and check every build it names exists in hosts.yaml and on disk.

    :raise ConfigError: with the matrix or hosts file and key at fault.
    """
    try:
        cells = expand(spec, hosts.default_build)
    except ExpansionError as exc:
        raise ConfigError(matrix_path, exc.key, str(exc)) from None
    for vname, variant in spec.variants.items():
        build = variant.build or hosts.default_build
        for pname, pair in hosts.pairs.items():
            for role, host in (("source", pair.source), ("destination", pair.destination)):
                qb = hosts.build_for(host, build)
                if qb is None:
                    raise ConfigError(
                        matrix_path, f"variants.{vname}.build",
                        f"QEMU build {build!r} is not defined in {hosts_path}",
                        f"define it under qemu_builds or use one of {', '.join(hosts.qemu_builds)}",
                    )
                if host.lacks_here(qb.binary):
                    raise ConfigError(
                        hosts_path, f"qemu_builds.{build}.binary",
                        f"{qb.binary} does not exist (needed by variant {vname!r}, pair {pname} {role})",
                        "run `make qemu` to install the QEMU builds, or fix the path",
                    )
    return cells
