"""Hostile values against every place that composes shell text (issue 12, item 1).

Each test feeds ``$(touch MARK)``, backquotes, ``;``, both quote kinds, a newline followed by a
command and a leading ``-``, runs the composed text with a real ``sh`` in a tmp folder (a command
meant for a remote host is run by a local ``sh -c``, as the remote login shell would), and checks
that no file ``MARK`` appears anywhere and that the value arrived literally (or was refused in one
line). The last test reads the harness's source and fails on any shell text built from values.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.ci import patchbuild
from harness.errors import HarnessError, HostError
from harness.hosts import host as host_mod
from harness.hosts import netsetup, placement, provision, testbed
from harness.hosts.host import (
    Host,
    LocalHost,
    read_argv,
    relay_command,
    remote_command,
    sh_script,
    shell_line,
    supervise_command,
)
from harness.hosts.probe import binary_identity
from harness.plan.models import HostSpec
from harness.run.sampling.cpu import CpuSampler

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "data" / "fake-qemu-src"
MARK = "MARK"

# Values that run `touch MARK` (in the shell's folder) if they ever reach a shell unquoted or
# badly quoted, plus a leading '-' that a tool would take for an option.
HOSTILE = [
    f"$(touch {MARK})",
    f"`touch {MARK}`",
    f"; touch {MARK}",
    f"'; touch {MARK}; '",
    f"'$(touch {MARK})'",
    f'"; touch {MARK}; "',
    f'"$(touch {MARK})"',
    f"\ntouch {MARK}\n",
    f"x\n`touch {MARK}`",
    f"-x $(touch {MARK})",
    f"--x'\"`touch {MARK}`\"'",
    f"\\'; touch {MARK} #",
    "-rf",
]
# The same as single path components (no '/', not '.' or '..').
HOSTILE_NAMES = [v for v in HOSTILE if "/" not in v]

# Text with every character that means something to a shell mixed in.
DANGEROUS = "$`'\"\\;&|<>(){}[]*?!~#=%\n\t -"
shell_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0")
                     | st.sampled_from(list(DANGEROUS)), max_size=40)


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Commands run in ``tmp_path`` (a relative marker lands there); no marker afterwards."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert_no_marks(tmp_path)


def assert_no_marks(root: Path) -> None:
    found = [p for p in root.rglob(MARK)] + [p for p in [Path.cwd() / MARK] if p.exists()]
    assert found == [], f"{found}: a value was run as a command"


def sh(line: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``line`` run by a real ``sh -c``, as an SSH server's login shell runs a command line."""
    return subprocess.run(["sh", "-c", line], cwd=cwd, input=stdin, capture_output=True,
                          timeout=30, check=False)


def printed(values: list[str]) -> list[str]:
    return ["printf", "%s\\0", *values]


def nul_split(data: bytes) -> list[str]:
    return [x.decode() for x in data.split(b"\0")[:-1]]


# --------------------------------------------------------------------------------------------
# host.py: the quoting helper, the remote watchdog wrapper, the supervisor, read_file, relay


def test_shell_line_and_remote_command_deliver_hostile_values_literally(here: Path) -> None:
    line = remote_command(shell_line(printed(HOSTILE)), timeout=20)
    out = sh(line, here)
    assert out.returncode == 0, out.stderr
    assert nul_split(out.stdout) == HOSTILE


@settings(max_examples=60, deadline=None)
@given(st.lists(shell_text, min_size=1, max_size=4))
def test_shell_line_round_trips_any_text(values: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        out = sh(shell_line(printed(values)), Path(d))
        assert nul_split(out.stdout) == values
        assert os.listdir(d) == []  # nothing ran that could write here


@settings(max_examples=25, deadline=None)
@given(st.lists(shell_text, min_size=1, max_size=3))
def test_remote_command_wrapper_round_trips_any_text(values: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        out = sh(remote_command(shell_line(printed(values)), timeout=20), Path(d))
        assert nul_split(out.stdout) == values
        assert os.listdir(d) == []


def test_shell_line_refuses_a_nul_byte_in_one_line(here: Path) -> None:
    with pytest.raises(HostError, match="NUL byte") as exc:
        shell_line(["echo", "a\0; touch MARK"])
    assert "\n" not in str(exc.value)
    with pytest.raises(HostError, match="NUL byte"):
        LocalHost("source", HostSpec()).run(["echo", "a\0b"])


def test_sh_script_passes_values_as_positional_parameters(here: Path) -> None:
    out = LocalHost("source", HostSpec()).run(sh_script('printf "%s\\0" "$@"', *HOSTILE))
    assert nul_split(out.encode()) == HOSTILE


def test_supervisor_runs_argv_with_hostile_log_env_and_arguments(here: Path) -> None:
    log = here / HOSTILE_NAMES[0] / HOSTILE_NAMES[7]
    log.parent.mkdir()
    env = {"MB_VALUE": HOSTILE[3] + HOSTILE[7]}
    argv = sh_script('printf "%s\\0" "$MB_VALUE" "$@"', *HOSTILE)
    proc = subprocess.Popen(["sh", "-c", supervise_command(argv, log, env)], cwd=here,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"pid ")
        assert proc.wait(20) == 0
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the supervisor's watcher ends with our "channel"
        proc.kill()
        proc.wait()
    assert nul_split(log.read_bytes()) == [env["MB_VALUE"], *HOSTILE]
    with pytest.raises(HostError, match="not a name") as exc:
        supervise_command(["true"], log, {"-i X=$(touch MARK)": "1"})
    assert "\n" not in str(exc.value)


def test_read_file_command_reads_hostile_and_dash_file_names(here: Path) -> None:
    for i, name in enumerate(HOSTILE_NAMES):
        (here / name).write_text(f"content {i}\n")
        for path in (here / name, Path(name)):  # relative: a leading '-' must stay a file name
            for max_bytes in (None, 4):
                out = sh(remote_command(shell_line(read_argv(path, max_bytes)), 20), here)
                assert out.returncode == 0, out.stderr
                want = f"content {i}\n".encode()
                assert out.stdout == (want[-max_bytes:] if max_bytes else want)


def test_relay_command_reaches_a_socket_with_a_hostile_name(here: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="mb-t-", dir="/tmp"))
    try:
        for name in [HOSTILE_NAMES[0], HOSTILE_NAMES[3], "-x\n`touch MARK`"]:
            path = short / name
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            server.listen(1)

            def echo(srv: socket.socket = server) -> None:
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(conn.recv(100).upper())

            t = threading.Thread(target=echo, daemon=True)
            t.start()
            # stdin stays open until the answer is in: the relay ends when either side closes.
            relay = subprocess.Popen(["sh", "-c", relay_command(path)], cwd=here,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert relay.stdin is not None and relay.stdout is not None
            relay.stdin.write(b"hello")
            relay.stdin.flush()
            answer = relay.stdout.read(5)
            relay.stdin.close()
            assert relay.wait(10) == 0
            t.join(10)
            server.close()
            assert answer == b"HELLO", name
    finally:
        assert_no_marks(short)
        shutil.rmtree(short)


def test_local_host_file_helpers_take_hostile_and_dash_names_literally(here: Path) -> None:
    host = LocalHost("source", HostSpec())
    for name in HOSTILE_NAMES:
        path = Path(name)  # relative, so a leading '-' is where an option could be
        host.mkdir(path / "sub")
        assert (here / name / "sub").is_dir() and host.exists(path / "sub")
        host.remove_tree(path)
        assert not (here / name).exists() and not host.exists(path)


def test_kill_never_signals_a_process_group_or_everything() -> None:
    host = LocalHost("source", HostSpec())
    calls: list[list[str]] = []

    class Recording(LocalHost):
        def run(self, argv: Sequence[str], timeout: float = 60.0, check: bool = True) -> str:
            calls.append(list(argv))
            return ""

    for pid in (0, -1, -os.getpid()):
        assert host.kill(pid) is False  # os.kill(-1, SIGKILL) as root would end everything
        assert Host.kill(Recording("source", HostSpec()), pid) is False
    assert calls == []
    assert Host.kill(Recording("source", HostSpec()), 12345, 15) is True
    assert calls == [["kill", "-15", "12345"]]


# --------------------------------------------------------------------------------------------
# sampling/cpu.py: the probe's command line, as SshHost.stream sends it


def test_cpu_sampler_remote_command_keeps_a_hostile_proc_root(here: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        for name in [HOSTILE_NAMES[0], HOSTILE_NAMES[7], "-x $(touch MARK)", "-rf"]:
            link = here / name
            link.symlink_to("/proc")
            # The probe's command line parsed by a shell, as SshHost.stream's is by the login shell.
            sampler = CpuSampler(sleeper.pid, hz=50, proc_root=str(link), stream=lambda argv: (
                host_mod.pipe_stream(["sh", "-c", host_mod.shell_line(argv)])))
            sampler.start()
            time.sleep(0.1)
            trace = sampler.stop()
            assert trace.samples and trace.process_comm == "sleep", name
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------------------
# patchbuild.py: the build script (configure flags, patch names, the build folder)


def _recording_tree(tmp_path: Path) -> Path:
    """The fake QEMU tree, whose configure also writes each argument it got, NUL-terminated."""
    tree = tmp_path / "src"
    shutil.copytree(FAKE, tree)
    configure = tree / "configure"
    text = configure.read_text().replace(
        "set -e\n", "set -e\nprintf '%s\\0' \"$@\" > ../configure.args\n", 1)
    configure.write_text(text)
    configure.chmod(configure.stat().st_mode | stat.S_IXUSR)
    return tree


def test_patchbuild_configure_args_and_patch_names_arrive_literally(here: Path) -> None:
    """The bug of issue 12: the old script echoed `'== ./configure ...'` around already quoted
    flags, so `$(...)` in a flag ran on the build host. This test failed on that code."""
    tree = _recording_tree(here)
    args = [f"--enable-{v}" for v in HOSTILE] + [f"--disable-{v}" for v in HOSTILE]
    patch = here / f"$(touch {MARK}); `touch {MARK}`\n'x\".patch"
    patch.write_bytes((FAKE / "fix-version.patch").read_bytes())
    host = LocalHost("source", HostSpec(workdir=here / "work"))
    cache = here / "cache"
    res = patchbuild.build_on_host(host, patchbuild.SourceSpec(tree, (patch,)), cache=cache,
                                   configure_args=args)
    dest = cache / res.key
    assert nul_split((dest / "configure.args").read_bytes()) == [
        "--target-list=x86_64-softmmu", f"--prefix={dest / 'install'}", *args]
    assert (dest / "install" / "share" / "qemu" / "fake-version").read_text().strip() == \
        "10.0.2-fake-patched"
    log = res.log.read_text()
    assert patch.name in log  # the patch step, named literally
    shown = next(ln for ln in log.splitlines() if ln.startswith("== ./configure"))
    assert shown.startswith("== ./configure --target-list=x86_64-softmmu")


def test_patchbuild_script_takes_a_hostile_build_folder_literally(here: Path) -> None:
    """The script itself, with a build folder no cache check would allow (defence in depth)."""
    tree = here / "mini"
    tree.mkdir()
    (tree / "configure").write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > ../configure.args\n")
    (tree / "configure").chmod(0o755)
    (tree / "Makefile").write_text("all:\n\ttrue\ninstall:\n\ttrue\n")
    for i, name in enumerate(HOSTILE_NAMES):
        dest = here / f"{i}{name}"
        (dest / "patches").mkdir(parents=True)
        (dest / "src.tar.gz").write_bytes(patchbuild.pack(tree))
        out = subprocess.run(patchbuild.build_argv(dest, [name], 1), cwd=here,
                             capture_output=True, timeout=60, check=False)
        assert out.returncode == 0, ((dest / "build.log").read_text(), out.stderr)
        assert nul_split((dest / "configure.args").read_bytes()) == [
            "--target-list=x86_64-softmmu", f"--prefix={dest / 'install'}", name]


def test_patchbuild_refuses_a_build_folder_configure_cannot_take(here: Path) -> None:
    # model_construct: the hosts file's own validation may refuse such a workdir first.
    host = LocalHost("source", HostSpec.model_construct(workdir=here / "work$(touch MARK)"))
    src = patchbuild.SourceSpec(_recording_tree(here))
    for value in HOSTILE:
        if value == "-rf":  # absolute, so never an option: built there like any folder
            res = patchbuild.build_on_host(host, src, cache=here / value)
            assert res.build.binary.is_relative_to(here / "-rf") and res.build.binary.exists()
            continue
        with pytest.raises(HarnessError, match="--build-cache .*use another folder") as exc:
            patchbuild.build_on_host(host, src, cache=here / value)
        assert "\n" not in str(exc.value)
    with pytest.raises(HarnessError, match=r"build cache \(workdir/qemu-builds\)"):
        patchbuild.build_on_host(host, src)
    assert not (here / "cache").exists() and not (here / "work$(touch MARK)").exists()


# --------------------------------------------------------------------------------------------
# provision, placement, netsetup, probe, host (VM folders): fixed scripts with positional parameters


def test_provision_bridge_check_takes_hostile_names_literally(here: Path) -> None:
    host = LocalHost("source", HostSpec())
    for name in HOSTILE:
        assert host.run(sh_script(provision._BRIDGE_SH, name)).strip() == "no"


def test_provision_image_hashes_take_a_hostile_folder_and_file_names(here: Path) -> None:
    import hashlib

    host = LocalHost("source", HostSpec())
    folder = here / HOSTILE_NAMES[1] / HOSTILE_NAMES[9]
    folder.mkdir(parents=True)
    names = [n for n in HOSTILE_NAMES if "\n" not in n and "\\" not in n]  # sha256sum escapes
    for n in names:
        (folder / n).write_text(n)
    out = host.run(sh_script(placement._HASHES_SH, folder, *names))
    got = dict(line.split("  ", 1)[::-1] for line in out.splitlines())
    assert got == {n: hashlib.sha256(n.encode()).hexdigest() for n in names}


def test_tap_script_takes_a_hostile_bridge_name_literally(here: Path) -> None:
    if shutil.which("ip") is None:
        pytest.skip("no ip (iproute2)")
    host = LocalHost("source", HostSpec())
    for name in HOSTILE:
        cp = subprocess.run(sh_script(netsetup._TAP_SH, name, "mbtap-never"), cwd=here,
                            capture_output=True, text=True, timeout=20, check=False)
        assert cp.returncode == 3 and cp.stderr == f"no bridge {name}\n"
    assert host.run(["ip", "-br", "link", "show", "dev", "lo"])


def test_interface_names_are_checked_before_ip_sees_them() -> None:
    for ok in ("br-vm", "mbbr0", "br_vm.10", "_x"):
        netsetup.check_ifname("VM bridge", ok)
    for bad in [*HOSTILE, "-x", ".", "..", "a/b", "a b", "x" * 16, ""]:
        with pytest.raises(HostError, match="not an interface name") as exc:
            netsetup.check_ifname("VM bridge", bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(HostError, match="not an interface name"):
        netsetup.LocalVmNetwork("t1", bridge="-x")


def test_probe_stat_script_takes_hostile_and_dash_binary_names(here: Path) -> None:
    host = LocalHost("source", HostSpec())
    for name in HOSTILE_NAMES:
        exe = here / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
        for path in (exe, Path(name)):
            ident = binary_identity(host, path)
            assert ident is not None and ident[0] == str(exe).strip(), name
            assert ident[1] == len("#!/bin/sh\n")
        exe.chmod(0o644)
        assert binary_identity(host, exe) is None


def test_vm_dirs_script_takes_a_hostile_workdir_literally(here: Path) -> None:
    host = LocalHost("source", HostSpec())
    exe = here / "qemu"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    for name in HOSTILE_NAMES:
        for workdir in (here / "w" / name, Path(name)):
            out = host.run(sh_script(host_mod._VM_DIRS_SH, exe, workdir)).strip()
            try:
                assert out.startswith("/tmp/mb-vm.") and Path(out).is_dir()
            finally:
                shutil.rmtree(out, ignore_errors=True)
            made = workdir if workdir.is_absolute() else here / workdir
            assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700
            shutil.rmtree(made)
        assert host.run(sh_script(host_mod._VM_DIRS_SH, here / name, here)).strip() == "missing"


# --------------------------------------------------------------------------------------------
# testbed.py: no shell, but its folder goes into sshd's config and rate/delay into tc


def test_testbed_refuses_hostile_dir_rate_and_delay_in_one_line(
        here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object) -> None:
        raise AssertionError("up() went past its checks")

    # Should a check ever let a value through, up() must still not build a real test bed.
    monkeypatch.setattr(testbed, "_check_tools", never)
    monkeypatch.setattr(testbed, "down", never)
    for value in [*HOSTILE, "x\nForceCommand touch MARK", "a b", "%h"]:
        if value != "-rf":  # "-rf" is a fine folder name: absolute, it is never an option
            with pytest.raises(testbed.TestbedError, match="--dir") as exc:
                testbed.up(here / value)
            assert "\n" not in str(exc.value)
            assert not (here / value).exists()
        for rate, delay in ((value, None), ("1gbit", value)):
            with pytest.raises(testbed.TestbedError, match="--rate|--delay") as exc:
                testbed._check_args(rate, delay)
            assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------------
# the whole harness: no shell text built from values


SHELLS = {"sh", "bash", "dash", "python3", "python"}


def _constants(tree: ast.Module) -> set[str]:
    """Module-level names bound once to a literal string."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


def _fixed(node: ast.expr, constants: set[str], imported: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants or node.id in imported
    return False


def shell_text_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    constants = _constants(tree)
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names if a.name.isupper() or a.name.startswith("_") and
                a.name[1:].isupper() or a.name.endswith("_SH")}
    problems = []
    helper = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sh_script"]
    exempt = {id(n) for h in helper for n in ast.walk(h)}  # the helper takes any script
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.List):
            elts = node.elts
            for i in range(len(elts) - 2):
                a, b, c = elts[i], elts[i + 1], elts[i + 2]
                if isinstance(a, ast.Constant) and a.value in SHELLS and \
                        isinstance(b, ast.Constant) and b.value == "-c" and \
                        not _fixed(c, constants, imported):
                    problems.append(f"{where}: {a.value} -c with a script built at run time")
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name == "sh_script" and node.args and not _fixed(node.args[0], constants,
                                                                   imported):
                problems.append(f"{where}: sh_script with a script built at run time")
            if name in ("system", "popen") and getattr(node.func, "value", None) is not None \
                    and getattr(node.func.value, "id", "") == "os":  # type: ignore[attr-defined]
                problems.append(f"{where}: os.{name} runs a shell")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                    problems.append(f"{where}: shell=True")
    return problems


def test_no_shell_text_is_built_from_values_anywhere_in_the_harness() -> None:
    problems = [p for f in sorted((REPO / "harness").rglob("*.py"))
                for p in shell_text_problems(f)]
    assert problems == []


def test_the_source_check_catches_the_old_patchbuild_script(tmp_path: Path) -> None:
    old = tmp_path / "old.py"
    old.write_text('q = 1\ndef f(host, script, log):\n'
                   '    host.run(["sh", "-c", f"( {script}\\n) > {log} 2>&1"])\n'
                   '    host.run(sh_script("echo " + script))\n'
                   '    subprocess.run(script, shell=True)\n')
    fake_repo_file = REPO / "harness" / ".shell-check-probe.py"
    shutil.copyfile(old, fake_repo_file)
    try:
        problems = shell_text_problems(fake_repo_file)
    finally:
        fake_repo_file.unlink()
    assert len(problems) == 3, problems
