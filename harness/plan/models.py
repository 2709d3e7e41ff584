"""Validated, frozen models for hosts and matrix files, and the Cell a run executes.

Everything past :mod:`harness.plan.config` is one of these models: no raw dicts from YAML travel further.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.errors import shorten
from harness.plan.repetitions import Repetitions, validate_repetitions
from harness.plan.units import parse_bytes

_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")  # no leading '-': not an option
# qemu_args of a matrix: only options that shape the virtual machine, each followed by its value,
# and no value naming something on the host (a file QEMU would open or create as its user, a
# directory, a device, a descriptor or a program to run). Anything else belongs in hosts.yaml.
QEMU_ARG_OPTIONS = ("-cpu", "-machine", "-M", "-global", "-device", "-object", "-overcommit",
                    "-rtc", "-icount")
_HOST_RESOURCE = re.compile(r"(?:^|[,.])(script|downscript|helper|file|filename|path|mem-path|"
                            r"dir|evdev|sock|fd|fds|romfile|logfile|chardev|drive|netdev|"
                            r"vhostfd|vhostfds)=")
KEBAB = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

# Limits of the validation pass (README, Security). Names become folder names, labels and
# arguments: a conservative alphabet, no leading dot or dash.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
#: A working folder on a host: absolute, plain characters (it reaches remote shells and paths).
WORKDIR_PATTERN = r"^/[A-Za-z0-9._/+-]{0,199}$"
USER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"
HOSTNAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB of guest RAM
MAX_VCPUS = 64
MIN_WRITER_RATE = 4 / 1024  # MiB/s: one 4 KiB page a second

# Strict: YAML's `yes` is not 1 and 1.5 is not 1; a float field takes 1 or 1.5, never .inf.
Int = StrictInt
Real = Annotated[float, Strict()]

#: Validation context of the files harness.plan.config reads: the rules below that name a pattern
#: apply to them. A model built by code is trusted, and the quoting layer treats every value as
#: data either way (its tests build hosts with hostile workdirs on purpose).
FILE_INPUT = {"file": True}


def _file_rule(check: Callable[[Any], None]) -> AfterValidator:
    def validator(value: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("file") and value is not None:
            check(value)
        return value

    return AfterValidator(validator)


def _pattern(pattern: str, what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not re.fullmatch(pattern, str(value)):
            raise ValueError(f"{shorten(str(value))} must match {pattern} ({what})")

    return check


def _absolute(path: Path) -> None:
    if not path.is_absolute():
        raise ValueError(f"{shorten(str(path))} is not an absolute path: start it with /")


def _workdir(path: Path) -> None:
    text = str(path)
    if not re.fullmatch(WORKDIR_PATTERN, text) or ".." in path.parts:
        raise ValueError(f"{shorten(text)} must match {WORKDIR_PATTERN} without '..' (an "
                         "absolute path of letters, digits and ._/+-)")


def _address(value: str) -> None:
    try:
        ip = ipaddress.ip_address(value)
        # Python takes anything after % as an IPv6 scope: only an interface name is one
        scope = getattr(ip, "scope_id", None)
        if scope is None or _IFNAME.fullmatch(scope):
            return
    except ValueError:
        pass
    if not re.fullmatch(HOSTNAME_PATTERN, value):
        raise ValueError(f"{shorten(value)} is neither an IP address nor a host name matching "
                         f"{HOSTNAME_PATTERN}")


#: A name from a file (pair, build, variant, workload): a dict key or a value.
Name = Annotated[str, _file_rule(_pattern(NAME_PATTERN, "letters, digits and _.+-"))]
AbsPath = Annotated[Path, _file_rule(_absolute)]
Address = Annotated[str, _file_rule(_address)]
User = Annotated[str, _file_rule(_pattern(USER_PATTERN, "a user name"))]
Workdir = Annotated[Path, _file_rule(_workdir)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# hosts.yaml


class QemuBuild(Frozen):
    """One QEMU build on a host: the binary, and where its firmware and modules live."""

    binary: AbsPath
    datadirs: tuple[AbsPath, ...] = ()  # each passed as -L (QEMU data, then firmware)
    moduledir: AbsPath | None = None  # QEMU_MODULE_DIR for a build unpacked outside /usr


class HostSpec(Frozen):
    """One host of a pair: this machine (``local``) or a machine reached over SSH (``ssh``)."""

    transport: Literal["local", "ssh"] = "local"
    address: Address | None = None  # ssh: host name or IP the harness connects to
    user: User = "root"
    port: Int = Field(22, gt=0, lt=65536)
    identity_file: AbsPath | None = None  # ssh: private key; default: the user's keys / agent
    known_hosts: AbsPath | None = None  # ssh: pinned host keys; default ~/.ssh/known_hosts
    connect_timeout_s: Real = Field(10.0, gt=0, le=300)
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    workdir: Workdir = Path("/tmp/migbench")
    migration_address: Address = "127.0.0.1"  # where the destination listens for migration
    vm_bridge: str | None = None  # bridge for guest NICs (the VM network)
    # The VM network's subnet as "<prober address>/<prefix>": guests get addresses in it and the
    # ping prober sends from <prober address>, which must be on this machine and reach
    # ``vm_bridge`` (the source host's value is used). Needed for ping workloads over SSH.
    vm_network: str | None = None
    qemu: dict[Name, QemuBuild] = Field(default_factory=dict)

    def same_machine(self, other: HostSpec) -> bool:
        """Do both entries name one machine? Both ``local``, or both SSH to the same address and
        port (another user there is another account on the same machine: it shares memory, the
        clock, and the files of a common folder)."""
        if self.transport == "local" and other.transport == "local":
            return True
        return (self.transport == other.transport == "ssh" and self.address == other.address
                and self.port == other.port)

    def lacks_here(self, path: Path) -> bool:
        """Is ``path`` known to be missing on this entry's machine before anything connects?
        Only for this machine (``local``): an SSH host's files are checked on the host (doctor,
        the runner's preflight)."""
        return self.transport == "local" and not path.exists()

    @model_validator(mode="after")
    def _check_ssh(self) -> HostSpec:
        if self.transport == "ssh" and not self.address:
            raise ValueError("transport 'ssh' needs an 'address' (host name or IP)")
        if self.vm_bridge is not None and not _IFNAME.fullmatch(self.vm_bridge):
            raise ValueError(f"vm_bridge {shorten(self.vm_bridge)} is not an interface name "
                             f"(1-15 letters, digits, '-', '_', '.', not starting with '-' or "
                             f"'.': {_IFNAME.pattern})")
        if self.vm_network is not None:
            import ipaddress

            try:
                if "/" not in self.vm_network:
                    raise ValueError("no prefix")
                iface = ipaddress.IPv4Interface(self.vm_network)
            except ValueError:
                raise ValueError(f"vm_network {self.vm_network!r} is not like 10.250.4.1/24 "
                                 "(the prober's address and the prefix)") from None
            if iface.network.prefixlen < 16 or not iface.network.is_private:
                raise ValueError(f"vm_network {self.vm_network}: use a private subnet of at "
                                 "most a /16")
        return self


class HostPair(Frozen):
    source: HostSpec
    destination: HostSpec


class HostsConfig(Frozen):
    """Contents of hosts.yaml (paths already resolved against the file's folder)."""

    qemu_builds: dict[Name, QemuBuild] = Field(default_factory=dict)
    default_build: Name = "10.0"
    pairs: dict[Name, HostPair]

    @model_validator(mode="after")
    def _check(self) -> HostsConfig:
        if not self.pairs:
            raise ValueError("at least one host pair is needed under 'pairs'")
        return self

    def build_for(self, host: HostSpec, name: str) -> QemuBuild | None:
        return host.qemu.get(name) or self.qemu_builds.get(name)


# ---------------------------------------------------------------------------------------------
# matrix files

Pattern = Literal["zero", "text", "random", "sparse"]


class WriterSpec(Frozen):
    """The guest memory writer."""

    working_set_mib: Int = Field(64, gt=0, le=MAX_MEMORY_MIB)
    rate_mib_s: Real = Field(32.0, ge=0, le=1024 * 1024)  # 0: as fast as it can
    pattern: Pattern = "sparse"
    threads: Int | None = Field(None, gt=0, le=256)  # default: one per vCPU

    @field_validator("rate_mib_s")
    @classmethod
    def _a_page_a_second(cls, v: float) -> float:
        # Below a page a second the writer's pacing sleep grows without bound (1e-300 MiB/s
        # would sleep for ever after its first page): no workload, and no "as fast as it can".
        if 0 < v < MIN_WRITER_RATE:
            raise ValueError(f"{v:g} MiB/s is less than a 4 KiB page a second: write 0 for "
                             f"\"as fast as it can\", or at least {MIN_WRITER_RATE:g}")
        return v


class PingSpec(Frozen):
    """A prober beside the guest: a probe every ``interval_ms`` to the guest's IP on the VM bridge."""

    mode: Literal["udp", "icmp"] = "udp"  # udp: echo responder in the guest; icmp: the kernel
    interval_ms: Real = Field(10.0, ge=1.0, le=1000.0)
    port: Int = Field(7777, ge=1, le=65535)  # UDP echo port in the guest
    timeout_ms: Real = Field(1000.0, gt=0, le=10000.0)  # a probe without reply by then is lost

    @model_validator(mode="after")
    def _check(self) -> PingSpec:
        if self.timeout_ms < self.interval_ms:
            raise ValueError(
                f"ping.timeout_ms={self.timeout_ms:g} is shorter than ping.interval_ms="
                f"{self.interval_ms:g}: make the timeout at least one interval"
            )
        return self


FioRw = Literal["randread", "randwrite", "randrw", "read", "write", "rw"]


class FioSpec(Frozen):
    """fio in the guest on the shared virtio-blk disk (``/dev/vda``)."""

    rw: FioRw = "randrw"
    rwmixread: Int = Field(70, ge=0, le=100)  # percent reads, for rw/randrw
    bs: str = Field("4k", pattern=r"^[1-9][0-9]{0,8}[kKmM]?$")
    iodepth: Int = Field(4, ge=1, le=256)
    rate_iops: Int = Field(200, ge=0, le=10_000_000)  # total over reads and writes; 0: no limit
    ioengine: Literal["io_uring", "psync"] = "io_uring"
    direct: StrictBool = True
    disk_mib: Int = Field(256, ge=16, le=65536)  # size of the shared disk file

    @model_validator(mode="after")
    def _check(self) -> FioSpec:
        if self.rw in ("randrw", "rw") and self.rwmixread in (0, 100):
            only = "randwrite/write" if self.rwmixread == 0 else "randread/read"
            raise ValueError(
                f"fio rw={self.rw} with rwmixread={self.rwmixread} is not a mix: "
                f"use rw={only}, or a rwmixread between 1 and 99"
            )
        if self.bs_bytes() % 512:
            raise ValueError(f"fio bs={self.bs} is not a multiple of 512 bytes (the sector size)")
        if self.bs_bytes() > self.disk_mib * 1024 * 1024:
            raise ValueError(f"fio bs={self.bs} is larger than the disk (disk_mib={self.disk_mib})")
        return self

    def bs_bytes(self) -> int:
        mult = {"k": 1024, "m": 1024 * 1024}.get(self.bs[-1].lower(), 1)
        return int(self.bs.rstrip("kKmM")) * mult


class ServiceSpec(Frozen):
    """A service in the guest (the Debian guest) under a fixed request rate from the host side.

    ``clients`` connections share ``rate_ops`` requests per second (open loop: a request is sent
    when it is due, whether or not earlier ones were answered); each client owns its share of
    the ``keys`` (so the last write of a key is known); ``ratio`` is SET:GET as memtier's."""

    clients: Int = Field(4, ge=1, le=256)
    rate_ops: Real = Field(1000.0, gt=0, le=200_000)
    value_bytes: Int = Field(64, ge=16, le=1024 * 1024)
    keys: Int = Field(1000, ge=1, le=1_000_000)
    ratio: str = Field("1:9", pattern=r"^[0-9]{1,4}:[0-9]{1,4}$")
    timeout_ms: Real = Field(1000.0, ge=10, le=60_000)  # a request unanswered by then is late
    maxmem_mib: Int = Field(128, ge=16, le=MAX_MEMORY_MIB)  # the server's memory limit
    port: Int = Field(6379, ge=1, le=65535)  # where the server listens in the guest

    @model_validator(mode="after")
    def _check(self) -> ServiceSpec:
        sets, gets = (int(x) for x in self.ratio.split(":"))
        if sets + gets == 0:
            raise ValueError("ratio 0:0 sends nothing: use SET:GET like 1:9")
        if self.clients > self.keys:
            raise ValueError(f"clients={self.clients} > keys={self.keys}: each client owns a "
                             "share of the keys; use at most as many clients as keys")
        if self.keys * (self.value_bytes + 64) > self.maxmem_mib * 1024 * 1024:
            raise ValueError(f"keys={self.keys} x value_bytes={self.value_bytes} does not fit in "
                             f"maxmem_mib={self.maxmem_mib}: fewer keys, smaller values or a "
                             "larger maxmem_mib")
        return self

    def set_fraction(self) -> float:
        sets, gets = (int(x) for x in self.ratio.split(":"))
        return sets / (sets + gets)


class RedisSpec(ServiceSpec):
    pass


class MemcachedSpec(ServiceSpec):
    port: Int = Field(11211, ge=1, le=65535)


class StressSpec(Frozen):
    """``stress-ng --vm`` in the Debian guest: its own memory dirtying patterns."""

    vm: Int = Field(1, ge=1, le=64)  # workers
    bytes_mib: Int = Field(64, ge=1, le=MAX_MEMORY_MIB)  # per worker
    method: str = Field("all", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")  # --vm-method


# Fields added after result files existed: left out of the dump when unset, so that a cell's id
# and coordinates (hashes of its dump) stay what they were for the workloads they already had.
_LATER_WORKLOADS = ("redis", "memcached", "stress")


class WorkloadSpec(Frozen):
    """Guest workloads that run together, e.g. writer + ping (IO-sensitive VM under memory load)."""

    writer: WriterSpec | None = None
    ping: PingSpec | None = None
    fio: FioSpec | None = None
    redis: RedisSpec | None = None  # services and stress run in the Debian guest only
    memcached: MemcachedSpec | None = None
    stress: StressSpec | None = None

    @model_validator(mode="after")
    def _one_service(self) -> WorkloadSpec:
        if self.redis is not None and self.memcached is not None:
            raise ValueError("redis and memcached in one workload: name one service per "
                             "workload (put the other in a second workload)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for k in _LATER_WORKLOADS:
                if data.get(k) is None:
                    data.pop(k, None)
        return data

    def service(self) -> tuple[Literal["redis", "memcached"], ServiceSpec] | None:
        """(name, spec) of the service under load, if any."""
        if self.redis is not None:
            return "redis", self.redis
        if self.memcached is not None:
            return "memcached", self.memcached
        return None

    def needs_debian(self) -> str | None:
        """The first workload that only the Debian guest has, or None."""
        return next((k for k in _LATER_WORKLOADS if getattr(self, k) is not None), None)


def workload_label(workload: WorkloadSpec | None) -> str:
    """A short name for a workload, e.g. ``writer 64 MiB @ 32 MiB/s random + ping + fio randrw``
    (pure)."""
    if workload is None:
        return "idle"
    parts = []
    writer = workload.writer
    if writer is not None:
        rate = "max" if not writer.rate_mib_s else f"{writer.rate_mib_s:g} MiB/s"
        parts.append(f"writer {writer.working_set_mib} MiB @ {rate} {writer.pattern}")
    if workload.ping is not None:
        parts.append("ping")
    if workload.fio is not None:
        parts.append(f"fio {workload.fio.rw}".strip())
    service = workload.service()
    if service is not None:
        parts.append(f"{service[0]} {service[1].rate_ops:g} ops/s")
    if workload.stress is not None:
        parts.append(f"stress-ng vm {workload.stress.method}")
    return " + ".join(parts) if parts else "idle"


class StorageSpec(Frozen):
    """Where the guest's disk lives during a migration. ``shared``: both QEMUs open one image
    (the default). ``copy``: no shared storage, as libvirt's ``--copy-storage-all``: the
    destination starts on its own blank image of the same size, exports it over NBD on the
    migration network, and the source mirrors its disk there before and during the RAM
    migration (see :mod:`harness.run.storage`)."""

    mode: Literal["shared", "copy"] = "shared"
    # The disk's size; a fio workload's disk_mib sets it too (they must agree).
    disk_mib: Int | None = Field(None, ge=16, le=65536)
    # Hold the destination paused after the switchover until both disks are hashed: the
    # integrity check, at the price of the guest's pause (such runs are kept out of timing).
    verify: StrictBool = True
    sync_timeout_s: Real = Field(600.0, gt=0, le=86400)  # the mirror must be READY by then


def _storage_shorthand(value: object) -> object:
    return {"mode": value} if isinstance(value, str) else value


class GuestSpec(Frozen):
    vcpus: Int = Field(1, gt=0, le=MAX_VCPUS)
    memory_mib: Int = Field(512, ge=128, le=MAX_MEMORY_MIB)
    # initramfs: busybox and our workloads in RAM (the default); debian: Debian 12 on a qcow2
    # root disk with real services (harness.guest.debian).
    image: Literal["initramfs", "debian"] = "initramfs"

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("image") == "initramfs":
            del data["image"]  # cell ids and coordinates as before the field existed
        return data


class Limits(Frozen):
    max_time_s: Real = Field(120.0, gt=0, le=86400)  # cancel and record not-converged after this
    max_dirty_syncs: Int | None = Field(None, gt=0, le=100_000)  # ... or after this many syncs
    steady_timeout_s: Real = Field(60.0, gt=0, le=3600)  # wait for the workload's steady rate
    boot_timeout_s: Real = Field(60.0, gt=0, le=3600)
    observe_after_s: Real = Field(3.0, ge=0, le=3600)  # keep reading the workload afterwards
    sample_hz: Real = Field(20.0, ge=10, le=100)  # query-migrate samples per second


class Variant(Frozen):
    """A named QEMU build and/or extra QEMU arguments; the unit of before/after comparisons."""

    build: Name | None = None  # name in hosts.yaml qemu_builds; default: hosts' default_build
    qemu_args: tuple[str, ...] = Field((), max_length=256)
    migration: dict[str, Any] = Field(default_factory=dict)

    @field_validator("qemu_args")
    @classmethod
    def _only_machine_options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # A matrix is data, not a way to reach the hosts: QEMU runs as the hosts' user, and an
        # option such as -chardev file, -drive or tap's script= would open, create or run
        # something there. Options that shape the guest machine are enough for a variant.
        options = v[0::2]
        for j, opt in enumerate(options):
            if opt not in QEMU_ARG_OPTIONS:
                raise ValueError(f"qemu_args[{2 * j}] {shorten(opt)} is not an option a matrix "
                                 f"may set (allowed: {' '.join(QEMU_ARG_OPTIONS)}, each followed "
                                 "by its value): put host-side set-up in hosts.yaml")
        if len(v) % 2:
            raise ValueError(f"qemu_args[{len(v) - 1}] {shorten(v[-1])} has no value after it")
        for i in range(1, len(v), 2):
            found = _HOST_RESOURCE.search(v[i])
            if found:
                raise ValueError(f"qemu_args[{i}] {shorten(v[i])} names a host file, device or "
                                 f"program ({found.group(1)}=): set it up in hosts.yaml instead")
        return v


class MatrixSpec(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a folder name
    description: str = Field("", max_length=2000)
    # A whole number (today's meaning), or {min, max, ci}: stop when sure (plan/repetitions.py).
    repetitions: Int | Repetitions = 3
    guest: GuestSpec = GuestSpec()
    limits: Limits = Limits()
    integrity: Literal["stamps", "ram"] = "stamps"
    # `storage: copy` is short for `storage: {mode: copy}`
    storage: Annotated[StorageSpec, BeforeValidator(_storage_shorthand)] = StorageSpec()
    workload: WorkloadSpec = WorkloadSpec(writer=WriterSpec())
    workloads: dict[Name, WorkloadSpec] = Field(default_factory=dict)  # named, for a workload axis
    migration: dict[str, Any] = Field(default_factory=dict)  # applied to every cell
    variants: dict[Name, Variant] = Field(default_factory=lambda: {"default": Variant()})
    axes: dict[str, list[Any]] = Field(default_factory=lambda: {"feature": ["precopy"]})
    exclude: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    include: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)  # extra points
    destination_migration: dict[str, Any] = Field(default_factory=dict)  # destination-only params
    shuffle_seed: Int | None = Field(None, ge=0, lt=2**64)
    # run order: all repetitions of a cell before the next ("cells"), or repetition by
    # repetition across cells and variants (A B A B ...) so that machine drift cancels.
    order: Literal["cells", "interleaved"] = "cells"
    # How each run's source guest comes up: restored from a guest saved once (warm, run/warm.py)
    # or booted (cold). None: warm, except for workloads a restore cannot carry.
    start: Literal["warm", "cold"] | None = None

    @field_validator("axes")
    @classmethod
    def _axes_nonempty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty: list at least one value")
            if len({repr(x) for x in values}) != len(values):
                raise ValueError(f"axis {key!r} lists a value twice")
        return v

    @field_validator("repetitions", mode="wrap")
    @classmethod
    def _repetitions(cls, v: Any, handler: Any, info: ValidationInfo) -> int | Repetitions:
        # Not pydantic's union: its errors would name a member (repetitions.int) and not the key.
        return validate_repetitions(v, info.context)

    @field_validator("variants")
    @classmethod
    def _variants_nonempty(cls, v: dict[str, Variant]) -> dict[str, Variant]:
        if not v:
            raise ValueError("list at least one variant")
        return v

    @model_validator(mode="after")
    def _check(self) -> MatrixSpec:
        w = self.workload.writer
        if w is not None and w.working_set_mib >= self.guest.memory_mib - 64:
            raise ValueError(
                f"workload.writer.working_set_mib: {w.working_set_mib} MiB does not fit in "
                f"guest.memory_mib={self.guest.memory_mib} (leave 64 MiB for the guest kernel)"
            )
        self._check_storage()
        for v in self.axes.get("workload", []):
            if not isinstance(v, str) or v not in self.workloads:  # a list is no key (TypeError)
                raise ValueError(
                    f"axes.workload: names {v!r}, which is not under `workloads` "
                    f"(defined: {', '.join(self.workloads) or 'none'})")
        for wname, wspec in self.workloads.items():
            ww = wspec.writer
            if ww is not None and ww.working_set_mib >= self.guest.memory_mib - 64:
                raise ValueError(
                    f"workloads.{wname}.writer.working_set_mib: {ww.working_set_mib} MiB does not "
                    f"fit in guest.memory_mib={self.guest.memory_mib}")
        for wname, wspec in [("workload", self.workload),
                             *((f"workloads.{k}", v) for k, v in self.workloads.items())]:
            needs = wspec.needs_debian()
            if needs and self.guest.image != "debian":
                raise ValueError(f"{wname}.{needs} runs in the Debian guest: set guest.image: "
                                 "debian")
            if wspec.fio is not None and self.guest.image == "debian" \
                    and self.storage.mode == "copy":
                raise ValueError(f"{wname}.fio with guest.image: debian and storage: copy: the "
                                 "copy moves the root disk, not fio's second disk; use storage: "
                                 "shared, or fio in the initramfs guest")
        for name, rules in (("exclude", self.exclude), ("include", self.include)):
            for i, rule in enumerate(rules):
                if not rule:
                    raise ValueError(f"{name}[{i}]: is empty: name at least one axis")
                for key in rule:
                    if key not in self.axes and key != "variant":
                        raise ValueError(
                            f"{name}[{i}]: names {key!r}, which is not an axis "
                            f"(axes: {', '.join(self.axes)})")
        return self

    def _check_storage(self) -> None:
        size = self.storage.disk_mib
        if self.storage.mode == "copy" and self.guest.image == "debian" and size is not None:
            raise ValueError(
                f"storage.disk_mib={size} with guest.image: debian: the disk copied is the "
                "Debian guest's root disk, whose size is its image's; leave disk_mib out")
        for where, w in [("workload", self.workload),
                         *((f"workloads.{k}", v) for k, v in self.workloads.items())]:
            if size is not None and w.fio is not None and w.fio.disk_mib != size:
                raise ValueError(
                    f"storage.disk_mib={size} differs from {where}.fio.disk_mib="
                    f"{w.fio.disk_mib}: the fio disk is the one storage moves; give one size")


def bandwidth_param(value: object) -> int:
    """``max-bandwidth`` in bytes/s from an int or "200mbit"/"25MiB"."""
    return parse_bytes(value)
