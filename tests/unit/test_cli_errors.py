"""`migbench run` on malformed files: exit 1, one line on stderr naming file and key, nothing run.

Every case runs twice: with --dry-run, and as a real run whose runner is replaced by one that
fails the test, so validation is shown to happen before any host action.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import cli

GOOD = {"name": "t", "repetitions": 1}

# (case id, matrix file content or None for no file, the key the line must name)
MATRIX_CASES: list[tuple[str, Any, str]] = [
    ("unknown-feature", {**GOOD, "axes": {"feature": ["precopy", "postcopy-magic"]}},
     "axes.feature: unknown feature 'postcopy-magic'"),
    ("unknown-knob", {**GOOD, "migration": {"max-bandwith": "1gbit"}},
     "migration.max-bandwith: is not a migration parameter"),
    ("wrong-type", {**GOOD, "repetitions": "three"}, "repetitions: "),
    ("negative-writer-threads", {**GOOD, "workload": {"writer": {"threads": -1}}},
     "workload.writer.threads: "),
    ("negative-compress-threads", {**GOOD, "migration": {"compress-threads": -1}},
     "migration.compress-threads: must be between 1 and 255, got -1"),
    ("level-out-of-range", {**GOOD, "axes": {"feature": ["compress"], "compress-level": [1, 12]}},
     "axes.compress-level: must be between 0 and 9, got 12"),
    ("cache-bytes-not-power-of-two",
     {**GOOD, "axes": {"feature": ["xbzrle"]}, "migration": {"xbzrle-cache-size": "100000000"}},
     "migration.xbzrle-cache-size: 100000000 is not a power of two; use e.g. 67108864"),
    ("multifd-channel-mismatch",
     {**GOOD, "axes": {"feature": ["multifd"]}, "migration": {"multifd-channels": 4},
      "destination_migration": {"multifd-channels": 2}},
     "destination_migration.multifd-channels: 2 differs from the source's 4"),
    ("empty-axis", {**GOOD, "axes": {"feature": []}}, "axes: axis 'feature' is empty"),
    ("unknown-variant", {**GOOD, "variants": {"old": {}}, "axes": {"variant": ["zz"]}},
     "axes.variant: names unknown variant 'zz'; defined: old"),
    ("exclude-unknown-variant", {**GOOD, "variants": {"old": {}}, "exclude": [{"variant": "zz"}]},
     "exclude[0].variant: names unknown variant 'zz'; defined: old"),
    ("include-bad-value",
     {**GOOD, "axes": {"multifd-channels": [2]}, "include": [{"multifd-channels": 0}]},
     "include[0].multifd-channels: must be between 1 and 255, got 0"),
    ("variant-migration-bad-value",
     {**GOOD, "variants": {"old": {"migration": {"max-bandwidth": "fast"}}}},
     "variants.old.migration.max-bandwidth: cannot parse size 'fast'"),
    ("duplicate-variant-name",
     "name: t\nvariants:\n  old: {}\n  new: {}\n  old: {build: '7.2'}\n",
     "variants.old: duplicate key 'old': given at lines 3 and 5 (keep one)"),
    ("include-naming-no-axis", {**GOOD, "include": [{}]},
     "include[0]: is empty: name at least one axis"),
    ("missing-file", None, "matrix file not found"),
    ("malformed-yaml", "name: t\naxes: {feature: [precopy}\n", "not valid YAML: line 2"),
    ("unknown-top-level-key", {**GOOD, "repetitons": 3}, "repetitons: unknown key"),
    ("working-set-larger-than-ram",
     {**GOOD, "guest": {"memory_mib": 256}, "workload": {"writer": {"working_set_mib": 300}}},
     "workload.writer.working_set_mib: 300 MiB does not fit in guest.memory_mib=256"),
    ("bad-pattern", {**GOOD, "workload": {"writer": {"pattern": "ones"}}},
     "workload.writer.pattern: "),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder as the working directory, with a runner that must never be reached."""
    monkeypatch.chdir(tmp_path)

    def no_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("run_matrix reached: validation must fail before any host action")

    monkeypatch.setattr("harness.run.runner.run_matrix", no_run)
    return tmp_path


def hosts_file(folder: Path, binary_exists: bool = True) -> Path:
    binary = folder / "qemu-system-x86_64"
    if binary_exists:
        binary.write_text("#!/bin/sh\n")
    path = folder / "hosts.yaml"
    path.write_text(yaml.safe_dump({
        "qemu_builds": {"x": {"binary": str(binary)}}, "default_build": "x",
        "pairs": {"local": {"source": {}, "destination": {}}},
    }))
    return path


def run_cli(folder: Path, matrix: Path, hosts: Path, dry_run: bool,
            capsys: pytest.CaptureFixture[str]) -> str:
    """Run `migbench run`, check the common contract and return the one stderr line."""
    argv = ["run", str(matrix), "--hosts", str(hosts), "--out", str(folder / "results")]
    code = cli.main(argv + (["--dry-run"] if dry_run else []))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 1, captured
    assert len(lines) == 1, captured.err
    assert captured.out == ""
    assert not (folder / "results").exists()
    assert not any(p.name == "results" for p in folder.rglob("*"))
    assert lines[0].startswith("migbench: error: ")
    return lines[0]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in MATRIX_CASES],
                         ids=[c[0] for c in MATRIX_CASES])
def test_malformed_matrix(workdir: Path, capsys: pytest.CaptureFixture[str], content: Any,
                          expected: str, dry_run: bool) -> None:
    matrix = workdir / "m.yaml"
    if content is not None:
        matrix.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    line = run_cli(workdir, matrix, hosts_file(workdir), dry_run, capsys)
    assert f"{matrix}: {expected}" in line


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_missing_hosts_file(workdir: Path, capsys: pytest.CaptureFixture[str],
                            dry_run: bool) -> None:
    matrix = workdir / "m.yaml"
    matrix.write_text(yaml.safe_dump(GOOD))
    hosts = workdir / "nope" / "hosts.yaml"
    line = run_cli(workdir, matrix, hosts, dry_run, capsys)
    assert f"{hosts}: hosts file not found" in line


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_hosts_qemu_binary_missing(workdir: Path, capsys: pytest.CaptureFixture[str],
                                   dry_run: bool) -> None:
    matrix = workdir / "m.yaml"
    matrix.write_text(yaml.safe_dump(GOOD))
    hosts = hosts_file(workdir, binary_exists=False)
    line = run_cli(workdir, matrix, hosts, dry_run, capsys)
    assert f"{hosts}: qemu_builds.x.binary: {workdir / 'qemu-system-x86_64'} does not exist" in line
    assert "make qemu" in line


def test_valid_matrix_dry_run_passes(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The fixtures themselves are sound: the good matrix and hosts file plan without error."""
    matrix = workdir / "m.yaml"
    matrix.write_text(yaml.safe_dump(GOOD))
    code = cli.main(["run", str(matrix), "--hosts", str(hosts_file(workdir)), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    assert "1 cells x 1 repetitions" in captured.out


def test_the_runner_guard_is_where_a_valid_run_goes(workdir: Path) -> None:
    """Without --dry-run a valid matrix reaches run_matrix: the guard above is the real path."""
    matrix = workdir / "m.yaml"
    matrix.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(AssertionError, match="run_matrix reached"):
        cli.main(["run", str(matrix), "--hosts", str(hosts_file(workdir)),
                  "--out", str(workdir / "results")])


# --- the progress bar's ETA (cmd_run) --------------------------------------------------------


def test_run_eta_is_wall_clock_per_finished_run_times_runs_left() -> None:
    assert cli.run_eta(None, 100.0, 0, 10) is None  # nothing started
    assert cli.run_eta(10.0, 50.0, 0, 10) is None  # nothing finished yet
    assert cli.run_eta(10.0, 100.0, 3, 6) == pytest.approx(180.0)  # 30 s a run, 6 left
    assert cli.run_eta(10.0, 100.0, 3, 0) == 0.0
    assert cli.run_eta(None, 100.0, 0, 0) == 0.0
    assert cli.run_eta(10.0, 100.0, 3, None) is None


def _task(now: float, total: float, completed: float, **fields: Any) -> Any:
    from rich.progress import Task, TaskID

    return Task(TaskID(0), "", total, completed, _get_time=lambda: now, fields=fields)


def test_eta_column_renders_from_the_task_fields() -> None:
    col = cli.RunEtaColumn()
    # resumed 1 of 10; 3 more finished in 90 s since the first run of this session started
    assert col.render(_task(100.0, 10, 4, first_start=10.0, resumed=1)).plain == "0:03:00"
    assert col.render(_task(100.0, 10, 1, first_start=10.0, resumed=1)).plain == "-:--:--"
    # 2500 s a run, 98 left
    assert col.render(_task(5000.0, 100, 2, first_start=0.0, resumed=0)).plain == "68:03:20"
    assert col.render(_task(100.0, 4, 4, first_start=10.0, resumed=0)).plain == "0:00:00"


def test_eta_shown_when_runs_take_longer_than_rich_keeps_samples() -> None:
    """40 s runs: rich's own column shows -:--:-- for good; ours shows the estimate."""
    from rich.console import Console
    from rich.progress import Progress, TimeRemainingColumn

    clock = [0.0]
    ours, theirs = cli.RunEtaColumn(), TimeRemainingColumn()
    with Progress(ours, theirs, console=Console(file=io.StringIO()), auto_refresh=False,
                  get_time=lambda: clock[0]) as bar:
        task = bar.add_task("", total=5, first_start=None, resumed=0)
        bar.update(task, total=5, completed=0, resumed=0)
        bar.update(task, first_start=bar.get_time())
        for _ in range(3):
            clock[0] += 40.0
            bar.advance(task)
        t = bar.tasks[0]
        assert theirs.render(t).plain == "-:--:--"
        assert ours.render(t).plain == "0:01:20"  # 2 runs left at 40 s each
