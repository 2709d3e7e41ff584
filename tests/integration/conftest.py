"""Fixtures for integration tests: real QEMU guests under TCG on the local host pair."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guest.image import GuestImage, ensure_image
from harness.plan.config import load_hosts
from harness.plan.models import HostsConfig, MatrixSpec

REPO = Path(__file__).resolve().parents[2]
# The caches the Makefile uses (build/image, build/probe-cache, build/fio), also when pytest runs
# alone; harness.locations reads it at each call.
os.environ.setdefault("MIGBENCH_CACHE", str(REPO / "build"))


#: Marks the QEMUs this pytest session starts on this machine (they inherit the environment), so
#: that the leftover check below ignores QEMUs of another session running at the same time (a
#: developer's `migbench run`, another checkout's tests). QEMUs started over SSH do not inherit it:
#: unmarked ones count as ours, as every QEMU did before.
OWNER = "MIGBENCH_TEST_OWNER"
os.environ[OWNER] = str(os.getpid())


def _owner(pid: str) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = f"{OWNER}=".encode()
    return next((e[len(prefix):].decode() for e in env if e.startswith(prefix)), None)


def qemu_processes() -> list[str]:
    """Command lines of QEMU processes started by the harness (named mb-src-*/mb-des-*), except
    those another session marked as its own (:data:`OWNER`)."""
    out = subprocess.run(["pgrep", "-af", "qemu-system.*-name mb-"], capture_output=True,
                         text=True).stdout
    mine = os.environ[OWNER]
    return [ln for ln in out.splitlines()
            if ln.strip() and _owner(ln.split()[0]) in (None, mine)]


@pytest.fixture(scope="session")
def hosts() -> HostsConfig:
    cfg = load_hosts(REPO / "hosts.yaml")
    for name, build in cfg.qemu_builds.items():
        assert build.binary.exists(), f"QEMU build {name} missing: run `make qemu`"
    return cfg


@pytest.fixture(scope="session")
def image() -> GuestImage:
    return ensure_image(REPO / "build" / "image", fio=True)


@pytest.fixture(autouse=True)
def no_leftover_qemu() -> Iterator[None]:
    """Fail a test that leaves a harness QEMU behind (ones running before it are not its own)."""
    before = set(qemu_processes())
    yield
    deadline = time.monotonic() + 5
    left = [p for p in qemu_processes() if p not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in qemu_processes() if p not in before]
    assert left == [], f"QEMU processes left behind: {left}"


def matrix(**fields: Any) -> MatrixSpec:
    base: dict[str, Any] = {"name": "t", "repetitions": 1}
    base.update(fields)
    return MatrixSpec.model_validate(base)
