"""The installed tool: a wheel built from the sources, installed into a fresh venv outside the
checkout, builds the guest image, runs a one-cell matrix end to end and reports it, with its
caches, hosts file, results and report all outside the checkout (issue 14, item 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from harness.results import store
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

QEMU10 = REPO / "build" / "qemu-10.0" / "usr" / "bin" / "qemu-system-x86_64"
# What the installed tool writes to when it runs from the checkout by mistake.
CHECKOUT_OUTPUTS = ("build/image", "build/probe-cache", "build/fio", "results", "reports")


def _sources(dst: Path) -> Path:
    """A copy of what the wheel is built from, so that building writes nothing into the checkout
    (setuptools leaves build/ and *.egg-info beside pyproject.toml)."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "workloads", dst / "workloads", ignore=ignore)
    shutil.copytree(REPO / "harness", dst / "harness", symlinks=True, ignore=ignore)
    return dst


def _venv(tmp: Path) -> Path:
    """A fresh venv with the wheel installed; its dependencies come from the test's venv through
    a .pth (appended after the venv's own site-packages, so the wheel's harness wins)."""
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    str(_sources(tmp / "src")), "-w", str(wheels)], check=True, timeout=300,
                   cwd=tmp)
    [wheel] = wheels.glob("migbench-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    return venv


def _snapshot(start: float) -> set[str]:
    """Files under the checkout's output folders changed since ``start``. Cache locks are left
    out: any other test that uses the checkout's image cache meanwhile opens its .lock (seen:
    a suite run beside this test); a tool writing there by mistake writes a whole image."""
    changed = set()
    for top in CHECKOUT_OUTPUTS:
        for p in (REPO / top).rglob("*") if (REPO / top).exists() else ():
            if p.name == ".lock":
                continue
            try:
                if p.lstat().st_mtime >= start:
                    changed.add(str(p.relative_to(REPO)))
            except FileNotFoundError:
                pass
    return changed


def test_installed_tool_runs_a_matrix_outside_the_checkout(tmp_path: Path) -> None:
    if not QEMU10.exists():
        pytest.skip("QEMU 10.0 missing: run `make qemu`")
    fio = sorted((REPO / "build" / "fio").glob("fio-*/fio"))
    if not fio:
        pytest.skip("no static fio: run `make fio`")
    start = time.time()
    venv = _venv(tmp_path)
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGBENCH_", "XDG_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "cache"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), PATH=f"{venv / 'bin'}:{env['PATH']}")

    def migbench(*args: str, timeout: float = 600) -> str:
        cp = subprocess.run([str(venv / "bin" / "migbench"), *args], cwd=work, env=env,
                            capture_output=True, text=True, timeout=timeout)
        assert cp.returncode == 0, f"migbench {' '.join(args)}: {cp.stdout}\n{cp.stderr}"
        return cp.stdout

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import harness; print(harness.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where
    # Every guest source ships in the wheel as files (the Debian guest's scripts too).
    shipped = Path(where.strip()).parent / "guest" / "workloads"
    assert not shipped.is_symlink()
    sources = {p.relative_to(REPO / "workloads") for p in (REPO / "workloads").rglob("*")
               if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts}
    assert sources <= {p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file()}

    # No hosts file anywhere yet: a one-line error that names `migbench init`.
    cp = subprocess.run([str(venv / "bin" / "migbench"), "doctor"], cwd=work, env=env,
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 1 and "migbench init" in cp.stderr, cp.stderr

    migbench("init", "--qemu", f"10.0={QEMU10}")
    hosts = yaml.safe_load((tmp_path / "config" / "migbench" / "hosts.yaml").read_text())
    assert hosts["default_build"] == "10.0"
    assert hosts["qemu_builds"]["10.0"]["datadirs"][0].endswith("build/qemu-10.0/usr/share/qemu")

    migbench("image", "build", "--fio", str(fio[-1]))
    images = [p for p in (tmp_path / "cache" / "migbench" / "image").iterdir()
              if (p / "manifest.json").is_file()]
    assert len(images) == 1 and list(images[0].glob("initrd-fio-*.cpio.gz"))

    matrix = yaml.safe_load((REPO / "matrices" / "demo.yaml").read_text())
    matrix.update(name="installed", repetitions=1, guest={"vcpus": 1, "memory_mib": 256},
                  limits={"max_time_s": 60, "observe_after_s": 1},
                  workload={"writer": {"working_set_mib": 16, "rate_mib_s": 2, "pattern": "text"}},
                  axes={"feature": ["precopy"]})
    matrix["migration"] = {"max-bandwidth": "1gbit", "downtime-limit": 300}
    (work / "m.yaml").write_text(yaml.safe_dump(matrix))
    migbench("run", "m.yaml", "--out", "results/installed")
    [record] = store.records(work / "results" / "installed")
    assert record.status == "completed", record.error
    assert record.harness is not None and record.harness.commit == "migbench 0.1.0"
    assert list((tmp_path / "cache" / "migbench" / "probe-cache").iterdir())

    out = migbench("report", "results/installed")
    assert (work / "reports" / "installed" / "index.html").is_file(), out
    assert "installed" in migbench("show", "results/installed")

    assert _snapshot(start) == set(), "the installed tool wrote into the checkout"
