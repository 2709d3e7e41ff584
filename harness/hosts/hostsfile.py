"""``migbench init``: a hosts file for this machine, written where the tool looks for one.

An installed tool has no checkout and so no ``hosts.yaml`` beside it; ``init`` writes one to
``$XDG_CONFIG_HOME/migbench/hosts.yaml`` (or ``--output``) with the local pair (source and
destination QEMU on this machine) and the QEMU builds it finds: the system's
(``/usr/bin/qemu-system-x86_64``, ``/usr/local/bin/...``) and each ``--qemu NAME=PATH``. A build
unpacked under a private prefix (``PREFIX/usr/bin/qemu-system-x86_64``, as ``make qemu`` does)
gets its data and module folders from that prefix, since it cannot find them itself. The file
is checked by the same loader every command uses before it is kept.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness import locations
from harness.errors import HarnessError, UsageError
from harness.output import write_atomic, write_failure
from harness.plan.config import load_hosts
from harness.plan.models import NAME_PATTERN

SYSTEM_QEMU = (Path("/usr/bin/qemu-system-x86_64"), Path("/usr/local/bin/qemu-system-x86_64"))
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)")
HEADER = ("# migbench hosts, written by `migbench init` for this machine: source and destination\n"
          "# QEMU both local. Add SSH pairs as in the README (\"Real hosts over SSH\").\n")


def qemu_version(binary: Path) -> tuple[int, int]:
    """(major, minor) of a QEMU binary, from ``--version``.

    :raise HarnessError: it does not run or does not say its version.
    """
    try:
        cp = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"{binary} --version failed: {exc}") from None
    m = _VERSION.search(cp.stdout)
    if cp.returncode != 0 or m is None:
        raise HarnessError(f"{binary} --version did not print a QEMU version "
                           f"(exit {cp.returncode}); pass the path of a qemu-system-x86_64")
    return int(m.group(1)), int(m.group(2))


def build_entry(binary: Path) -> dict[str, Any]:
    """A ``qemu_builds`` entry: the binary, plus the data and module folders of a private prefix."""
    entry: dict[str, Any] = {"binary": str(binary)}
    usr = binary.parent.parent
    if binary.parent.name != "bin" or usr.name != "usr" or usr.parent == Path("/"):
        return entry
    datadirs = [d for d in (usr / "share" / "qemu", usr / "share" / "seabios") if d.is_dir()]
    if datadirs:
        entry["datadirs"] = [str(d) for d in datadirs]
    modules = sorted(p for p in (usr / "lib").glob("*/qemu") if p.is_dir())
    if modules:
        entry["moduledir"] = str(modules[0])
    return entry


def parse_qemu_flag(value: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (name, absolute path).

    :raise UsageError: not NAME=PATH, a bad name, or no executable there.
    """
    name, sep, path = value.partition("=")
    if not sep or not re.fullmatch(NAME_PATTERN, name) or not path:
        raise UsageError(f"--qemu {value!r}: use NAME=PATH, NAME of letters, digits, '.', '_', "
                         "'+', '-' (e.g. 10.0=/opt/qemu/usr/bin/qemu-system-x86_64)")
    binary = Path(path).expanduser().absolute()
    if not binary.is_file():
        raise UsageError(f"--qemu {value!r}: {binary} is not a file")
    return name, binary


def find_builds(given: list[tuple[str, Path]]) -> tuple[dict[str, dict[str, Any]], str]:
    """The builds for the hosts file and the default one: each given build (the first is the
    default), then each system QEMU named by its version (the newest is the default when none
    is given)."""
    builds = {name: build_entry(binary) for name, binary in given}
    seen = {binary.resolve() for _, binary in given}
    found: list[tuple[tuple[int, int], str]] = []
    for binary in SYSTEM_QEMU:
        if not binary.is_file() or binary.resolve() in seen:
            continue
        seen.add(binary.resolve())
        version = qemu_version(binary)
        name = f"{version[0]}.{version[1]}"
        if name not in builds:
            builds[name] = build_entry(binary)
            found.append((version, name))
    if not builds:
        raise HarnessError("no QEMU found (looked for " + ", ".join(map(str, SYSTEM_QEMU))
                           + "): install qemu-system-x86 or pass --qemu NAME=PATH")
    default = given[0][0] if given else max(found)[1]
    return builds, default


def hosts_document(builds: dict[str, dict[str, Any]], default: str) -> dict[str, Any]:
    """The hosts file: the builds and the local pair."""
    host = {"transport": "local", "accel": "auto", "workdir": "/tmp/migbench",
            "migration_address": "127.0.0.1"}
    return {"qemu_builds": builds, "default_build": default,
            "pairs": {"local": {"source": dict(host), "destination": dict(host)}}}


def cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else locations.config_dir() / "hosts.yaml"
    if out.exists() and not args.force:
        raise HarnessError(f"{out} exists; pass --force to replace it, or --output FILE")
    builds, default = find_builds([parse_qemu_flag(v) for v in args.qemu or []])
    text = HEADER + yaml.safe_dump(hosts_document(builds, default), sort_keys=False)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, text)
    except OSError as exc:
        raise write_failure(out, "the hosts file", exc, "or pass --output FILE") from None
    load_hosts(out)  # what every command will read: fail here, not at the first run
    names = ", ".join(f"{n} ({b['binary']})" for n, b in builds.items())
    print(f"hosts file: {out}  (QEMU builds: {names}; default {default}; pair: local)")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "init", help="write a hosts file for this machine",
        description="Write a hosts file with the local pair and the QEMU builds found here "
                    f"(the system's and each --qemu), by default to {locations.config_dir()}/"
                    "hosts.yaml, where every command looks when ./hosts.yaml is absent.")
    p.add_argument("--qemu", action="append", metavar="NAME=PATH",
                   help="a QEMU build: its name in matrices and its qemu-system-x86_64 (repeatable;"
                        " the first is the default build)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write (default: see above)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_init)
