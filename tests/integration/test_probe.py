"""The capability probe against a real QEMU binary."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from harness.hosts import probe as probe_mod
from harness.hosts.host import LocalHost
from harness.plan.models import HostSpec, QemuBuild


def test_probe_of_a_real_binary_carries_its_sha256(tmp_path: Path) -> None:
    """The probe script hashes the binary it asked (the build id the nightly history keys on)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("no system QEMU (make deps installs it)")
    p = probe_mod.probe(QemuBuild(binary=Path(qemu)), tmp_path, host=LocalHost("local", HostSpec()))
    digest = hashlib.sha256(Path(qemu).resolve().read_bytes()).hexdigest()
    assert p.build_id == "sha256:" + digest[:16]
