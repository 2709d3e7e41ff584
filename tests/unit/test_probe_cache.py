"""The capability probe runs QEMU once per binary build: cached on disk and in memory, redone when
the binary changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.hosts import probe as probe_mod
from harness.hosts.host import LocalHost
from harness.plan.models import HostSpec, QemuBuild


def test_probe_is_cached_and_redone_when_the_binary_changes(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_bytes(b"\x7fELF build one")
    binary.chmod(0o755)
    calls: list[str] = []

    def fake_probe_on(host: LocalHost, build: QemuBuild, timeout: float) -> probe_mod.Probe:
        calls.append(binary.read_text(errors="replace"))
        return probe_mod.Probe(binary=str(build.binary), version=f"10.0.{len(calls)}", package="",
                               capabilities=("xbzrle",), parameters=(), commands=(),
                               multifd_compression=(), build_id=f"sha256:{len(calls)}")

    monkeypatch.setattr(probe_mod, "_probe_on", fake_probe_on)
    monkeypatch.setattr(probe_mod, "_memo", {})
    host = LocalHost("local", HostSpec())
    build = QemuBuild(binary=binary)
    cache = tmp_path / "cache"
    first = probe_mod.probe(build, cache, host=host)
    assert probe_mod.probe(build, cache, host=host) == first  # memory
    monkeypatch.setattr(probe_mod, "_memo", {})
    assert probe_mod.probe(build, cache, host=host) == first  # disk, e.g. the next process
    assert len(calls) == 1
    # a rebuild at the same path: new size and mtime, so QEMU is asked again
    binary.write_bytes(b"\x7fELF build two, longer")
    os.utime(binary, (1_000_000_000, 1_000_000_000))
    second = probe_mod.probe(build, cache, host=host)
    assert len(calls) == 2 and second.build_id == "sha256:2" and second.version == "10.0.2"

