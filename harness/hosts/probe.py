"""What a QEMU binary can do: probed once over QMP on its own host, cached by host and binary.

A probe starts the binary with ``-machine none -S`` (no guest) on the host that will run it (a
small Python script run through :class:`~harness.hosts.host.Host`, so the same code probes a local
binary and one on an SSH host), asks ``query-version``, ``query-migrate-capabilities``,
``query-migrate-parameters`` and ``query-qmp-schema``, and keeps the answers that decide whether a
cell can run. The cache key is the host's identity plus the binary's resolved path, size and
mtime as that host sees them. :func:`unsupported_reason` (pure) turns a probe and a cell into a
skip reason, so that missing features become ``skipped`` runs, never failures.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.errors import CommandFailed, VmError
from harness.hosts.host import sh_script
from harness.output import write_atomic
from harness.plan.features import MigrationConfig, kvm_requirement
from harness.plan.models import QemuBuild

if TYPE_CHECKING:
    from harness.hosts.host import Host

PROBE_FORMAT = 4  # 4: file_migration

# Runs on the host: start QEMU with no guest, ask QMP, print one JSON object, clean up.
# argv: binary, timeout, datadirs...; QEMU_MODULE_DIR comes through the environment.
_PROBE_PY = r"""
import hashlib, json, os, shutil, socket, subprocess, sys, tempfile, time
binary, timeout, datadirs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
d = tempfile.mkdtemp(prefix="mb-probe-")
sock = os.path.join(d, "qmp.sock")
argv = [binary] + [x for p in datadirs for x in ("-L", p)] + [
    "-machine", "none", "-S", "-nodefaults", "-display", "none",
    "-qmp", "unix:%s,server=on,wait=off" % sock]
log = open(os.path.join(d, "qemu.log"), "wb")
proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
def fail(what):
    try:
        tail = open(os.path.join(d, "qemu.log"), "rb").read()[-400:].decode("utf-8", "replace")
    except OSError:
        tail = ""
    print(json.dumps({"error": what, "log": tail.strip()}))
try:
    end = time.time() + timeout
    c = socket.socket(socket.AF_UNIX)
    while True:
        try:
            c.connect(sock)
            break
        except OSError:
            if proc.poll() is not None:
                fail("QEMU exited with code %s" % proc.returncode)
                sys.exit(0)
            if time.time() > end:
                fail("no QMP socket within %g s" % timeout)
                sys.exit(0)
            time.sleep(0.02)
    c.settimeout(max(1.0, end - time.time()))
    f = c.makefile("rwb")
    def answer():
        while True:
            line = f.readline()
            if not line:
                raise EOFError("QMP closed")
            m = json.loads(line)
            if "event" not in m:
                return m
    answer()
    out = {}
    for cmd in ("qmp_capabilities", "query-version", "query-migrate-capabilities",
                "query-migrate-parameters", "query-qmp-schema"):
        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
        f.flush()
        m = answer()
        if "error" in m:
            fail("%s: %s" % (cmd, m["error"].get("desc")))
            sys.exit(0)
        out[cmd] = m["return"]
    h = hashlib.sha256()
    with open(binary, "rb") as b:
        for chunk in iter(lambda: b.read(1 << 20), b""):
            h.update(chunk)
    out["sha256"] = h.hexdigest()
    print(json.dumps(out))
except Exception as exc:
    fail("%s: %s" % (type(exc).__name__, exc))
finally:
    proc.kill()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)
"""

# Prints "<size> <mtime> <resolved path>" of the binary "$1", or "missing". The "x" keeps a
# path's own trailing line breaks from $(...), which strips them.
_STAT_SH = ('p=$(readlink -f -- "$1" && echo x) && p=${p%?x} && [ -f "$p" ] && [ -x "$p" ] '
            '&& stat -L -c "%s %Y %n" -- "$p" || echo missing')


@dataclass(frozen=True)
class Probe:
    binary: str
    version: str  # "10.0.2"
    package: str
    capabilities: tuple[str, ...]
    parameters: tuple[str, ...]
    commands: tuple[str, ...]  # migration-related QMP commands present
    multifd_compression: tuple[str, ...]  # enum values of MultiFDCompression
    host: str = "local"  # Host.identity of the host it was probed on
    # The build's identity: SHA-256 of the binary (a rebuild with the same version differs)
    build_id: str = ""
    # ``migrate file:PATH`` exists (QEMU 8.2+): a warm start saves and restores the guest with it
    file_migration: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has_file_migration(schema: list[dict[str, Any]]) -> bool:
    """Whether MigrationAddressType (QEMU 8.2+, where ``file:`` URIs came in) lists ``file``."""
    for e in schema:
        if e.get("meta-type") == "enum":
            values = e.get("values") or [m.get("name") for m in e.get("members", [])]
            if {"socket", "exec", "rdma", "file"} <= set(values):
                return True
    return False


def state_method(p: Probe) -> Literal["file+mapped-ram", "file", "exec"]:
    """How a warm start saves and restores a guest with this build (pure): ``migrate`` to a
    ``file:`` URI, with the ``mapped-ram`` capability where the build has it (QEMU 9.0+: each
    page at a fixed offset, so the file is the guest's RAM size and zero pages are holes), else
    (QEMU < 8.2, such as Debian's 7.2) through ``exec:`` and ``cat``, which every build has."""
    if p.file_migration:
        return "file+mapped-ram" if "mapped-ram" in p.capabilities else "file"
    return "exec"


def _from_schema(schema: list[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    commands = sorted(
        e["name"] for e in schema
        if e.get("meta-type") == "command" and ("migrat" in e["name"] or "postcopy" in e["name"]
                                                 or "dirty" in e["name"])
    )
    # The schema names types by opaque ids; find MultiFDCompression via its distinctive values.
    mfd: list[str] = []
    for e in schema:
        if e.get("meta-type") == "enum":
            values = e.get("values") or [m.get("name") for m in e.get("members", [])]
            if "zstd" in values and "zlib" in values and "none" in values:
                mfd = [str(v) for v in values]
    return tuple(commands), tuple(mfd)


def binary_identity(host: Host, binary: Path) -> tuple[str, int, int] | None:
    """(resolved path, size, mtime) of ``binary`` as ``host`` sees it; None when it is missing
    or not executable there.

    :raise HostError: the host cannot be reached.
    """
    out = host.run(sh_script(_STAT_SH, binary), timeout=30).strip()
    if out == "missing" or not out:
        return None
    size, mtime, path = out.split(" ", 2)
    return path, int(size), int(mtime)


def _cache_key(host: Host, ident: tuple[str, int, int]) -> str:
    raw = f"{PROBE_FORMAT}:{host.identity}:{ident[0]}:{ident[1]}:{ident[2]}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


_memo: dict[str, Probe] = {}
_memo_lock = threading.Lock()


def probe(build: QemuBuild, cache_dir: Path, timeout: float = 20.0,
          host: Host | None = None) -> Probe:
    """Probe ``build`` on ``host`` (default: this machine), cached on disk and in memory by the
    host's identity and the binary's resolved path, size and mtime on that host.

    :raise VmError: the binary is missing there, does not start, or does not answer QMP.
    :raise HostError: the host cannot be reached.
    """
    if host is None:
        from harness.hosts.host import LocalHost
        from harness.plan.models import HostSpec

        host = LocalHost("local", HostSpec())
    ident = binary_identity(host, build.binary)
    if ident is None:
        raise VmError(f"{host.label}: QEMU binary {build.binary} does not exist or is not "
                      "executable (run `migbench provision`, or fix qemu_builds in hosts.yaml)")
    key = _cache_key(host, ident)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{key}.json"
    if cached.exists():
        try:
            data = json.loads(cached.read_text())
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in data.items()}
            result = Probe(**fields)
            with _memo_lock:
                _memo[key] = result
            return result
        except (ValueError, TypeError):
            cached.unlink(missing_ok=True)
    result = _probe_on(host, build, timeout)
    write_atomic(cached, json.dumps(result.to_dict()))
    with _memo_lock:
        _memo[key] = result
    return result


def _probe_on(host: Host, build: QemuBuild, timeout: float) -> Probe:
    argv = ["python3", "-c", _PROBE_PY, str(build.binary), str(timeout),
            *[str(d) for d in build.datadirs]]
    if build.moduledir is not None:
        argv = ["env", f"QEMU_MODULE_DIR={build.moduledir}", *argv]
    try:
        raw = host.run(argv, timeout=timeout + 30)
    except CommandFailed as exc:
        status = "timed out" if exc.exit_code is None else f"exited {exc.exit_code}"
        tail = " | ".join((exc.stderr or exc.stdout).strip().splitlines()[-2:])
        raise VmError(f"{host.label}: probing {build.binary} failed: the probe {status}"
                      + (f": {tail}" if tail else "")) from None
    try:
        data = json.loads(raw.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise VmError(f"{host.label}: probing {build.binary} gave no answer") from None
    if "error" in data:
        log = f" (log: {data['log'][-200:]})" if data.get("log") else ""
        raise VmError(f"{host.label}: probing {build.binary} failed: {data['error']}{log}")
    ver = data["query-version"]
    q = ver["qemu"]
    commands, mfd = _from_schema(data["query-qmp-schema"])
    return Probe(
        binary=str(build.binary), version=f"{q['major']}.{q['minor']}.{q['micro']}",
        package=str(ver.get("package", "")).strip(),
        capabilities=tuple(c["capability"] for c in data["query-migrate-capabilities"]),
        parameters=tuple(sorted(data["query-migrate-parameters"])), commands=commands,
        multifd_compression=mfd, host=host.identity,
        build_id="sha256:" + str(data.get("sha256", ""))[:16],
        file_migration=_has_file_migration(data["query-qmp-schema"]),
    )


def unsupported_reason(p: Probe, config: MigrationConfig, accel: str) -> str:
    """Why ``config`` cannot run on this QEMU/accel, or "" when it can (pure)."""
    for cap, on in config.capabilities.items():
        if on and cap not in p.capabilities:
            extra = " (legacy compress was removed in QEMU 9.1)" if cap == "compress" else ""
            return f"QEMU {p.version} has no migration capability {cap!r}{extra}"
    for param in config.parameters:
        if param not in p.parameters:
            return f"QEMU {p.version} has no migration parameter {param!r}"
    mfd = config.parameters.get("multifd-compression")
    if mfd and p.multifd_compression and mfd not in p.multifd_compression:
        return f"QEMU {p.version} has no multifd compression {mfd!r}"
    need = kvm_requirement(config)
    if need and accel != "kvm":
        return f"{need}; this host runs {accel}"
    if "postcopy" in config.features and "migrate-start-postcopy" not in p.commands:
        return f"QEMU {p.version} has no migrate-start-postcopy"
    return ""
