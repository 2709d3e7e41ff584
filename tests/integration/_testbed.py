"""The namespace test bed as a pytest fixture (shared by test_testbed.py and test_remote.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.hosts import testbed


def remote_tunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tunnel")]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh test bed (1gbit, no delay) for the module; torn down and checked afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root")
    # Not under pytest's basetemp: concurrent pytest sessions prune old basetemp folders.
    base = Path(tempfile.mkdtemp(prefix="mb-testbed-"))
    testbed.up(base, rate="1gbit")
    left: list[str] = ["(not checked)"]
    try:
        yield base
        # What the tests left running, looked for before `down` kills everything.
        left = settled(harness_leftovers)
    finally:
        testbed.down(base)
    assert left == [], f"left behind by the test bed tests: {left}"
    assert testbed.leftovers() == []
    assert not (base / "id_ed25519").exists()
    assert remote_tunnel_threads() == []


def harness_leftovers() -> list[str]:
    """What the harness may leave behind with the test bed: processes in its namespaces other
    than sshd, local tunnel folders (``mb-tun-*``), the remote VMs' socket folders
    (``/tmp/mb-vm.*``: the namespace hosts share this file system), and local ssh clients of the
    CPU sampler."""
    found = bed_processes()
    found += [f"tunnel folder {d}" for d in Path(tempfile.gettempdir()).glob("mb-tun-*")]
    found += [f"VM socket folder {d}" for d in Path("/tmp").glob("mb-vm.*")]
    ssh = subprocess.run(["pgrep", "-a", "-f", r"^ssh .*-- [^ ]+@10\.250\."],
                         capture_output=True, text=True).stdout
    found += [f"ssh client {ln}" for ln in ssh.splitlines() if ln.strip()]
    return found


def bed_processes(names: tuple[str, ...] = ()) -> list[str]:
    """Processes inside the test bed's namespaces ("ns: pid comm: command line"), other than its
    sshd; only those whose name starts with one of ``names`` if given."""
    found = []
    for ns in ("mbsrc", "mbdst"):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in out.split():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("sshd") or (names and not comm.startswith(names)):
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                cmd = b""
            found.append(f"{ns}: {pid} {comm}: {cmd.decode(errors='replace').strip()[:300]}")
    return found


def settled(find: Callable[[], list[str]], timeout: float = 6.0) -> list[str]:
    """What ``find`` still reports after up to ``timeout`` s. A remote process's supervisor
    lingers up to 3 s after its channel closes (TERM, wait, KILL)."""
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def bed_qemus() -> list[str]:
    """QEMU processes inside the test bed's namespaces (other tests' QEMUs do not count)."""
    return bed_processes(("qemu",))


@pytest.fixture(autouse=True)
def no_leftover_qemu() -> Iterator[None]:
    """Overrides conftest's check: only QEMUs in the test bed are ours (others run in parallel)."""
    assert bed_qemus() == [], "a QEMU from an earlier test bed test is still running"
    yield
    left = bed_qemus()
    assert left == [], f"QEMU processes left behind in the test bed: {left}"
