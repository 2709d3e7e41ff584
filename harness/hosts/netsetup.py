"""VM networks for guest NICs: a private bridge on this machine, or the hosts' own bridges.

:class:`LocalVmNetwork` gives a run a guest address and two taps (source and destination QEMU) on
the bridge ``mbbr0``, whose host-side address (10.251.0.1/24 by default) is where the prober sends
from. The bridge has no uplink and the subnet is private and tiny, so probe traffic never leaves
this machine; the guest keeps its IP and MAC when it moves between the two taps.

Concurrent runs (other test sessions) share the bridge: a guest address is held by an ``flock``'d
file under ``/run/migbench/net`` for the life of the context, and bridge creation and removal are
serialised by another lock; the bridge is removed on exit only when no tap is left on it.
Cleanup is idempotent and always runs. Needs root (CAP_NET_ADMIN) and ``ip`` (iproute2).

:class:`HostVmNetwork` is the same for host pairs with a ``vm_bridge`` (SSH hosts): a tap per
QEMU on each host's bridge, made over the Host interface, and the prober on this machine.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

from harness.errors import CommandFailed, HostError
from harness.hosts.host import sh_script
from harness.plan.models import HostSpec

if TYPE_CHECKING:
    from harness.hosts.host import Host

DEFAULT_BRIDGE = "mbbr0"
DEFAULT_HOST_CIDR = "10.251.0.1/24"
LOCK_DIR = Path("/run/migbench/net")
IFNAMSIZ = 15
# A name `ip` and the kernel take as it is: never an option ('-'), a path ('/', '.', '..') or
# blank-separated words.
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")


GUEST_MAC = "52:54:00:4d:42:01"
"""Both QEMUs present this MAC, so the guest's NIC is the same device after it moves."""


@dataclass(frozen=True)
class NetAttachment:
    """Where one QEMU's NIC plugs in: its tap, and the guest's address on the bridge."""

    tap: str  # tap interface this QEMU opens (already created and on the bridge)
    guest_ip: str  # e.g. "10.251.0.2"
    prefix_len: int  # e.g. 24
    host_ip: str  # the bridge's address: the prober's source
    mac: str = GUEST_MAC


def private_network(source: HostSpec, destination: HostSpec) -> bool:
    """Does a pair get the private bridge on this machine (:class:`LocalVmNetwork`)? Yes for two
    local entries without ``vm_bridge``; otherwise guests use each host's own ``vm_bridge``."""
    return (source.transport == destination.transport == "local"
            and not (source.vm_bridge or destination.vm_bridge))


def check_ifname(what: str, name: str) -> None:
    """Refuse an interface name that ``ip`` or /sys would read as something else.

    :raise HostError: naming ``what`` and the fix.
    """
    if not _IFNAME.match(name):
        raise HostError(f"{what} {name!r} is not an interface name: 1-15 letters, digits, "
                        "'_', '.', '-', starting with a letter, digit or '_'")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        cp = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                            check=False)
    except FileNotFoundError:
        raise HostError("`ip` not found: install iproute2") from None
    if check and cp.returncode != 0:
        raise HostError(
            f"`ip {' '.join(args)}` failed (exit code {cp.returncode}): {cp.stderr.strip()}; "
            "the VM network needs root (CAP_NET_ADMIN)"
        )
    return cp


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def bridge_ports(bridge: str) -> list[str]:
    cp = _ip("-j", "link", "show", "master", bridge, check=False)
    if cp.returncode != 0 or not cp.stdout.strip():
        return []
    return [str(x["ifname"]) for x in json.loads(cp.stdout)]


def check_subnet(host_cidr: str, bridge: str, routes_json: str) -> ipaddress.IPv4Interface:
    """Validate ``host_cidr``: private, IPv4, at most a /24, and routed nowhere but ``bridge``.

    ``routes_json`` is ``ip -j route show`` output (pure so that it can be tested).
    :raise HostError: with the reason and the fix.
    """
    try:
        iface = ipaddress.IPv4Interface(host_cidr)
    except ValueError as exc:
        raise HostError(f"VM network address {host_cidr!r} is not IPv4 CIDR: {exc}") from None
    net = iface.network
    if not net.is_private or net.prefixlen < 24:
        raise HostError(
            f"VM network {net} must be a private subnet of at most 256 addresses (e.g. "
            f"{DEFAULT_HOST_CIDR}) so that probe traffic cannot leave this machine"
        )
    for r in json.loads(routes_json or "[]"):
        dst = r.get("dst", "")
        if dst in ("", "default") or r.get("dev") == bridge:
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if isinstance(other, ipaddress.IPv4Network) and other.overlaps(net):
            raise HostError(
                f"VM network {net} overlaps route {dst} on {r.get('dev')}; pick another private "
                "subnet for the VM bridge"
            )
    return iface


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


class _TapNetwork:
    """What both VM networks share: tap names, the bridge address, attachments, the context."""

    tag: str
    guest_ip: str | None
    taps: dict[str, str]

    @property
    def _cidr(self) -> str:
        raise NotImplementedError

    def _check_tap_name(self, role: str) -> None:
        name = self.tap_name(role)
        if len(name) > IFNAMSIZ or not name.replace("-", "").isalnum():
            raise ValueError(f"tap name {name!r} is invalid: use a tag of at most 5 "
                             "letters/digits")

    def tap_name(self, role: str) -> str:
        short = {"source": "src", "destination": "dst"}.get(role, role[:3])
        return f"mbtap-{short}-{self.tag}"

    @property
    def host_ip(self) -> str:
        return str(ipaddress.IPv4Interface(self._cidr).ip)

    @property
    def prefix_len(self) -> int:
        return ipaddress.IPv4Interface(self._cidr).network.prefixlen

    def attachment(self, role: str) -> NetAttachment:
        """What :func:`harness.run.workload.qemu_args` needs for ``role``'s QEMU."""
        if self.guest_ip is None or role not in self.taps:
            raise HostError(f"{type(self).__name__} is not set up: use it as a context manager")
        return NetAttachment(tap=self.taps[role], guest_ip=self.guest_ip,
                             prefix_len=self.prefix_len, host_ip=self.host_ip, mac=GUEST_MAC)

    def __enter__(self) -> Self:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@dataclass
class LocalVmNetwork(_TapNetwork):
    """Bridge + a tap per QEMU for one run; ``with LocalVmNetwork(tag) as net: ...``.

    ``tag`` (up to 5 letters/digits, e.g. part of a run id) names the taps ``mbtap-src-<tag>`` and
    ``mbtap-dst-<tag>``; the guest gets the first free address in the bridge's subnet.
    """

    tag: str
    bridge: str = DEFAULT_BRIDGE
    host_cidr: str = DEFAULT_HOST_CIDR
    lock_dir: Path = LOCK_DIR
    roles: Sequence[str] = ("source", "destination")
    guest_ip: str | None = field(default=None, init=False)
    taps: dict[str, str] = field(default_factory=dict, init=False)
    _ip_lock: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_ifname("VM bridge", self.bridge)
        for role in self.roles:
            self._check_tap_name(role)

    @property
    def _cidr(self) -> str:
        return self.host_cidr

    def _setup(self) -> None:
        iface = check_subnet(self.host_cidr, self.bridge, _ip("-j", "route", "show").stdout)
        with _locked(self.lock_dir / f"{self.bridge}.lock"):
            if not link_exists(self.bridge):
                _ip("link", "add", "name", self.bridge, "type", "bridge")
            # No IPv6 on the bridge: no router solicitations or DAD noise in the measurements.
            _sysctl(f"net/ipv6/conf/{self.bridge}/disable_ipv6", "1")
            addrs = _ip("-j", "addr", "show", "dev", self.bridge).stdout
            have = {f"{a['local']}/{a['prefixlen']}" for link in json.loads(addrs or "[]")
                    for a in link.get("addr_info", []) if a.get("family") == "inet"}
            if str(iface) not in have:
                _ip("addr", "add", str(iface), "dev", self.bridge)
            _ip("link", "set", "dev", self.bridge, "up")
            self.guest_ip = self._claim_address(iface)
            for role in self.roles:
                tap = self.tap_name(role)
                if link_exists(tap):
                    _ip("link", "del", "dev", tap, check=False)
                _ip("tuntap", "add", "dev", tap, "mode", "tap")
                self.taps[role] = tap
                _ip("link", "set", "dev", tap, "master", self.bridge)
                _ip("link", "set", "dev", tap, "up")

    def _claim_address(self, iface: ipaddress.IPv4Interface) -> str:
        self._ip_lock, address = claim_address(iface, self.lock_dir)
        return address

    def close(self) -> None:
        """Delete this run's taps, release the address, drop the bridge if unused (idempotent)."""
        for tap in list(self.taps.values()):
            _ip("link", "del", "dev", tap, check=False)
        self.taps.clear()
        if self._ip_lock is not None:
            self._ip_lock.close()
            self._ip_lock = None
        self.guest_ip = None
        try:
            with _locked(self.lock_dir / f"{self.bridge}.lock"):
                if link_exists(self.bridge) and not bridge_ports(self.bridge):
                    _ip("link", "del", "dev", self.bridge, check=False)
        except (OSError, HostError):
            pass


def claim_address(iface: ipaddress.IPv4Interface, lock_dir: Path) -> tuple[IO[str], str]:
    """The first address of ``iface``'s subnet (not ``iface`` itself) that no other run holds,
    with its held lock file (close it to release the address)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for host in iface.network.hosts():
        if host == iface.ip:
            continue
        f = (lock_dir / f"{host}.lock").open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return f, str(host)
    raise HostError(f"no free guest address left in {iface.network}")


# Runs on a host: check the bridge, (re)create the tap, plug it in. $1 bridge, $2 tap.
_TAP_SH = (
    'ip link show dev "$1" >/dev/null 2>&1 || { echo "no bridge $1" >&2; exit 3; }; '
    'ip link del dev "$2" >/dev/null 2>&1; '
    'ip tuntap add dev "$2" mode tap && ip link set dev "$2" master "$1" '
    '&& ip link set dev "$2" up'
)


def local_addresses() -> set[str]:
    """IPv4 addresses configured on this machine (in this network namespace)."""
    cp = _ip("-j", "-4", "addr", "show", check=False)
    return {str(a.get("local")) for link in json.loads(cp.stdout or "[]")
            for a in link.get("addr_info", []) if a.get("local")}


@dataclass
class HostVmNetwork(_TapNetwork):
    """Guest NICs on hosts' own VM bridges, over the Host interface (SSH or local).

    For each role a tap ``mbtap-<src|dst>-<tag>`` is created on that host's ``vm_bridge``; the
    guest gets a free address of ``cidr`` (held by a lock on this machine for the context's
    life), and the prober runs on this machine from ``cidr``'s own address, which must be
    configured here and reach the bridges (the test bed's ``mbv-root``). The taps are deleted on
    exit, also when a host became unreachable (then best effort).
    """

    tag: str
    hosts: Mapping[str, Host]  # role -> host whose spec.vm_bridge the role's tap joins
    cidr: str
    lock_dir: Path = LOCK_DIR
    guest_ip: str | None = field(default=None, init=False)
    taps: dict[str, str] = field(default_factory=dict, init=False)
    _ip_lock: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for role, host in self.hosts.items():
            if not host.spec.vm_bridge:
                raise HostError(f"{host.label}: no vm_bridge in hosts.yaml: guest NICs need a "
                                "bridge on the VM network")
            check_ifname(f"{host.label}: vm_bridge", host.spec.vm_bridge)
            self._check_tap_name(role)

    @property
    def _cidr(self) -> str:
        return self.cidr

    def _setup(self) -> None:
        iface = ipaddress.IPv4Interface(self.cidr)
        if self.host_ip not in local_addresses():
            raise HostError(
                f"vm_network {self.cidr}: this machine has no address {self.host_ip}, so the "
                "prober cannot reach guests on the VM network (give this machine that address "
                "on a link to the VM bridge, or fix vm_network in hosts.yaml)")
        self._ip_lock, self.guest_ip = claim_address(iface, self.lock_dir)
        for role, host in self.hosts.items():
            tap = self.tap_name(role)
            bridge = str(host.spec.vm_bridge)
            try:
                host.run(sh_script(_TAP_SH, bridge, tap), timeout=30)
            except CommandFailed as exc:
                if exc.exit_code == 3:
                    raise HostError(f"{host.label}: VM bridge {bridge} does not exist (run "
                                    "`migbench provision --bridge`)") from None
                raise
            self.taps[role] = tap

    def close(self) -> None:
        """Delete the taps on their hosts and release the address (idempotent, never raises)."""
        for role, tap in list(self.taps.items()):
            try:
                self.hosts[role].run(["ip", "link", "del", "dev", tap], timeout=15, check=False)
            except HostError:
                pass  # unreachable: the tap dies with the host's next test bed down / reboot
        self.taps.clear()
        if self._ip_lock is not None:
            self._ip_lock.close()
            self._ip_lock = None
        self.guest_ip = None


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    try:
        path.write_text(value)
    except OSError:
        pass  # no IPv6 in this kernel, or read-only /proc/sys: harmless


def remove_leftovers(prefix: str = "mbtap-") -> list[str]:
    """Delete taps named ``prefix*`` that no process holds open (after a crash); return names."""
    removed = []
    cp = _ip("-j", "link", "show", check=False)
    for link in json.loads(cp.stdout or "[]"):
        name = str(link.get("ifname", ""))
        unused = name.startswith(prefix) and "NO-CARRIER" in link.get("flags", [])
        if unused and _ip("link", "del", "dev", name, check=False).returncode == 0:
            removed.append(name)
    return removed


__all__ = [
    "DEFAULT_BRIDGE",
    "DEFAULT_HOST_CIDR",
    "HostVmNetwork",
    "LocalVmNetwork",
    "check_subnet",
    "remove_leftovers",
]
