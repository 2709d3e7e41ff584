"""The run record, version 2: one migration (or a run that could not start), as stored.

A :class:`RunRecord` is frozen and validated on construction; every part has a model here, so a
reader uses attributes (``rec.metrics.total_time_ms``, ``rec.integrity.ram.differing_pages``)
and never indexes a raw dict. The parts are those the harness measures:

* identity: the :class:`CellRecord` (its coordinates and the settings they expand to), the
  repetition, the QEMU build (:class:`QemuInfo`), the facts of both hosts, the guest image;
* what happened: the outcome and error, the harness's state changes, the ``query-migrate``
  timeline at 20 Hz and QEMU's final answer, QMP events and console lines of both QEMUs;
* what it cost: per-thread CPU on both hosts (:class:`CpuRecord`), the guest's own series
  (memory writer, ping, fio) and their per-phase summaries, and the :class:`Metrics`;
* whether the guest survived: :class:`Integrity` with the detail of every check.

Numbers follow :mod:`harness.results.record.scalars`: never strings, 64-bit integers, NaN as null.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field

from harness.plan.models import (
    FioSpec,
    GuestSpec,
    Limits,
    PingSpec,
    StorageSpec,
    WorkloadSpec,
    WriterSpec,
)
from harness.results.record.qmp import MigrationInfo, QmpEvent, TimelineSample
from harness.results.record.scalars import (
    Bool,
    CellId,
    Float,
    Frozen,
    Int,
    Json,
    JsonObject,
    Name,
    OptFloat,
    OptInt,
    Role,
    Utc,
    Verdict,
    plain,
)

SCHEMA_VERSION = 2
Outcome = Literal["completed", "not-converged", "failed", "skipped"]
#: What a run came to: its outcome, or ``corrupted`` when an integrity check found damage
#: (whatever its timing: a fast migration of a corrupted guest is no result).
Status = Literal["corrupted", "failed", "not-converged", "skipped", "completed"]
#: Statuses from worst to best, for "did it get better or worse".
STATUS_RANK: dict[str, int] = {"corrupted": 0, "failed": 1, "not-converged": 2, "skipped": 3,
                               "completed": 4}
#: The harness's states of one run, in order (see harness.run.migration).
State = Literal["boot", "steady", "setup", "migrate", "verify", "teardown"]

T = TypeVar("T")


class PerSide(Frozen, Generic[T]):
    """One value for each QEMU of the run."""

    source: T
    destination: T


# ---------------------------------------------------------------------------------------------
# Identity


class VariantRecord(Frozen):
    """The variant as the matrix file defined it (``Variant``): build, extra args, knobs."""

    build: str | None = None
    qemu_args: tuple[str, ...] = ()
    migration: JsonObject = {}


class MigrationRequest(Frozen):
    """The QEMU settings a cell asks for (``MigrationConfig``): what its feature and knobs became."""

    feature: str
    capabilities: dict[str, Bool] = {}
    parameters: JsonObject = {}
    harness: JsonObject = {}  # harness knobs: postcopy-after-syncs, pause-after-syncs ...
    destination: JsonObject | None = None  # the destination's parameters, when they differ
    unlimited: tuple[str, ...] = ()  # parameters given as `unlimited` (QEMU was given 0)


# The cell's workload, guest and limits are the matrix file's own models, validated strictly here:
# a file that says "rate_mib_s": "32" was not written by migbench.
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


class WriterRecord(WriterSpec):
    model_config = _STRICT


class PingRecord(PingSpec):
    model_config = _STRICT


class FioRecord(FioSpec):
    model_config = _STRICT


class WorkloadRecord(WorkloadSpec):
    model_config = _STRICT
    writer: WriterRecord | None = None
    ping: PingRecord | None = None
    fio: FioRecord | None = None


class GuestRecord(GuestSpec):
    model_config = _STRICT


class LimitsRecord(Limits):
    model_config = _STRICT


class StorageRecord(StorageSpec):
    model_config = _STRICT


class CellRecord(Frozen):
    """A cell of the matrix: its id, its coordinates (``axes``) and all it expanded to."""

    id: CellId
    matrix: Name
    variant: str
    variant_spec: VariantRecord
    build: str
    axes: dict[str, Json]
    workload: Annotated[WorkloadRecord, BeforeValidator(plain)]
    guest: Annotated[GuestRecord, BeforeValidator(plain)]
    limits: Annotated[LimitsRecord, BeforeValidator(plain)]
    integrity: Literal["stamps", "ram"]
    migration: MigrationRequest
    storage: StorageRecord | None = None  # None: shared storage (and files before issue 17)


class QemuInfo(Frozen):
    """The QEMU build of the run; version and binaries as probed (absent if never probed)."""

    build: str
    version: str | None = None
    source_binary: str | None = None
    destination_binary: str | None = None
    source_build_id: str | None = None  # SHA-256 of the binary
    destination_build_id: str | None = None


class HostFacts(Frozen):
    """A host as recorded with the run (an unreachable SSH host has only its error)."""

    name: str
    transport: Literal["local", "ssh"]
    hostname: str | None = None
    kernel: str | None = None
    cpu_model: str | None = None
    cpus: OptInt = None
    accel: Literal["kvm", "tcg"] | None = None
    accel_reason: str | None = None
    address: str | None = None
    error: str | None = None


class ImageInfo(Frozen):
    """The guest image booted (content-hashed)."""

    kernel: str
    initrd: str
    digest: str
    kernel_release: str | None = None
    pvh: Bool = False
    fio_initrd: str | None = None
    debian_disk: str | None = None  # the Debian guest's root disk (the base of each run's overlay)
    debian_initrd: str | None = None


class HarnessInfo(Frozen):
    """Which migbench ran it, from which matrix file, on which host pair."""

    commit: str
    matrix_file: str
    pair: str | None = None


# ---------------------------------------------------------------------------------------------
# What happened


class StateChange(Frozen):
    state: State
    t: Float  # epoch s


class ConsoleLine(Frozen):
    t: Float  # epoch s of arrival at the host
    line: str


class VmInfo(Frozen):
    """One QEMU process: its command line, pid, exit code and the tail of its log."""

    role: Role
    host: str | None = None  # the host's name in the pair (not recorded before the store's DataFrame)
    argv: tuple[str, ...] = ()
    pid: OptInt = None
    exit_code: OptInt = None
    qemu_log_tail: str = ""


class AppliedSide(Frozen):
    """What one QEMU reported back after setup (``query-migrate-capabilities`` / ``-parameters``)."""

    capabilities: dict[str, Bool] = {}
    parameters: JsonObject = {}


class AppliedSettings(Frozen):
    """The settings both QEMUs really used, and the URI the migration stream took."""

    source: AppliedSide
    destination: AppliedSide
    uri: str | None = None


# ---------------------------------------------------------------------------------------------
# What it cost


class CpuThread(Frozen):
    tid: Int
    comm: str
    cls: str = Field(alias="class")
    pct: Float


class CpuPoint(Frozen):
    t: Float  # seconds after the migrate command (end of the interval)
    classes: dict[str, Float] = {}


class CpuSide(Frozen):
    """One QEMU's CPU over the migration window: percent of one core per thread class."""

    classes: dict[str, Float] = {}
    threads: tuple[CpuThread, ...] = ()  # the busiest threads
    window_s: Float
    samples: Int
    timeline: tuple[CpuPoint, ...] = ()


class CpuRecord(Frozen):
    hz: Float
    window: tuple[Float, Float]  # epoch s: the migrate command, the end of the migration
    source: CpuSide | None = None  # None: that side's sampler did not run
    destination: CpuSide | None = None


class WriterPoint(Frozen):
    """One report of the guest's memory writer."""

    t: Float  # arrival at the host, seconds after the migrate command
    host: Role
    guest_t: Float  # the guest's own clock
    rate: Float  # MiB/s
    stall_ms: Float  # longest stall the writer saw on its own clock
    bad: Float  # pages whose stamp it found wrong


class PingPoint(Frozen):
    seq: Int
    t: Float  # sent, seconds after the migrate command
    rtt_ms: OptFloat = None  # None: no reply


class FioPoint(Frozen):
    """One per-second fio line (see harness.run.sampling.fio); times in epoch s."""

    t_host: Float
    host: Role
    seq: Int
    t_guest: OptFloat = None
    dt: OptFloat = None
    iops: OptFloat = None
    r_iops: OptFloat = None
    w_iops: OptFloat = None
    lat_p50_us: OptFloat = None
    lat_p99_us: OptFloat = None
    lat_p999_us: OptFloat = None
    lat_max_us: OptFloat = None
    r_lat_p99_us: OptFloat = None
    w_lat_p99_us: OptFloat = None
    err: Int = 0
    iops_host: OptFloat = None
    t_start_host: OptFloat = None


class ServicePoint(Frozen):
    """100 ms of a service's load (harness.run.sampling.servicestats.timeline): replies that
    arrived in it, their latency from when each request was due."""

    t: Float  # the bin's start, seconds after the migrate command
    ops: Float  # achieved ops/s
    p50_ms: OptFloat = None
    p99_ms: OptFloat = None
    p999_ms: OptFloat = None
    max_ms: OptFloat = None
    errors: Int = 0
    timeouts: Int = 0


class GuestSeries(Frozen):
    writer: tuple[WriterPoint, ...] = ()
    ping: tuple[PingPoint, ...] = ()
    fio: tuple[FioPoint, ...] = ()
    service: tuple[ServicePoint, ...] = ()  # redis or memcached under load (None: older files)


class PingPhase(Frozen):
    sent: Int
    lost: Int
    max_lost_run: Int
    max_gap_ms: OptFloat = None
    rtt_p50_ms: OptFloat = None
    rtt_p99_ms: OptFloat = None
    rtt_max_ms: OptFloat = None


class PingGap(Frozen):
    ms: Float
    start: Float
    end: Float


class PingImpact(Frozen):
    interval_ms: Float
    timeout_ms: Float
    before: PingPhase
    during: PingPhase
    after: PingPhase
    total: PingPhase
    first_probe: OptFloat = None
    max_gap: PingGap | None = None
    replies_after_switchover: Int = 0


class FioPhase(Frozen):
    samples: Int
    iops_mean: OptFloat = None
    iops_min: OptFloat = None
    iops_host_mean: OptFloat = None
    iops_host_min: OptFloat = None
    zero_iops_samples: Int = 0
    lat_p50_us_median: OptFloat = None
    lat_p99_us_median: OptFloat = None
    lat_p99_us_max: OptFloat = None
    lat_max_us: OptFloat = None
    max_report_gap_ms: OptFloat = None
    errors: Int = 0


class FioImpact(Frozen):
    before: FioPhase
    during: FioPhase
    after: FioPhase
    on_destination: Int = 0


class ServicePhase(Frozen):
    """The requests due in one phase of a service's load."""

    requests: Int = 0
    completed: Int = 0
    ops_s: OptFloat = None  # replies that arrived in the phase, per second
    p50_ms: OptFloat = None
    p99_ms: OptFloat = None
    p999_ms: OptFloat = None
    max_ms: OptFloat = None
    errors: Int = 0
    timeouts: Int = 0  # answered after timeout_ms, or never
    max_gap_ms: OptFloat = None  # longest window in the phase with no completed request
    send_lag_p99_ms: OptFloat = None  # p99 of how late the load wrote its requests (this machine)


class DatasetCheck(Frozen):
    """Every key the load wrote, read back after the migration."""

    verdict: Literal["ok", "corrupted", "unchecked"]
    keys: Int = 0
    missing: Int = 0
    wrong: Int = 0
    ambiguous: Int = 0  # keys whose last SET was never answered (either version accepted)
    first_bad: tuple[Int, ...] = ()
    reason: str | None = None


class ServiceImpact(Frozen):
    """A service (redis, memcached) under a fixed request rate through the migration."""

    kind: Literal["redis", "memcached"]
    rate_ops: Float
    clients: Int
    timeout_ms: Float
    before: ServicePhase
    during: ServicePhase
    after: ServicePhase
    total: ServicePhase
    max_gap: PingGap | None = None  # the service-visible downtime, epoch times
    dataset: DatasetCheck | None = None


class GuestImpact(Frozen):
    """Per-phase summaries (before / during / after the migration) of what the guest saw."""

    ping: PingImpact | None = None
    fio: FioImpact | None = None
    service: ServiceImpact | None = None


class Metrics(Frozen):
    """The figures of a run (``summary.csv``'s); None where the run has no such figure."""

    total_time_ms: OptInt = None
    downtime_ms: OptInt = None
    setup_time_ms: OptInt = None
    transferred_bytes: OptInt = None
    throughput_mbps: OptFloat = None
    qemu_mbps: OptFloat = None
    dirty_sync_count: OptInt = None
    host_pause_ms: OptFloat = None
    guest_max_stall_ms: OptFloat = None
    guest_max_stall_guest_clock_ms: OptFloat = None
    guest_stall_clock: Literal["host-arrival"] | None = None
    samples: OptInt = None
    ping_lost: OptInt = None
    ping_max_gap_ms: OptFloat = None
    ping_rtt_p99_ms: OptFloat = None
    fio_iops_before: OptFloat = None
    fio_iops_during: OptFloat = None
    fio_lat_p99_us_before: OptFloat = None
    fio_lat_p99_us_during: OptFloat = None
    guest_visible_downtime_ms: OptFloat = None
    service_p99_ms: OptFloat = None  # redis/memcached p99 of the requests due during migration
    service_max_gap_ms: OptFloat = None  # longest window with no completed request


class Phases(Frozen):
    """Where a run's wall-clock time went, in seconds (issue 18), from the runner picking the run
    up to its folders removed; the phases add up to ``wall_s``. A phase the run never reached is
    None (a run that failed to boot has no migration). See :mod:`harness.analysis.overhead`."""

    wall_s: Float
    prepare_s: OptFloat = None  # probes, folders, a warm start's saved guest when first needed
    start_s: OptFloat = None  # QEMUs started, the guest booted (or restored) to its first report
    steady_s: OptFloat = None  # waiting for the workload to report a steady rate
    setup_s: OptFloat = None  # capabilities and parameters, calc-dirty-rate, CPU samplers
    # (a warm start's calc-dirty-rate runs during steady_s: harness.run.migration)
    migration_s: OptFloat = None  # `migrate` to the end of the migration
    observation_s: OptFloat = None  # after a completion: integrity checks and observe_after_s
    teardown_s: OptFloat = None  # QEMUs stopped, the record built, the folders removed


class RepetitionRule(Frozen):
    """The matrix's ``repetitions: {min, max, ci}`` a run was part of (issue 18), kept so that a
    report can say why each cell stopped; absent for a fixed number of repetitions."""

    min: Int = Field(ge=1)
    max: Int = Field(ge=1)
    ci: Float = Field(gt=0, lt=1)  # the target: the interval's half-width over the mean
    ci_ms: Float | None = Field(None, ge=0)  # or this half-width in ms, whichever is wider


def switched_over(outcome: str) -> bool:
    """Did the guest switch over to the destination? Only a completed migration stops the guest
    and resumes it there; one that did not converge, or failed, leaves it on the source."""
    return outcome == "completed"


def guest_visible_downtime(outcome: str, *stalls: float | None) -> float | None:
    """What a client of the guest saw of the switchover: the longest stall any guest workload
    saw on the host clock (the writer's, the prober's gap during the migration).

    Defined only when the guest switched over (:func:`switched_over`): a migration that did not
    converge never stopped the guest, so a stall it saw is not a downtime.
    """
    seen = [v for v in stalls if v is not None]
    return max(seen) if switched_over(outcome) and seen else None


# ---------------------------------------------------------------------------------------------
# Integrity


class StampsCheck(Frozen):
    """The guest writer's check of every page's stamp, asked on the destination."""

    verdict: Verdict
    pages: OptInt = None
    bad_pages: OptInt = None
    continuous_bad: OptInt = None  # stale pages the writer found while running
    reason: str | None = None  # why unchecked


class RamCheck(Frozen):
    """Both guests' RAM hashed page by page after the migration (``integrity: ram``)."""

    verdict: Verdict
    pages: OptInt = None
    differing_pages: OptInt = None
    first_differing: tuple[Int, ...] = ()
    legacy_window_differing: OptInt = None  # 0xA0000-0xFFFFF: reported, not judged
    seconds: OptFloat = None
    reason: str | None = None


class DiskCheck(Frozen):
    """Both disks of a ``storage: copy`` run hashed on their hosts after the switchover, both
    guests paused (per MiB chunk, BLAKE2b): the destination's copy must equal the source."""

    verdict: Verdict
    disk_bytes: OptInt = None
    chunk_bytes: OptInt = None
    chunks: OptInt = None
    differing_chunks: OptInt = None
    first_differing: tuple[Int, ...] = ()  # chunk indices
    source_digest: str | None = None  # over the chunk digests, hex
    destination_digest: str | None = None
    seconds: OptFloat = None
    reason: str | None = None


class GuestCrash(Frozen):
    lines: tuple[str, ...] = ()  # the destination console's panic lines


class GuestSilent(Frozen):
    reason: str


class Integrity(Frozen):
    """The verdict on the guest after the migration, and each check that led to it."""

    verdict: Verdict
    stamps: StampsCheck | None = None
    ram: RamCheck | None = None
    guest_crash: GuestCrash | None = None
    guest_silent: GuestSilent | None = None
    disk: DiskCheck | None = None  # storage: copy
    dataset: DatasetCheck | None = None  # a service's keys read back (issue 17)

    @classmethod
    def judge(cls, *, stamps: StampsCheck | None = None, ram: RamCheck | None = None,
              guest_crash: GuestCrash | None = None,
              guest_silent: GuestSilent | None = None,
              disk: DiskCheck | None = None, dataset: DatasetCheck | None = None) -> Integrity:
        """The checks with their verdict: ``corrupted`` if any check found damage (a guest that
        crashed or stopped running on the destination counts), ``ok`` if at least one check
        passed, else ``unchecked``."""
        verdicts = [c.verdict for c in (ram, stamps, disk, dataset) if c is not None]
        verdict: Verdict
        if guest_crash is not None or guest_silent is not None or "corrupted" in verdicts:
            verdict = "corrupted"
        else:
            verdict = "ok" if "ok" in verdicts else "unchecked"
        return cls(verdict=verdict, stamps=stamps, ram=ram, guest_crash=guest_crash,
                   guest_silent=guest_silent, disk=disk, dataset=dataset)

    def with_dataset(self, dataset: DatasetCheck) -> Integrity:
        """The verdict again, with a service's dataset read back after the switchover."""
        return Integrity.judge(stamps=self.stamps, ram=self.ram, guest_crash=self.guest_crash,
                               guest_silent=self.guest_silent, disk=self.disk, dataset=dataset)


# ---------------------------------------------------------------------------------------------
# The record


class DirtyRateMeasurement(Frozen):
    """One ``calc-dirty-rate`` on the source, the guest steady, before ``migrate``."""

    mode: Literal["page-sampling", "dirty-bitmap", "dirty-ring"]
    period_s: Float = Field(gt=0)  # the calc-time asked for
    dirty_rate_mib_s: OptFloat = None  # QEMU's answer (None: no figure; see error)
    pages_per_s: OptFloat = None  # the same in target pages per second
    sample_pages: OptInt = None  # page-sampling: pages hashed per GiB
    error: str | None = None  # why there is no figure (QEMU refused, the deadline passed)


class PreMigration(Frozen):
    """Measured on the source after the workload was steady, before the migration (issue 16)."""

    calc_dirty_rate: tuple[DirtyRateMeasurement, ...] = ()
    writer_rate_mib_s: OptFloat = None  # the writer's own reported rate at that time

    def best(self) -> DirtyRateMeasurement | None:
        """The measurement to trust: a whole-RAM one (dirty ring, dirty bitmap) over sampling."""
        rank = {"dirty-ring": 0, "dirty-bitmap": 1, "page-sampling": 2}
        got = [m for m in self.calc_dirty_rate if m.dirty_rate_mib_s is not None]
        return min(got, key=lambda m: rank[m.mode]) if got else None


class StartInfo(Frozen):
    """How the run's source guest came up (issue 18): booted (``cold``), or restored from a
    state saved once per campaign from a guest booted to the same steady workload (``warm``)."""

    kind: Literal["cold", "warm"] = "cold"
    reason: str | None = None  # why the run booted although a warm start was possible or asked
    method: Literal["file+mapped-ram", "file", "exec"] | None = None  # how the state was saved
    state: str | None = None  # the saved state's key: the same for every run restored from it
    restore_s: OptFloat = None  # QEMU started to the restored guest ready to run


class MirrorSample(Frozen):
    """One ``query-block-jobs`` answer for the disk mirror of a ``storage: copy`` run."""

    t: Float  # seconds after the mirror started
    status: str  # QEMU's job status: running, ready, ...
    offset: Int  # bytes copied so far
    length: Int  # bytes it must copy (grows with the guest's writes)


class StorageRun(Frozen):
    """The disk copy of a ``storage: copy`` run (libvirt's ``--copy-storage-all``): the
    destination's NBD export, the source's mirror job, and what it took."""

    mode: Literal["copy"] = "copy"
    disk_bytes: Int
    nbd: str | None = None  # address:port of the destination's export (the migration network)
    sync_s: OptFloat = None  # mirror start -> READY: the disk copy before the RAM migration
    bytes_at_ready: OptInt = None
    mirrored_bytes: OptInt = None  # the job's progress at its end, writes during RAM included
    switchover_ms: OptFloat = None  # at pre-switchover: completing the mirror, then continue
    total_s: OptFloat = None  # mirror start -> migration completed (disk + RAM)
    job: tuple[MirrorSample, ...] = ()
    error: str | None = None


class RunRecord(Frozen):
    """One repetition of one cell: ``results/<campaign>/<cell id>/<repetition>.json``."""

    schema_version: Literal[2]
    campaign: Name
    cell: CellRecord
    repetition: Int = Field(ge=1)
    started_utc: Utc
    finished_utc: Utc
    outcome: Outcome
    error: str | None = None
    warnings: tuple[str, ...] = ()
    workload_errors: tuple[str, ...] = ()  # guest workloads that died, per side
    integrity: Integrity
    timing_excluded: Bool  # figures kept out of timing statistics (RAM compared after the run)
    qemu: QemuInfo
    hosts: PerSide[HostFacts]
    image: ImageInfo | None = None  # None: the run never booted (skipped, probe failed)
    harness: HarnessInfo | None = None
    states: tuple[StateChange, ...] = ()
    boot_s: OptFloat = None
    steady_rate_mib_s: OptFloat = None
    pre: PreMigration | None = None  # measured before the migration (None: older files)
    storage: StorageRun | None = None  # storage: copy (None: shared storage, older files)
    start: StartInfo | None = None  # cold or warm start (None: older files, which booted)
    applied: AppliedSettings | None = None
    migrate_start_utc: Utc | None = None
    postcopy_start_t: OptFloat = None  # seconds after the migrate command
    pause_t: OptFloat = None
    timeline: tuple[TimelineSample, ...] = ()
    final: MigrationInfo | None = None
    source_status: str | None = None  # QEMU run states after the migration
    destination_status: str | None = None
    destination_status_before_cont: str | None = None
    destination_loaded_t: OptFloat = None
    events: PerSide[tuple[QmpEvent, ...]] = PerSide(source=(), destination=())
    console: PerSide[tuple[ConsoleLine, ...]] = PerSide(source=(), destination=())
    vms: PerSide[VmInfo | None] = PerSide(source=None, destination=None)
    cpu: CpuRecord | None = None
    guest: GuestSeries = GuestSeries()
    guest_impact: GuestImpact = GuestImpact()
    metrics: Metrics
    phases: Phases | None = None  # where the run's time went (None: older files)
    repetitions: RepetitionRule | None = None  # None: a fixed number of repetitions

    @property
    def status(self) -> Status:
        """``corrupted`` if an integrity check found damage, else the outcome."""
        return "corrupted" if self.integrity.verdict == "corrupted" else self.outcome
