"""Warm starts: boot a guest to its steady workload once, save it, and restore every run's source.

A cold run boots its source guest and waits for the workload to be steady (about 3.5 s of a 9.5 s
run here). A warm run starts its source QEMU with ``-incoming defer -S`` and loads a state saved
once per campaign, pair and guest: QEMU's own ``migrate`` into a file on the source host and
``migrate-incoming`` from it, with ``mapped-ram`` where the build has it (each page at a fixed
offset, zero pages as holes) and through ``exec:cat`` on builds older than 8.2, which have no
``file:`` URI (Debian's 7.2). Then ``cont``, and the usual wait for the writer's steady rate.

What carries over, and why it is correct:

- The state is saved with the guest *stopped* (``stop``, then ``migrate``): nothing is dirtied
  while it is written, so even QEMU 7.2, which loses dirty pages when it migrates a writing TCG
  guest, saves a consistent guest. Its live migration later still loses them: a warm run catches
  7.2's corruption as a cold one does.
- Guest clocks: the guest's clocks stopped with the VM and resume from the saved values (the
  vCPU and timer state are part of the stream), so its CLOCK_MONOTONIC, on which the writer paces
  and measures stalls, goes on as after a short pause (measured under TCG: 100 ms steps across
  the restore; on KVM kvmclock travels in the stream too, not measured here). Its wall clock is
  behind the host's by the save's age: no workload here reads it. The harness stamps every
  console line with the host's arrival time, as for a booted guest.
- The console: the serial chardev is a socket the harness connects to before the restore, as
  for a boot; the restored writer goes on with its sequence numbers, stamps, generations and
  ``bad`` count, and still answers ``verify`` on its stdin.
- Per-run things stay per run: QMP and console sockets and logs are in the run's own folder.
  Network and disk are not restored: a ping guest's NIC sits on a per-run tap with a per-run
  address plan and the host's neighbour entries, and an fio guest's disk is a per-run file that
  its in-flight IO and page cache would not match. Such cells boot (``start.kind == "cold"``)
  and say why, rather than risk a wrong result.

The key of a saved state covers everything that shapes the guest: both the build (binary and
its SHA-256) and how the source QEMU is started (accelerator, CPUs, memory, kernel, initrd and
their digest, kernel command line with the workload's arguments, the variant's QEMU arguments,
the dirty ring). States live under the source host's workdir
(``<workdir>/<campaign>/warm-<key>-<tag>``, the tag one per pair worker: pairs that share a source
host never touch each other's), and are removed when the pair's campaign ends. A folder left by
a crashed campaign is never reused (a new worker has a new tag); like a crashed run's folder,
it stays under the campaign's folder on that host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import HarnessError
from harness.guest.image import initrd_for
from harness.hosts.host import Host
from harness.hosts.probe import Probe, state_method
from harness.plan.features import kvm_requirement
from harness.plan.matrix import Cell
from harness.results.record.model import StartInfo
from harness.results.record.qmp import MigrationInfo, from_qmp
from harness.run import migration
from harness.run.cancel import Stop
from harness.run.migration import RunContext
from harness.run.vm import Vm

Method = Literal["file+mapped-ram", "file", "exec"]
StartKind = Literal["warm", "cold"]
WARM_FORMAT = 1  # part of every key: a change of how states are saved makes new ones
SAVE_TIMEOUT_S = 120.0  # saving or loading a stopped guest of a few GiB
# Workload parts a restored guest carries correctly (see the module docstring for the others).
WARM_WORKLOADS = frozenset({"writer"})


@dataclass(frozen=True)
class SavedState:
    """A guest saved on its source host, steady, ready to be restored into a run's source."""

    key: str
    method: Method
    path: Path  # on the source host
    boot_s: float  # the template's boot to a steady workload
    save_s: float

    def outgoing_uri(self) -> str:
        if self.method == "exec":
            return "exec:cat > " + shlex.quote(str(self.path))  # QEMU runs it with sh -c
        return f"file:{self.path}"

    def incoming_uri(self) -> str:
        if self.method == "exec":
            return "exec:" + shlex.join(["cat", "--", str(self.path)])
        return f"file:{self.path}"

    @property
    def mapped_ram(self) -> bool:
        return self.method == "file+mapped-ram"


def decide(requested: StartKind | None, cell: Cell, source: Probe) -> tuple[StartKind, str | None]:
    """Whether a run of ``cell`` starts warm, and why not when it does not (pure).

    ``requested`` is the matrix's ``start`` (None: warm where possible)."""
    del source  # every build can save a guest (exec: where there is no file:); kept for the rule
    if requested == "cold":
        return "cold", None
    # getattr: the Debian guest and non-shared storage are newer than this rule (issue 17)
    if getattr(cell.guest, "image", "initramfs") != "initramfs":
        return "cold", ("the Debian guest boots: its root disk is a per-run overlay that a "
                        "saved guest's page cache would not match")
    storage = getattr(getattr(cell, "storage", None), "mode", "shared")
    if storage != "shared":
        return "cold", (f"storage: {storage} boots: the disk copied with the migration is a "
                        "per-run file that a saved guest would not match")
    parts = {k for k, v in cell.workload if v is not None}
    for part in sorted(parts - WARM_WORKLOADS):
        why = {"ping": "its NIC is on a per-run tap and address plan that a saved guest and "
                       "the host's neighbour entries would not match",
               "fio": "its disk is a per-run file that a saved guest's in-flight IO and page "
                      "cache would not match"}.get(part, "it is not known to survive a restore")
        return "cold", f"the {part} workload boots: {why}"
    return "warm", None


def state_key(ctx: RunContext, accel: str, source: Probe) -> str:
    """What a saved guest depends on, hashed (pure): the source QEMU as the run would start it,
    less the per-run paths."""
    cell = ctx.cell
    image = ctx.host_images.get("source", ctx.image)
    parts = {
        "format": WARM_FORMAT, "host": ctx.source.identity, "binary": str(ctx.source_build.binary),
        "build_id": source.build_id, "datadirs": [str(d) for d in ctx.source_build.datadirs],
        "accel": accel, "vcpus": cell.guest.vcpus, "memory_mib": cell.guest.memory_mib,
        "kernel": str(image.kernel), "initrd": str(initrd_for(image, cell.workload)),
        "image": ctx.image.digest, "append": migration.kernel_append(cell),
        "qemu_args": list(cell.variant_spec.qemu_args),
        "workload": cell.workload.model_dump(mode="json"),
        "dirty_ring": accel == "kvm" and bool(kvm_requirement(cell.migration)),
    }
    raw = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _wait_migration(vm: Vm, what: str, stop: Stop, timeout: float = SAVE_TIMEOUT_S) -> None:
    """Poll ``query-migrate`` until the save or load completes.

    :raise HarnessError: it failed, or did not finish within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        info = from_qmp(MigrationInfo, vm.qmp.execute("query-migrate"), "query-migrate")
        status = info.status
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise HarnessError(f"{what} {status}: {info.error_desc or 'no reason given'}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{what} did not finish within {timeout:.0f} s ({status})")
        stop.sleep(0.05)


def _set_mapped_ram(vm: Vm, on: bool) -> None:
    vm.qmp.execute("migrate-set-capabilities",
                   {"capabilities": [{"capability": "mapped-ram", "state": on}]})


def save(vm: Vm, state: SavedState, stop: Stop) -> None:
    """Stop the steady guest in ``vm`` and write its state to ``state.path`` on its host."""
    vm.qmp.execute("stop")
    if state.mapped_ram:
        _set_mapped_ram(vm, True)
    vm.qmp.execute("migrate-set-parameters", {"max-bandwidth": 0})  # 0: no limit
    vm.qmp.execute("migrate", {"uri": state.outgoing_uri()})
    _wait_migration(vm, "saving the warm-start state", stop)


def restore(vm: Vm, state: SavedState, stop: Stop) -> float:
    """Load ``state`` into ``vm`` (started with ``-incoming defer -S``); returns the seconds
    since QEMU started. The guest stays paused; the run's own capabilities follow, so
    ``mapped-ram``, which only a file stream can use, is switched off again."""
    if state.mapped_ram:
        _set_mapped_ram(vm, True)
    vm.qmp.execute("migrate-incoming", {"uri": state.incoming_uri()})
    _wait_migration(vm, f"restoring the warm-start state {state.key}", stop)
    if state.mapped_ram:
        _set_mapped_ram(vm, False)
    return time.time() - vm.launched_at


class WarmStarts:
    """One pair's saved guests for a campaign: saved at the first run that needs each, restored
    by every later one, removed by :meth:`close`."""

    def __init__(self, source: Host, note: Callable[[str], None]) -> None:
        self.source = source
        self.note = note
        self.states: dict[str, SavedState | str] = {}  # a str: why saving failed (runs boot)
        self.folders: set[Path] = set()
        # Two pairs (or lab workers) may share a source host and campaign: each its own folders
        self.tag = secrets.token_hex(3)

    def prepare(self, ctx: RunContext, requested: StartKind | None, source: Probe) -> RunContext:
        """``ctx`` with how its source starts (``start``), and for a warm start the restore.

        Saving the state boots a guest on the source host the first time; when that fails, the
        runs of this key boot and the record says why.
        """
        kind, reason = decide(requested, ctx.cell, source)
        if kind == "cold":
            return dataclasses.replace(ctx, start=StartInfo(kind="cold", reason=reason))
        key = state_key(ctx, self.source.accel().accel, source)
        got = self.states.get(key)
        if got is None:
            got = self.states[key] = self._save(ctx, key, state_method(source))
        if isinstance(got, str):
            return dataclasses.replace(ctx, start=StartInfo(kind="cold", reason=got))
        state = got
        return dataclasses.replace(
            ctx, start=StartInfo(kind="warm", method=state.method, state=state.key),
            restore=lambda vm: self._restore(vm, state, ctx.stop))

    def _restore(self, vm: Vm, state: SavedState, stop: Stop) -> float:
        """:func:`restore`; when it fails (a damaged or missing file, a QEMU that refuses it),
        the run boots instead (harness.run.migration) and so do this state's later runs."""
        try:
            return restore(vm, state, stop)
        except HarnessError as exc:
            self.states[state.key] = self._failed(state.key, f"restoring the saved guest failed: "
                                                  f"{exc}")
            raise

    def _save(self, ctx: RunContext, key: str, method: Method) -> SavedState | str:
        folder = self.source.spec.workdir / ctx.campaign / f"warm-{key}-{self.tag}"
        self.folders.add(folder)
        template = dataclasses.replace(ctx, workdir=folder, workdirs={"source": folder / "vm"},
                                       on_state=None, restore=None)
        started = time.monotonic()
        try:
            vm = migration.boot_steady_source(template)
        except HarnessError as exc:
            return self._failed(key, f"booting the guest to save failed: {exc}")
        with vm:
            boot_s = time.monotonic() - started
            state = SavedState(key, method, folder / "state.mig", round(boot_s, 3), 0.0)
            try:
                save(vm, state, ctx.stop)
                # Written back now, not by the kernel during the first restored run's migration
                # (measured: that run's writer stalled and its migration took longer).
                self.source.run(["sync", "--", str(state.path)], timeout=SAVE_TIMEOUT_S,
                                stop=ctx.stop)
            except HarnessError as exc:
                return self._failed(key, f"saving the guest failed: {exc}")
        state = dataclasses.replace(state, save_s=round(time.monotonic() - started - boot_s, 3))
        self.note(f"warm start: saved guest {key} on {self.source.label} ({state.method}, "
                  f"boot {state.boot_s:.1f} s, save {state.save_s:.1f} s)")
        return state

    def _failed(self, key: str, why: str) -> str:
        self.note(f"warm start {key}: {why}; its runs boot")
        return f"warm start unavailable: {why}"

    def close(self) -> None:
        """Remove every saved state of this campaign from the source host (idempotent)."""
        folders, self.folders = self.folders, set()
        for folder in folders:
            with contextlib.suppress(HarnessError):  # unreachable: the host keeps a folder
                self.source.remove_tree(folder)
        self.states.clear()
