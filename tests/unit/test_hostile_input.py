"""Hostile input through ``migbench`` itself (issue 12, items 2 and 4).

Every case goes through :func:`harness.cli.main` and must end the same way: exit code 1, exactly
one line on stderr (``migbench: error: ...``, at most ~300 characters, no traceback), nothing on
stdout, nothing written (the folder the command would write to does not exist afterwards and the
test's folder is unchanged), and no process started: ``subprocess.Popen`` and the runner are
replaced by guards that fail the test, and this process has no new child afterwards.

The first half has one test per class of bad input; the second half generates them with
Hypothesis (a valid matrix, hosts file or command line with one value made hostile).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import checks, cli
from harness.errors import MAX_LINE, HarnessError
from harness.plan.config import load_matrix
from harness.plan.matrix import expand
from harness.plan.models import HOSTNAME_PATTERN, NAME_PATTERN, USER_PATTERN, WORKDIR_PATTERN

PREFIX = "migbench: error: "

MATRIX: dict[str, Any] = {
    "name": "t",
    "repetitions": 1,
    "guest": {"vcpus": 1, "memory_mib": 512},
    "limits": {"max_time_s": 30, "max_dirty_syncs": 10, "observe_after_s": 1, "sample_hz": 20},
    "workload": {"writer": {"working_set_mib": 64, "rate_mib_s": 8, "pattern": "sparse",
                            "threads": 1}},
    "migration": {"max-bandwidth": "200mbit", "downtime-limit": 300,
                  "xbzrle-cache-size": "64MiB"},
    "variants": {"a": {"build": "x"}, "b": {"build": "y"}},
    "axes": {"feature": ["precopy", "xbzrle"], "multifd-channels": [2],
             "writer.rate_mib_s": [8, 16]},
    "shuffle_seed": 7,
}


def hosts_data(binary: Path) -> dict[str, Any]:
    ssh = {"transport": "ssh", "address": "192.0.2.10", "user": "bench", "port": 22,
           "workdir": "/var/tmp/migbench", "connect_timeout_s": 5, "vm_bridge": "br-vm"}
    return {
        "qemu_builds": {"x": {"binary": str(binary)}, "y": {"binary": str(binary)}},
        "default_build": "x",
        "pairs": {"p1": {"source": {"workdir": "/tmp/mb-a"}, "destination": {"workdir": "/tmp/mb-b"}},
                  "p2": {"source": ssh, "destination": {**ssh, "address": "dst.example"}}},
    }


# --- the contract ----------------------------------------------------------------------------


def _children() -> set[int]:
    """Processes whose parent is this one (read from /proc: no psutil)."""
    me, kids = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == me:
                kids.add(int(entry))
    return kids


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any process start or any run: validation must come first."""

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a process was started before validation failed: {args[:1]}")

    def no_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("run_matrix reached: validation must fail before any host action")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr("harness.run.runner.run_matrix", no_run)


class Case:
    """One folder with a matrix and a hosts file, and the command lines that use them."""

    def __init__(self, folder: Path, matrix: Any = None, hosts: Any = None) -> None:
        self.folder = folder
        self.binary = folder / "qemu-system-x86_64"
        self.binary.write_text("#!/bin/sh\nexit 1\n")
        self.matrix = folder / "m.yaml"
        self.hosts = folder / "hosts.yaml"
        self.out = folder / "out"
        self.write(self.matrix, MATRIX if matrix is None else matrix)
        self.write(self.hosts, hosts_data(self.binary) if hosts is None else hosts)

    @staticmethod
    def write(path: Path, content: Any) -> None:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))

    def argv(self, command: str) -> list[str]:
        m, h, o = str(self.matrix), str(self.hosts), str(self.out)
        return {
            "run --dry-run": ["run", m, "--hosts", h, "--out", o, "--dry-run"],
            "run": ["run", m, "--hosts", h, "--out", o],
            "run --smoke": ["run", m, "--hosts", h, "--out", o, "--smoke"],
            "nightly": ["nightly", m, "--hosts", h, "--history", o, "--junit", o + "/j.xml"],
            "compare": ["compare", m, "--hosts", h, "--out", o, "--before", "x", "--after", "y"],
            "doctor": ["doctor", "--hosts", h, "--matrix", m],
            "provision": ["provision", "--hosts", h, "--check", "--no-image"],
            "advise": ["advise", m, "--hosts", h, "--out", o],
            "worker": ["worker", "--hosts", h, "--pair", "p1", "--broker", "redis://127.0.0.1:1/0"],
        }[command]


COMMANDS = ["run --dry-run", "run", "run --smoke", "nightly", "compare", "doctor", "provision",
            "advise", "worker"]
MATRIX_COMMANDS = [c for c in COMMANDS if c not in ("provision", "worker")]


def refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``migbench argv`` and check the contract; returns the error line."""
    before, kids = _tree(folder), _children()
    code = cli.main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 1, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(PREFIX), lines[0]
    assert "Traceback" not in captured.err
    assert len(lines[0]) <= len(PREFIX) + MAX_LINE, len(lines[0])
    assert lines[0].isprintable()
    assert captured.out == ""
    assert _tree(folder) == before
    assert not (folder / "out").exists()
    assert _children() <= kids
    return lines[0].removeprefix(PREFIX)


@pytest.fixture
def case(tmp_path: Path, guarded: None, monkeypatch: pytest.MonkeyPatch) -> Case:
    monkeypatch.chdir(tmp_path)
    return Case(tmp_path)


def with_value(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the value at ``path`` replaced (created if missing)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data))
    node: Any = out
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return out


def with_key(data: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the last key of ``path`` renamed to ``new``."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data))
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[new] = node.pop(path[-1])
    return out


# --- the fixtures are sound: the valid inputs pass -------------------------------------------


def test_valid_matrix_and_hosts_pass(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(case.argv("run --dry-run")) == 0, capsys.readouterr().err
    assert "8 cells x 1 repetitions" in capsys.readouterr().out  # 2 variants x 2 features x 2 rates
    with pytest.raises(AssertionError, match="run_matrix reached"):
        cli.main(case.argv("run"))


# --- one test per class ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("limits", "max_time_s"), math.inf, "limits.max_time_s: must be a finite number"),
    (("limits", "observe_after_s"), math.nan, "limits.observe_after_s: must be a finite number"),
    (("workload", "writer", "rate_mib_s"), math.inf, "workload.writer.rate_mib_s: must be a finite"),
    (("migration", "max-bandwidth"), math.inf, "migration.max-bandwidth: size must be a finite"),
    (("migration", "downtime-limit"), math.nan, "migration.downtime-limit: must be an integer"),
    (("axes", "writer.rate_mib_s"), [8, math.nan], "axes.writer.rate_mib_s: Input should be a finite"),
    (("axes", "max-bandwidth"), [-math.inf], "axes.max-bandwidth: size must be a finite number"),
    (("variants", "a", "migration"), {"postcopy-after-s": math.inf},
     "variants.a.migration.postcopy-after-s: must be an integer"),
])
def test_infinite_and_nan_numbers(case: Case, capsys: pytest.CaptureFixture[str],
                                  path: tuple[str, ...], value: Any, expected: str) -> None:
    case.write(case.matrix, with_value(MATRIX, path, value))
    assert f"{case.matrix}: {expected}" in refused(case.argv("run --dry-run"), case.folder, capsys)


def test_infinite_number_in_hosts_file(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.write(case.hosts, with_value(hosts_data(case.binary),
                                      ("pairs", "p2", "source", "connect_timeout_s"), math.inf))
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert f"{case.hosts}: pairs.p2.source.connect_timeout_s: must be a finite number" in line


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("repetitions",), True, "repetitions: a boolean where a whole number belongs (got True)"),
    (("guest", "vcpus"), 1.5, "guest.vcpus: must be a whole number (got 1.5)"),
    (("guest", "memory_mib"), 512.0, "guest.memory_mib: must be a whole number (got 512.0)"),
    (("limits", "max_dirty_syncs"), 2.5, "limits.max_dirty_syncs: must be a whole number"),
    (("limits", "max_time_s"), True, "limits.max_time_s: a boolean where a number belongs"),
    (("limits", "max_time_s"), "30", "limits.max_time_s: must be a number (got '30')"),
    (("workload", "writer", "threads"), False, "workload.writer.threads: a boolean"),
    (("workload", "fio"), {"direct": 1}, "workload.fio.direct: Input should be a valid boolean"),
    (("migration", "multifd-channels"), 2.0, "migration.multifd-channels: must be an integer"),
    (("migration", "downtime-limit"), True, "migration.downtime-limit: must be an integer"),
])
def test_booleans_and_fractions_where_integers_belong(
        case: Case, capsys: pytest.CaptureFixture[str], path: tuple[str, ...], value: Any,
        expected: str) -> None:
    case.write(case.matrix, with_value(MATRIX, path, value))
    assert f"{case.matrix}: {expected}" in refused(case.argv("run --dry-run"), case.folder, capsys)


@pytest.mark.parametrize(("knob", "value", "expected"), [
    ("max-bandwidth", 0, "0 is 0 bytes: to QEMU 0 means no limit: write `unlimited` for that"),
    ("max-bandwidth", "0mbit", "'0mbit' rounds down to 0 bytes: to QEMU 0 means no limit"),
    ("max-bandwidth", "7bit", "'7bit' rounds down to 0 bytes"),
    ("max-bandwidth", 0.5, "0.5 is not a whole number of bytes"),
    ("max-bandwidth", "0.5", "'0.5' is not a whole number of bytes"),
    ("max-postcopy-bandwidth", 0, "0 is 0 bytes: to QEMU 0 means no limit: write `unlimited`"),
    ("avail-switchover-bandwidth", "0", "'0' is 0 bytes: to QEMU 0 means \"estimate it\""),
    ("avail-switchover-bandwidth", "unlimited", "cannot parse size 'unlimited'"),
    ("xbzrle-cache-size", 0, "must be at least 4KiB"),
])
def test_zero_and_what_rounds_to_zero_is_refused(
        case: Case, capsys: pytest.CaptureFixture[str], knob: str, value: Any,
        expected: str) -> None:
    case.write(case.matrix, with_value(MATRIX, ("migration", knob), value))
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert f"{case.matrix}: migration.{knob}: {expected}" in line


def test_unlimited_is_spelled_out_and_recorded(case: Case,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = with_value(MATRIX, ("axes", "max-bandwidth"), ["unlimited", "1gbit"])
    data = with_value(data, ("axes", "feature"), ["precopy", "postcopy"])
    data = with_value(data, ("migration", "max-postcopy-bandwidth"), "unlimited")
    case.write(case.matrix, data)
    assert cli.main(case.argv("run --dry-run")) == 0
    assert "max-bandwidth=unlimited" in capsys.readouterr().out
    cells = expand(load_matrix(case.matrix), "x")
    unlimited = {(c.feature, c.axes["max-bandwidth"]): c.migration.to_dict().get("unlimited")
                 for c in cells}
    assert unlimited == {  # only where the parameter acts (max-postcopy-bandwidth: postcopy)
        ("precopy", "unlimited"): ["max-bandwidth"], ("precopy", "1gbit"): None,
        ("postcopy", "unlimited"): ["max-bandwidth", "max-postcopy-bandwidth"],
        ("postcopy", "1gbit"): ["max-postcopy-bandwidth"]}
    for c in cells:  # QEMU is given its own spelling of "no limit"
        assert c.migration.parameters["max-bandwidth"] == (
            0 if c.axes["max-bandwidth"] == "unlimited" else 125_000_000)
        assert c.migration.parameters.get("max-postcopy-bandwidth", 0) == 0


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("migration", "max-bandwidth"), 2**64, "18446744073709551616 bytes is beyond QEMU's 64-bit"),
    (("migration", "max-bandwidth"), "20000000TiB", "is beyond QEMU's 64-bit limit"),
    (("axes", "max-postcopy-bandwidth"), ["1" * 31 + "MiB"], "cannot parse size"),
    (("guest", "memory_mib"), 10**23, "guest.memory_mib: Input should be less than or equal to"),
    (("guest", "vcpus"), 1000, "guest.vcpus: Input should be less than or equal to 64"),
    (("guest", "vcpus"), 0, "guest.vcpus: Input should be greater than 0"),
    (("repetitions",), 10**6, "repetitions: Input should be less than or equal to 1000"),
    (("limits", "max_time_s"), 1e9, "limits.max_time_s: Input should be less than or equal"),
    (("workload", "writer", "rate_mib_s"), 1e300, "rate_mib_s: Input should be less than"),
    (("workload", "writer", "rate_mib_s"), 1e-300, "1e-300 MiB/s is less than a 4 KiB page a"),
    (("axes", "writer.rate_mib_s"), [8, 0.001], "0.001 MiB/s is less than a 4 KiB page a"),
    (("migration", "downtime-limit"), 2_000_001, "must be between 0 and 2000000"),
    (("migration", "vcpu-dirty-limit"), 2**40, "must be between 1 and 1073741824"),
    (("axes", "xbzrle-cache-size"), ["1GiB"], "is larger than the guest's RAM (512 MiB)"),
    (("workload", "fio"), {"bs": "9" * 40 + "k"}, "workload.fio.bs: String should match"),
    (("shuffle_seed",), -1, "shuffle_seed: Input should be greater than or equal to 0"),
    (("axes", "downtime-limit"), list(range(10_001)), "combinations, more than 10000"),
])
def test_sizes_and_numbers_out_of_range(case: Case, capsys: pytest.CaptureFixture[str],
                                        path: tuple[str, ...], value: Any, expected: str) -> None:
    case.write(case.matrix, with_value(MATRIX, path, value))
    assert expected in refused(case.argv("run --dry-run"), case.folder, capsys)


@pytest.mark.parametrize(("text", "spelled"), [("1e3", "1.0e+3"), ("25E1", "2.5e+2")])
def test_an_exponent_yaml_reads_as_text_says_how_to_write_it(
        case: Case, capsys: pytest.CaptureFixture[str], text: str, spelled: str) -> None:
    """YAML 1.1 reads 1e3 as a string: the error says how to write it, and that spelling works."""
    case.matrix.write_text(f"name: x\nlimits: {{max_time_s: {text}}}\n"
                           "workload: {writer: {working_set_mib: 16, rate_mib_s: 4}}\n")
    err = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert f"must be a number (got '{text}': write it with a dot and a signed exponent, " \
           f"e.g. {spelled})" in err
    case.matrix.write_text(case.matrix.read_text().replace(text, spelled))
    assert cli.main(case.argv("run --dry-run")) == 0


WORKLOAD_AXIS = [(("workloads",), {"w": {"writer": {"working_set_mib": 32}}}),
                 (("axes", "workload"), ["w"])]


@pytest.mark.parametrize(("changes", "expected"), [
    ([(("axes", "workload"), [["w"]])], "axes.workload: names ['w'], which is not under"),
    ([*WORKLOAD_AXIS, (("exclude",), [{"workload": {"a": 1}}])],
     "exclude[0].workload: names unknown workload {'a': 1}"),
    ([(("include",), [{"variant": ["a"]}])], "include[0].variant: names unknown variant ['a']"),
    ([(("axes", "variant"), [{"a": 1}])], "axes.variant: names unknown variant {'a': 1}"),
])
def test_a_list_or_mapping_where_a_name_belongs(case: Case, capsys: pytest.CaptureFixture[str],
                                               changes: list[tuple[tuple[str, ...], Any]],
                                               expected: str) -> None:
    """`value in dict` raises TypeError for an unhashable value: it was a traceback."""
    data = MATRIX
    for path, value in changes:
        data = with_value(data, path, value)
    case.write(case.matrix, data)
    assert expected in refused(case.argv("run --dry-run"), case.folder, capsys)


@pytest.mark.parametrize("command", ["run --dry-run", "run", "nightly", "compare", "doctor",
                                     "provision", "worker"])
def test_unknown_pair_is_refused_with_the_known_pairs(
        case: Case, capsys: pytest.CaptureFixture[str], command: str) -> None:
    line = refused([*case.argv(command), "--pair", "nope"], case.folder, capsys)
    assert f"{case.hosts}: pairs: no pair 'nope' (--pair takes one of: p1, p2)" in line


@pytest.mark.parametrize(("command", "flag", "expected"), [
    ("nightly", "--alpha=2", "--alpha 2.0: must be above 0 and at most 0.5"),
    ("nightly", "--alpha=0", "--alpha 0.0: must be above 0"),
    ("compare", "--alpha=nan", "--alpha nan: must be a finite number"),
    ("nightly", "--persist=-3", "--persist -3: must be at least 1 and at most 100"),
    ("compare", "--persist=1.5", "argument --persist: invalid int value: '1.5'"),
    ("nightly", "--min-effect=inf", "--min-effect inf: must be a finite number"),
    ("nightly", "--min-effect=-5", "--min-effect -5.0: must be above 0"),
    ("nightly", "--metric-effect=total_time_ms=nan", "'total_time_ms=nan': PERCENT must be a finite"),
    ("compare", "--metric-effect=bogus=5", "use METRIC=PERCENT, METRIC one of total_time_ms"),
    ("doctor", "--memory-mib=99999999999", "--memory-mib 99999999999: must be at least 128"),
    ("doctor", "--memory-mib=1e3", "argument --memory-mib: invalid int value: '1e3'"),
    ("doctor", "--memory-mib=" + "1" * 400, "--memory-mib 11111"),  # past float: OverflowError
    ("run", "--redeliveries=9" + "0" * 400, "must be at least 0 and at most 10"),
    ("compare", "--configure-arg=$(touch MARK)", "QEMU's configure takes options like"),
    ("compare", "--build-cache=cache", f"--build-cache 'cache': must match {WORKDIR_PATTERN}"),
    ("compare", "--build-cache=/srv/$(id)", "--build-cache '/srv/$(id)': must match"),
    ("compare", "--build-cache=/srv/../etc", "without '..'"),
    ("run --dry-run", "--out=a\x1b[2Jb", "--out 'a\\x1b[2Jb': contains control characters"),
])
def test_cli_flags_are_range_checked(case: Case, capsys: pytest.CaptureFixture[str],
                                     command: str, flag: str, expected: str) -> None:
    assert expected in refused([*case.argv(command), flag], case.folder, capsys)


@pytest.mark.parametrize(("argv", "expected"), [
    (["testbed", "up", "--rate", "0bit"], "--rate '0bit': must be between 8kbit and 100gbit"),
    (["testbed", "up", "--rate", "200gbit"], "must be between 8kbit and 100gbit"),
    (["testbed", "up", "--rate", "1gbit; reboot"], "use a tc rate like 1gbit"),
    (["testbed", "up", "--delay", "100s"], "--delay '100s': must be above 0 and at most 10s"),
    (["testbed", "up", "--delay", "0ms"], "must be above 0"),
    (["testbed", "status", "--dir", "x\ny"], "--dir 'x\\ny': contains control characters"),
    (["testbed", "up", "--dir", "/tmp/my bed"], f"--dir '/tmp/my bed': must match {WORKDIR_PATTERN}"),
    (["image", "build", "--cache", "\x07"], "--cache '\\x07': contains control characters"),
    (["compare", "m.yaml", "--before", "x", "--after", "y", "--hosts", "hosts.yaml",
      "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    (["nightly", "m.yaml"], "the following arguments are required: --history"),
    (["lab", "status", "--broker", "redis://u:pw@[::1"],  # urlsplit raises on it
     "--broker 'redis://u:***@[::1': not a URL (Invalid IPv6 URL)"),
    (["worker", "--broker", "redis://h:1/0?x#[", "--lease-s", "5"], "--broker"),
])
def test_other_commands_flags(case: Case, capsys: pytest.CaptureFixture[str], argv: list[str],
                              expected: str) -> None:
    assert expected in refused(argv, case.folder, capsys)


def test_every_option_of_every_command_has_a_check() -> None:
    assert checks.unchecked_options(cli.build_parser()) == []


#: A usual value of every option and argument of every command, relative paths included.
VALID_COMMAND_LINES = [
    ["run", "m.yaml", "--hosts", "hosts.yaml", "--out", "results/x", "--dry-run", "--pair", "p1",
     "--smoke", "--redeliveries", "2"],
    ["run", "m.yaml", "--engine", "celery://redis://127.0.0.1:6379/0", "--attach"],
    ["run", "m.yaml", "--broker", "redis://lab-1:6379/0", "--engine", "local"],
    ["show", "results/x"],
    ["advise", "m.yaml", "--hosts", "hosts.yaml", "--out", "results/x", "--calibration-s", "10"],
    ["export", "results/x", "--format", "csv", "--output", "runs.csv"],
    ["report", "results/x", "--baseline", "a", "--output", "report", "--slides", "a1b2..c3d4",
     "--text"],
    ["testbed", "up", "--rate", "200mbit", "--delay", "1ms", "--dir", "/tmp/bed"],
    ["testbed", "down", "--dir", "/tmp/bed"],
    ["testbed", "status", "--dir", "/tmp/bed"],
    ["nightly", "m.yaml", "--history", "history", "--min-effect", "5",
     "--metric-effect", "downtime_ms=20", "--alpha", "0.05", "--persist", "2", "--junit", "j.xml",
     "--verdict", "v.json", "--hosts", "hosts.yaml", "--pair", "p1", "--report", "r",
     "--no-report"],
    ["compare", "m.yaml", "--before", "a", "--after", "src:qemu+fix.patch", "--out", "results/x",
     "--build-cache", "/var/tmp/builds", "--configure-arg=--enable-debug", "--text",
     "--min-effect", "5", "--metric-effect", "downtime_ms=20", "--alpha", "0.05", "--persist",
     "2", "--junit", "j.xml", "--verdict", "v.json", "--hosts", "hosts.yaml", "--pair", "p1"],
    ["doctor", "--hosts", "hosts.yaml", "--pair", "p1", "--matrix", "m.yaml", "--memory-mib",
     "512"],
    ["provision", "--hosts", "hosts.yaml", "--pair", "p1", "--bridge", "--check", "--fio",
     "--no-image", "--image-cache", "cache/image"],
    ["init", "--qemu", "10.0=build/qemu", "--output", "hosts.yaml", "--force"],
    ["worker", "--hosts", "hosts.yaml", "--pair", "p1", "--broker", "redis://127.0.0.1:6379/0",
     "--name", "w1", "--lease-s", "60"],
    ["lab", "status", "--broker", "redis://127.0.0.1:6379/0"],
    ["image", "build", "--cache", "cache/image", "--force", "--fio", "fio", "--distro", "debian"],
]


def _options(parser: Any, prog: tuple[str, ...] = ()) -> set[tuple[tuple[str, ...], str]]:
    """(command words, option or argument) of every command."""
    import argparse

    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                found |= _options(sub, (*prog, word))
        elif action.dest != "help":
            found.add((prog, action.option_strings[-1] if action.option_strings else action.dest))
    return found


def test_usual_values_of_every_option_pass_the_checks() -> None:
    """A check meant for one command's option must not refuse another's that shares its name:
    ``export DIR`` was checked as testbed's ``--dir`` and refused every relative folder."""
    parser = cli.build_parser()
    used = set()
    for argv in VALID_COMMAND_LINES:
        args = parser.parse_args(argv)
        checks.check_flags(parser, args)
        given = {a.partition("=")[0] for a in argv if a.startswith("-")}
        for prog, option in _options(parser):
            # a positional argument is always given; an option when the line has it
            if tuple(argv[:len(prog)]) == prog and (
                    not option.startswith("-") or option in given):
                used.add((prog, option))
    assert sorted(_options(parser) - used) == []


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("pairs", "p1", "source", "workdir"), "/tmp/$(touch MARK)",
     f"pairs.p1.source.workdir: '/tmp/$(touch MARK)' must match {WORKDIR_PATTERN} without '..'"),
    (("pairs", "p1", "source", "workdir"), "relative/dir", "'relative/dir' must match"),
    (("pairs", "p1", "destination", "workdir"), "/srv/../etc", "'/srv/../etc' must match"),
    (("pairs", "p1", "destination", "workdir"), "/srv/a b", "'/srv/a b' must match"),
    (("pairs", "p2", "source", "user"), "-oProxyCommand=x",
     f"pairs.p2.source.user: '-oProxyCommand=x' must match {USER_PATTERN}"),
    (("pairs", "p2", "source", "address"), "host;reboot",
     f"'host;reboot' is neither an IP address nor a host name matching {HOSTNAME_PATTERN}"),
    (("pairs", "p2", "destination", "migration_address"), "-x", "'-x' is neither an IP"),
    (("pairs", "p2", "source", "port"), True, "pairs.p2.source.port: a boolean where"),
    (("pairs", "p2", "source", "vm_bridge"), "br$(x)", "is not an interface name"),
    (("default_build", ), "$(x)", f"default_build: '$(x)' must match {NAME_PATTERN}"),
    (("qemu_builds", "x", "binary"), "/usr/bin/qemu\n-x", "unprintable character '\\n'"),
])
def test_hosts_file_paths_and_names(case: Case, capsys: pytest.CaptureFixture[str],
                                    path: tuple[str, ...], value: Any, expected: str) -> None:
    case.write(case.hosts, with_value(hosts_data(case.binary), path, value))
    assert expected in refused(case.argv("run --dry-run"), case.folder, capsys)


@pytest.mark.parametrize(("rename", "new", "where"), [
    (("pairs", "p1"), "../p", "hosts"), (("qemu_builds", "y"), "y;rm", "hosts"),
    (("variants", "a"), "a/b", "matrix"), (("variants", "b"), "-b", "matrix"),
])
def test_names_that_become_folders_or_arguments(
        case: Case, capsys: pytest.CaptureFixture[str], rename: tuple[str, ...], new: str,
        where: str) -> None:
    if where == "hosts":
        case.write(case.hosts, with_key(hosts_data(case.binary), rename, new))
    else:
        case.write(case.matrix, with_key(MATRIX, rename, new))
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert f"{rename[0]}.{new}.[key]: {new!r} must match {NAME_PATTERN}" in line


@pytest.mark.parametrize(("name", "expected"), [
    ("../x", "name: String should match pattern"), ("x" * 65, "name: String should match"),
])
def test_matrix_name_becomes_a_folder_name(case: Case, capsys: pytest.CaptureFixture[str],
                                           name: str, expected: str) -> None:
    case.write(case.matrix, with_value(MATRIX, ("name",), name))
    assert expected in refused(case.argv("run --dry-run"), case.folder, capsys)


@pytest.mark.parametrize(("args", "expected"), [
    (["-netdev", "tap,id=n0,script=/tmp/evil"], "qemu_args[0] '-netdev' is not an option a matrix"),
    (["-chardev", "file,id=c,path=/root/.ssh/authorized_keys"], "qemu_args[0] '-chardev' is not"),
    (["-cpu", "max", "-drive", "file=/etc/shadow"], "qemu_args[2] '-drive' is not an option"),
    (["-object", "memory-backend-file,id=m,mem-path=/etc/x,size=1M"],
     "qemu_args[1] 'memory-backend-file,id=m,mem-path=/etc/x,size=1M' names a host file, device "
     "or program (mem-path=)"),
    (["-global", "virtio-net-pci.romfile=/etc/shadow"], "qemu_args[1] "
     "'virtio-net-pci.romfile=/etc/shadow' names a host file, device or program (romfile=)"),
    (["-device", "loader,file=/etc/shadow,addr=0x1000"], "qemu_args[1] "
     "'loader,file=/etc/shadow,addr=0x1000' names a host file, device or program (file=)"),
    (["-cpu"], "qemu_args[0] '-cpu' has no value after it"),
])
def test_qemu_args_that_reach_the_host(case: Case, capsys: pytest.CaptureFixture[str],
                                       args: list[str], expected: str) -> None:
    case.write(case.matrix, with_value(MATRIX, ("variants", "a", "qemu_args"), args))
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert f"variants.a.qemu_args: {expected}" in line


def test_qemu_args_that_shape_the_machine_pass(case: Case,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    case.write(case.matrix, with_value(MATRIX, ("variants", "a", "qemu_args"),
                                       ["-cpu", "max", "-global", "kvm-pit.lost_tick_policy=discard",
                                        "-overcommit", "mem-lock=off"]))
    assert cli.main(case.argv("run --dry-run")) == 0


@pytest.mark.timeout(20)
@pytest.mark.parametrize("which", ["matrix", "hosts"])
def test_fifo_is_refused_not_waited_on(case: Case, capsys: pytest.CaptureFixture[str],
                                       which: str) -> None:
    path = case.matrix if which == "matrix" else case.hosts
    path.unlink()
    os.mkfifo(path)
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert line == f"{path}: a FIFO, not a regular file (give the {which} file itself)"


@pytest.mark.parametrize(("target", "expected"), [
    ("folder", "a folder, not a regular file"), ("/dev/null", "a character device"),
])
def test_other_files_that_are_not_files(case: Case, capsys: pytest.CaptureFixture[str],
                                        target: str, expected: str) -> None:
    case.matrix.unlink()
    if target == "folder":
        case.matrix.mkdir()
    else:
        case.matrix.symlink_to(target)
    assert expected in refused(case.argv("run --dry-run"), case.folder, capsys)


def test_file_too_large(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.write(case.matrix, "name: t\ndescription: " + "x" * (5 * 1024 * 1024) + "\n")
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert "bytes, more than a matrix file may have (4 MiB)" in line


def test_not_utf8(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.matrix.write_bytes(b"name: t\n\ndescription: caf\xe9\n")
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert line == f"{case.matrix}: not UTF-8: byte 0xe9 on line 3 (save the file as UTF-8)"


@pytest.mark.parametrize("text", ["name: t\ndescription: " + "[" * 20_000 + "]" * 20_000,
                                  "name: t\ndescription: " + "{a: " * 20_000 + "}" * 20_000,
                                  "name: t\nx:\n" + "".join(" " * i + "- \n" for i in range(100))])
def test_deep_nesting(case: Case, capsys: pytest.CaptureFixture[str], text: str) -> None:
    case.write(case.matrix, text)
    assert "nested more than 64 levels deep" in refused(case.argv("run --dry-run"), case.folder,
                                                        capsys)


def alias_bomb(levels: int = 9) -> str:
    lines = ["name: t", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.write(case.matrix, alias_bomb())  # 9^9 = 387 million strings once expanded
    start = time.monotonic()
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert time.monotonic() - start < 2.0
    assert "more than 100000 values once its aliases are expanded" in line


def test_many_aliases_and_recursive_alias(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.write(case.matrix, "name: t\na: &a 1\nb: [" + ", ".join(["*a"] * 300) + "]\n")
    assert "more than 256 aliases" in refused(case.argv("run --dry-run"), case.folder, capsys)
    case.write(case.matrix, "name: t\nguest: &g {vcpus: 1, x: *g}\n")
    assert "an alias refers to a node that contains it" in refused(
        case.argv("run --dry-run"), case.folder, capsys)


@pytest.mark.parametrize(("text", "expected"), [
    ("name: t\nrepetitions: " + "9" * 5000 + "\n", "a value PyYAML cannot build: Exceeds the"),
    ("name: t\ndescription: 2024-13-45\n", "a value PyYAML cannot build: month must be in 1..12"),
    ('name: t\ndescription: "\\e]0;owned\\a"\n', "description: unprintable character '\\x1b'"),
    ('name: t\nvariants: {"a\\0": {}}\n', "unprintable character '\\x00'"),
    ('name: t\ndescription: "\\u202eevil"\n', "unprintable character '\\u202e'"),
    ("name: t\nqemu_args: [!!python/object/apply:os.system [id]]\n", "could not determine a"),
    ("name: t\ndescription: " + "x" * 5000 + "\n", "a string of 5000 characters (at most 4096)"),
])
def test_values_no_yaml_loader_should_pass(case: Case, capsys: pytest.CaptureFixture[str],
                                           text: str, expected: str) -> None:
    case.write(case.matrix, text)
    assert expected in refused(case.argv("run --dry-run"), case.folder, capsys)


def test_error_lines_are_short_and_escaped(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    case.write(case.matrix, with_value(MATRIX, ("axes", "feature"), ["precopy", "q" * 4000]))
    line = refused(case.argv("run --dry-run"), case.folder, capsys)  # refused checks the length
    assert "axes.feature: unknown feature 'qqqqq" in line and "..." in line
    case.write(case.matrix, with_value(MATRIX, ("axes", "feature"), ["\x1b[31m" * 300]))
    line = refused(case.argv("run --dry-run"), case.folder, capsys)
    assert "\x1b" not in line and "\\x1b[31m" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_validates_before_it_starts(
        case: Case, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """The hosts file with a workdir of `$(...)` that passed `run --dry-run` before."""
    case.write(case.hosts, with_value(hosts_data(case.binary),
                                      ("pairs", "p2", "destination", "workdir"), "/x/$(reboot)"))
    assert "pairs.p2.destination.workdir: '/x/$(reboot)' must match" in refused(
        case.argv(command), case.folder, capsys)


@pytest.mark.parametrize("command", MATRIX_COMMANDS)
def test_every_command_that_reads_a_matrix_checks_its_knobs(
        case: Case, capsys: pytest.CaptureFixture[str], command: str) -> None:
    case.write(case.matrix, with_value(MATRIX, ("axes", "compress-level"), [1, 12]))
    assert "axes.compress-level: must be between 0 and 9, got 12" in refused(
        case.argv(command), case.folder, capsys)


@pytest.mark.parametrize("command", ["run --dry-run", "run", "nightly", "advise"])
def test_every_command_that_runs_a_matrix_plans_it_before_it_starts(
        case: Case, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """A QEMU build whose binary is missing: found by the plan, before a word is printed (advise
    printed its heading, then planned its calibration campaign)."""
    case.write(case.hosts, with_value(hosts_data(case.binary), ("qemu_builds", "x", "binary"),
                                      str(case.folder / "missing")))
    assert f"qemu_builds.x.binary: {case.folder / 'missing'} does not exist" in refused(
        case.argv(command), case.folder, capsys)


# --- property-based: one value of a valid input made hostile ---------------------------------

CONTROL = st.sampled_from([chr(c) for c in [*range(0, 9), *range(11, 32), 127, 0x85, 0x9b,
                                            0x202e, 0x2028]])
SHELLISH = st.sampled_from(["$(touch MARK)", "`touch MARK`", "; touch MARK", "a'b", 'a"b',
                            "-rf", "../..", "a\nb", "", " ", "x" * 300])
DEEP = st.integers(70, 150).map(lambda d: _nest(d))


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def with_control(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(text, CONTROL, text).map(lambda t: t[0] + t[1] + t[2])


ANY_TEXT = st.text(max_size=40)
WRONG_SHAPE = st.one_of(st.lists(st.integers(), min_size=1, max_size=3),
                        st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=2),
                        DEEP)


def bad_int(lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Never a valid integer in [lo, hi]: bools, any float, out-of-range ints, text, shapes."""
    return st.one_of(st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                     st.integers(max_value=lo - 1), st.integers(min_value=hi + 1),
                     st.integers(min_value=2**64, max_value=2**200), ANY_TEXT, SHELLISH,
                     WRONG_SHAPE)


def bad_real(lo: float, hi: float, lo_open: bool = False) -> st.SearchStrategy[Any]:
    """Never a valid finite number in [lo, hi] (or (lo, hi])."""
    def out(x: float) -> bool:
        return not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo)

    return st.one_of(st.booleans(), st.sampled_from([math.inf, -math.inf, math.nan]),
                     st.floats(allow_nan=True, allow_infinity=True).filter(out),
                     st.integers(max_value=math.ceil(lo) - 1),
                     st.integers(min_value=math.floor(hi) + 1), ANY_TEXT, SHELLISH, WRONG_SHAPE)


BAD_SIZE = st.one_of(
    st.just(0), st.just("0"), st.sampled_from(["0MiB", "1bit", "7bit", "0.5", "0.9B", "1.5"]),
    st.floats(min_value=0, max_value=1, exclude_max=True), st.floats(max_value=-1e-9),
    st.sampled_from([math.inf, -math.inf, math.nan]), st.booleans(),
    st.integers(min_value=2**64, max_value=2**100), st.integers(max_value=-1),
    st.sampled_from(["20000000TiB", "99999999999999999999gbit", "64 parsecs", "unlimited!"]),
    SHELLISH, with_control(ANY_TEXT), WRONG_SHAPE)
BAD_NAME = st.one_of(SHELLISH, with_control(ANY_TEXT), st.integers(),
                     st.text(max_size=80).filter(lambda s: not re.fullmatch(NAME_PATTERN, s)))

# (where in the matrix, hostile values for it): each is refused whatever the other values are
MATRIX_MUTATIONS: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("repetitions",), bad_int(1, 1000)),
    (("guest", "vcpus"), bad_int(1, 64)),
    (("guest", "memory_mib"), bad_int(128, 4 * 1024 * 1024)),
    (("limits", "max_time_s"), bad_real(0, 86400, lo_open=True)),
    (("limits", "max_dirty_syncs"), bad_int(1, 100_000)),
    (("limits", "sample_hz"), bad_real(10, 100)),
    (("limits", "observe_after_s"), bad_real(0, 3600)),
    (("workload", "writer", "working_set_mib"), bad_int(1, 4 * 1024 * 1024)),
    (("workload", "writer", "rate_mib_s"), bad_real(0, 1024 * 1024)),
    (("workload", "writer", "threads"), bad_int(1, 256)),
    (("migration", "max-bandwidth"), BAD_SIZE),
    (("migration", "xbzrle-cache-size"), BAD_SIZE),
    (("migration", "downtime-limit"), bad_int(0, 2_000_000)),
    (("axes", "max-bandwidth"), st.lists(BAD_SIZE, min_size=1, max_size=2).map(
        lambda v: ["1gbit", *v])),
    (("axes", "multifd-channels"), st.lists(bad_int(1, 255), min_size=1, max_size=1)),
    (("axes", "writer.rate_mib_s"), st.lists(bad_real(0, 1024 * 1024), min_size=1, max_size=1)),
    (("variants", "a", "build"), BAD_NAME),
    (("name",), BAD_NAME),
    (("description",), with_control(ANY_TEXT)),
    (("shuffle_seed",), bad_int(0, 2**64 - 1)),
    (("guest",), DEEP),
    (("migration", "downtime-limit"), DEEP),
]
MATRIX_RENAMES: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("variants", "a"), BAD_NAME),
]


@st.composite
def hostile_matrix(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, len(MATRIX_MUTATIONS))) == len(MATRIX_MUTATIONS):
        path, names = MATRIX_RENAMES[0]
        new = draw(names)
        return with_key(MATRIX, path, new)
    path, values = draw(st.sampled_from(MATRIX_MUTATIONS))
    return with_value(MATRIX, path, draw(values))


PROPERTY = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _example_case(base: Path, **files: Any) -> Case:
    return Case(Path(tempfile.mkdtemp(dir=base)), **files)


@pytest.mark.timeout(120)
@PROPERTY
@given(data=hostile_matrix(), command=st.sampled_from(MATRIX_COMMANDS))
def test_property_hostile_matrix_is_refused(tmp_path: Path, guarded: None,
                                            capsys: pytest.CaptureFixture[str],
                                            data: dict[str, Any], command: str) -> None:
    case = _example_case(tmp_path, matrix=data)
    refused(case.argv(command), case.folder, capsys)


def _valid_workdir(s: str) -> bool:
    path = Path(s)
    return bool(re.fullmatch(WORKDIR_PATTERN, str(path))) and ".." not in path.parts


def _valid_address(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return "%" not in s
    except ValueError:
        return bool(re.fullmatch(HOSTNAME_PATTERN, s))


BAD_WORKDIR = st.one_of(
    SHELLISH, with_control(ANY_TEXT), st.text(max_size=60).filter(lambda s: not _valid_workdir(s)),
    st.sampled_from(["/srv/../etc", "relative", "/a b", "/x/$(id)", "~/x", "/" + "a" * 250,
                     "/tmp/`id`", "/tmp/a;b"]))
HOSTS_MUTATIONS: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("pairs", "p1", "source", "workdir"), st.one_of(BAD_WORKDIR, st.integers(), WRONG_SHAPE)),
    (("pairs", "p2", "destination", "workdir"), BAD_WORKDIR),
    (("pairs", "p2", "source", "user"), st.one_of(
        SHELLISH, with_control(ANY_TEXT), st.integers(),
        st.text(max_size=40).filter(lambda s: not re.fullmatch(USER_PATTERN, s)))),
    (("pairs", "p2", "source", "address"), st.one_of(
        SHELLISH, with_control(ANY_TEXT), st.just("fe80::1%$(touch MARK)"),
        st.text(max_size=40).filter(lambda s: not _valid_address(s)))),
    (("pairs", "p2", "destination", "migration_address"),
     st.text(max_size=40).filter(lambda s: not _valid_address(s))),
    (("pairs", "p2", "source", "port"), bad_int(1, 65535)),
    (("pairs", "p2", "source", "connect_timeout_s"), bad_real(0, 300, lo_open=True)),
    (("pairs", "p2", "source", "vm_bridge"), st.one_of(
        SHELLISH, st.text(max_size=30).filter(
            lambda s: not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", s)))),
    (("pairs", "p1", "source", "accel"), ANY_TEXT.filter(lambda s: s not in ("auto", "kvm", "tcg"))),
    (("default_build",), BAD_NAME),
    (("qemu_builds", "x", "binary"), st.one_of(with_control(ANY_TEXT), WRONG_SHAPE)),
    (("pairs", "p1", "source"), DEEP),
]
HOSTS_RENAMES = [("pairs", "p1"), ("qemu_builds", "y")]


@st.composite
def hostile_hosts(draw: st.DrawFn, binary: Path) -> dict[str, Any]:
    base = hosts_data(binary)
    if draw(st.integers(0, 5)) == 0:
        return with_key(base, draw(st.sampled_from(HOSTS_RENAMES)), draw(BAD_NAME))
    path, values = draw(st.sampled_from(HOSTS_MUTATIONS))
    return with_value(base, path, draw(values))


@pytest.mark.timeout(120)
@PROPERTY
@given(data=st.data(), command=st.sampled_from(COMMANDS))
def test_property_hostile_hosts_file_is_refused(tmp_path: Path, guarded: None,
                                                capsys: pytest.CaptureFixture[str],
                                                data: st.DataObject, command: str) -> None:
    case = _example_case(tmp_path)
    case.write(case.hosts, data.draw(hostile_hosts(case.binary)))
    refused(case.argv(command), case.folder, capsys)


def bad_number_text(lo: float, hi: float, *, integer: bool = False,
                    lo_open: bool = False) -> st.SearchStrategy[str]:
    """Command-line text that argparse's int()/float() rejects or that lands outside the range."""
    def bad(s: str) -> bool:
        try:
            x = int(s) if integer else float(s)
        except ValueError:
            return True
        return not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo)

    numbers = st.floats(allow_nan=True, allow_infinity=True).map(repr)
    if integer:
        numbers = st.one_of(numbers, st.integers().map(str))
    return st.one_of(st.sampled_from(["inf", "-inf", "nan", "1e999", "-0", "", "0x10", "1.5",
                                      "1e6", "-1"]).filter(bad),
                     numbers.filter(bad), st.text(max_size=12).filter(bad), SHELLISH.filter(bad))


PAIR_NAME = st.text(max_size=20).filter(lambda s: s not in ("p1", "p2"))
CONFIGURE = st.one_of(st.text(max_size=30).filter(lambda s: not re.match(r"--[A-Za-z0-9]", s)),
                      with_control(st.just("--enable-debug")))
SIDE = st.one_of(st.text(max_size=30).filter(
    lambda s: s not in ("a", "b", "x", "y") and not s.startswith("src:")),
    st.just("src:/nonexistent/qemu"), st.just("src:$(touch MARK)"))
BAD_RATE = st.one_of(
    st.sampled_from(["0bit", "1bit", "7999bit", "100.5gbit", "200gbit", "1gbit;reboot",
                     "1 gbit", "1gbit\n", "-1mbit", "inf", "nanbit", "1e3mbit", ""]),
    st.text(max_size=12).filter(lambda s: not re.fullmatch(r"[0-9.]+[kmg]?bit", s)))
BAD_DELAY = st.one_of(
    st.sampled_from(["0ms", "0s", "11s", "100s", "1h", "1ms;x", "-1ms", "", "nanms"]),
    st.text(max_size=12).filter(lambda s: not re.fullmatch(r"[0-9.]+(us|ms|s)", s)))

BAD_BROKER = st.one_of(
    SHELLISH, st.text(max_size=30).filter(lambda s: not s.startswith("redis")),
    st.sampled_from(["redis://", "redis://h:0/0", "redis://h:1/16", "redis://[::1",
                     "redis://u:pw@[::1", "redis://h/0?x=1", "redis://$(touch MARK):1/0",
                     "redis://h:99999/0", "redis://h:1/0#x", "http://h:1/0"]))

FLAG_MUTATIONS: list[tuple[list[str], str, st.SearchStrategy[str]]] = [
    (["nightly", "compare"], "--alpha", bad_number_text(0, 0.5, lo_open=True)),
    (["nightly", "compare"], "--persist", bad_number_text(1, 100, integer=True)),
    (["nightly", "compare"], "--min-effect", bad_number_text(0, 1000, lo_open=True)),
    (["nightly", "compare"], "--metric-effect", st.one_of(
        bad_number_text(0, 1000, lo_open=True).map(lambda v: f"downtime_ms={v}"),
        st.text(max_size=20).filter(lambda s: "=" not in s))),
    (["doctor"], "--memory-mib", bad_number_text(128, 4 * 1024 * 1024, integer=True)),
    (["run --dry-run", "run", "nightly", "compare", "doctor", "provision"], "--pair", PAIR_NAME),
    (["compare"], "--configure-arg", CONFIGURE),
    (["compare"], "--build-cache", BAD_WORKDIR),
    (["compare"], "--before", SIDE),
    (["compare"], "--after", SIDE),
    (["testbed up"], "--rate", BAD_RATE),
    (["testbed up"], "--delay", BAD_DELAY),
    (["advise"], "--calibration-s", bad_number_text(2, 600)),
    (["run"], "--redeliveries", bad_number_text(0, 10, integer=True)),
    (["worker"], "--lease-s", bad_number_text(10, 24 * 3600)),
    (["worker"], "--name", st.one_of(SHELLISH, st.text(max_size=30).filter(
        lambda s: not re.fullmatch(NAME_PATTERN, s)))),
    (["run", "worker", "lab status"], "--broker", BAD_BROKER),
    (["run"], "--engine", st.one_of(
        BAD_BROKER.map(lambda url: "celery://" + url),
        st.text(max_size=20).filter(lambda s: s != "local" and not s.startswith("celery://")))),
    (["report"], "--slides", st.one_of(
        st.sampled_from(["a..", "..b", " .. ", "a.b", "a...", ""]),
        st.text(max_size=20).filter(lambda s: ".." not in s))),
]


@st.composite
def hostile_flag(draw: st.DrawFn) -> tuple[str, str, str]:
    commands, flag, values = draw(st.sampled_from(FLAG_MUTATIONS))
    return draw(st.sampled_from(commands)), flag, draw(values)


@pytest.mark.timeout(120)
@PROPERTY
@given(mutation=hostile_flag())
def test_property_hostile_flag_is_refused(tmp_path: Path, guarded: None,
                                          capsys: pytest.CaptureFixture[str],
                                          mutation: tuple[str, str, str]) -> None:
    command, flag, value = mutation
    case = _example_case(tmp_path)
    if command == "testbed up":
        argv = ["testbed", "up", "--dir", str(case.out)]
    elif command == "lab status":
        argv = ["lab", "status"]
    elif command == "report":
        argv = ["report", str(case.out)]
    else:
        argv = case.argv(command)
    refused([*argv, f"{flag}={value}"], case.folder, capsys)


# Any value at any place of a rich matrix or hosts file: the validation pass passes it or
# refuses it in one line; it never ends in another exception (the mutations above are aimed at
# known keys; these found `value in dict` with a list as the value, a TypeError).
RICH_MATRIX: dict[str, Any] = {
    **MATRIX,
    "repetitions": {"min": 2, "max": 5, "ci": "10%"},
    "variants": {"a": {"build": "x", "qemu_args": ["-cpu", "max"],
                       "migration": {"multifd-channels": 2}}, "b": {"build": "y"}},
    "workloads": {"w1": {"writer": {"working_set_mib": 32, "rate_mib_s": 8}},
                  "w2": {"fio": {"rw": "randrw", "bs": "4k"}}},
    "axes": {"feature": ["precopy", "xbzrle"], "workload": ["w1", "w2"],
             "variant": ["a", "b"], "max-bandwidth": ["1gbit", "unlimited"]},
    "exclude": [{"feature": "xbzrle", "workload": "w2"}],
    "include": [{"variant": "a", "feature": "precopy", "workload": "w1",
                 "max-bandwidth": "1gbit"}],
    "storage": {"mode": "copy"},
}
ANY_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([10**400, 2**64]), st.floats(), ANY_TEXT,
    st.sampled_from(["a", "x", "w1", "precopy", "1gbit", "unlimited", "10%", "copy"]))
ANY_VALUE = st.one_of(  # a container as often as a scalar: a list where a name belongs
    st.lists(ANY_SCALAR, min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["a", "w1", "x", "feature", ""]), ANY_SCALAR, min_size=1,
                    max_size=2),
    ANY_SCALAR)


def _places(data: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at] if at else []
    items = data.items() if isinstance(data, dict) else enumerate(data) \
        if isinstance(data, list) else []
    for key, value in items:
        out += _places(value, (*at, key))
    return out


@pytest.mark.timeout(120)
@PROPERTY
@given(data=st.data(), kind=st.sampled_from(["matrix", "hosts"]))
def test_property_any_value_anywhere_passes_or_is_one_line(
        tmp_path: Path, guarded: None, capsys: pytest.CaptureFixture[str],
        data: st.DataObject, kind: str) -> None:
    case = _example_case(tmp_path)
    base = RICH_MATRIX if kind == "matrix" else hosts_data(case.binary)
    changed = base
    for _ in range(data.draw(st.integers(1, 3))):
        places = _places(changed)
        if places:
            changed = with_value(changed, data.draw(st.sampled_from(places)),
                                 data.draw(ANY_VALUE))
    case.write(case.matrix if kind == "matrix" else case.hosts, changed)
    code = cli.main(case.argv("run --dry-run"))
    captured = capsys.readouterr()
    if code == 1:
        refused(case.argv("run --dry-run"), case.folder, capsys)  # the whole contract
    else:
        assert code == 0, captured
    parser = cli.build_parser()
    for command in ("compare", "advise", "doctor"):
        try:
            checks.preflight(parser, parser.parse_args(case.argv(command)))
        except HarnessError as exc:
            assert "\n" not in str(exc)


# --- what arrives from elsewhere than a file ---------------------------------------------------


@pytest.mark.parametrize(("where", "value"), [
    (("variants",), {"$(touch MARK)/../x": {"build": "x"}}),
    (("variants",), {"a": {"build": "../../evil"}}),
    (("workloads",), {"a\x1b[2J": {}}),
])
def test_a_job_from_the_shared_broker_gets_the_matrix_file_rules(where: tuple[str, ...],
                                                                value: Any) -> None:
    """A lab worker takes its matrix from a task on a broker several people share: the names
    in it follow the same patterns as in a matrix file (they were only checked in files)."""
    from harness.errors import HarnessError
    from harness.lab.job import Job
    from harness.plan.models import MatrixSpec

    data = with_value({k: v for k, v in MATRIX.items() if k != "axes"}, where, value)
    spec = MatrixSpec.model_validate(data)  # code-built models are trusted: no file rules
    payload = {"spec": spec.model_dump(mode="json", by_alias=True), "default_build": "x",
               "cell_id": "0" * 12, "repetition": 1, "matrix_file": "m.yaml", "redeliveries": 0}
    assert Job.parse({**payload, "spec": MatrixSpec.model_validate(MATRIX).model_dump(
        mode="json", by_alias=True)}).cell_id == "0" * 12
    with pytest.raises(HarnessError, match=r"a task that is not a migbench run \(spec\."):
        Job.parse(payload)
