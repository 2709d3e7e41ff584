"""doctor/provision helpers, image placement, per-host probes, skip reasons, and the runner's
handling of a pair (probe faults, work folders, Ctrl-C) with fake hosts (no network)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from harness.digest import sha256_file
from harness.errors import CommandFailed, HostError, VmError
from harness.guest.image import GuestImage
from harness.hosts import probe as probe_mod
from harness.hosts.host import Host, LocalHost, SocketLinks
from harness.hosts.placement import place_image
from harness.hosts.provision import (
    check_host,
    clock_offset,
    doctor_pair,
    provision_host,
)
from harness.plan.config import load_hosts
from harness.plan.matrix import expand
from harness.plan.models import HostPair, HostsConfig, HostSpec, MatrixSpec, QemuBuild
from harness.results import store
from harness.results.record import RunRecord
from harness.run import migration, runner
from harness.run.runner import skip_reason


class FakeRemote(LocalHost):
    """A 'remote' host that is really this machine: exercises the upload path without SSH."""

    transport = "fake"

    @property
    def identity(self) -> str:
        return "fake:elsewhere"

    def __init__(self, name: str, spec: HostSpec) -> None:
        super().__init__(name, spec)
        self.puts: list[Path] = []

    def put(self, local: Path, remote: Path) -> None:
        self.puts.append(remote)
        super().put(local, remote)


def _image(tmp_path: Path) -> GuestImage:
    d = tmp_path / "img"
    d.mkdir(exist_ok=True)
    (d / "vmlinux").write_bytes(b"kernel" * 1000)
    (d / "initrd.cpio.gz").write_bytes(b"initrd")
    return GuestImage(kernel=d / "vmlinux", initrd=d / "initrd.cpio.gz", digest="ab" * 32,
                      kernel_release="6.1", pvh=True)


def test_place_image_uploads_missing_or_damaged_files_only(tmp_path: Path) -> None:
    img = _image(tmp_path)
    local = LocalHost("source", HostSpec())
    assert place_image(local, img) == (img, [])  # a local host boots the build itself
    work = tmp_path / "work dir $(x)"
    host = FakeRemote("source", HostSpec(workdir=work))
    placed, uploaded = place_image(host, img)
    d = work / "images" / ("ab" * 8)
    assert placed.kernel == d / "vmlinux" and placed.initrd == d / "initrd.cpio.gz"
    assert uploaded == ["vmlinux", "initrd.cpio.gz"]
    assert sha256_file(d / "vmlinux") == sha256_file(img.kernel)
    assert all(p.name.startswith(".") and p.name.endswith(".part") for p in host.puts)
    assert sorted(p.name for p in d.iterdir()) == ["initrd.cpio.gz", "vmlinux"]
    assert place_image(host, img)[1] == []
    (d / "initrd.cpio.gz").write_bytes(b"bad")
    time.sleep(0.01)
    assert place_image(host, img)[1] == ["initrd.cpio.gz"]
    assert (d / "initrd.cpio.gz").read_bytes() == b"initrd"


def test_probe_runs_on_the_host_and_is_cached_per_host(tmp_path: Path) -> None:
    cfg = load_hosts(Path(__file__).resolve().parents[2] / "hosts.yaml")
    build = cfg.qemu_builds[cfg.default_build]
    if not build.binary.exists():
        pytest.skip("QEMU build missing (make qemu)")
    cache = tmp_path / "cache"
    probe_mod._memo.clear()  # earlier tests in this process may have probed the same binary
    here = probe_mod.probe(build, cache, host=LocalHost("source", HostSpec()))
    there = probe_mod.probe(build, cache, host=FakeRemote("source", HostSpec()))
    assert here.version == there.version and "postcopy-ram" in here.capabilities
    assert (here.host, there.host) == ("local", "fake:elsewhere")
    assert len(list(cache.glob("*.json"))) == 2
    cached = json.loads(next(cache.glob("*.json")).read_text())
    assert cached["version"] == here.version
    with pytest.raises(VmError, match=r"^source \(local\): QEMU binary /nonexistent/q does not "
                                      "exist"):
        probe_mod.probe(QemuBuild(binary=Path("/nonexistent/q")), cache,
                        host=LocalHost("source", HostSpec()))
    with pytest.raises(VmError, match="probing /bin/false failed"):
        probe_mod.probe(QemuBuild(binary=Path("/bin/false")), cache,
                        host=LocalHost("source", HostSpec()))


def test_doctor_names_the_host_of_a_missing_qemu(tmp_path: Path) -> None:
    missing = QemuBuild(binary=tmp_path / "no qemu")
    cfg = HostsConfig(qemu_builds={"x": missing}, default_build="x",
                      pairs={"p": HostPair(source=HostSpec(workdir=tmp_path),
                                           destination=HostSpec(workdir=tmp_path))})
    report = doctor_pair("p", cfg.pairs["p"], cfg, memory_mib=1 << 30)
    assert not report.usable
    problems = report.problems()
    assert any(p.startswith("pair p: source (local): QEMU x: QEMU binary") for p in problems)
    assert any("memory" in p and "needed (2 x" in p for p in problems)  # both QEMUs here
    rows = check_host("p", "source", LocalHost("source", HostSpec(workdir=tmp_path)), cfg,
                      quick=True)
    assert [r.check for r in rows] == ["reachable", "QEMU x", "workdir"]


def test_clock_offset_of_this_machine_with_itself_is_tiny() -> None:
    a, b = LocalHost("source", HostSpec()), LocalHost("destination", HostSpec())
    offset, err = clock_offset(a, b)
    assert abs(offset) < 0.01 and err < 0.01


def test_relative_key_paths_resolve_against_the_hosts_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "hosts.yaml"
    path.write_text(
        "qemu_builds: {'10.0': {binary: /q}}\npairs:\n  p:\n"
        "    source: {transport: ssh, address: h, identity_file: keys/id,"
        " known_hosts: ../kh}\n    destination: {transport: local}\n")
    spec = load_hosts(path).pairs["p"].source
    assert spec.identity_file == tmp_path / "sub" / "keys" / "id"
    assert spec.known_hosts == tmp_path / "kh"


@pytest.mark.parametrize("value", ["10.250.4.1", "bad", "8.8.8.1/24", "10.0.0.1/8"])
def test_vm_network_is_validated(value: str) -> None:
    with pytest.raises(ValueError, match="vm_network"):
        HostSpec(vm_network=value)
    HostSpec(vm_network="10.250.4.1/24", vm_bridge="br-vm")
    with pytest.raises(ValueError, match="vm_bridge"):
        HostSpec(vm_bridge="br vm; rm")


def _probe(**kw: Any) -> probe_mod.Probe:
    base: dict[str, Any] = dict(binary="/q", version="10.0.2", package="", capabilities=("xbzrle",),
                                parameters=("max-bandwidth",), commands=(),
                                multifd_compression=())
    base.update(kw)
    return probe_mod.Probe(**base)


def test_skip_reasons_come_from_each_hosts_own_probe_and_network() -> None:
    spec = MatrixSpec.model_validate({"name": "m", "axes": {"feature": ["xbzrle"]},
                                      "workload": {"writer": None, "ping": {}}})
    [cell] = expand(spec, "10.0")
    good = _probe(capabilities=tuple(cell.migration.capabilities),
                  parameters=tuple(cell.migration.parameters))
    old = _probe(version="7.2.0", capabilities=("events",), parameters=good.parameters)
    assert skip_reason(cell, good, old, "tcg", "tcg") == \
        "QEMU 7.2.0 has no migration capability 'xbzrle'"
    ssh = HostSpec(transport="ssh", address="h")
    assert "vm_bridge" in skip_reason(cell, good, good, "tcg", "tcg",
                                      HostPair(source=ssh, destination=ssh))
    bridged = ssh.model_copy(update={"vm_bridge": "br-vm"})
    assert "vm_network" in skip_reason(cell, good, good, "tcg", "tcg",
                                       HostPair(source=bridged, destination=bridged))
    ready = bridged.model_copy(update={"vm_network": "10.250.4.1/24"})
    assert skip_reason(cell, good, good, "tcg", "tcg",
                       HostPair(source=ready, destination=ready)) == ""
    assert skip_reason(cell, good, good, "tcg", "tcg",
                       HostPair(source=HostSpec(), destination=HostSpec())) == ""


# -- the runner on a pair: probe faults --------------------------------------------------------


def _campaign(tmp_path: Path, spec: MatrixSpec, pair: HostPair,
              progress: runner.Progress | None = None) -> runner._Campaign:
    hosts = HostsConfig(qemu_builds={"10.0": QemuBuild(binary=Path("/q"))}, default_build="10.0",
                        pairs={"p": pair})
    cells = expand(spec, "10.0")
    (tmp_path / "out").mkdir(exist_ok=True)  # run_matrix makes it; the store does not
    return runner._Campaign(tmp_path / "m.yaml", spec, hosts, tmp_path / "out",
                            progress or runner.Progress(), _image(tmp_path),
                            runner.run_order(cells, spec.repetitions, spec.order))


def test_a_probe_fault_is_a_failed_run_and_only_a_missing_capability_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = MatrixSpec.model_validate({"name": "m", "axes": {"feature": ["xbzrle", "precopy"]}})
    xbzrle, plain = expand(spec, "10.0")
    here = HostSpec(workdir=tmp_path / "work")
    camp = _campaign(tmp_path, spec, HostPair(source=here, destination=here))
    good = _probe(capabilities=tuple(xbzrle.migration.capabilities),
                  parameters=tuple({*xbzrle.migration.parameters, *plain.migration.parameters}))
    answers: dict[str, Any] = {"source": good, "destination": good}

    def fake_probe(build: QemuBuild, cache: Path, host: Any) -> probe_mod.Probe:
        answer = answers[host.name]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, probe_mod.Probe)
        return answer

    monkeypatch.setattr(runner, "probe", fake_probe)
    worker = runner._PairWorker("p", camp.hosts.pairs["p"], camp)
    worker.accel = {"source": "tcg", "destination": "tcg"}
    build = camp.hosts.qemu_builds["10.0"]
    assert worker.unrunnable(xbzrle, 1, build, build) == (None, (good, good))
    for fault in (HostError("destination (root@10.0.0.9:22): unreachable: timed out"),
                  VmError("destination (root@10.0.0.9:22): probing /q failed: the probe timed "
                          "out")):
        answers["destination"] = fault
        rec, probes = worker.unrunnable(xbzrle, 1, build, build)
        assert probes is None
        assert rec is not None and rec.outcome == "failed"
        assert rec.error == f"probing QEMU failed: {fault}"
    answers["destination"] = _probe(version="7.2.0", capabilities=("events",),
                                    parameters=good.parameters)
    rec, _ = worker.unrunnable(xbzrle, 1, build, build)
    assert rec is not None and rec.outcome == "skipped"
    assert rec.error == "QEMU 7.2.0 has no migration capability 'xbzrle'"
    assert worker.unrunnable(plain, 1, build, build)[0] is None  # precopy needs nothing more

    # Through the worker's loop: the fault is a stored failed run, and the matrix goes on.
    answers["destination"] = HostError("destination (root@10.0.0.9:22): unreachable: timed out")
    calls: list[str] = []

    def fake_migration(ctx: Any) -> RunRecord:
        calls.append(ctx.cell.id)
        return runner.skipped_record(ctx.cell, ctx.repetition, ctx.campaign, "", None,
                                     ctx.source_build, ctx.source, ctx.destination,
                                     outcome="completed")

    monkeypatch.setattr(runner, "run_migration", fake_migration)
    runner._PairWorker("p", camp.hosts.pairs["p"], camp).run()
    outcomes = {rec.cell.id: rec.outcome for _, rec in store.iter_runs(camp.out)}
    assert outcomes == {xbzrle.id: "failed", plain.id: "failed"}
    assert calls == []


# -- the runner on a pair: each host's own work folder -----------------------------------------


def test_each_host_keeps_a_runs_files_under_its_own_workdir(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = HostSpec(transport="ssh", address="a", workdir=Path("/srv/mb"))
    dst = HostSpec(transport="ssh", address="b", workdir=Path("/data/bench dir"))
    dirs = runner.run_workdirs(HostPair(source=src, destination=dst), "camp", "c1-1-17-ab")
    assert dirs == {"source": Path("/srv/mb/camp/c1-1-17-ab"),
                    "destination": Path("/data/bench dir/camp/c1-1-17-ab")}
    # After the run each folder is removed on its own host.
    here = HostSpec(workdir=tmp_path / "src work")
    there = HostSpec(workdir=tmp_path / "dst work")
    # start: cold: a warm start would boot a guest to save (run/warm.py), not the point here
    spec = MatrixSpec.model_validate({"name": "m", "axes": {"feature": ["precopy"]},
                                      "start": "cold"})
    camp = _campaign(tmp_path, spec, HostPair(source=here, destination=there))
    worker = runner._PairWorker("p", camp.hosts.pairs["p"], camp)
    dirs = runner.run_workdirs(worker.pair, "m", "r1")
    for role, d in dirs.items():
        (d / role).mkdir(parents=True)
    worker.remove_workdirs(dirs)
    assert not dirs["source"].exists() and not dirs["destination"].exists()
    assert (tmp_path / "src work" / "m").exists()  # the campaign folder stays

    # The worker gives run_migration each VM's folder under its own host's workdir.
    seen: list[Any] = []

    def fake_migration(ctx: Any) -> RunRecord:
        seen.append(ctx)
        return runner.skipped_record(ctx.cell, ctx.repetition, ctx.campaign, "", None,
                                     ctx.source_build, ctx.source, ctx.destination,
                                     outcome="completed")

    monkeypatch.setattr(runner, "run_migration", fake_migration)
    monkeypatch.setattr(worker, "setup", lambda: None)
    monkeypatch.setattr(worker, "unrunnable",
                        lambda *a: (None, (_probe(build_id="sha256:s"), _probe(build_id="sha256:d"))))
    worker.run()
    assert len(seen) == 3  # one precopy cell, three repetitions
    ctx = seen[0]
    run_id = ctx.workdir.name
    assert ctx.workdir == tmp_path / "src work" / "m" / run_id  # the fio disk's folder
    assert ctx.workdirs == {"source": tmp_path / "src work" / "m" / run_id / "source",
                            "destination": tmp_path / "dst work" / "m" / run_id / "destination"}
    assert [migration.vm_workdir(ctx, r) for r in ("source", "destination")] == [
        ctx.workdirs["source"], ctx.workdirs["destination"]]
    # the build ids come from the probes that cleared the run, not from probing again
    assert ctx.build_ids == {"source": "sha256:s", "destination": "sha256:d"}


# -- the runner on several pairs: Ctrl-C -------------------------------------------------------


class _BusyWorker:
    """A pair worker whose 'migration' is a local process started through its host, torn down
    when the campaign's stop wakes its wait; a ``stuck`` one never looks at the stop (as a
    teardown that hangs) and stores a failed run once its process dies under it, as
    run_migration would."""

    def __init__(self, name: str, camp: runner._Campaign, log: Path, stuck: bool) -> None:
        self.name, self.camp, self.log = name, camp, log
        self.source = LocalHost("source", HostSpec())
        self.destination = LocalHost("destination", HostSpec())
        self.stuck = stuck
        self.started = threading.Event()
        self.proc: Any = None
        self.tore_down = False

    def run(self) -> None:
        item = self.camp.next()
        assert item is not None
        self.proc = self.source.start(["sleep", "60"], self.log)
        self.started.set()
        try:
            while self.proc.poll() is None:
                if self.stuck:
                    time.sleep(0.02)
                else:
                    self.camp.interrupted.sleep(0.02)  # raises Cancelled once stopped
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                self.proc.wait(5)
            self.tore_down = True
        cell, rep = item
        self.camp.save(self.name, cell, rep, runner.skipped_record(
            cell, rep, "m", "source QEMU exited during migration", None,
            QemuBuild(binary=Path("/q")), self.source, self.destination, outcome="failed"))

    def close(self) -> None:
        pass


def test_ctrl_c_with_several_pairs_tears_every_run_down_and_saves_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    monkeypatch.setattr(runner, "INTERRUPT_TEARDOWN_S", 1.0)
    spec = MatrixSpec.model_validate({"name": "m", "repetitions": 2,
                                      "axes": {"feature": ["precopy"]}})
    here = HostSpec(workdir=tmp_path / "work")
    notes: list[str] = []
    camp = _campaign(tmp_path, spec, HostPair(source=here, destination=here),
                     runner.Progress(note=notes.append))
    workers = [_BusyWorker("a", camp, tmp_path / "a.log", stuck=False),
               _BusyWorker("b", camp, tmp_path / "b.log", stuck=True)]

    def ctrl_c() -> None:  # once both runs are under way
        if all(w.started.wait(10) for w in workers):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner._run_concurrently(workers, camp)  # type: ignore[arg-type]
    assert time.monotonic() - started < 8
    # Both 'QEMUs' are gone before it returns: one torn down by its run, one killed.
    assert [w.proc.poll() for w in workers] == [-signal.SIGTERM, -signal.SIGTERM]
    assert all(w.tore_down for w in workers)
    assert any(n.startswith("interrupted: stopping the runs on pair a, b") for n in notes), notes
    assert any(n.startswith("pair b: killed 1 process(es)") for n in notes), notes
    # The stuck run's failure was not stored: a resume runs both again.
    assert list(store.iter_runs(camp.out)) == []
    assert any("was interrupted: not saved" in n for n in notes), notes
    assert len(_campaign(tmp_path, spec, HostPair(source=here, destination=here)).queue) == 2


# -- provision and doctor on a scripted host: packages, sudo, --check, the VM bridge -----------


class ScriptedHost(Host):
    """A remote host answering the commands provision and doctor send from a small model of a
    machine: its package manager, tools, QEMU binaries, bridges, and which packages exist."""

    transport = "ssh"

    def __init__(self, spec: HostSpec, pm: str = "apt", tools: tuple[str, ...] = ("python3", "ip"),
                 binaries: tuple[str, ...] = (), bridges: tuple[str, ...] = (),
                 packages: dict[str, str] | None = None) -> None:
        super().__init__("source", spec)
        self.pm, self.tools, self.binaries = pm, set(tools), set(binaries)
        self.bridges = set(bridges)
        self.packages = packages or {}  # package name -> the tool or binary it installs
        self.calls: list[list[str]] = []

    @property
    def label(self) -> str:
        return f"source ({self.spec.user}@{self.spec.address}:{self.spec.port})"

    def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> str:
        from harness.hosts.host import _ACCEL_SH
        from harness.hosts.probe import _STAT_SH
        from harness.hosts.provision import _PKG_SH

        argv = list(argv)
        self.calls.append(argv)
        cmd = argv[2:] if argv[:2] == ["sudo", "-n"] else argv
        if cmd == ["true"] or cmd[:2] == ["mkdir", "-p"]:
            return ""
        if cmd == ["sh", "-c", _PKG_SH]:
            return self.pm + "\n"
        if cmd[:2] == ["sh", "-c"] and cmd[2].startswith("for t in python3 ip;"):
            return "".join(f"{t}\n" for t in ("python3", "ip") if t not in self.tools)
        if cmd[:3] == ["sh", "-c", _STAT_SH]:
            return f"1000 1 {cmd[4]}\n" if cmd[4] in self.binaries else "missing\n"
        if cmd[:3] == ["sh", "-c", _ACCEL_SH]:
            return "tcg /dev/kvm is absent\n"
        if cmd[:2] == ["sh", "-c"] and "MemAvailable" in cmd[2]:
            return "MemAvailable:    8000000 kB\n"
        if cmd[:2] == ["sh", "-c"] and "/sys/class/net/$1/bridge" in cmd[2]:
            return "yes\n" if cmd[4] in self.bridges else "no\n"
        if cmd[:4] in (["ip", "link", "add", "name"], ["ip", "link", "set", "dev"]):
            self.bridges.add(cmd[4])
            return ""
        if cmd[:2] == ["env", "DEBIAN_FRONTEND=noninteractive"] or cmd[:1] == ["dnf"]:
            wanted = cmd[6:] if cmd[0] == "env" else cmd[4:]
            for pkg in wanted:
                if pkg not in self.packages:
                    raise CommandFailed(self.label, " ".join(cmd), 1, "",
                                        f"No match for argument: {pkg}")
            for pkg in wanted:
                thing = self.packages[pkg]
                (self.binaries if thing.startswith("/") else self.tools).add(thing)
            return ""
        raise AssertionError(f"unexpected command {argv}")

    def start(self, argv: Sequence[str], log: IO[bytes] | Path,
              env: Mapping[str, str] | None = None) -> Any:
        raise NotImplementedError

    def put(self, local: Path, remote: Path) -> None:
        raise NotImplementedError

    def get(self, remote: Path, local: Path) -> None:
        raise NotImplementedError

    def read_file(self, path: Path, max_bytes: int | None = None) -> bytes:
        raise NotImplementedError

    def free_port(self, address: str) -> int:
        raise NotImplementedError

    def vm_dirs(self, workdir: Path, binary: Path, sockets: Sequence[Path]) -> Path | None:
        raise AssertionError("provisioning starts no VM")

    def reach_sockets(self, paths: Sequence[Path], tag: str) -> SocketLinks:
        raise AssertionError("provisioning starts no VM")


APT = {"qemu-system-x86": "/usr/bin/qemu-system-x86_64", "iproute2": "ip", "python3": "python3"}
FEDORA = {"/usr/bin/qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "iproute": "ip",
          "python3": "python3"}
RHEL = {"/usr/libexec/qemu-kvm": "/usr/libexec/qemu-kvm", "iproute": "ip", "python3": "python3"}
APT_SH = 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"'


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """probe() answers for a binary the scripted host has, and fails like probe for others."""
    from harness.hosts import provision

    def answer(build: QemuBuild, cache: Path, host: Any) -> probe_mod.Probe:
        if str(build.binary) not in host.binaries:
            raise VmError(f"{host.label}: QEMU binary {build.binary} does not exist or is not "
                          "executable")
        return _probe(version="10.0.2", binary=str(build.binary))

    monkeypatch.setattr(provision, "probe", answer)


def _cfg(binary: str, bridge: str | None = None, user: str = "root"
         ) -> tuple[HostsConfig, HostSpec]:
    spec = HostSpec(transport="ssh", address="10.0.0.5", user=user, vm_bridge=bridge)
    return HostsConfig(qemu_builds={"10.0": QemuBuild(binary=Path(binary))}, default_build="10.0",
                       pairs={"p": HostPair(source=spec, destination=spec)}), spec


def _installs(host: ScriptedHost) -> list[list[str]]:
    return [c for c in host.calls if "DEBIAN_FRONTEND=noninteractive" in c or "dnf" in c]


@pytest.mark.usefixtures("fake_probe")
@pytest.mark.parametrize(("user", "sudo"), [("root", []), ("bench", ["sudo", "-n"])])
def test_provision_installs_with_apt_as_root_or_with_sudo(user: str, sudo: list[str]) -> None:
    cfg, spec = _cfg("/usr/bin/qemu-system-x86_64", user=user)
    host = ScriptedHost(spec, pm="apt", tools=("python3",), packages=APT)
    res = provision_host(host, cfg, None)
    assert _installs(host) == [sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "sh", "-c", APT_SH,
                                       "sh", "iproute2", "qemu-system-x86"]]
    assert (res.package_manager, res.installed) == ("apt", ["iproute2", "qemu-system-x86"])
    assert (res.problems, res.qemu, res.tools) == ([], {"10.0": "10.0.2"}, "python3, ip")
    # Nothing missing: nothing installed.
    again = provision_host(host, cfg, None)
    assert len(_installs(host)) == 1 and again.problems == [] and again.installed == []


@pytest.mark.usefixtures("fake_probe")
def test_provision_with_dnf_asks_for_the_binary_and_explains_rhel() -> None:
    # Fedora: dnf finds the package that has /usr/bin/qemu-system-x86_64.
    cfg, spec = _cfg("/usr/bin/qemu-system-x86_64", user="bench")
    fedora = ScriptedHost(spec, pm="dnf", tools=("ip",), packages=FEDORA)
    res = provision_host(fedora, cfg, None)
    assert _installs(fedora) == [["sudo", "-n", "dnf", "install", "-y", "-q",
                                  "/usr/bin/qemu-system-x86_64", "python3"]]
    assert res.problems == [] and res.qemu == {"10.0": "10.0.2"}

    # RHEL: no package has it; the outcome says where RHEL's QEMU is.
    rhel = ScriptedHost(spec, pm="dnf", packages=RHEL)
    res = provision_host(rhel, cfg, None)
    assert _installs(rhel) == [["sudo", "-n", "dnf", "install", "-y", "-q",
                                "/usr/bin/qemu-system-x86_64"]]
    assert res.qemu == {"10.0": "missing"} and res.installed == []
    hint = ("RHEL-family hosts have no /usr/bin/qemu-system-x86_64: their QEMU is "
            "/usr/libexec/qemu-kvm (package qemu-kvm); point this build at it for this host in "
            "hosts.yaml (qemu: {NAME: {binary: /usr/libexec/qemu-kvm}})")
    assert res.problems == [
        "installing /usr/bin/qemu-system-x86_64 failed: source (bench@10.0.0.5:22): `dnf install "
        "-y -q /usr/bin/qemu-system-x86_64` exited 1: No match for argument: "
        f"/usr/bin/qemu-system-x86_64; {hint}",
        f"QEMU build 10.0: /usr/bin/qemu-system-x86_64 is still missing; {hint}",
    ]

    # With the build pointed at /usr/libexec/qemu-kvm, RHEL installs qemu-kvm's binary.
    cfg, spec = _cfg("/usr/libexec/qemu-kvm")
    rhel = ScriptedHost(spec, pm="dnf", packages=RHEL)
    res = provision_host(rhel, cfg, None)
    assert _installs(rhel) == [["dnf", "install", "-y", "-q", "/usr/libexec/qemu-kvm"]]
    assert res.problems == [] and res.qemu == {"10.0": "10.0.2"}


@pytest.mark.usefixtures("fake_probe")
def test_provision_check_installs_nothing_and_says_what_it_would() -> None:
    cfg, spec = _cfg("/usr/bin/qemu-system-x86_64", user="bench")
    host = ScriptedHost(spec, pm="apt", tools=("python3",), packages=APT)
    res = provision_host(host, cfg, None, install=False)
    assert _installs(host) == [] and res.installed == []
    assert res.problems == ["missing ip, /usr/bin/qemu-system-x86_64 (install: apt install "
                            "iproute2 qemu-system-x86)"]
    assert res.qemu == {"10.0": "missing"} and res.tools == "python3, ip (missing: ip)"
    dnf = ScriptedHost(spec, pm="dnf", packages=RHEL)
    [line] = provision_host(dnf, cfg, None, install=False).problems
    assert line.startswith("missing /usr/bin/qemu-system-x86_64 (install: dnf install "
                           "/usr/bin/qemu-system-x86_64); RHEL-family hosts have no ")
    # A Debian host asked for RHEL's binary: no apt package has it.
    cfg, spec = _cfg("/usr/libexec/qemu-kvm")
    res = provision_host(ScriptedHost(spec, pm="apt", packages=APT), cfg, None, install=False)
    assert res.problems == ["/usr/libexec/qemu-kvm is missing and no apt package provides it; "
                            "Debian's QEMU is /usr/bin/qemu-system-x86_64 (package "
                            "qemu-system-x86)"]
    none = ScriptedHost(spec, pm="none")
    assert provision_host(none, cfg, None).problems[0] == (
        "missing /usr/libexec/qemu-kvm and no apt-get or dnf to install them")


def test_sudo_is_used_unless_root_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.hosts.provision import _sudo

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert _sudo(LocalHost("source", HostSpec())) == ["sudo", "-n"]
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert _sudo(LocalHost("source", HostSpec())) == []
    ssh = HostSpec(transport="ssh", address="h")
    assert _sudo(ScriptedHost(ssh)) == []
    assert _sudo(ScriptedHost(ssh.model_copy(update={"user": "bench"}))) == ["sudo", "-n"]


@pytest.mark.usefixtures("fake_probe")
def test_missing_vm_bridge_doctor_row_and_provision_bridge() -> None:
    cfg, spec = _cfg("/usr/bin/qemu-system-x86_64", bridge="br-vm", user="bench")
    host = ScriptedHost(spec, binaries=("/usr/bin/qemu-system-x86_64",))
    rows = {r.check: r for r in check_host("p", "source", host, cfg)}
    assert (rows["VM bridge"].status, rows["VM bridge"].detail) == (
        "fail", "br-vm does not exist (run `migbench provision --bridge`)")
    assert rows["VM bridge"].problem() == ("pair p: source (bench@10.0.0.5:22): VM bridge: br-vm "
                                           "does not exist (run `migbench provision --bridge`)")
    res = provision_host(host, cfg, None)
    assert (res.bridge, res.problems) == ("br-vm absent (use --bridge)",
                                          ["VM bridge br-vm does not exist (use --bridge)"])
    assert not [c for c in host.calls if "link" in c]
    res = provision_host(host, cfg, None, bridge=True)
    assert (res.bridge, res.problems) == ("br-vm created", [])
    assert [c for c in host.calls if "link" in c] == [
        ["sudo", "-n", "ip", "link", "add", "name", "br-vm", "type", "bridge"],
        ["sudo", "-n", "ip", "link", "set", "dev", "br-vm", "up"]]
    assert provision_host(host, cfg, None, bridge=True).bridge == "br-vm present"
    rows = {r.check: r for r in check_host("p", "source", host, cfg)}
    assert (rows["VM bridge"].status, rows["VM bridge"].detail) == ("ok", "br-vm present")


def test_doctor_prints_qemu_text_without_control_sequences(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A QEMU binary's own output (here a broken one whose error text carries a screen clear, a
    window title and rich markup) reaches the doctor table and lines as plain, visible text."""
    from harness import cli

    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\nprintf '\\033[2J\\033]0;pwned\\007[bold red]boom[/] \\233 31m\\n' >&2\n"
                    "exit 3\n")
    qemu.chmod(0o755)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(f"qemu_builds: {{x: {{binary: {qemu}}}}}\ndefault_build: x\n"
                     f"pairs: {{p: {{source: {{workdir: {tmp_path}}}, "
                     f"destination: {{workdir: {tmp_path}}}}}}}\n")
    assert cli.main(["doctor", "--hosts", str(hosts)]) == 1
    out = capsys.readouterr().out
    assert "boom" in out and "[bold red]" in out  # the text is shown, markup as text
    for bad in ("\x1b", "\x07", "\x9b", "pwned\x07"):
        assert bad not in out
