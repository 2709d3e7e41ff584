"""Warm starts (run/warm.py): which cells start warm, what a saved state's key covers, how the
state is saved on each build, and that the URIs handed to QEMU's shell are safe."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness.guest.image import GuestImage
from harness.hosts.host import LocalHost
from harness.hosts.probe import Probe, _has_file_migration, state_method
from harness.plan.matrix import Cell, expand
from harness.plan.models import HostSpec, MatrixSpec, QemuBuild
from harness.results import store
from harness.results.record.model import StartInfo
from harness.run.migration import RunContext
from harness.run.warm import SavedState, decide, state_key

HOSTILE = "/tmp/x $(touch MARK) `touch MARK`; 'q\" -n\nz"


def _probe(**kw: Any) -> Probe:
    base: dict[str, Any] = dict(binary="/q", version="10.0.2", package="",
                                capabilities=("xbzrle", "mapped-ram"), parameters=(),
                                commands=(), multifd_compression=(), build_id="sha256:aa",
                                file_migration=True)
    base.update(kw)
    return Probe(**base)


def _cells(**fields: Any) -> list[Cell]:
    spec: dict[str, Any] = {"name": "w", "axes": {"feature": ["precopy", "xbzrle"]}}
    spec.update(fields)
    return expand(MatrixSpec.model_validate(spec), "10.0")


def _ctx(cell: Cell, tmp: Path, binary: str = "/q") -> RunContext:
    host = LocalHost("source", HostSpec(workdir=tmp))
    image = GuestImage(kernel=tmp / "vmlinux", initrd=tmp / "initrd", digest="d1",
                       kernel_release="6.1", pvh=True)
    build = QemuBuild(binary=Path(binary))
    return RunContext(cell=cell, repetition=1, campaign="c", source=host, destination=host,
                      source_build=build, destination_build=build, image=image,
                      workdir=tmp / "run")


def test_the_probe_says_how_each_build_saves_a_guest() -> None:
    assert state_method(_probe()) == "file+mapped-ram"  # QEMU 9.0+
    assert state_method(_probe(capabilities=("xbzrle",))) == "file"  # 8.2 - 8.x
    assert state_method(_probe(file_migration=False, capabilities=())) == "exec"  # 7.2
    enum = {"meta-type": "enum", "name": "123", "values": ["socket", "exec", "rdma", "file"]}
    assert _has_file_migration([enum])
    assert not _has_file_migration([{**enum, "values": ["socket", "exec", "rdma"]}])


def test_writer_cells_start_warm_and_ping_or_fio_cells_boot_and_say_why() -> None:
    writer = _cells()[0]
    assert decide(None, writer, _probe()) == ("warm", None)
    assert decide("warm", writer, _probe(file_migration=False)) == ("warm", None)
    assert decide("cold", writer, _probe()) == ("cold", None)
    idle = _cells(workload={})[0]
    assert decide(None, idle, _probe())[0] == "warm"
    ping = _cells(workload={"writer": {}, "ping": {}})[0]
    kind, why = decide("warm", ping, _probe())
    assert kind == "cold" and why is not None and "ping" in why and "tap" in why
    fio = _cells(workload={"fio": {}})[0]
    kind, why = decide(None, fio, _probe())
    assert kind == "cold" and why is not None and "fio" in why and "disk" in why


def test_the_state_key_covers_the_guest_and_build_but_not_the_migration(tmp_path: Path) -> None:
    precopy, xbzrle = _cells(migration={"max-bandwidth": "200mbit"})
    base = state_key(_ctx(precopy, tmp_path), "tcg", _probe())
    # the same guest whatever is migrated, and at whatever bandwidth: one state for both
    assert state_key(_ctx(xbzrle, tmp_path), "tcg", _probe()) == base
    other_bw = _cells(migration={"max-bandwidth": "1gbit"})[0]
    assert state_key(_ctx(other_bw, tmp_path), "tcg", _probe()) == base
    changed = [
        state_key(_ctx(precopy, tmp_path), "kvm", _probe()),
        state_key(_ctx(precopy, tmp_path), "tcg", _probe(build_id="sha256:bb")),
        state_key(_ctx(precopy, tmp_path, binary="/other"), "tcg", _probe()),
        state_key(_ctx(_cells(workload={"writer": {"rate_mib_s": 9}})[0], tmp_path), "tcg",
                  _probe()),
        state_key(_ctx(_cells(guest={"memory_mib": 1024})[0], tmp_path), "tcg", _probe()),
        state_key(_ctx(_cells(guest={"vcpus": 2})[0], tmp_path), "tcg", _probe()),
        state_key(_ctx(_cells(variants={"v": {"qemu_args": ["-cpu", "max"]}})[0], tmp_path),
                  "tcg", _probe()),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    ctx = _ctx(precopy, tmp_path)
    ctx.image = GuestImage(kernel=ctx.image.kernel, initrd=ctx.image.initrd, digest="d2",
                           kernel_release="6.1", pvh=True)
    assert state_key(ctx, "tcg", _probe()) != base  # a rebuilt image


@pytest.mark.parametrize("path", [HOSTILE, "-n", "/tmp/plain"])
def test_exec_uris_run_in_a_real_sh_write_and_read_exactly_that_file(tmp_path: Path,
                                                                    path: str) -> None:
    """QEMU < 8.2 runs ``exec:`` URIs with ``sh -c``: the path is one quoted word."""
    target = tmp_path / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    state = SavedState("k", "exec", target, 1.0, 0.1)
    out = state.outgoing_uri()
    assert out.startswith("exec:")
    subprocess.run(["sh", "-c", out.removeprefix("exec:")], input=b"guest state",
                   cwd=tmp_path, check=True)
    assert target.read_bytes() == b"guest state"
    back = subprocess.run(["sh", "-c", state.incoming_uri().removeprefix("exec:")],
                          cwd=tmp_path, check=True, capture_output=True).stdout
    assert back == b"guest state"
    assert not list(tmp_path.rglob("MARK"))
    file_state = SavedState("k", "file+mapped-ram", target, 1.0, 0.1)
    assert file_state.incoming_uri() == file_state.outgoing_uri() == f"file:{target}"
    assert file_state.mapped_ram and not state.mapped_ram


def test_start_is_a_matrix_option_and_old_records_load_without_it() -> None:
    assert MatrixSpec.model_validate({"name": "m"}).start is None
    assert MatrixSpec.model_validate({"name": "m", "start": "cold"}).start == "cold"
    with pytest.raises(ValidationError, match="start"):
        MatrixSpec.model_validate({"name": "m", "start": "hot"})
    stored = Path(__file__).resolve().parents[1] / "data" / "compress-bound"
    recs = [rec for _, rec in store.iter_runs(stored)]  # written before warm starts existed
    assert recs and all(rec.start is None for rec in recs)
    assert StartInfo().kind == "cold"


def test_a_failed_save_makes_its_runs_boot_once_and_close_removes_its_own_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import HarnessError
    from harness.run import warm

    boots: list[RunContext] = []

    def no_boot(ctx: RunContext) -> None:
        boots.append(ctx)
        (ctx.workdir / "vm").mkdir(parents=True)
        raise HarnessError("guest did not boot within 60 s on the source")

    monkeypatch.setattr(warm.migration, "boot_steady_source", no_boot)
    notes: list[str] = []
    starts = warm.WarmStarts(LocalHost("source", HostSpec(workdir=tmp_path, accel="tcg")),
                             notes.append)
    precopy, xbzrle = _cells()
    key = state_key(_ctx(precopy, tmp_path), "tcg", _probe())
    # another worker's folder for the same guest on the same host (or a crashed one's)
    other = tmp_path / "c" / f"warm-{key}-0a0b0c"
    other.mkdir(parents=True)
    (other / "state.mig").write_bytes(b"another pair's guest")
    ctx = starts.prepare(_ctx(precopy, tmp_path), None, _probe())
    assert ctx.restore is None and ctx.start.kind == "cold"
    assert ctx.start.reason is not None and "did not boot" in ctx.start.reason
    own = tmp_path / "c" / f"warm-{key}-{starts.tag}"
    assert own != other and (other / "state.mig").exists()  # not ours: untouched
    # the same guest for the next cell: not booted again, the same reason
    again = starts.prepare(_ctx(xbzrle, tmp_path), None, _probe())
    assert again.start == ctx.start and len(boots) == 1
    assert boots[0].workdirs == {"source": own / "vm"} and boots[0].restore is None
    assert len(notes) == 1 and "its runs boot" in notes[0]
    cold = starts.prepare(_ctx(precopy, tmp_path), "cold", _probe())
    assert cold.start.kind == "cold" and cold.start.reason is None and len(boots) == 1
    starts.close()
    assert not own.exists() and other.exists()
