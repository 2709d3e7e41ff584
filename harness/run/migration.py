"""One migration, source to destination, as a state machine that always yields a RunRecord.

States: boot -> steady -> setup -> migrate -> watch -> (completed | not-converged | failed)
-> verify -> teardown. Every exit path, including exceptions and Ctrl-C, goes through teardown,
which shuts both QEMUs down. Failures inside a run become a recorded ``failed`` outcome with
QEMU's own error text; only a stop (``ctx.stop``: Ctrl-C, SIGTERM) propagates, as
:class:`~harness.run.cancel.Cancelled`, after cleanup. Every wait here has a deadline and wakes
on the stop; the teardown's waits do not, so it always runs to the end.

What QEMU, the guest and the samplers report is parsed into the record's typed parts where it
arrives (``query-migrate`` answers into :class:`~harness.results.record.qmp.TimelineSample`, QMP events,
console lines, CPU and guest series); the :class:`RunRecord` is built from them at the end.
"""

from __future__ import annotations

import dataclasses
import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis import stalls
from harness.errors import HarnessError
from harness.guest.image import GuestImage, create_shared_disk
from harness.hosts.host import Host
from harness.hosts.netsetup import HostVmNetwork, LocalVmNetwork, NetAttachment, private_network
from harness.plan.features import POSTCOPY_STATES, kvm_requirement
from harness.plan.matrix import Cell
from harness.plan.models import QemuBuild
from harness.results.record.model import (
    SCHEMA_VERSION,
    AppliedSettings,
    AppliedSide,
    CellRecord,
    ConsoleLine,
    CpuRecord,
    CpuSide,
    DiskCheck,
    FioPoint,
    GuestCrash,
    GuestImpact,
    GuestSeries,
    GuestSilent,
    HostFacts,
    ImageInfo,
    Integrity,
    Metrics,
    Outcome,
    PerSide,
    PingPoint,
    PreMigration,
    QemuInfo,
    RamCheck,
    RunRecord,
    ServicePoint,
    StampsCheck,
    StartInfo,
    State,
    StateChange,
    StorageRun,
    VmInfo,
    WriterPoint,
    guest_visible_downtime,
)
from harness.results.record.qmp import (
    CapabilityList,
    MigrationInfo,
    MigrationParameters,
    QmpEvent,
    TimelineSample,
    from_qmp,
)
from harness.results.record.scalars import Role, utc
from harness.run import dirtyrate
from harness.run import workload as wl
from harness.run.cancel import Stop
from harness.run.integrity import HASH_PAGES_PY, differing_pages
from harness.run.sampling import cpu as cpu_sampling
from harness.run.sampling import fio as fio_sampling
from harness.run.sampling import ping as ping_sampling
from harness.run.sampling import service_run, servicestats
from harness.run.sampling import writer as writer_sampling
from harness.run.sampling.console import Console
from harness.run.sampling.cpuprobe import DEFAULT_HZ as CPU_HZ
from harness.run.sampling.service import ServiceLoad
from harness.run.storage import DiskCopy
from harness.run.vm import Vm, VmConfig

TERMINAL = {"completed", "failed", "cancelled"}
DIRTY_RING_SIZE = 4096  # entries per vCPU, as QEMU's own dirty-limit tests use
LEGACY_WINDOW = (0xA0000 // 4096, 0x100000 // 4096)  # pages excluded from the RAM comparison


@dataclass
class RunContext:
    """Everything one run needs; built by the runner."""

    cell: Cell
    repetition: int
    campaign: str
    source: Host
    destination: Host
    source_build: QemuBuild
    destination_build: QemuBuild
    image: GuestImage
    workdir: Path  # per-run scratch directory on the source host (the fio disk lives here)
    on_state: Callable[[str], None] | None = None  # for progress display
    # The image as each host has it ("source"/"destination" -> the host's copy, see
    # harness.hosts.provision.place_image); a role not listed boots ``image`` itself (local hosts).
    host_images: dict[str, GuestImage] = field(default_factory=dict)
    # Each VM's folder ("source"/"destination" -> a folder on that host, under its own workdir);
    # a role not listed uses ``workdir / role``.
    workdirs: dict[str, Path] = field(default_factory=dict)
    # Each side's QEMU build id (SHA-256 of the binary, from the runner's capability probe).
    build_ids: dict[str, str] = field(default_factory=dict)
    # Set when the campaign is stopped: every wait of the run wakes and raises Cancelled.
    stop: Stop = field(default_factory=Stop)
    # Warm start (harness.run.warm): how the source comes up, and when set, what restores the
    # saved guest into the source QEMU (started with -incoming defer) and returns its seconds.
    start: StartInfo = field(default_factory=StartInfo)
    restore: Callable[[Vm], float] | None = None


@dataclass
class _Run:
    """One run in progress: the processes it drives, and what it has learnt so far (the record's
    parts, already typed)."""

    ctx: RunContext
    started: float = field(default_factory=time.time)
    outcome: Outcome = "failed"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    workload_errors: list[str] = field(default_factory=list)
    states: list[StateChange] = field(default_factory=list)
    qemu: QemuInfo | None = None
    boot_s: float | None = None
    steady_rate_mib_s: float | None = None
    pre: PreMigration | None = None
    start: StartInfo | None = None  # the context's, with the restore's seconds once restored
    applied: AppliedSettings | None = None
    postcopy_start_t: float | None = None
    pause_t: float | None = None
    timeline: list[TimelineSample] = field(default_factory=list)
    final: MigrationInfo | None = None
    source_status: str | None = None
    destination_status: str | None = None
    destination_status_before_cont: str | None = None
    destination_loaded_t: float | None = None
    integrity: Integrity = field(default_factory=lambda: Integrity(verdict="unchecked"))
    cpu_record: CpuRecord | None = None
    guest_impact: GuestImpact = field(default_factory=GuestImpact)
    ping_series: list[PingPoint] = field(default_factory=list)
    fio_series: list[FioPoint] = field(default_factory=list)
    service_series: list[ServicePoint] = field(default_factory=list)
    vms: dict[Role, VmInfo] = field(default_factory=dict)
    events: dict[Role, list[QmpEvent]] = field(default_factory=dict)
    console: dict[Role, list[ConsoleLine]] = field(default_factory=dict)
    src: Vm | None = None
    dst: Vm | None = None
    t0: float = 0.0  # epoch time of the `migrate` command
    net: LocalVmNetwork | HostVmNetwork | None = None
    disk: Path | None = None
    storage: DiskCopy | None = None  # storage: copy
    root_overlay: Path | None = None  # the Debian guest's root disk for this run
    service: ServiceLoad | None = None  # redis/memcached under load
    prober: ping_sampling.Prober | None = None
    probes: list[ping_sampling.Probe] = field(default_factory=list)
    workloads_finished: bool = False
    cpu: dict[Role, cpu_sampling.CpuSampler] = field(default_factory=dict)

    def state(self, name: State) -> None:
        self.states.append(StateChange(state=name, t=time.time()))
        if self.ctx.on_state is not None:
            self.ctx.on_state(name)


def kernel_append(cell: Cell, net: NetAttachment | None = None) -> str:
    """Kernel command line: console, and the workload configuration the guest's init reads."""
    parts = ["console=ttyS0", "quiet", "panic=0", "loglevel=4"]
    parts += wl.kernel_args(cell.workload, net, cell.guest.vcpus, cell.guest.image)
    return " ".join(parts)


def run_migration(ctx: RunContext) -> RunRecord:
    """Run one migration for ``ctx`` and return its record."""
    run = _Run(ctx)
    hosts: PerSide[HostFacts] = PerSide(
        source=HostFacts.model_validate(ctx.source.facts()),
                    destination=HostFacts.model_validate(ctx.destination.facts()))
    try:
        _drive(run)
    except HarnessError as exc:
        run.outcome = "failed"
        run.error = run.error or str(exc)
    finally:
        _teardown(run)
    return _record(run, hosts, finished=time.time())


def _record(run: _Run, hosts: PerSide[HostFacts], finished: float) -> RunRecord:
    ctx = run.ctx
    writer = writer_sampling.series(
        [(vm.cfg.role, vm.console.records("writer")) for vm in (run.src, run.dst)
         if vm is not None], run.t0)
    return RunRecord(
        schema_version=SCHEMA_VERSION, campaign=ctx.campaign,
        cell=CellRecord.model_validate(ctx.cell.to_dict()), repetition=ctx.repetition,
        started_utc=utc(run.started), finished_utc=utc(finished), outcome=run.outcome,
        error=run.error, warnings=tuple(run.warnings),
        workload_errors=tuple(run.workload_errors), integrity=run.integrity,
        timing_excluded=ctx.cell.integrity == "ram" or _holds_destination(run),
        qemu=run.qemu or _qemu_info(ctx), storage=_storage_record(run),
        hosts=hosts, image=ImageInfo.model_validate(ctx.image.to_dict()),
        states=tuple(run.states), boot_s=run.boot_s, steady_rate_mib_s=run.steady_rate_mib_s,
        pre=run.pre, start=run.start or ctx.start,
        applied=run.applied, migrate_start_utc=utc(run.t0) if run.t0 > 0 else None,
        postcopy_start_t=run.postcopy_start_t, pause_t=run.pause_t,
        timeline=tuple(run.timeline), final=run.final, source_status=run.source_status,
        destination_status=run.destination_status,
        destination_status_before_cont=run.destination_status_before_cont,
        destination_loaded_t=run.destination_loaded_t,
        events=PerSide(source=tuple(run.events.get("source", ())),
                       destination=tuple(run.events.get("destination", ()))),
        console=PerSide(source=tuple(run.console.get("source", ())),
                        destination=tuple(run.console.get("destination", ()))),
        vms=PerSide(source=run.vms.get("source"), destination=run.vms.get("destination")),
        cpu=run.cpu_record,
        guest=GuestSeries(writer=tuple(writer), ping=tuple(run.ping_series),
                          fio=tuple(run.fio_series), service=tuple(run.service_series)),
        guest_impact=run.guest_impact, metrics=_metrics(run, writer),
    )


def _qemu_info(ctx: RunContext, version: str | None = None) -> QemuInfo:
    """The QEMU build of the run (its version once a QEMU has answered)."""
    ids = {role: bid for role, bid in ctx.build_ids.items() if bid}
    return QemuInfo(build=ctx.cell.build, version=version,
                    source_binary=str(ctx.source_build.binary),
                    destination_binary=str(ctx.destination_build.binary),
                    source_build_id=ids.get("source"), destination_build_id=ids.get("destination"))


def vm_workdir(ctx: RunContext, role: Role) -> Path:
    """The folder of ``role``'s VM (its sockets and logs), on that VM's host."""
    return ctx.workdirs.get(role, ctx.workdir / role)


def _vm_config(run: _Run, role: Role, host: Host, build: QemuBuild) -> VmConfig:
    ctx = run.ctx
    cell = ctx.cell
    incoming = role == "destination"
    restored = role == "source" and ctx.restore is not None  # warm start: -incoming defer, -S
    net = run.net.attachment(role) if run.net is not None else None
    image = ctx.host_images.get(role, ctx.image)
    root, backed = (run.storage.root_disk(role) if run.storage is not None
                    and run.storage.moves_root else (run.root_overlay, True))
    initrd, root_disk = wl.boot_files(image, cell.guest, cell.workload, root, backed)
    extra = (*cell.variant_spec.qemu_args, *root_disk,
             *wl.qemu_args(cell.workload, net,
                           run.storage.data_disk(role) if run.storage else run.disk))
    accel = host.accel().accel
    return VmConfig(
        name=f"mb-{role[:3]}-{cell.id[:6]}",
        role=role,
        build=build,
        accel=accel,
        vcpus=cell.guest.vcpus,
        memory_mib=cell.guest.memory_mib,
        kernel=image.kernel,
        initrd=initrd,
        append=kernel_append(cell, net),
        workdir=vm_workdir(ctx, role),
        incoming=incoming or restored,
        # The source starts paused so that no console output is lost before we connect;
        # in RAM-integrity mode the destination stays paused after migration for hashing.
        start_paused=(not incoming) or cell.integrity == "ram" or _holds_destination(run),
        extra_args=tuple(extra),
        # dirty-limit works only on KVM's dirty ring (on TCG the probe skips such cells)
        dirty_ring_size=DIRTY_RING_SIZE if accel == "kvm" and kvm_requirement(cell.migration) else 0,
    )


def _vm_network(ctx: RunContext) -> LocalVmNetwork | HostVmNetwork:
    """Guest NICs: the private bridge on this machine for a local pair without ``vm_bridge``,
    otherwise a tap on each host's own ``vm_bridge`` with the prober on this machine."""
    src, dst = ctx.source, ctx.destination
    tag = secrets.token_hex(2)
    if private_network(src.spec, dst.spec):
        return LocalVmNetwork(tag)
    cidr = src.spec.vm_network or dst.spec.vm_network
    if cidr is None:
        raise HarnessError(f"{src.label}: a ping workload on this pair needs vm_network in "
                           "hosts.yaml (the VM network's subnet and this machine's address on "
                           "it, e.g. 10.250.4.1/24)")
    return HostVmNetwork(tag, {"source": src, "destination": dst}, cidr)


def _drive(run: _Run) -> None:
    """The run's steps in order; each one raises HarnessError to end the run as ``failed``."""
    _boot(run)
    if _measures_while_steadying(run):
        _wait_workload_measuring(run)
    else:
        _wait_workload(run)
    uri = _setup(run)
    _before_migrate(run)
    _copy_disk(run)
    final = _migrate(run, uri)
    _conclude(run, final)


def _boot(run: _Run) -> None:
    """The VM network and disk if the workload needs them, both QEMUs, the source running."""
    ctx = run.ctx
    run.state("boot")
    spec = ctx.cell.workload
    if wl.needs_network(spec):
        run.net = _vm_network(ctx)
        run.net.__enter__()
    if ctx.cell.storage.mode == "copy":
        run.storage = DiskCopy.create(
            ctx.cell, {"source": ctx.source, "destination": ctx.destination},
            {role: vm_workdir(ctx, role).parent for role in ("source", "destination")}, ctx.stop,
            {role: ctx.host_images.get(role, ctx.image) for role in ("source", "destination")})
    elif wl.needs_disk(spec):
        assert spec.fio is not None
        run.disk = create_shared_disk(ctx.workdir / "disk.raw", spec.fio.disk_mib)
    if ctx.cell.guest.image == "debian" and run.storage is None:  # else each side has its own
        run.root_overlay = service_run.make_overlay(
            ctx.source, ctx.workdir, ctx.host_images.get("source", ctx.image))
    run.dst = Vm(ctx.destination, _vm_config(run, "destination", ctx.destination,
                                             ctx.destination_build), ctx.stop)
    run.src = Vm(ctx.source, _vm_config(run, "source", ctx.source, ctx.source_build), ctx.stop)
    # The two QEMUs start up side by side, the destination's beside the source's restore too
    # (0.1-0.15 s a run here); the source first, as the one waited for.
    run.src.spawn()
    run.dst.spawn()
    run.src.connect()
    if ctx.restore is not None:  # warm start: the saved guest, instead of a boot
        _restore_or_boot(run, ctx.restore)
    run.dst.connect()
    run.src.qmp.execute("cont")
    run.qemu = _qemu_info(run.ctx, _version(run.src))


def _restore_or_boot(run: _Run, restore: Callable[[Vm], float]) -> None:
    """Load the saved guest into the source; when that fails, boot this run's source instead
    (in a folder of its own) and record it as a cold start whose reason has the failed QEMU's
    last words: a damaged or unreadable state costs a boot, not the run."""
    assert run.src is not None
    try:
        run.start = run.ctx.start.model_copy(update={"restore_s": round(restore(run.src), 3)})
        return
    except HarnessError as exc:
        failed, error = run.src, str(exc)
    log = failed.log_tail(3).replace("\n", " | ")
    failed.shutdown()
    why = ("restoring the saved guest failed, this run booted: "
           + (f"QEMU said: {log} ({error})" if log else error))
    run.warnings.append(why)
    ctx = run.ctx = dataclasses.replace(
        run.ctx, restore=None, start=StartInfo(kind="cold", reason=why[:500]),
        workdirs={**run.ctx.workdirs,
                  "source": vm_workdir(run.ctx, "source").with_name("source-booted")})
    run.start = ctx.start
    run.src = Vm(ctx.source, _vm_config(run, "source", ctx.source, ctx.source_build), ctx.stop)
    run.src.launch()


def boot_steady_source(ctx: RunContext) -> Vm:
    """Boot only the source guest of ``ctx`` and wait for its workload to be steady: the guest
    a warm start saves (harness.run.warm). The caller shuts the VM down."""
    run = _Run(ctx)
    run.src = Vm(ctx.source, _vm_config(run, "source", ctx.source, ctx.source_build), ctx.stop)
    try:
        run.src.launch()
        run.src.qmp.execute("cont")
        _wait_workload(run)
    except BaseException:
        run.src.shutdown()
        raise
    return run.src


def _wait_workload(run: _Run) -> None:
    """Wait for the workload to be steady (its own reports, not a fixed sleep); start the
    prober."""
    src, lim, spec = run.src, run.ctx.cell.limits, run.ctx.cell.workload
    assert src is not None
    run.state("steady")
    if run.ctx.restore is None:
        boot = src.console.wait_for("boot", lim.boot_timeout_s)
        if boot is None:
            raise HarnessError(_no_boot_message(src, lim.boot_timeout_s))
        run.boot_s = round(boot.host_time - src.launched_at, 3)
        _wait_ready(run, src)  # a restored guest said so before its state was saved
    _wait_steady(run, src)
    if spec.ping is not None and run.net is not None:
        att = run.net.attachment("source")
        run.prober = ping_sampling.Prober(att.guest_ip, interval_s=spec.ping.interval_ms / 1000,
                                          mode=spec.ping.mode, port=spec.ping.port,
                                          source=att.host_ip)
        run.prober.start()
        run.ctx.stop.sleep(1.0)  # a baseline of replies before the migration starts
    if spec.service() is not None and run.net is not None:
        run.service = service_run.start_load(spec, run.net.attachment("source"),
                                             seed=run.ctx.repetition, stop=run.ctx.stop)
        run.ctx.stop.sleep(2.0)  # a baseline of requests before the migration starts


def _measures_while_steadying(run: _Run) -> bool:
    """A restored guest's writer was steady when it was saved and carries on: its calc-dirty-rate
    can run beside the steady wait instead of after it (saving the wait, about 0.5 s a run, of a
    warm start's overhead). Only where the steady wait uses the console alone (no prober or load
    that would share QMP or the period)."""
    spec = run.ctx.cell.workload
    return (run.ctx.restore is not None and spec.writer is not None and spec.ping is None
            and spec.service() is None)


def _wait_workload_measuring(run: _Run) -> None:
    """:func:`_wait_workload` with the pre-migration calc-dirty-rate (:func:`_before_migrate`)
    in a thread from the restored guest's ``cont``; the steady wait reads only the console, so
    QMP has one user. The measurement's writer rate is the steady rate found meanwhile, and the
    five reports that find it span the whole period: the first, made across the restore, among
    them (measured here: at the writer's rate, no catch-up burst, about 0.09 s after ``cont``,
    which the period no longer waits for). A writer that is not steady fails the run as ever."""
    src = run.src
    assert src is not None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dirtyrate") as pool:
        pre = pool.submit(dirtyrate.measure, src.qmp, run.ctx.cell.workload.writer,
                          src.cfg.accel, src.cfg.dirty_ring_size > 0, None, run.ctx.stop)
        try:
            _wait_workload(run)
        finally:
            measured = pre.result()  # bounded: the period plus dirtyrate.GRACE_S, wakes on stop
    run.pre = measured.model_copy(update={"writer_rate_mib_s": run.steady_rate_mib_s})


def _setup(run: _Run) -> str:
    """Capabilities and parameters on both sides, read back as QEMU uses them; the destination
    listening. Returns the migration URI."""
    src, dst, ctx = run.src, run.dst, run.ctx
    assert src is not None and dst is not None
    run.state("setup")
    mig = ctx.cell.migration
    caps = [{"capability": k, "state": v} for k, v in mig.capabilities.items()]
    applied: dict[Role, AppliedSide] = {}
    for vm in (src, dst):
        extra = run.storage.capabilities() if run.storage is not None and vm is src else []
        vm.qmp.execute("migrate-set-capabilities", {"capabilities": caps + extra})
        params = mig.parameters if vm is src else mig.destination_parameters
        vm.qmp.execute("migrate-set-parameters", dict(params))
        applied[vm.cfg.role] = _applied(vm)
    address = ctx.destination.spec.migration_address
    port = ctx.destination.free_port(address)
    uri = f"tcp:{address}:{port}"
    # the uri: the migration network the stream really took
    run.applied = AppliedSettings(source=applied["source"], destination=applied["destination"],
                                  uri=uri)
    dst.qmp.execute("migrate-incoming", {"uri": uri})
    return uri


def _before_migrate(run: _Run) -> None:
    """The last step before ``migrate``, with the guest steady and both sides set up: where a
    measurement of the running guest before the migration belongs. Starts the CPU samplers."""
    assert run.src is not None
    if run.pre is None:  # a warm start measured it during the steady wait
        run.pre = dirtyrate.measure(  # before the samplers: dirty logging is not migration
            run.src.qmp, run.ctx.cell.workload.writer, run.src.cfg.accel,
            run.src.cfg.dirty_ring_size > 0, run.steady_rate_mib_s, run.ctx.stop)
    _start_cpu_sampling(run)


def _copy_disk(run: _Run) -> None:
    """``storage: copy``: the destination's NBD export on its migration address, the source's
    mirror to it READY before the RAM migration starts (see harness.run.storage)."""
    if run.storage is None:
        return
    assert run.src is not None and run.dst is not None
    address = run.ctx.destination.spec.migration_address
    port = run.ctx.destination.free_port(address)
    run.storage.export(run.dst, address, port)
    run.storage.sync(run.src, address, port)


def _holds_destination(run: _Run) -> bool:
    return run.storage is not None and run.storage.holds_destination


def _storage_record(run: _Run) -> StorageRun | None:
    if run.storage is None:
        return None
    final = run.final
    done = (run.t0 + final.total_time / 1000 if run.outcome == "completed" and final is not None
            and final.total_time else None)
    return run.storage.record(done)


def _storage_after_switch(run: _Run) -> DiskCheck | None:
    """The destination's NBD server stopped; with ``verify``, both disks compared while the
    destination is still held paused."""
    if run.storage is None:
        return None
    assert run.src is not None and run.dst is not None
    if run.storage.holds_destination:
        run.destination_status_before_cont = run.dst.status()
    return run.storage.after_switch(run.src, run.dst)


def _migrate(run: _Run, uri: str) -> MigrationInfo:
    """Start the migration and watch it to its end; returns QEMU's last answer."""
    src = run.src
    assert src is not None
    run.state("migrate")
    run.t0 = time.time()
    src.qmp.execute("migrate", {"uri": uri})
    run.final = _watch(run)
    return run.final


def _conclude(run: _Run, final: MigrationInfo) -> None:
    """The outcome from how the migration ended; after a completion, the integrity checks."""
    src, dst = run.src, run.dst
    assert src is not None and dst is not None
    if final.status == "completed":
        run.outcome = "completed"
        _after_completion(run)
        _finish_workloads(run)
    elif run.outcome == "not-converged":
        run.source_status = src.status()  # the guest must keep running on the source
    else:
        run.outcome = "failed"
        desc = final.error_desc or f"migration ended in state {final.status!r}"
        if not dst.alive():
            desc += (f" (destination QEMU on {dst.host.label} exited with code "
                     f"{dst.proc.poll() if dst.proc else '?'})")
        run.error = desc
        if src.alive():
            try:
                run.source_status = src.status()  # the guest keeps running on the source
            except HarnessError:
                pass


def _applied(vm: Vm) -> AppliedSide:
    """What ``vm``'s QEMU reports it uses after setup."""
    caps = from_qmp(CapabilityList, vm.qmp.execute("query-migrate-capabilities"),
                    "query-migrate-capabilities")
    params = from_qmp(MigrationParameters, vm.qmp.execute("query-migrate-parameters"),
                      "query-migrate-parameters")
    return AppliedSide(capabilities={c.capability: c.state for c in caps.root},
                       parameters=params.root)


def _version(vm: Vm) -> str:
    v = vm.qmp.execute("query-version")
    q = v.get("qemu", {})
    pkg = str(v.get("package", "")).strip()
    return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}" + (f" ({pkg})" if pkg else "")


def _no_boot_message(vm: Vm, timeout: float) -> str:
    lines = [ln.text for ln in vm.console.snapshot()][-3:]
    return (f"guest did not boot within {timeout:.0f} s on the {vm.cfg.role}"
            f" (last console lines: {' | '.join(lines) or 'none'})")


def _workload_deaths(vm: Vm) -> list[str]:
    out = []
    for r in vm.console.records("exit") + vm.console.records("error"):
        out.append(f"{vm.cfg.role}: " + " ".join(f"{k}={v}" for k, v in r.fields.items()))
    return out


def _wait_ready(run: _Run, vm: Vm) -> None:
    """Wait until every workload of the cell has said it is up (writer, net, ping, fio)."""
    lim = run.ctx.cell.limits
    deadline = time.monotonic() + lim.steady_timeout_s
    for kind in wl.ready_kinds(run.ctx.cell.workload):
        if kind == "writer-ready":
            continue  # _wait_steady checks the writer, with its own messages
        left = max(0.0, deadline - time.monotonic())
        if vm.console.wait_for(kind, left) is None:
            died = _workload_deaths(vm)
            raise HarnessError(
                f"guest workload not ready: no `{kind}` within {lim.steady_timeout_s:.0f} s"
                + (f" ({'; '.join(died)})" if died else "")
            )


def _finish_workloads(run: _Run) -> None:
    """Stop the prober and summarise what the guest's workloads saw (once, on every path)."""
    if run.workloads_finished:
        return
    run.workloads_finished = True
    spec = run.ctx.cell.workload
    end = time.time()
    if run.prober is not None:
        run.probes = run.prober.stop()
        run.prober = None
    # The dataset is read back from wherever the guest runs now (not after a failure).
    requests, dataset = service_run.finish_load(
        run.service, check=run.outcome != "failed" and not run.ctx.stop.is_set())
    run.service = None
    # A workload that died in the guest is part of the result, whatever else the cell ran.
    run.workload_errors += [d for vm in (run.src, run.dst) if vm is not None
                            for d in _workload_deaths(vm)]
    if spec.ping is None and spec.fio is None and not requests:
        return
    switchover = None
    if run.dst is not None and run.outcome == "completed":
        resumes = [e for e in run.dst.qmp.events("RESUME") if e.host_time >= run.t0]
        switchover = resumes[0].host_time if resumes else None
    consoles = [(vm.cfg.role, vm.console.records("fio")) for vm in (run.src, run.dst)
                if vm is not None]
    fio_tl = fio_sampling.timeline(consoles) if spec.fio is not None else []
    t0 = run.t0 or end
    impact = wl.summarise(spec, migrate_start=t0, switchover=switchover, end=end,
                          probes=run.probes, fio_samples=fio_tl, requests=requests,
                          dataset=dataset)
    run.guest_impact = impact
    dataset_check = impact.service.dataset if impact.service is not None else None
    if dataset_check is not None and run.outcome == "completed":
        run.integrity = run.integrity.with_dataset(dataset_check)  # keys lost: a damaged guest
    if impact.service is not None:
        run.service_series = [ServicePoint.model_validate(p) for p in servicestats.timeline(
            requests, t0, impact.service.timeout_ms / 1000)]
    if switchover is not None and impact.ping is not None \
            and impact.ping.replies_after_switchover == 0:
        # The guest moved but stopped answering: its network did not follow it.
        run.workload_errors.append(
            "ping: the guest answered no probe on the destination after the switchover")
    if spec.ping is not None:
        run.ping_series = [PingPoint.model_validate(p)
                           for p in ping_sampling.timeline(run.probes, t0)]
    run.fio_series = [FioPoint.model_validate(p) for p in fio_tl]


def _wait_steady(run: _Run, vm: Vm) -> None:
    """Wait until the writer's last 5 reports are within 10% of its target (or of each other)."""
    cell, lim = run.ctx.cell, run.ctx.cell.limits
    w = cell.workload.writer
    if w is None:
        return
    deadline = time.monotonic() + lim.steady_timeout_s
    # A restored writer said `writer-ready` before its state was saved: its reports since then
    ready = vm.console.wait_for("writer-ready" if run.ctx.restore is None else "writer",
                                lim.steady_timeout_s)
    if ready is None:
        errors = vm.console.records("error") + vm.console.records("exit")
        detail = "; ".join(" ".join(f"{k}={v}" for k, v in r.fields.items()) for r in errors)
        raise HarnessError(
            f"memory writer did not start in the guest within {lim.steady_timeout_s:.0f} s"
            + (f": {detail}" if detail else "")
        )
    while True:
        rates = [r.num("rate") for r in vm.console.records("writer", after=ready.host_time)][-5:]
        if len(rates) == 5:
            if w.rate_mib_s > 0:
                if all(abs(r - w.rate_mib_s) <= 0.1 * w.rate_mib_s for r in rates):
                    break
            else:
                mean = statistics.fmean(rates)
                if mean > 0 and statistics.pstdev(rates) / mean < 0.1:
                    break
        if time.monotonic() > deadline:
            raise HarnessError(
                f"memory writer did not reach a steady rate within {lim.steady_timeout_s:.0f} s "
                f"(target {w.rate_mib_s:g} MiB/s, last rates {rates})"
            )
        exited = vm.console.records("exit")
        if exited:
            raise HarnessError(f"guest workload exited: {exited[0].fields}")
        run.ctx.stop.sleep(0.1)
    run.steady_rate_mib_s = round(statistics.fmean(rates), 2)


def _query_migrate(vm: Vm) -> MigrationInfo:
    return from_qmp(MigrationInfo, vm.qmp.execute("query-migrate"), "query-migrate")


def _watch(run: _Run) -> MigrationInfo:
    """Sample query-migrate on the source until a terminal state; cancel on the limits."""
    src, dst = run.src, run.dst
    assert src is not None and dst is not None
    lim = run.ctx.cell.limits
    period = 1.0 / max(lim.sample_hz, 10.0)
    cancel_reason = ""
    k = 0
    while True:
        now = time.time()
        if not src.alive():
            raise HarnessError("source QEMU exited during migration: " + src._failure("died"))
        info = _query_migrate(src)
        run.timeline.append(TimelineSample.at(info, round(now - run.t0, 4)))
        if run.storage is not None and k % 5 == 0:
            run.storage.sample(src)  # the mirror's state through the RAM migration, at 4 Hz
        status = info.status or ""
        if status == "pre-switchover" and run.storage is not None:
            run.storage.switchover(src)  # the mirror completes while the guest is stopped
        if status in TERMINAL:
            break
        elapsed = now - run.t0
        syncs = (info.ram.dirty_sync_count if info.ram else None) or 0
        if status == "active":
            _maybe_switch(run, elapsed, syncs)
        if status in POSTCOPY_STATES:
            # Postcopy cannot be cancelled: the destination owns the guest now. Give it time.
            if elapsed > lim.max_time_s + 60:
                raise HarnessError(f"postcopy did not complete within max_time_s + 60 s ({status})")
        elif not cancel_reason:
            if elapsed > lim.max_time_s:
                cancel_reason = f"did not converge within max_time_s={lim.max_time_s:g}"
            elif lim.max_dirty_syncs is not None and syncs > lim.max_dirty_syncs:
                cancel_reason = f"did not converge within max_dirty_syncs={lim.max_dirty_syncs}"
            if cancel_reason:
                run.outcome = "not-converged"
                run.error = cancel_reason
                src.qmp.execute("migrate_cancel")
        if cancel_reason and elapsed > lim.max_time_s + 30:
            raise HarnessError(f"migrate_cancel did not finish within 30 s (state {status!r})")
        k += 1
        run.ctx.stop.sleep(run.t0 + k * period - time.time())
    if info.status == "completed":
        # QEMU 7.2 can report `completed` before its totals are filled in: ask again.
        for _ in range(20):
            if info.total_time and info.ram is not None and info.ram.total:
                break
            run.ctx.stop.sleep(0.05)
            info = _query_migrate(src)
        run.timeline.append(TimelineSample.at(info, round(time.time() - run.t0, 4)))
    if cancel_reason and info.status == "cancelled":
        run.outcome = "not-converged"
    return info


def _maybe_switch(run: _Run, elapsed: float, syncs: int) -> None:
    """Start postcopy, or pause the guest, once the cell's trigger is reached (once each)."""
    src = run.src
    assert src is not None
    mig = run.ctx.cell.migration
    opts = mig.harness
    if "postcopy" in mig.features and run.postcopy_start_t is None:
        after_syncs = opts.get("postcopy-after-syncs")
        after_s = opts.get("postcopy-after-s")
        if (after_syncs is not None and syncs >= after_syncs) or (
                after_s is not None and elapsed >= after_s):
            src.qmp.execute("migrate-start-postcopy")
            run.postcopy_start_t = round(elapsed, 4)
    if "pause" in mig.features and run.pause_t is None:
        if syncs >= opts.get("pause-after-syncs", 5):
            src.qmp.execute("stop")
            run.pause_t = round(elapsed, 4)


def _after_completion(run: _Run) -> None:
    src, dst, ctx = run.src, run.dst, run.ctx
    assert src is not None and dst is not None
    cell = ctx.cell
    run.state("verify")
    ram: RamCheck | None = None
    stamps: StampsCheck | None = None
    silent: GuestSilent | None = None
    crash: GuestCrash | None = None
    src_status = src.status()
    run.source_status = src_status
    # The source reports `completed` once it has sent everything; the destination may still be
    # loading the last bytes (seen over a shaped link). Wait until it has them.
    deadline = time.monotonic() + 60
    while dst.status() == "inmigrate":
        if time.monotonic() > deadline:
            raise HarnessError("destination still loading 60 s after the source completed")
        run.ctx.stop.sleep(0.02)
    run.destination_loaded_t = round(time.time() - run.t0, 4)
    disk = _storage_after_switch(run)
    if cell.integrity == "ram":
        # Destination was started with -S: both sides are stopped now; compare their RAM.
        run.destination_status_before_cont = dst.status()
        ram = _compare_ram(run)
        dst.qmp.execute("cont")
    elif _holds_destination(run):
        dst.qmp.execute("cont")
    elif run.pause_t is not None and dst.status() == "paused":
        # The guest was stopped on the source before completion: it arrives paused.
        dst.qmp.execute("cont")
    resume = dst.qmp.wait_event("RESUME", 10.0)
    dst_status = dst.status()
    run.destination_status = dst_status
    if dst_status != "running":
        run.outcome = "failed"
        run.error = f"destination is {dst_status!r} after migration, expected 'running'"
    if src_status != "postmigrate":
        run.warnings.append(f"source is {src_status!r}, expected 'postmigrate'")
    if resume is None:
        run.warnings.append("no RESUME event from the destination")
    # Keep reading the workload on the destination.
    ctx.stop.sleep(cell.limits.observe_after_s)
    if cell.workload.writer is not None:
        stamps = _verify_stamps(dst.console, src.console)
        if stamps.verdict == "unchecked" and not dst.console.records("writer"):
            # It wrote every 100 ms on the source; on the destination not one line, and no
            # answer to `verify`: the guest stopped running there (QEMU 7.2 under TCG, seen).
            silent = GuestSilent(
                reason="the guest's writer, which reported every 100 ms on the source, wrote "
                       "nothing on the destination after it resumed there and did not answer "
                       "`verify`: the guest stopped running")
    panics = dst.console.panic_lines()
    if panics:
        crash = GuestCrash(lines=tuple(panics[:10]))
    run.integrity = Integrity.judge(stamps=stamps, ram=ram, guest_crash=crash,
                                    guest_silent=silent, disk=disk)


def _verify_stamps(dst_console: Console, src_console: Console) -> StampsCheck:
    """Ask the writer on the destination to check every page's stamp."""
    asked = time.time()
    dst_console.send("verify\n")
    answer = None
    deadline = time.monotonic() + 30.0
    while answer is None and time.monotonic() < deadline:
        answer = dst_console.wait_for("verify", 0.5, after=asked - 0.001)
        if answer is None and dst_console.panic_lines():
            break  # a crashed guest will not answer; the crash itself is the verdict
    running_bad = max((r.num("bad") for r in dst_console.records("writer")), default=0.0)
    before_bad = max((r.num("bad") for r in src_console.records("writer")), default=0.0)
    if answer is None:
        return StampsCheck(verdict="unchecked",
                           reason="the writer did not answer `verify` within 30 s",
                           continuous_bad=int(running_bad))
    bad = int(answer.num("bad"))
    corrupted = bad > 0 or running_bad > before_bad
    return StampsCheck(verdict="corrupted" if corrupted else "ok",
                       pages=int(answer.num("pages")), bad_pages=bad,
                       continuous_bad=int(running_bad - before_bad))


def _ram_digests(vm: Vm, path: Path) -> list[bytes]:
    # Hashed on the host that holds the dump, which it then deletes: only digests travel.
    out = vm.host.run([vm.host.python, "-c", HASH_PAGES_PY, str(path)], timeout=300,
                      stop=vm.stop)
    return [bytes.fromhex(line) for line in out.split()]


def _compare_ram(run: _Run) -> RamCheck:
    src, dst = run.src, run.dst
    assert src is not None and dst is not None
    size = run.ctx.cell.guest.memory_mib * 1024 * 1024
    if size > 3 * 1024**3:
        return RamCheck(verdict="unchecked", reason="RAM comparison supports guests up to 3 GiB")
    started = time.time()

    def dump_and_hash(vm: Vm) -> list[bytes]:
        path = vm.cfg.workdir / "ram.dump"
        vm.qmp.execute("pmemsave", {"val": 0, "size": size, "filename": str(path)}, timeout=120)
        return _ram_digests(vm, path)

    # Both hosts dump and hash at once (on remote hosts the work happens there).
    with ThreadPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(dump_and_hash, (src, dst)))
    every = differing_pages(digests[0], digests[1])
    # 0xA0000-0xFFFFF is the legacy VGA/option-ROM window, not guest RAM: what pmemsave reads
    # there depends on PAM and ROM mappings, and under load it was seen to differ between the
    # two QEMUs with intact guests. It is reported but not judged.
    diff = [p for p in every if not LEGACY_WINDOW[0] <= p < LEGACY_WINDOW[1]]
    return RamCheck(verdict="corrupted" if diff else "ok", pages=len(digests[0]),
                    differing_pages=len(diff), first_differing=tuple(diff[:20]),
                    legacy_window_differing=len(every) - len(diff),
                    seconds=round(time.time() - started, 2))


def _start_cpu_sampling(run: _Run) -> None:
    """Per-thread CPU of both QEMUs at the query-migrate rate (``limits.sample_hz``, 20 Hz by
    default; never below the probe's 10 Hz); a sampler that cannot start is a warning. A thread
    shows only if two samples see it: the compress and migration threads of a sub-second
    migration live a few hundred ms, and at 10 Hz a 7.2 compress run lost them one time in four
    (tests/integration/test_slides.py)."""
    hz = _cpu_hz(run)
    for vm in (run.src, run.dst):
        if vm is None or vm.pid is None:
            continue
        try:
            sampler = cpu_sampling.CpuSampler(vm.pid, hz, stream=vm.host.cpu_sampler_stream(),
                                              stop=vm.stop)
            sampler.start()
            run.cpu[vm.cfg.role] = sampler
        except Exception as exc:  # noqa: BLE001 - sampling must not fail the migration
            run.warnings.append(f"CPU sampler on the {vm.cfg.role} did not start: {exc}")


def _cpu_hz(run: _Run) -> float:
    return max(CPU_HZ, float(run.ctx.cell.limits.sample_hz))


def _finish_cpu_sampling(run: _Run) -> None:
    if not run.cpu:
        return
    samplers, run.cpu = run.cpu, {}
    t0 = run.t0
    final = run.final
    if final is not None and final.status == "completed" and final.total_time:
        end = t0 + final.total_time / 1000
    else:
        end = t0 + (run.timeline[-1].t if run.timeline else 0.0)
    sides: dict[Role, CpuSide] = {}
    for role, sampler in samplers.items():
        try:
            trace = sampler.stop()
        except Exception as exc:  # noqa: BLE001
            run.warnings.append(f"CPU sampler on the {role}: {exc}")
            continue
        if t0 <= 0 or end <= t0:
            continue
        summary = cpu_sampling.summarise(trace, t0, end)
        summary["timeline"] = [
            {**p, "t": round(p["t"] - t0, 3)}
            for p in cpu_sampling.timeline(trace, t0 - 1.0, end + 1.0)
        ]
        sides[role] = CpuSide.model_validate(summary)
    run.cpu_record = CpuRecord(hz=_cpu_hz(run), window=(t0, end),
                               source=sides.get("source"), destination=sides.get("destination"))


def _teardown(run: _Run) -> None:
    run.state("teardown")
    for sampler in run.cpu.values():
        sampler.stop_quietly()
    try:
        _finish_cpu_sampling(run)
    except Exception as exc:  # noqa: BLE001 - a summary problem must not leak QEMUs
        run.warnings.append(f"CPU summary failed: {exc!r}")
    try:
        _finish_workloads(run)
    except Exception as exc:  # noqa: BLE001 - a summary problem must not leak QEMUs
        run.warnings.append(f"workload summary failed: {exc!r}")
    if run.storage is not None:
        run.storage.abort(run.src, run.dst)
    for vm in (run.src, run.dst):
        if vm is None:
            continue
        role = vm.cfg.role
        try:
            vm.shutdown()
        finally:
            run.vms[role] = VmInfo.model_validate(vm.describe())
            run.events[role] = [QmpEvent.model_validate(e.to_dict()) for e in vm.qmp.events()]
            run.console[role] = [ConsoleLine.model_validate(ln) for ln in vm.console.to_list()]
    if run.prober is not None:
        run.prober.stop()
    if run.net is not None:
        run.net.close()


def _metrics(run: _Run, writer: list[WriterPoint]) -> Metrics:
    """The run's figures. Times of the migration itself (total, downtime, and what the guest saw
    of the switchover) exist only for a completed migration; a run that did not converge or
    failed still shows how far it got (bytes, syncs, setup)."""
    final = run.final
    ram = final.ram if final is not None else None
    if not ram:
        # A cancelled or failed migration's last answer has no statistics: use the last sample
        # that had them, so "not-converged" still shows how far it got.
        ram = next((s.ram for s in reversed(run.timeline) if s.ram), None)
    completed = run.outcome == "completed"
    total = final.total_time if final is not None else None
    transferred = ram.transferred if ram is not None else None
    host_pause = None
    stops = [e for e in run.events.get("source", []) if e.event == "STOP"
             and e.host_time >= run.t0 > 0]
    resumes = [e for e in run.events.get("destination", []) if e.event == "RESUME"]
    if completed and stops and resumes:
        host_pause = round((resumes[0].qemu_time - stops[0].qemu_time) * 1000, 1)
    stall = stall_guest = None
    if writer and run.t0 > 0:
        end = max(p.t for p in writer)
        stall = _round(stalls.longest_stall_ms([p.t for p in writer], 0.0, end))
        in_window = [p.stall_ms for p in writer if p.t >= 0]
        stall_guest = max(in_window) if in_window else None
    impact = wl.summary_columns(run.guest_impact)
    return Metrics(
        total_time_ms=total if completed else None,
        downtime_ms=final.downtime if completed and final is not None else None,
        setup_time_ms=final.setup_time if final is not None else None,
        transferred_bytes=transferred,
        throughput_mbps=(round(transferred * 8 / total / 1000, 2)
                         if transferred and total else None),
        qemu_mbps=ram.mbps if ram is not None else None,
        dirty_sync_count=ram.dirty_sync_count if ram is not None else None,
        host_pause_ms=host_pause, guest_max_stall_ms=stall,
        guest_max_stall_guest_clock_ms=stall_guest, guest_stall_clock="host-arrival",
        samples=len(run.timeline),
        guest_visible_downtime_ms=guest_visible_downtime(
            run.outcome, stall, run.guest_impact.ping.during.max_gap_ms
            if run.guest_impact.ping is not None else None, impact["service_max_gap_ms"]),
        **impact,
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
