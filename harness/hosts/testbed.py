"""A two-host test bed on one machine: network namespaces with their own sshd and shaped links.

``migbench testbed up`` builds::

    root namespace                mbsrc (source host)               mbdst (destination host)
    mbm-src 10.250.1.1 ---------- mgmt0 10.250.1.2  sshd :22
    mbm-dst 10.250.2.1 --------------------------------------------- mgmt0 10.250.2.2  sshd :22
                                  mig0 10.250.3.1 ------ tbf ------ mig0 10.250.3.2   (migration)
    mbv-root 10.250.4.1 --------- vmr0 -[br-vm]- vmx0 ------------- vmx0 -[br-vm]     (VM network)

Each sshd accepts only the test bed's client key for root and has its own host key; both host
keys are pinned in ``<dir>/known_hosts``. The migration link is shaped with ``tc tbf`` on both
ends (``--delay`` needs ``sch_netem``, which is checked, never silently skipped). A guest tap on
either ``br-vm`` is on one L2 segment, so a guest keeps its IP after moving, and a prober in the
root namespace reaches guests through ``mbv-root``. All addresses are private (10.250.0.0/16) and
live only on links created here. ``<dir>/hosts.yaml`` describes the pair for the harness.

``down`` finds everything by name (namespaces, root-side links, sshd processes started with our
config file name), so it also cleans up after a crash, and is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, HostError
from harness.output import console_text, write_failure
from harness.plan.config import hosts_path
from harness.plan.units import parse_bytes

DEFAULT_DIR = Path("/tmp/migbench-testbed")
MARKER = ".migbench-testbed"
SSHD_CONF = "migbench-sshd.conf"  # also how `down` recognises our sshd processes
BRIDGE = "br-vm"
VM_ROOT_LINK = "mbv-root"
VM_ROOT_IP = "10.250.4.1"
VM_NET = "10.250.4.0/24"
RATE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$")
DELAY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(us|ms|s)$")
# The state folder's path goes into sshd's config (HostKey, AuthorizedKeysFile ...), where blanks,
# quotes, '#', '%' tokens and line breaks mean something: only these characters.
DIR_RE = re.compile(r"^/[A-Za-z0-9_./+-]*$")


class TestbedError(HarnessError):
    """The test bed could not be built, changed or inspected."""


@dataclass(frozen=True)
class Node:
    role: str
    ns: str
    root_link: str  # root-namespace end of the management veth
    root_ip: str
    mgmt_ip: str  # sshd listens here
    mig_ip: str  # the migration link

    def dir(self, base: Path) -> Path:
        return base / self.ns


NODES = (
    Node("source", "mbsrc", "mbm-src", "10.250.1.1", "10.250.1.2", "10.250.3.1"),
    Node("destination", "mbdst", "mbm-dst", "10.250.2.1", "10.250.2.2", "10.250.3.2"),
)


def node(role: str) -> Node:
    for n in NODES:
        if n.role == role or n.ns == role:
            return n
    raise TestbedError(f"no test bed host {role!r} (use source or destination)")


# ---------------------------------------------------------------------------------------------
# small command helpers


def _sh(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TestbedError(f"testbed: `{' '.join(argv)}` failed: {exc}") from exc
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise TestbedError(f"testbed: `{' '.join(argv)}` exited {proc.returncode}: "
                           f"{msg[-1] if msg else ''}")
    return proc


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _sh(["ip", *(["-n", ns] if ns else []), *args], check=check)


def _tc(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _sh(["ip", "netns", "exec", ns, "tc", *args], check=check)


def namespaces() -> list[str]:
    out = _sh(["ip", "netns", "list"], check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def _link_exists(name: str, ns: str | None = None) -> bool:
    return _ip("link", "show", "dev", name, ns=ns, check=False).returncode == 0


def _sshd_pids() -> list[int]:
    """sshd processes started with a test bed config file (in any namespace, even orphaned)."""
    out = _sh(["pgrep", "-f", f"sshd .*-f \\S*/{SSHD_CONF}"], check=False).stdout
    return [int(p) for p in out.split()]


def _ns_pids(ns: str) -> list[int]:
    out = _sh(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill_all(pids: list[int], grace_s: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------
# checks


def netem_available() -> bool:
    """Whether tc's netem qdisc (delay emulation) can be used on this kernel."""
    if Path("/sys/module/sch_netem").exists():
        return True
    return _sh(["modprobe", "-q", "sch_netem"], check=False).returncode == 0


def _check_args(rate: str, delay: str | None) -> None:
    if not RATE_RE.match(rate):
        raise TestbedError(f"testbed: --rate {rate!r}: use a tc rate like 1gbit, 200mbit or 500kbit")
    if delay is not None:
        if not DELAY_RE.match(delay):
            raise TestbedError(f"testbed: --delay {delay!r}: use a time like 1ms or 500us")
        if not netem_available():
            raise TestbedError(
                f"testbed: --delay {delay} needs the sch_netem qdisc, which this kernel "
                f"({os.uname().release}) does not have; run without --delay")


def _check_dir(base: Path) -> None:
    if not DIR_RE.match(str(base)):
        raise TestbedError(f"testbed: --dir {str(base)!r}: sshd's config cannot hold this path; "
                           "use a folder of letters, digits and '_./+-'")


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise TestbedError("testbed: needs root (network namespaces, veth, tc, sshd)")
    for tool in ("ip", "tc", "ssh-keygen", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            raise TestbedError(f"testbed: {tool} not found (apt-get install iproute2 "
                               "openssh-server openssh-client)")


# ---------------------------------------------------------------------------------------------
# up


def _make_dir(base: Path) -> None:
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = tempfile.NamedTemporaryFile(dir=base, prefix=".probe-")  # noqa: SIM115
        probe.close()
    except OSError as exc:
        raise TestbedError(str(write_failure(base, "the test bed folder", exc,
                                             "or choose another --dir"))) from None


def up(base: Path = DEFAULT_DIR, rate: str = "1gbit", delay: str | None = None,
       qemu_hosts: Path | None = None) -> Path:
    """Build the test bed (after removing any leftovers) and return its hosts file.

    :raise TestbedError: bad --dir, missing tool, bad --rate/--delay, or a step failed (then it
        is torn down).
    """
    base = base.absolute()
    _check_dir(base)
    _check_tools()
    _check_args(rate, delay)
    _make_dir(base)  # before down(): a --dir that cannot be written leaves a test bed alone
    down(base)
    _make_dir(base)
    (base / MARKER).write_text("made by `migbench testbed up`; `migbench testbed down` removes it\n")
    try:
        _keys(base)
        for n in NODES:
            _ip("netns", "add", n.ns)
            _ip("link", "set", "lo", "up", ns=n.ns)
            # Management link: root namespace <-> host, where sshd listens.
            _ip("link", "add", n.root_link, "type", "veth", "peer", "name", "mgmt0", "netns", n.ns)
            _ip("addr", "add", f"{n.root_ip}/24", "dev", n.root_link)
            _ip("link", "set", n.root_link, "up")
            _ip("addr", "add", f"{n.mgmt_ip}/24", "dev", "mgmt0", ns=n.ns)
            _ip("link", "set", "mgmt0", "up", ns=n.ns)
            # VM network bridge.
            _ip("link", "add", BRIDGE, "type", "bridge", ns=n.ns)
            _ip("link", "set", BRIDGE, "up", ns=n.ns)
        src, dst = NODES
        # Migration link between the two hosts.
        _ip("link", "add", "mig0", "type", "veth", "peer", "name", "mig0", "netns", dst.ns,
            ns=src.ns)
        for n in NODES:
            _ip("addr", "add", f"{n.mig_ip}/24", "dev", "mig0", ns=n.ns)
            _ip("link", "set", "mig0", "up", ns=n.ns)
        shape(rate, delay)
        # The two bridges joined into one L2 segment, and a port for probers in the root ns.
        _ip("link", "add", "vmx0", "type", "veth", "peer", "name", "vmx0", "netns", dst.ns,
            ns=src.ns)
        for n in NODES:
            _ip("link", "set", "vmx0", "master", BRIDGE, ns=n.ns)
            _ip("link", "set", "vmx0", "up", ns=n.ns)
        _ip("link", "add", VM_ROOT_LINK, "type", "veth", "peer", "name", "vmr0", "netns", src.ns)
        _ip("link", "set", "vmr0", "master", BRIDGE, ns=src.ns)
        _ip("link", "set", "vmr0", "up", ns=src.ns)
        _ip("addr", "add", f"{VM_ROOT_IP}/24", "dev", VM_ROOT_LINK)
        _ip("link", "set", VM_ROOT_LINK, "up")
        for n in NODES:
            start_sshd(base, n.role)
        _write_known_hosts(base)
        hosts = write_hosts_file(base, qemu_hosts or hosts_path())
        _save_state(base, {"rate": rate, "delay": delay, "created": time.time()})
    except BaseException:
        down(base)
        raise
    return hosts


def _keys(base: Path) -> None:
    client = base / "id_ed25519"
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "migbench-testbed", "-f",
         str(client)])
    (base / "authorized_keys").write_text(client.with_suffix(".pub").read_text())
    for n in NODES:
        d = n.dir(base)
        d.mkdir(mode=0o700, exist_ok=True)
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"migbench-{n.ns}", "-f",
             str(d / "ssh_host_ed25519_key")])


def _write_known_hosts(base: Path) -> None:
    lines = []
    for n in NODES:
        kind, key = (n.dir(base) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        lines.append(f"{n.mgmt_ip} {kind} {key}\n")
    (base / "known_hosts").write_text("".join(lines))


def _sshd_config(base: Path, n: Node) -> str:
    d = n.dir(base)
    return "\n".join([
        f"ListenAddress {n.mgmt_ip}:22",
        f"HostKey {d / 'ssh_host_ed25519_key'}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {base / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "AllowTcpForwarding local",
        "X11Forwarding no",
        "PrintMotd no",
        "MaxSessions 64",
        "MaxStartups 64",
        "ClientAliveInterval 5",
        "ClientAliveCountMax 3",
        "Subsystem sftp internal-sftp",
        "",
    ])


def start_sshd(base: Path, role: str, timeout: float = 10.0) -> int:
    """Start (or restart) the sshd of test bed host ``role``; return its pid once it answers."""
    n = node(role)
    _check_dir(base)
    d = n.dir(base)
    conf = d / SSHD_CONF
    conf.write_text(_sshd_config(base, n))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    with open(d / "sshd.log", "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", n.ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((n.mgmt_ip, 22), timeout=1.0) as s:
                if s.recv(64).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (d / "sshd.log").read_text(errors="replace").strip().splitlines()[-2:]
            raise TestbedError(f"testbed: sshd in {n.ns} did not start: {' | '.join(tail)}")
        time.sleep(0.05)
    (d / "sshd.launcher.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def kill_sshd(role: str) -> list[int]:
    """SIGKILL every sshd in test bed host ``role``'s namespace (listener and sessions)."""
    n = node(role)
    pids = [p for p in _ns_pids(n.ns) if _comm(p).startswith("sshd")]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def shape(rate: str, delay: str | None = None) -> None:
    """(Re)shape the migration link on both ends: tbf at ``rate``, plus netem ``delay``.

    :raise TestbedError: bad values, or netem is missing when ``delay`` is given.
    """
    _check_args(rate, delay)
    rate_bps = parse_bytes(rate)  # bytes per second
    # Bucket: 10 ms of traffic, at least two 64 KiB GSO segments (tbf drops larger packets).
    burst = max(2 * 65536, rate_bps // 100)
    for n in NODES:
        _tc(n.ns, "qdisc", "del", "dev", "mig0", "root", check=False)
        tbf = ["tbf", "rate", rate, "burst", str(burst), "latency", "50ms"]
        if delay is None:
            _tc(n.ns, "qdisc", "add", "dev", "mig0", "root", "handle", "1:", *tbf)
        else:
            netem = _tc(n.ns, "qdisc", "add", "dev", "mig0", "root", "handle", "1:", "netem",
                        "delay", delay, check=False)
            if netem.returncode != 0:
                raise TestbedError(f"testbed: --delay needs netem, which failed: "
                                   f"{netem.stderr.strip()}")
            _tc(n.ns, "qdisc", "add", "dev", "mig0", "parent", "1:", "handle", "2:", *tbf)


def write_hosts_file(base: Path, qemu_hosts: Path) -> Path:
    """``<base>/hosts.yaml``: one ssh pair, with the QEMU builds of ``qemu_hosts`` (absolute)."""
    from harness.plan.config import load_hosts

    cfg = load_hosts(qemu_hosts)
    builds = {name: json.loads(b.model_dump_json()) for name, b in cfg.qemu_builds.items()}
    pair: dict[str, Any] = {}
    for n in NODES:
        pair[n.role] = {
            "transport": "ssh",
            "address": n.mgmt_ip,
            "user": "root",
            "port": 22,
            "identity_file": str(base / "id_ed25519"),
            "known_hosts": str(base / "known_hosts"),
            "accel": "auto",
            "workdir": str(base / "work"),
            "migration_address": n.mig_ip,
            "vm_bridge": BRIDGE,
            # guests get addresses here; the prober sends from mbv-root in the root namespace
            "vm_network": f"{VM_ROOT_IP}/24",
        }
    data = {"qemu_builds": builds, "default_build": cfg.default_build,
            "pairs": {"testbed": pair}}
    path = base / "hosts.yaml"
    path.write_text("# written by `migbench testbed up`: two namespace hosts over SSH\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


def _save_state(base: Path, state: dict[str, Any]) -> None:
    (base / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def load_state(base: Path) -> dict[str, Any]:
    try:
        data = json.loads((base / "state.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------
# down / status


def leftovers() -> list[str]:
    """Everything of a test bed that exists now, found by name (empty when clean)."""
    found = [f"netns {ns}" for ns in namespaces() if ns in {n.ns for n in NODES}]
    for link in [n.root_link for n in NODES] + [VM_ROOT_LINK]:
        if _link_exists(link):
            found.append(f"link {link}")
    found += [f"sshd pid {p}" for p in _sshd_pids()]
    return found


def down(base: Path = DEFAULT_DIR) -> list[str]:
    """Remove the test bed: processes in its namespaces, namespaces, links, its folder.

    Idempotent; works after a crash (finds things by name). Returns what it removed.
    """
    removed: list[str] = []
    existing = namespaces()
    for n in NODES:
        if n.ns in existing:
            pids = _ns_pids(n.ns)
            _kill_all(pids)
            removed += [f"process {p} in {n.ns}" for p in pids]
            _ip("netns", "del", n.ns, check=False)
            removed.append(f"netns {n.ns}")
    stray = _sshd_pids()
    _kill_all(stray)
    removed += [f"sshd pid {p}" for p in stray]
    for link in [n.root_link for n in NODES] + [VM_ROOT_LINK]:
        if _link_exists(link):
            _ip("link", "del", link, check=False)
            removed.append(f"link {link}")
    if (base / MARKER).exists():
        shutil.rmtree(base, ignore_errors=True)
        removed.append(f"folder {base}")
    return removed


def status(base: Path = DEFAULT_DIR) -> list[tuple[str, str, str]]:
    """Rows (what, state, detail) describing the test bed as it exists now."""
    rows: list[tuple[str, str, str]] = []
    existing = namespaces()
    state = load_state(base)
    for n in NODES:
        present = n.ns in existing
        rows.append((f"{n.role} host", "up" if present else "absent",
                     f"netns {n.ns}, ssh root@{n.mgmt_ip}" if present else ""))
        if not present:
            continue
        sshd = [p for p in _ns_pids(n.ns) if _comm(p).startswith("sshd")]
        rows.append((f"  sshd ({n.ns})", "running" if sshd else "absent",
                     f"pids {' '.join(map(str, sshd))}" if sshd else ""))
        qdisc = _tc(n.ns, "qdisc", "show", "dev", "mig0", check=False).stdout.strip()
        rows.append((f"  migration link ({n.ns} mig0)",
                     "up" if _link_exists("mig0", n.ns) else "absent",
                     f"{n.mig_ip}; " + " / ".join(q.split(" refcnt")[0]
                                                   for q in qdisc.splitlines())))
        rows.append((f"  VM bridge ({n.ns} {BRIDGE})",
                     "up" if _link_exists(BRIDGE, n.ns) else "absent", VM_NET))
    for link in [n.root_link for n in NODES] + [VM_ROOT_LINK]:
        rows.append((f"root link {link}", "up" if _link_exists(link) else "absent", ""))
    stray = _sshd_pids()
    rows.append(("test bed sshd processes", str(len(stray)), " ".join(map(str, stray))))
    hosts = base / "hosts.yaml"
    rows.append(("hosts file", "present" if hosts.exists() else "absent", str(hosts)))
    if state:
        rows.append(("shaping", "", f"rate {state.get('rate')}, delay {state.get('delay') or 'none'}"))
    return rows


# ---------------------------------------------------------------------------------------------
# CLI


def _cmd(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    base = Path(args.dir)
    if args.testbed_command == "up":
        hosts = up(base, args.rate, args.delay)
        out.print(f"test bed up: migration link {args.rate}"
                  f"{', delay ' + args.delay if args.delay else ''}; hosts file {hosts}")
        out.print(f"next: migbench run MATRIX.yaml --hosts {hosts}", markup=False)
        return 0
    if args.testbed_command == "down":
        removed = down(base)
        left = leftovers()
        out.print(f"test bed down: removed {len(removed)} items" if removed
                  else "test bed down: nothing to remove")
        if left:
            raise HostError(f"testbed: could not remove: {', '.join(left)}")
        return 0
    table = Table(title=f"migbench test bed ({base})")
    for col in ("what", "state", "detail"):
        table.add_column(col)
    for row in status(base):
        table.add_row(*(console_text(c) for c in row))
    out.print(table)
    return 0


def register(subparsers: Any) -> None:
    """Add ``migbench testbed up|down|status`` to the CLI's subparsers."""
    t = subparsers.add_parser(
        "testbed", help="two namespace hosts with sshd and a shaped link on this machine",
        description="Emulate a source and a destination host on this machine: network "
                    "namespaces with their own sshd (pinned host keys), a migration link shaped "
                    "with tc, and a shared VM bridge. Needs root.")
    tsub = t.add_subparsers(dest="testbed_command", required=True, metavar="SUBCOMMAND")
    u = tsub.add_parser("up", help="build the test bed (replacing any old one)")
    u.add_argument("--rate", default="1gbit", help="migration link rate for tc tbf (default 1gbit)")
    u.add_argument("--delay", default=None,
                   help="one-way delay on the migration link, e.g. 1ms (needs sch_netem)")
    tsub.add_parser("down", help="remove everything the test bed made (also after a crash)")
    tsub.add_parser("status", help="show what exists")
    for p in tsub.choices.values():
        p.add_argument("--dir", default=str(DEFAULT_DIR),
                       help=f"test bed state folder (default {DEFAULT_DIR})")
    t.set_defaults(func=_cmd)
