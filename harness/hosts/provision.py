"""``migbench doctor`` and ``migbench provision``: what each host of each pair has and needs.

:func:`doctor_pair` checks one pair (every check a :class:`Check` row naming the host): reachable,
QEMU version and migration capabilities of each build (probed on that host), the accelerator
that will really be used (the PVM case included), the VM bridge, free memory against the guest
size, the migration address, and the clock offset between source and destination. The runner's
preflight is the quick subset (:func:`preflight`): reachable and QEMU present.

:func:`provision_host` makes a host ready: installs what is missing (QEMU, iproute2, python3;
apt or dnf), uploads the guest image by hash when missing (:func:`place_image`, into
``<workdir>/images/<digest>/``, which runs then boot from), and creates the VM bridge on request.
Every value that reaches a remote shell is an argv element, quoted by the host.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import locations
from harness.errors import CommandFailed, HarnessError, HostError
from harness.guest.image import GuestImage
from harness.hosts.host import _ACCEL_SH, Host, make_host, sh_script
from harness.hosts.placement import place_image
from harness.hosts.probe import Probe, binary_identity, probe
from harness.output import console_text, terminal_text
from harness.plan.config import hosts_path
from harness.plan.models import HostPair, HostsConfig, HostSpec, QemuBuild

MEMORY_OVERHEAD_MIB = 128  # QEMU's own memory beside guest RAM (TCG translation cache ...)
CLOCK_WARN_S = 0.1

Status = Literal["ok", "warn", "fail"]

# Shell scripts run on hosts: fixed texts, values only as "$1"... (see harness.hosts.host.sh_script).
_TOOLS_SH = "for t in python3 ip; do command -v \"$t\" >/dev/null || echo \"$t\"; done"
_BRIDGE_SH = 'test -d "/sys/class/net/$1/bridge" && echo yes || echo no'  # $1: bridge name
_ADDRS_SH = "ip -o -4 addr show | awk '{print $4}'"
_MEM_SH = "grep -m1 '^MemAvailable:' /proc/meminfo"
# Package names come from PACKAGES or are absolute system paths: never an option.
_APT_SH = 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"'


@dataclass(frozen=True)
class Check:
    pair: str
    host: str  # Host.label, or "pair" for checks between the two hosts
    check: str
    status: Status
    detail: str

    def problem(self) -> str:
        return f"pair {self.pair}: {self.host}: {self.check}: {self.detail}"


@dataclass
class PairReport:
    name: str
    checks: list[Check] = field(default_factory=list)
    probes: dict[tuple[str, str], Probe] = field(default_factory=dict)  # (role, build) -> probe

    @property
    def usable(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def problems(self) -> list[str]:
        return [c.problem() for c in self.checks if c.status == "fail"]

    def warnings(self) -> list[str]:
        return [c.problem() for c in self.checks if c.status == "warn"]


def _builds(cfg: HostsConfig, spec: HostSpec, names: Iterable[str] | None) -> dict[str, QemuBuild]:
    wanted = list(names) if names is not None else sorted({*cfg.qemu_builds, *spec.qemu})
    out = {}
    for n in wanted:
        b = cfg.build_for(spec, n)
        if b is not None:
            out[n] = b
    return out


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__


def check_host(pair_name: str, role: str, host: Host, cfg: HostsConfig, *,
               builds: Iterable[str] | None = None, quick: bool = False,
               memory_mib: int | None = None, qemus_here: int = 1,
               report: PairReport | None = None) -> list[Check]:
    """The checks of one host; an unreachable host gives one ``fail`` row and nothing else."""
    rows: list[Check] = []

    def add(check: str, status: Status, detail: str) -> None:
        rows.append(Check(pair_name, host.label, check, status, detail))

    spec = host.spec
    t = time.monotonic()
    try:
        host.run(["true"], timeout=spec.connect_timeout_s + 10)
    except HostError as exc:
        add("reachable", "fail", _short(exc).removeprefix(host.label + ": "))
        return rows
    add("reachable", "ok", "local" if host.is_local
        else f"ssh in {(time.monotonic() - t) * 1000:.0f} ms (pinned host key)")
    for name, build in _builds(cfg, spec, builds).items():
        try:
            p = probe(build, locations.probe_cache(), host=host)
        except HarnessError as exc:
            add(f"QEMU {name}", "fail", _short(exc).removeprefix(host.label + ": "))
            continue
        if report is not None:
            report.probes[(role, name)] = p
        detail = f"{p.version}{f' ({p.package})' if p.package else ''} at {build.binary}"
        if not quick:
            mfd = "/".join(v for v in p.multifd_compression if v != "none") or "none"
            post = "yes" if "migrate-start-postcopy" in p.commands else "no"
            detail += (f"; {len(p.capabilities)} migration capabilities; multifd compression "
                       f"{mfd}; postcopy {post}")
        add(f"QEMU {name}", "ok", detail)
    try:
        host.run(["mkdir", "-p", "--", str(spec.workdir)], timeout=20)
        add("workdir", "ok", str(spec.workdir))
    except HostError as exc:
        add("workdir", "fail", f"cannot create {spec.workdir}: {_short(exc)}")
    if quick:
        return rows
    if not host.is_local:
        missing = host.run(sh_script(_TOOLS_SH), timeout=20).split()
        if missing:
            add("tools", "fail", f"missing {', '.join(missing)} (run `migbench provision`)")
        else:
            add("tools", "ok", "python3, ip")
    _check_accel(host, add)
    if spec.vm_bridge:
        if host.run(sh_script(_BRIDGE_SH, spec.vm_bridge), timeout=20).strip() == "yes":
            add("VM bridge", "ok", f"{spec.vm_bridge} present")
        else:
            add("VM bridge", "fail", f"{spec.vm_bridge} does not exist "
                "(run `migbench provision --bridge`)")
    _check_memory(host, add, memory_mib, qemus_here)
    return rows


def _check_accel(host: Host, add: Callable[[str, Status, str], None]) -> None:
    found, _, reason = host.run(sh_script(_ACCEL_SH), timeout=20).strip().partition(" ")
    requested = host.spec.accel
    if requested == "auto":
        add("accel", "ok", f"{found}: {reason}")
    elif requested == "kvm" and found != "kvm":
        status: Status = "warn" if "PVM" in reason else "fail"
        add("accel", status, f"kvm is set in hosts.yaml but {reason}"
            + ("; stock guests crawl on it: use accel auto or tcg" if "PVM" in reason else ""))
    else:
        add("accel", "ok", f"{requested} (set in hosts.yaml; detected {found}: {reason})")


def _check_memory(host: Host, add: Callable[[str, Status, str], None], memory_mib: int | None,
                  qemus_here: int) -> None:
    out = host.run(sh_script(_MEM_SH), timeout=20, check=False)
    parts = out.split()
    if len(parts) < 2 or not parts[1].isdigit():
        add("memory", "warn", "cannot read MemAvailable from /proc/meminfo")
        return
    avail = int(parts[1]) // 1024
    if memory_mib is None:
        add("memory", "ok", f"{avail} MiB available")
        return
    need = qemus_here * (memory_mib + MEMORY_OVERHEAD_MIB)
    what = f"{avail} MiB available, {need} MiB needed ({qemus_here} x {memory_mib} MiB guest " \
           f"+ {MEMORY_OVERHEAD_MIB} MiB)"
    add("memory", "ok" if avail >= need else "fail", what)


def clock_offset(a: Host, b: Host, samples: int = 10) -> tuple[float, float]:
    """(offset of b's clock minus a's, uncertainty) in seconds: each host's reading placed at
    the middle of its round trip, the fastest of ``samples`` round trips per host."""

    def offset(h: Host) -> tuple[float, float]:
        t0, t, t1 = min(h.clock_samples(samples), key=lambda x: x[2] - x[0])
        return t - (t0 + t1) / 2, t1 - t0

    oa, ra = offset(a)
    ob, rb = offset(b)
    return ob - oa, (ra + rb) / 2


def doctor_pair(name: str, pair: HostPair, cfg: HostsConfig, *,
                builds: Iterable[str] | None = None, memory_mib: int | None = None,
                quick: bool = False) -> PairReport:
    """Check both hosts of ``pair`` (and, unless ``quick``, the clock offset between them)."""
    report = PairReport(name)
    same = pair.source.same_machine(pair.destination)
    hosts = {role: make_host(role, spec) for role, spec in
             (("source", pair.source), ("destination", pair.destination))}
    try:
        wanted = list(builds) if builds is not None else None
        for role, host in hosts.items():
            report.checks += check_host(name, role, host, cfg, builds=wanted, quick=quick,
                                        memory_mib=memory_mib, qemus_here=2 if same else 1,
                                        report=report)
        if quick:
            return report
        reachable = {c.host for c in report.checks if c.check == "reachable"
                     and c.status == "ok"}
        src, dst = hosts["source"], hosts["destination"]
        if not (src.label in reachable and dst.label in reachable):
            return report
        dst_addrs = dst.run(sh_script(_ADDRS_SH), timeout=20, check=False)
        mig = pair.destination.migration_address
        if mig in {a.split("/")[0] for a in dst_addrs.split()} or mig in ("0.0.0.0", "::"):
            report.checks.append(Check(name, dst.label, "migration address", "ok",
                                       f"listens on {mig}"))
        else:
            report.checks.append(Check(name, dst.label, "migration address", "fail",
                                       f"{mig} is not an address of this host"))
        if same:
            report.checks.append(Check(name, "pair", "clock offset", "ok", "same machine"))
        else:
            off, err = clock_offset(src, dst)
            status: Status = "ok" if abs(off) <= CLOCK_WARN_S else "warn"
            report.checks.append(Check(
                name, "pair", "clock offset", status,
                f"destination - source = {off * 1000:+.1f} ms (+/- {err * 1000:.1f} ms)"
                + ("" if status == "ok" else "; run NTP/chrony on both hosts")))
    except HostError as exc:
        report.checks.append(Check(name, "pair", "checks", "fail", _short(exc)))
    finally:
        for h in hosts.values():
            h.close()
    return report


def preflight(name: str, pair: HostPair, cfg: HostsConfig, builds: Iterable[str]) -> PairReport:
    """The runner's check before using a pair: reachable, QEMU present and probed, workdir."""
    return doctor_pair(name, pair, cfg, builds=builds, quick=True)


# ---------------------------------------------------------------------------------------------
# images on hosts

_place_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# provision

PACKAGES = {  # tool -> package, per package manager
    "apt": {"ip": "iproute2", "python3": "python3"},
    "dnf": {"ip": "iproute", "python3": "python3"},
}
QEMU_X86 = "/usr/bin/qemu-system-x86_64"  # Debian's and Fedora's QEMU
QEMU_KVM = "/usr/libexec/qemu-kvm"  # RHEL's (and CentOS Stream's) only QEMU: package qemu-kvm
_PKG_SH = ("if command -v apt-get >/dev/null; then echo apt; "
           "elif command -v dnf >/dev/null; then echo dnf; else echo none; fi")
SYSTEM_QEMU_DIRS = ("/usr/bin/", "/usr/libexec/", "/bin/")


def install_names(pm: str, tools: Iterable[str], binaries: Iterable[Path]
                  ) -> tuple[list[str], list[str]]:
    """What ``pm`` should install for the missing ``tools`` and QEMU ``binaries``, and the
    binaries no package of ``pm`` provides (pure).

    apt installs qemu-system-x86 for /usr/bin/qemu-system-x86_64. dnf is given the binary's
    path, so it picks whichever package provides exactly that file: qemu-system-x86-core on
    Fedora; on RHEL nothing does (its QEMU is /usr/libexec/qemu-kvm, from qemu-kvm), and
    ``dnf install`` says so. Package names are sorted and unique.
    """
    names = {PACKAGES[pm][t] for t in tools}
    unavailable = []
    for b in binaries:
        if pm == "dnf":
            names.add(str(b))
        elif str(b) == QEMU_X86:
            names.add("qemu-system-x86")
        else:
            unavailable.append(str(b))
    return sorted(names), sorted(set(unavailable))


def qemu_hint(pm: str, binary: Path) -> str:
    """Where this kind of host has QEMU, when ``binary`` is not it (pure); "" otherwise."""
    if pm == "dnf" and str(binary) == QEMU_X86:
        return (f"RHEL-family hosts have no {QEMU_X86}: their QEMU is {QEMU_KVM} (package "
                "qemu-kvm); point this build at it for this host in hosts.yaml "
                f"(qemu: {{NAME: {{binary: {QEMU_KVM}}}}})")
    if pm == "apt" and str(binary) != QEMU_X86:
        return f"Debian's QEMU is {QEMU_X86} (package qemu-system-x86)"
    return ""


@dataclass
class HostProvision:
    label: str
    transport: str
    package_manager: str = "-"
    installed: list[str] = field(default_factory=list)
    qemu: dict[str, str] = field(default_factory=dict)  # build -> "10.0.2" or problem
    tools: str = "-"
    image: str = "-"
    bridge: str = "-"
    problems: list[str] = field(default_factory=list)


def _sudo(host: Host) -> list[str]:
    """``sudo -n`` (never prompting) unless we are root on ``host``."""
    root = os.geteuid() == 0 if host.is_local else host.spec.user == "root"
    return [] if root else ["sudo", "-n"]


def provision_host(host: Host, cfg: HostsConfig, image: GuestImage | None, *,
                   bridge: bool = False, install: bool = True,
                   log: Callable[[str], None] | None = None) -> HostProvision:
    """Check and install what ``host`` needs, place the guest image, create the VM bridge.

    The steps: reach the host, find its package manager, install the missing tools and system
    QEMU builds, probe every build, place the image, then the bridge. Each step records what
    it found in the result and its problems; only an unreachable host ends it early.
    """
    spec = host.spec
    res = HostProvision(host.label, host.transport)
    try:
        host.run(["true"], timeout=spec.connect_timeout_s + 10)
    except HostError as exc:
        res.problems.append(_short(exc))
        return res
    res.package_manager = host.run(sh_script(_PKG_SH), timeout=20).strip()
    builds = _builds(cfg, spec, None)
    missing_builds = {n: b for n, b in builds.items() if binary_identity(host, b.binary) is None}
    _install_missing(host, res, missing_builds, install=install, log=log)
    still = host.run(sh_script(_TOOLS_SH), timeout=20).split()
    res.tools = "python3, ip" + (f" (missing: {', '.join(still)})" if still else "")
    if still and not any("missing" in p for p in res.problems):
        res.problems.append(f"missing {', '.join(still)}")
    _probe_builds(host, res, builds, missing_builds, install=install)
    host.mkdir(spec.workdir)
    if image is not None:
        _place(host, res, image, log)
    if spec.vm_bridge:
        _bridge(host, res, spec.vm_bridge, create=bridge)
    return res


def _install_missing(host: Host, res: HostProvision, missing_builds: dict[str, QemuBuild], *,
                     install: bool, log: Callable[[str], None] | None) -> None:
    """Install the missing tools and the missing QEMU builds that are system packages (or, with
    ``install`` False, say what would be installed)."""
    pm = res.package_manager
    missing_tools = host.run(sh_script(_TOOLS_SH), timeout=20).split()
    binaries: list[Path] = []
    for n, b in missing_builds.items():
        if str(b.binary).startswith(SYSTEM_QEMU_DIRS):
            binaries.append(b.binary)
        else:
            res.problems.append(f"QEMU build {n}: {b.binary} is missing and is not a system "
                                "package path: copy the build there")
    binaries = sorted(set(binaries))
    if not missing_tools and not binaries:
        return
    missing = ", ".join([*sorted(set(missing_tools)), *map(str, binaries)])
    if pm not in PACKAGES:
        res.problems.append(f"missing {missing} and no apt-get or dnf to install them")
        return
    pkgs, unavailable = install_names(pm, missing_tools, binaries)
    for path in unavailable:
        res.problems.append(f"{path} is missing and no {pm} package provides it; "
                            + qemu_hint(pm, Path(path)))
    hints = "".join(f"; {h}" for h in (qemu_hint(pm, path) for path in binaries
                                       if str(path) not in unavailable) if h)
    if pkgs and not install:
        res.problems.append(f"missing {missing} (install: {pm} install {' '.join(pkgs)})" + hints)
    elif pkgs:
        if log:
            log(f"{host.label}: installing {' '.join(pkgs)} with {pm}")
        argv = (["env", "DEBIAN_FRONTEND=noninteractive", *sh_script(_APT_SH, *pkgs)]
                if pm == "apt" else ["dnf", "install", "-y", "-q", *pkgs])
        try:
            host.run(_sudo(host) + argv, timeout=1800)
            res.installed = pkgs
        except CommandFailed as exc:
            res.problems.append(f"installing {' '.join(pkgs)} failed: {_short(exc)}" + hints)


def _probe_builds(host: Host, res: HostProvision, builds: dict[str, QemuBuild],
                  missing_builds: dict[str, QemuBuild], *, install: bool) -> None:
    """Each build's QEMU version (probed and cached), or why it is missing."""
    for n, b in builds.items():
        if n in missing_builds and (not install or binary_identity(host, b.binary) is None):
            res.qemu[n] = "missing"
            if install and str(b.binary).startswith(SYSTEM_QEMU_DIRS):
                hint = qemu_hint(res.package_manager, b.binary)
                res.problems.append(f"QEMU build {n}: {b.binary} is still missing"
                                    + (f"; {hint}" if hint else ""))
            continue
        try:
            res.qemu[n] = probe(b, locations.probe_cache(), host=host).version
        except HarnessError as exc:
            res.qemu[n] = "missing"
            res.problems.append(f"QEMU build {n}: "
                                f"{_short(exc).removeprefix(host.label + ': ')}")


def _place(host: Host, res: HostProvision, image: GuestImage,
           log: Callable[[str], None] | None) -> None:
    """Put the guest image on the host (a no-op on this machine)."""
    try:
        placed, uploaded = place_image(host, image, log)
        where = "local build" if host.is_local else str(placed.kernel.parent)
        res.image = f"{image.digest[:16]} " + (f"uploaded {', '.join(uploaded)}" if uploaded
                                                else "present") + f" ({where})"
    except HostError as exc:
        res.image = "failed"
        res.problems.append(_short(exc))


def _bridge(host: Host, res: HostProvision, name: str, *, create: bool) -> None:
    """The VM bridge: present, created (``create``), or a problem that names ``--bridge``."""
    if host.run(sh_script(_BRIDGE_SH, name), timeout=20).strip() == "yes":
        res.bridge = f"{name} present"
    elif create:
        sudo = _sudo(host)
        try:
            # "name"/"dev" keywords: a bridge name is never read as an option.
            host.run(sudo + ["ip", "link", "add", "name", name, "type", "bridge"], timeout=20)
            host.run(sudo + ["ip", "link", "set", "dev", name, "up"], timeout=20)
            res.bridge = f"{name} created"
        except CommandFailed as exc:
            res.bridge = "failed"
            res.problems.append(f"creating bridge {name}: {_short(exc)}")
    else:
        res.bridge = f"{name} absent (use --bridge)"
        res.problems.append(f"VM bridge {name} does not exist (use --bridge)")


def provision(cfg: HostsConfig, image: GuestImage | None, *, bridge: bool = False,
              pairs: Iterable[str] | None = None, install: bool = True,
              log: Callable[[str], None] | None = None) -> list[HostProvision]:
    """Provision every distinct host of the selected pairs (a machine listed twice once)."""
    seen: dict[str, Host] = {}
    out = []
    for pname in (list(pairs) if pairs is not None else list(cfg.pairs)):
        pair = cfg.pairs[pname]
        for role, spec in (("source", pair.source), ("destination", pair.destination)):
            host = make_host(f"{pname}/{role}", spec)
            key = f"{host.identity}|{spec.workdir}|{spec.vm_bridge}"
            if key in seen:
                continue
            seen[key] = host
            try:
                out.append(provision_host(host, cfg, image, bridge=bridge, install=install,
                                          log=log))
            except HostError as exc:
                res = HostProvision(host.label, host.transport)
                res.problems.append(_short(exc))
                out.append(res)
            finally:
                host.close()
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def _console() -> Any:
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _select(cfg: HostsConfig, names: list[str] | None, path: Path) -> list[str]:
    if not names:
        return list(cfg.pairs)
    unknown = [n for n in names if n not in cfg.pairs]
    if unknown:
        raise HarnessError(f"{path}: no pair {', '.join(unknown)} (pairs: {', '.join(cfg.pairs)})")
    return names


def cmd_doctor(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.plan.config import load_hosts, load_matrix

    out = _console()
    path = hosts_path(args.hosts)
    cfg = load_hosts(path)
    builds: list[str] | None = None
    memory = args.memory_mib
    if args.matrix:
        spec = load_matrix(Path(args.matrix))
        builds = sorted({v.build or cfg.default_build for v in spec.variants.values()})
        memory = memory or spec.guest.memory_mib
    reports = [doctor_pair(n, cfg.pairs[n], cfg, builds=builds, memory_mib=memory)
               for n in _select(cfg, args.pair, path)]
    table = Table(title=f"migbench doctor ({console_text(path)})")
    for col in ("pair", "host", "check", "status", "detail"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for r in reports:
        for c in r.checks:
            table.add_row(console_text(c.pair), console_text(c.host), console_text(c.check),
                          f"[{style[c.status]}]{c.status}[/]", console_text(c.detail))
    out.print(table)
    for r in reports:
        for line in r.warnings():
            out.print(terminal_text(f"warning: {line}"), markup=False, highlight=False)
        for line in r.problems():
            out.print(terminal_text(f"problem: {line}"), markup=False, highlight=False)
    bad = [r.name for r in reports if not r.usable]
    ok = [r.name for r in reports if r.usable]
    if ok:
        out.print(f"usable: {', '.join(ok)}", markup=False)
    if bad:
        out.print(f"unusable: {', '.join(bad)}", markup=False)
        return 1
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.guest.image import ensure_image
    from harness.plan.config import load_hosts

    out = _console()
    path = hosts_path(args.hosts)
    cfg = load_hosts(path)
    pairs = _select(cfg, args.pair, path)
    image = None if args.no_image else ensure_image(
        Path(args.image_cache), fio=args.fio,
        log=lambda s: out.print(terminal_text(s), markup=False, highlight=False))
    results = provision(cfg, image, bridge=args.bridge, pairs=pairs, install=not args.check,
                        log=lambda s: out.print(terminal_text(s), markup=False, highlight=False))
    table = Table(title=f"migbench provision ({console_text(path)})")
    for col in ("host", "transport", "packages", "tools", "QEMU builds", "guest image",
                "VM bridge"):
        table.add_column(col, overflow="fold")
    for r in results:
        pk = r.package_manager + (f", installed {' '.join(r.installed)}" if r.installed
                                  else (", nothing to install" if r.package_manager != "-"
                                        else ""))
        cells = (r.label, r.transport, pk, r.tools,
                 ", ".join(f"{n}: {v}" for n, v in r.qemu.items()) or "-", r.image, r.bridge)
        table.add_row(*(console_text(c) for c in cells))
    out.print(table)
    problems = [f"{r.label}: {p}" for r in results for p in r.problems]
    for p in problems:
        out.print(terminal_text(f"problem: {p}"), markup=False, highlight=False)
    return 1 if problems else 0


def register_doctor(subparsers: Any) -> None:
    """Add ``migbench doctor`` to the CLI's subparsers."""
    d = subparsers.add_parser(
        "doctor", help="check every host pair: SSH, QEMU, accel, bridge, memory, clocks",
        description="For each host of each pair: reachable, QEMU version and migration "
                    "capabilities of each build (probed on that host), the accelerator that "
                    "will be used, the VM bridge, free memory against the guest size, and the "
                    "clock offset between source and destination. Exits 1 if a pair is unusable.")
    d.add_argument("--hosts", metavar="HOSTS.yaml",
                   help="hosts file (default: $MIGBENCH_HOSTS, ./hosts.yaml, "
                        "$XDG_CONFIG_HOME/migbench/hosts.yaml; see README)")
    d.add_argument("--pair", action="append", metavar="NAME", help="check only this pair "
                   "(repeatable)")
    d.add_argument("--matrix", metavar="MATRIX.yaml",
                   help="check only the builds it uses, and memory for its guest size")
    d.add_argument("--memory-mib", type=int, metavar="MIB", help="guest memory to check for")
    d.set_defaults(func=cmd_doctor)


def register_provision(subparsers: Any) -> None:
    """Add ``migbench provision`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "provision", help="install what hosts need, upload the guest image, create the bridge",
        description="For each host of each pair (over SSH, or this machine): install QEMU, "
                    "iproute2 and python3 when missing (apt or dnf), upload the guest image into "
                    "<workdir>/images/<digest>/ when missing (by hash), create the VM bridge with "
                    "--bridge, and print what each host has.")
    p.add_argument("--hosts", metavar="HOSTS.yaml",
                   help="hosts file (default: $MIGBENCH_HOSTS, ./hosts.yaml, "
                        "$XDG_CONFIG_HOME/migbench/hosts.yaml; see README)")
    p.add_argument("--pair", action="append", metavar="NAME", help="only this pair (repeatable)")
    p.add_argument("--bridge", action="store_true", help="create missing VM bridges (vm_bridge)")
    p.add_argument("--check", action="store_true", help="report what is missing, install nothing")
    p.add_argument("--fio", action="store_true", help="also upload the image's fio initrd")
    p.add_argument("--no-image", action="store_true", help="do not upload the guest image")
    p.add_argument("--image-cache", default=str(locations.image_cache()),
                   help="local guest image cache (default: the image folder of the cache, "
                        f"${locations.CACHE_ENV} or ~/.cache/migbench)")
    p.set_defaults(func=cmd_provision)


def register(subparsers: Any) -> None:
    """Add both ``migbench doctor`` and ``migbench provision``."""
    register_doctor(subparsers)
    register_provision(subparsers)
