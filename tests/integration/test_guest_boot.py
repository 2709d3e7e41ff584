"""Boot the real guest image under QEMU 10.0 (TCG) and check the writer's rate and integrity."""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.guest.image import GuestImage, ensure_image

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]  # this checkout

DEFAULT_QEMU10 = REPO_ROOT / "build" / "qemu-10.0" / "usr" / "bin" / "qemu-system-x86_64"  # make qemu
BOOT_LIMIT_S = 30.0
STEADY_S = 3.0
WARMUP_LINES = 3


def _qemu10() -> list[str]:
    binary = Path(os.environ.get("MIGBENCH_QEMU10", DEFAULT_QEMU10))
    if not binary.is_file():
        pytest.fail(f"QEMU 10 not found at {binary}: run `make qemu` (or set MIGBENCH_QEMU10)")
    argv = [str(binary)]
    datadir = binary.parent.parent / "share" / "qemu"
    if datadir.is_dir():
        argv += ["-L", str(datadir)]
    return argv


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return ensure_image(REPO_ROOT / "build" / "image")


def test_image_is_cached(image: GuestImage) -> None:
    manifest = image.initrd.parent / "manifest.json"
    before = manifest.stat().st_mtime_ns
    t0 = time.monotonic()
    again = ensure_image(REPO_ROOT / "build" / "image")
    assert again == image
    assert manifest.stat().st_mtime_ns == before
    assert time.monotonic() - t0 < 10
    assert image.pvh and image.kernel.name == "vmlinux"


def parse_mb(line: str) -> tuple[str, dict[str, str]] | None:
    """('writer', {'rate': '32.00', ...}) for an '@mb ' line, else None."""
    i = line.find("@mb ")
    if i < 0:
        return None
    kind, *pairs = line[i + 4 :].split()
    return kind, dict(p.split("=", 1) for p in pairs if "=" in p)


class Console:
    """Serial console of a QEMU process: timestamped '@mb' lines on a queue."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: queue.Queue[tuple[float, str, dict[str, str]]] = queue.Queue()
        self.transcript: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.transcript.append(line)
            parsed = parse_mb(line)
            if parsed:
                self.lines.put((time.monotonic(), *parsed))

    def expect(self, kind: str, deadline: float) -> tuple[float, dict[str, str]]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "\n".join(self.transcript[-20:])
                pytest.fail(f"no '@mb {kind}' line before the deadline; console tail:\n{tail}")
            try:
                t, k, kv = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if k == "error":
                pytest.fail(f"guest reported an error: {kv}")
            if k == kind:
                return t, kv

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rate", [8, 32])
def test_writer_rate_and_verify(image: GuestImage, rate: int) -> None:
    argv = _qemu10() + [
        "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults",
        "-serial", "stdio", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", f"console=ttyS0 quiet panic=0 mb.writer=ws:32,rate:{rate},pattern:text",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        con = Console(proc)
        t_boot, _ = con.expect("boot", start + BOOT_LIMIT_S)
        assert t_boot - start < BOOT_LIMIT_S
        _, mods = con.expect("modules", start + BOOT_LIMIT_S)
        assert int(mods["loaded"]) >= 5
        _, ready = con.expect("writer-ready", time.monotonic() + 20)
        assert ready["pattern"] == "text" and int(ready["pages"]) == 32 * 256

        rates: list[float] = []
        for _ in range(WARMUP_LINES):
            con.expect("writer", time.monotonic() + 5)
        t0 = time.monotonic()
        last: dict[str, str] = {}
        while time.monotonic() - t0 < STEADY_S:
            _, last = con.expect("writer", time.monotonic() + 5)
            rates.append(float(last["rate"]))
        median = statistics.median(rates)
        assert abs(median - rate) <= 0.1 * rate, f"median {median} MiB/s vs target {rate}: {rates}"
        assert last["bad"] == "0"

        con.send("verify\n")
        _, verify = con.expect("verify", time.monotonic() + 15)
        assert verify == {"pages": str(32 * 256), "bad": "0"}
        print(f"rate={rate} boot={t_boot - start:.2f}s median={median:.2f} MiB/s")
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def native_writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The writer compiled for the host: protocol checks without booting a guest."""
    exe = tmp_path_factory.mktemp("writer") / "writer"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-static",
            "-pthread",
            "-o",
            str(exe),
            str(REPO_ROOT / "workloads/writer.c"),
        ],
        check=True,
        timeout=120,
    )
    return exe


@pytest.mark.parametrize(
    "args",
    [["--pattern", "bogus"], ["--ws-mib", "0"], ["--rate-mib", "-1"], ["--threads", "0"]],
)
def test_writer_rejects_bad_parameters(native_writer: Path, args: list[str]) -> None:
    cp = subprocess.run([str(native_writer), *args], capture_output=True, timeout=10, check=False)
    assert cp.returncode == 2
    assert cp.stdout.decode().startswith("@mb error msg=")


@pytest.mark.timeout(30)
def test_writer_detects_corruption(native_writer: Path) -> None:
    # 1024 pages at 1 MiB/s: one pass every 4 s, so page 1000 is reached after about 4 s.
    proc = subprocess.Popen(
        [str(native_writer), "--ws-mib", "4", "--rate-mib", "1", "--pattern", "sparse"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        con = Console(proc)
        con.expect("writer-ready", time.monotonic() + 10)
        con.send("verify\n")
        assert con.expect("verify", time.monotonic() + 5)[1]["bad"] == "0"
        con.send("corrupt 1000\r\n")
        con.expect("corrupted", time.monotonic() + 5)
        con.send("verify\n")
        assert con.expect("verify", time.monotonic() + 5)[1]["bad"] == "1"
        _, bad = con.expect("writer-bad", time.monotonic() + 15)
        assert bad["page"] == "1000" and int(bad["got"]) + 1 == int(bad["expected"])
        _, line = con.expect("writer", time.monotonic() + 5)
        assert line["bad"] == "1"
        con.send("verify\n")  # the writer rewrote the page: clean again
        assert con.expect("verify", time.monotonic() + 5)[1]["bad"] == "0"
    finally:
        proc.kill()
        proc.wait(timeout=10)
