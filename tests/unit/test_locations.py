"""Where the tool keeps caches and finds its hosts file, from a checkout or installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import locations
from harness.errors import ConfigError, UsageError
from harness.hosts import hostsfile
from harness.plan.config import hosts_path, load_hosts


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith(("MIGBENCH_", "XDG_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_cache_folder_order(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert locations.cache_dir() == tmp_path / "home" / ".cache" / "migbench"
    env.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert locations.cache_dir() == tmp_path / "home" / ".cache" / "migbench"
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locations.image_cache() == tmp_path / "xdg" / "migbench" / "image"
    env.setenv("MIGBENCH_CACHE", "b")
    assert locations.probe_cache() == tmp_path / "b" / "probe-cache"
    assert locations.fio_dir() == tmp_path / "b" / "fio"


def test_guest_sources_sit_in_the_package() -> None:
    # In a checkout harness/guest/workloads links to workloads/; a wheel holds the files.
    assert (locations.WORKLOADS / "init.sh").is_file()
    assert (locations.WORKLOADS / "fio" / "fiomon.c").is_file()
    assert locations.source_checkout() == Path(__file__).resolve().parents[2]


def test_hosts_file_search_order(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checkout = Path(__file__).resolve().parents[2] / "hosts.yaml"
    assert hosts_path() == checkout  # nothing else: the checkout's
    config = tmp_path / "cfg" / "migbench" / "hosts.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("x")
    env.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert hosts_path() == config
    Path("hosts.yaml").write_text("x")
    assert hosts_path() == Path("hosts.yaml")
    env.setenv("MIGBENCH_HOSTS", str(tmp_path / "missing.yaml"))  # named: used even if missing
    assert hosts_path() == tmp_path / "missing.yaml"
    assert hosts_path("given.yaml") == Path("given.yaml")


def test_no_hosts_file_names_init(env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locations, "source_checkout", lambda: None)  # as installed
    with pytest.raises(ConfigError, match="migbench init"):
        hosts_path()


def test_init_entry_for_a_private_prefix(tmp_path: Path) -> None:
    usr = tmp_path / "q" / "usr"
    for d in ("bin", "share/qemu", "share/seabios", "lib/x86_64-linux-gnu/qemu"):
        (usr / d).mkdir(parents=True)
    binary = usr / "bin" / "qemu-system-x86_64"
    binary.write_text("")
    entry = hostsfile.build_entry(binary)
    assert entry == {"binary": str(binary),
                     "datadirs": [str(usr / "share/qemu"), str(usr / "share/seabios")],
                     "moduledir": str(usr / "lib/x86_64-linux-gnu/qemu")}
    assert hostsfile.build_entry(Path("/usr/bin/qemu-system-x86_64")) == {
        "binary": "/usr/bin/qemu-system-x86_64"}
    assert hostsfile.parse_qemu_flag(f"10.0={binary}") == ("10.0", binary)
    for bad in ("10.0", f"=/{binary}", f"a b={binary}", "x=/nonexistent/qemu"):
        with pytest.raises(UsageError, match="--qemu"):
            hostsfile.parse_qemu_flag(bad)
    doc = hostsfile.hosts_document({"10.0": entry}, "10.0")
    out = tmp_path / "hosts.yaml"
    import yaml
    out.write_text(yaml.safe_dump(doc))
    cfg = load_hosts(out)
    assert cfg.default_build == "10.0" and set(cfg.pairs) == {"local"}


def test_every_guest_source_is_package_data() -> None:
    """The wheel ships every file of workloads/ (through the harness/guest/workloads link):
    a new guest source, or a new folder of them, must be in pyproject's package-data too."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["harness"]
    shipped = {p.resolve() for pattern in patterns for p in (root / "harness").glob(pattern)
               if p.is_file()}
    sources = {p.resolve() for p in (root / "workloads").rglob("*")
               if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts}
    assert sources and sources <= shipped, sorted(str(p) for p in sources - shipped)
