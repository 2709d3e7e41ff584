"""A results folder that cannot be written: full, read-only, or removed while a matrix runs.

Real runs (QEMU 10.0 under TCG, one short cell, two repetitions) write into a small tmpfs; once
the first run and its summary row are stored, the tmpfs is filled, remounted read-only, or the
campaign folder is removed. The command must end with one line naming the folder and the fix,
exit 1, keep the first run intact, leave no temporary file and no QEMU behind. ``report -o``,
``export -o`` and ``nightly --history`` get the same treatment without booting anything.

Needs root (mount); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import cli
from harness.results import store
from harness.results.record import upgrade
from tests.report_data import make_run

from .conftest import REPO, qemu_processes

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

MATRIX = (
    "name: wfail\nrepetitions: 2\nlimits: {max_time_s: 20, observe_after_s: 0}\n"
    "workload: {writer: {working_set_mib: 16, rate_mib_s: 4, pattern: text}}\n"
    "migration: {max-bandwidth: 1gbit}\n"
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    """Write a file into ``folder`` until its file system is full."""
    chunk = b"\0" * 65536
    with open(folder / "filler", "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return


def remount_ro(folder: Path) -> None:
    """Remount the tmpfs at ``folder`` read-only (retried: a file open for writing blocks it)."""
    for _ in range(50):
        if subprocess.run(["mount", "-o", "remount,ro", str(folder)]).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"could not remount {folder} read-only")


def our_qemus() -> list[str]:
    """QEMU processes of this file's runs (their work folders are under the matrix name; other
    tests may run guests of their own meanwhile)."""
    return [p for p in qemu_processes() if "/wfail/" in p]


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files the harness may have left (its names start with a dot)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def run_then_break(tmp_path: Path, camp: Path, breaker: Callable[[], None]
                   ) -> subprocess.CompletedProcess[str]:
    """Run the matrix into ``camp``; call ``breaker`` once the first run and its summary row
    are stored (the second run is booting or migrating by then)."""
    mfile = tmp_path / "wfail.yaml"
    mfile.write_text(MATRIX)
    cmd = [sys.executable, "-m", "harness.cli", "run", str(mfile), "--out", str(camp)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    broke = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 150
        summary = camp / "summary.csv"
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                if list(camp.glob("*/1.json")) and len(summary.read_text().splitlines()) == 2:
                    breaker()
                    broke.set()
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    watcher.join(5)
    assert broke.is_set(), f"the first run was not stored before the matrix ended: {out}{err}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def assert_first_run_kept(camp: Path) -> None:
    [first] = list(camp.glob("*/1.json"))
    rec = store.load_run(first)  # whole and valid
    assert rec.repetition == 1 and rec.outcome == "completed", rec.error
    assert not list(camp.glob("*/2.json"))
    rows = list(csv.DictReader(open(camp / "summary.csv", newline="")))
    assert [(r["cell_id"], r["repetition"]) for r in rows] == [(rec.cell.id, "1")]
    assert leftovers(camp) == []


def test_results_folder_fills_up_during_a_matrix(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "16m") as mnt:
        camp = mnt / "wfail"
        done = run_then_break(tmp_path, camp, lambda: fill(mnt))
        assert done.returncode == 1, done.stdout + done.stderr
        line = one_error_line(done.stderr)
        assert line.startswith(f"migbench: error: results folder {camp}: cannot write run file ")
        assert "No space left on device; free space there and rerun the same command to resume" in line
        assert_first_run_kept(camp)
        assert sorted(p.name for p in mnt.iterdir()) == ["filler", "wfail"]
    assert our_qemus() == []


def test_results_folder_turns_read_only_during_a_matrix(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "16m") as mnt:
        camp = mnt / "wfail"
        done = run_then_break(tmp_path, camp, lambda: remount_ro(mnt))
        assert done.returncode == 1, done.stdout + done.stderr
        line = one_error_line(done.stderr)
        assert line.startswith(f"migbench: error: results folder {camp}: cannot write run file ")
        assert "Read-only file system; make it writable and rerun the same command to resume" in line
        assert_first_run_kept(camp)
    assert our_qemus() == []


def test_results_folder_removed_during_a_matrix(tmp_path: Path) -> None:
    camp = tmp_path / "out" / "wfail"
    done = run_then_break(tmp_path, camp, lambda: shutil.rmtree(camp))
    assert done.returncode == 1, done.stdout + done.stderr
    line = one_error_line(done.stderr)
    assert line.startswith(f"migbench: error: results folder {camp}: cannot write run file ")
    assert "the folder was removed during the run" in line
    assert not camp.exists()  # not made again, half empty
    assert our_qemus() == []


def test_full_or_read_only_results_folder_is_refused_before_anything_boots(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mfile = tmp_path / "wfail.yaml"
    mfile.write_text(MATRIX)
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        (mnt / "full").mkdir()
        fill(mnt)
        assert cli.main(["run", str(mfile), "--out", str(mnt / "full")]) == 1
        captured = capsys.readouterr()
        line = one_error_line(captured.err)
        assert f"results folder {mnt / 'full'}: cannot write into it: No space left" in line
        remount_ro(mnt)
        assert cli.main(["run", str(mfile), "--out", str(mnt / "wf")]) == 1
        captured = capsys.readouterr()
        line = one_error_line(captured.err)
        assert f"results folder {mnt / 'wf'}: cannot write into it: Read-only file system" in line
        assert "rep 1" not in captured.out
        assert leftovers(mnt) == [] and sorted(p.name for p in mnt.iterdir()) == ["filler", "full"]


def _campaign(tmp_path: Path) -> Path:
    camp = tmp_path / "camp"
    camp.mkdir()
    for rep in (1, 2):
        store.write_run(camp, upgrade(make_run(cell_id="a00000000001", rep=rep)))
    return camp


@pytest.mark.parametrize("broken", ["full", "read-only"])
def test_report_export_and_nightly_into_a_folder_that_cannot_be_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str) -> None:
    camp = _campaign(tmp_path)
    mfile = tmp_path / "wfail.yaml"
    mfile.write_text(MATRIX)
    reason = "No space left on device" if broken == "full" else "Read-only file system"
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        (mnt / "hist").mkdir()
        if broken == "full":
            fill(mnt)
        else:
            remount_ro(mnt)
        before = sorted(str(p) for p in mnt.rglob("*"))
        cases = [
            (["export", str(camp), "--format", "csv", "-o", str(mnt / "runs.csv")],
             f"{mnt / 'runs.csv'}: cannot write the export: {reason}"),
            (["export", str(camp), "--format", "parquet", "-o", str(mnt / "runs.parquet")],
             f"{mnt / 'runs.parquet'}: cannot write the export: {reason}"),
            (["report", str(camp), "-o", str(mnt / "hist" / "rep")], f"{mnt / 'hist'}"),
            # read-only: .incoming/<stamp> cannot be made; full: it can, but takes no byte
            (["nightly", str(mfile), "--history", str(mnt / "hist"), "--no-report"],
             f"history folder {mnt / 'hist'}: cannot write .incoming" if broken == "read-only"
             else f"results folder {mnt / 'hist' / '.incoming'}/"),
        ]
        for argv, expected in cases:
            assert cli.main(argv) == 1, argv
            line = one_error_line(capsys.readouterr().err)
            assert expected in line and reason in line, (argv, line)
        after = sorted(str(p) for p in mnt.rglob("*"))
        # Nothing partial: on the full folder, the report may have made its (empty) folders
        # before the first file failed; no file is left half written or temporary.
        made = [p for p in after if p not in before]
        assert all(Path(p).is_dir() for p in made), made
        assert leftovers(mnt) == ([] if broken == "read-only" else ["hist/.incoming"])
        assert not list((mnt / "hist").glob(".incoming/*"))  # the empty night is removed
