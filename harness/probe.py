"""What a QEMU binary can do: probed once over QMP, cached by binary identity and version.

A probe starts the binary with ``-machine none -S`` (no guest), asks ``query-version``,
``query-migrate-capabilities``, ``query-migrate-parameters`` and ``query-qmp-schema``, and keeps the
answers that decide whether a cell can run. :func:`unsupported_reason` (pure) turns a probe and a
cell into a skip reason, so that missing features become ``skipped`` runs, never failures.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, VmError
from harness.features import MigrationConfig, kvm_requirement
from harness.models import QemuBuild
from harness.qmp import QmpSession

PROBE_FORMAT = 1


@dataclass(frozen=True)
class Probe:
    binary: str
    version: str  # "10.0.2"
    package: str
    capabilities: tuple[str, ...]
    parameters: tuple[str, ...]
    commands: tuple[str, ...]  # migration-related QMP commands present
    multifd_compression: tuple[str, ...]  # enum values of MultiFDCompression

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _identity(build: QemuBuild) -> str:
    st = build.binary.stat()
    raw = f"{PROBE_FORMAT}:{build.binary.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


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


def probe(build: QemuBuild, cache_dir: Path, timeout: float = 20.0) -> Probe:
    """Probe ``build`` (cached on disk by binary path, size and mtime).

    :raise VmError: the binary does not start or does not answer QMP.
    """
    from harness.host import LocalHost
    from harness.models import HostSpec

    if not build.binary.exists():
        raise VmError(f"QEMU binary {build.binary} does not exist")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{_identity(build)}.json"
    if cached.exists():
        try:
            data = json.loads(cached.read_text())
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in data.items()}
            return Probe(**fields)
        except (ValueError, TypeError):
            cached.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="mb-probe-") as tmp:
        sock = Path(tmp) / "qmp.sock"
        argv = [str(build.binary)]
        for d in build.datadirs:
            argv += ["-L", str(d)]
        argv += ["-machine", "none", "-S", "-nodefaults", "-display", "none",
                 "-qmp", f"unix:{sock},server=on,wait=off"]
        env = {"QEMU_MODULE_DIR": str(build.moduledir)} if build.moduledir else None
        host = LocalHost("probe", HostSpec())
        with open(Path(tmp) / "qemu.log", "wb") as log:
            proc = host.start(argv, log, env)
            qmp = QmpSession("probe", str(sock))
            try:
                qmp.connect(timeout)
                ver = qmp.execute("query-version")
                caps = [c["capability"] for c in qmp.execute("query-migrate-capabilities")]
                params = sorted(qmp.execute("query-migrate-parameters"))
                commands, mfd = _from_schema(qmp.execute("query-qmp-schema", timeout=timeout))
            except HarnessError as exc:
                raise VmError(f"probing {build.binary} failed: {exc}") from exc
            finally:
                qmp.close()
                proc.kill()
                proc.wait(5)
    q = ver["qemu"]
    result = Probe(
        binary=str(build.binary), version=f"{q['major']}.{q['minor']}.{q['micro']}",
        package=str(ver.get("package", "")).strip(), capabilities=tuple(caps),
        parameters=tuple(params), commands=commands, multifd_compression=mfd,
    )
    tmpf = cached.with_suffix(f".{os.getpid()}.tmp")
    tmpf.write_text(json.dumps(result.to_dict()))
    os.replace(tmpf, cached)
    return result


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
