"""Shell injection through the real ``migbench compare --after src:TREE`` path on the test bed.

The build host is an SSH host in a network namespace (the test bed's source and destination). The
namespaces share this machine's file system, so a marker file that a hostile value would create
on either host shows up at the same absolute path here too; each check also asks both hosts
themselves over SSH. Issue 12: before the fix, ``--configure-arg='--enable-$(touch M)'`` ran
``touch M`` on the build host.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.hosts.host import SshHost, sh_script
from harness.plan.config import load_hosts

from ._testbed import bed, no_leftover_qemu
from .conftest import REPO

pytestmark = pytest.mark.integration
__all__ = ["bed", "no_leftover_qemu"]

FAKE_SRC = REPO / "tests" / "data" / "fake-qemu-src"
MATRIX = """\
name: inject
repetitions: 1
guest: {vcpus: 1, memory_mib: 256}
limits: {max_time_s: 30, observe_after_s: 1}
workload:
  writer: {working_set_mib: 16, rate_mib_s: 4, pattern: sparse}
migration: {max-bandwidth: 1gbit, downtime-limit: 300}
axes: {feature: [precopy]}
"""


@pytest.fixture()
def marks() -> Iterator[list[Path]]:
    """Marker paths unique to this test (none exists before); removed afterwards."""
    token = secrets.token_hex(6)
    paths = [Path(f"/tmp/mb-inject-{token}-{i}") for i in range(12)]
    assert not any(p.exists() for p in paths)
    yield paths
    for p in paths:
        p.unlink(missing_ok=True)


def hostile(marks: list[Path]) -> list[str]:
    """Values that each run ``touch <its marker>`` if a shell ever parses them."""
    m = [str(p) for p in marks]
    return [
        f"$(touch {m[0]})",
        f"`touch {m[1]}`",
        f"; touch {m[2]}",
        f"'; touch {m[3]}; '",
        f'"; touch {m[4]}; "',
        f"'$(touch {m[5]})'",
        f'"`touch {m[6]}`"',
        f"x\ntouch {m[7]}\n",
        f"-x $(touch {m[8]}) -y",
    ]


def assert_nothing_ran(bed: Path, marks: list[Path]) -> None:
    """No marker here, nor on either SSH host (asked through the harness's own Host)."""
    assert [p for p in marks if p.exists()] == []
    pair = load_hosts(bed / "hosts.yaml").pairs["testbed"]
    for role, spec in (("source", pair.source), ("destination", pair.destination)):
        with SshHost(role, spec) as host:
            found = host.run(sh_script('for p; do [ -e "$p" ] && echo "$p"; done; true',
                                       *map(str, marks)))
            assert found == "", f"{role}: markers created: {found}"


def recording_tree(tmp_path: Path) -> Path:
    """The fake QEMU tree; its configure also writes each argument it got, NUL-terminated."""
    tree = tmp_path / "src"
    shutil.copytree(FAKE_SRC, tree)
    configure = tree / "configure"
    configure.write_text(configure.read_text().replace(
        "set -e\n", "set -e\nprintf '%s\\0' \"$@\" > ../configure.args\n", 1))
    configure.chmod(configure.stat().st_mode | stat.S_IXUSR)
    return tree


def compare(bed: Path, tmp_path: Path, *args: str | Path, hosts: Path | None = None) -> int:
    m = tmp_path / "inject.yaml"
    m.write_text(MATRIX)
    return main(["compare", str(m), "--hosts", str(hosts or bed / "hosts.yaml"),
                 "--before", "10.0", "--out", str(tmp_path / "cmp"), *map(str, args)])


def one_line_error(capfd: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("migbench: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_hostile_configure_args_arrive_literally_on_the_ssh_build_host(
        bed: Path, tmp_path: Path, marks: list[Path],
        capfd: pytest.CaptureFixture[str]) -> None:
    """Before the fix, markers 0, 1, 5, 6 and 8 appeared on the build host (checked)."""
    cache = tmp_path / "builds"
    tree = recording_tree(tmp_path)
    # A line break cannot be part of a configure flag: refused before anything starts.
    code = compare(bed, tmp_path, "--after", f"src:{tree}", "--build-cache", cache,
                   f"--configure-arg=--enable-{hostile(marks)[7]}")
    line = one_line_error(capfd)
    assert code == 1 and "--configure-arg" in line, line
    assert not cache.exists()
    values = [v for v in hostile(marks) if "\n" not in v]
    # The fake configure accepts --enable-*/--disable-*: each value is a flag's tail.
    args = [f"--enable-{v}" if i % 2 == 0 else f"--disable-{v}" for i, v in enumerate(values)]
    code = compare(bed, tmp_path, "--after", f"src:{tree}", "--build-cache", cache,
                   f"--configure-arg=--real-qemu-dir={REPO / 'build' / 'qemu-10.0'}",
                   *[f"--configure-arg={a}" for a in args])
    assert_nothing_ran(bed, marks)
    assert code == 0
    [dest] = list(cache.iterdir())
    configure = ["./configure", "--target-list=x86_64-softmmu", f"--prefix={dest / 'install'}",
                 f"--real-qemu-dir={REPO / 'build' / 'qemu-10.0'}", *args]
    # What configure itself received on the SSH host, argument by argument ...
    got = (dest / "configure.args").read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in got] == configure[1:]
    # ... and the build log shows the command quoted, as it ran.
    assert f"== {shlex.join(configure)}\n" in (dest / "build.log").read_text()
    # The build ran guests on the test bed: the "after" side is the tree just built.
    runs = list((tmp_path / "cmp" / "runs").glob("*/*.json"))
    assert len(runs) == 2


def test_hostile_build_cache_and_workdir_are_refused_in_one_line(
        bed: Path, tmp_path: Path, marks: list[Path],
        capfd: pytest.CaptureFixture[str]) -> None:
    tree = recording_tree(tmp_path)
    for value in hostile(marks)[:3] + hostile(marks)[7:8]:
        cache = tmp_path / ("b" + value.replace("/", "_"))
        code = compare(bed, tmp_path, "--after", f"src:{tree}", "--build-cache", cache)
        line = one_line_error(capfd)
        assert code == 1 and "--build-cache" in line, line
        assert not cache.exists()
    # A hosts file whose workdir carries a command substitution: refused, by the hosts file's
    # validation or at the latest by the build (the default cache is <workdir>/qemu-builds).
    data = yaml.safe_load((bed / "hosts.yaml").read_text())
    for role in ("source", "destination"):
        data["pairs"]["testbed"][role]["workdir"] = f"/tmp/mb-w$(touch {marks[9]})`touch " \
                                                    f"{marks[10]}`"
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump(data))
    code = compare(bed, tmp_path, "--after", f"src:{tree}", hosts=hosts)
    line = one_line_error(capfd)
    assert code == 1 and "workdir" in line, line
    assert_nothing_ran(bed, marks)


def test_ssh_host_commands_carry_hostile_values_literally(
        bed: Path, tmp_path: Path, marks: list[Path]) -> None:
    """The transport itself on a real sshd: run, mkdir, start (supervisor, log, env),
    read_file, remove_tree."""
    values = hostile(marks)
    # File names cannot hold '/': these touch a relative marker, so look wherever a shell on
    # the host could have been (its home, /, /tmp, the folders made here).
    name = marks[11].name
    names = [f"$(touch {name})", f"`touch {name}`", f"x\ntouch {name}\n", f"'; touch {name}'"]
    folder = tmp_path / names[0]
    relative = [d / name for d in (Path("/root"), Path("/"), Path("/tmp"), tmp_path, folder)]
    pair = load_hosts(bed / "hosts.yaml").pairs["testbed"]
    with SshHost("source", pair.source) as host:
        out = host.run(["printf", "%s\\0", *values])
        assert out.split("\0")[:-1] == values
        host.mkdir(folder)
        assert folder.is_dir()
        for log_name in names[1:]:
            log = folder / log_name
            proc = host.start(sh_script('printf "%s\\0" "$MB_V" "$@"', *values), log,
                              env={"MB_V": values[3]})
            assert proc.wait(30) == 0
            want = [v.encode() for v in [values[3], *values]]
            assert host.read_file(log).split(b"\0")[:-1] == want
            assert host.read_file(log, max_bytes=8) == log.read_bytes()[-8:]
        host.remove_tree(folder)
        assert not folder.exists()
    assert_nothing_ran(bed, marks + relative)
