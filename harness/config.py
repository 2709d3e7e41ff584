"""Load and validate hosts.yaml and matrix files, once, at the boundary.

Every problem becomes a :class:`ConfigError` whose one-line message names the file, the key and,
where we can tell, the fix. Nothing past this module sees raw YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError
from harness.matrix import Cell, ExpansionError, expand
from harness.models import HostsConfig, MatrixSpec

M = TypeVar("M", bound=BaseModel)


def _duplicate_key(loader: yaml.SafeLoader, node: yaml.Node, where: str,
                   visited: set[int] | None = None) -> tuple[str, str] | None:
    """The first key given twice in one mapping (PyYAML would keep the last) as
    (key path, what is wrong), or None."""
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias: checked where its anchor is (and may be recursive)
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError):
                continue  # left for the constructor to report
            path = f"{where}.{key}" if where else str(key)
            mark = key_node.start_mark
            if key in seen:
                first = seen[key]
                where_given = (f"twice on line {mark.line + 1}" if first.line == mark.line
                               else f"at lines {first.line + 1} and {mark.line + 1}")
                return path, f"duplicate key {key!r}: given {where_given}"
            seen[key] = mark
            found = _duplicate_key(loader, value_node, path, visited)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(loader, item, f"{where}[{i}]", visited)
            if found:
                return found
    return None


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(path, "", f"{what} file not found", "check the path; see `migbench --help`")
    try:
        loader = yaml.SafeLoader(path.read_text())
        try:
            node = loader.get_single_node()
            dup = _duplicate_key(loader, node, "") if node is not None else None
            if dup is not None:
                raise ConfigError(path, dup[0], dup[1], "keep one")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, "", f"not valid YAML: {where}{problem}", "fix the syntax") from exc
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read {what} file: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"a {what} file must be a YAML mapping at the top level")
    return data


def _validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        etype = err["type"]
        msg = err["msg"]
        msg = msg.removeprefix("Value error, ")
        fix = ""
        head, sep, rest = msg.partition(": ")
        if not err["loc"] and sep and " " not in head:
            key, msg = head, rest  # a whole-file check that names its own key
        if etype == "extra_forbidden":
            msg = "unknown key"
            fix = "remove it or fix its spelling; see the example files in the repository"
        elif etype == "missing":
            msg = "required key is missing"
            fix = "add it"
        elif etype.endswith("_type") or etype.endswith("_parsing") or etype == "literal_error":
            fix = f"got {err.get('input')!r}"
        raise ConfigError(path, key, msg, fix) from None


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


REPO = Path(__file__).resolve().parent.parent


def hosts_path(arg: str | Path | None = None) -> Path:
    """The hosts file to use: ``arg`` when given, else ./hosts.yaml, else the repository's."""
    if arg:
        return Path(arg)
    local = Path("hosts.yaml")
    return local if local.exists() else REPO / "hosts.yaml"


def load_hosts(path: Path) -> HostsConfig:
    """Load hosts.yaml.

    :raise ConfigError: missing file, bad YAML, unknown key, or bad value.
    """
    data = _read_yaml(path, "hosts")
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
    return _validate(MatrixSpec, _read_yaml(path, "matrix"), path)


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
                if host.transport == "local" and not qb.binary.exists():
                    raise ConfigError(
                        hosts_path, f"qemu_builds.{build}.binary",
                        f"{qb.binary} does not exist (needed by variant {vname!r}, pair {pname} {role})",
                        "run `make qemu` to install the QEMU builds, or fix the path",
                    )
    return cells
