"""Patch builds: a small source tree with its own configure + make, built over the Host interface."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.ci import patchbuild
from harness.errors import HarnessError
from harness.hosts.host import LocalHost
from harness.plan.config import load_hosts
from harness.plan.models import HostSpec

DATA = Path(__file__).resolve().parents[1] / "data"
FAKE = DATA / "fake-qemu-src"
PATCH = FAKE / "fix-version.patch"


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(FAKE, dst)
    return dst


@pytest.fixture()
def host(tmp_path: Path) -> LocalHost:
    return LocalHost("source", HostSpec(workdir=tmp_path / "work"))


def version(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          check=True, timeout=10).stdout.splitlines()[0]


def test_parse_source(tree: Path, tmp_path: Path) -> None:
    spec = patchbuild.parse_source(f"src:{tree}+{PATCH}")
    assert spec.tree == tree and spec.patches == (PATCH,)
    with pytest.raises(HarnessError, match="no configure script"):
        patchbuild.parse_source(f"src:{tmp_path}")
    with pytest.raises(HarnessError, match="does not exist"):
        patchbuild.parse_source(f"src:{tree}+{tmp_path / 'nope.patch'}")
    fifo = tmp_path / "fifo.patch"
    os.mkfifo(fifo)  # not a file: refused without opening it (an open would wait forever)
    with pytest.raises(HarnessError, match="is not a regular file: give the patch file"):
        patchbuild.parse_source(f"src:{tree}+{fifo}")
    huge = tmp_path / "huge.patch"
    with huge.open("wb") as f:
        f.truncate(patchbuild.MAX_PATCH_BYTES + 1)
    with pytest.raises(HarnessError, match="is over 64 MiB"):
        patchbuild.parse_source(f"src:{tree}+{huge}")


def test_build_patch_cache_and_log(tree: Path, host: LocalHost, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    src = patchbuild.SourceSpec(tree, (PATCH,))
    logs: list[str] = []
    first = patchbuild.build_on_host(host, src, cache=cache, log=logs.append)
    assert not first.cached
    assert first.build.binary == cache / first.key / "install" / "bin" / "qemu-system-x86_64"
    assert version(first.build.binary) == "QEMU emulator version 10.0.2-fake-patched"
    assert first.build.datadirs == (cache / first.key / "install" / "share" / "qemu",)
    # The build log is kept beside the install, with configure's flags and the patch step.
    log = first.log.read_text()
    assert first.log == cache / first.key / "build.log"
    assert "patch -p1" in log and "--target-list=x86_64-softmmu" in log
    assert "fake QEMU configured" in log
    assert not (cache / first.key / "src").exists()  # the build tree is removed
    assert first.commit.startswith("content-")  # no git: a content hash
    # Same inputs: a cache hit, nothing rebuilt.
    again = patchbuild.build_on_host(host, src, cache=cache, log=logs.append)
    assert again.cached and again.key == first.key and again.build == first.build
    assert any("cached" in s for s in logs)
    # A changed patch is another build.
    changed = tmp_path / "other.patch"
    changed.write_text(PATCH.read_text().replace("10.0.2-fake-patched", "10.0.2-fake-v2"))
    other = patchbuild.build_on_host(host, patchbuild.SourceSpec(tree, (changed,)), cache=cache)
    assert not other.cached and other.key != first.key
    assert version(other.build.binary) == "QEMU emulator version 10.0.2-fake-v2"
    # No patch, or extra configure flags: other keys too.
    plain = patchbuild.build_on_host(host, patchbuild.SourceSpec(tree), cache=cache)
    assert version(plain.build.binary) == "QEMU emulator version 10.0.2-fake"
    flags = patchbuild.build_on_host(host, patchbuild.SourceSpec(tree), cache=cache,
                                     configure_args=["--enable-debug"])
    assert len({first.key, other.key, plain.key, flags.key}) == 4


def test_source_commit_follows_git(tree: Path) -> None:
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "init"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert patchbuild.source_commit(tree) == head
    (tree / "VERSION").write_text("dirty\n")
    dirty = patchbuild.source_commit(tree)
    assert dirty.startswith(head + "-dirty-")


def test_a_failed_build_names_the_log(tree: Path, host: LocalHost, tmp_path: Path) -> None:
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/VERSION\n+++ b/VERSION\n@@ -1 +1 @@\n-no such line\n+x\n")
    with pytest.raises(HarnessError, match=r"exited .*build\.log"):
        patchbuild.build_on_host(host, patchbuild.SourceSpec(tree, (bad,)), cache=tmp_path / "c")


def test_build_for_pair_adds_the_build_to_both_hosts(tree: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    hosts = load_hosts(repo / "hosts.yaml")
    name, hosts2 = patchbuild.build_for_pair(patchbuild.SourceSpec(tree, (PATCH,)), hosts,
                                             cache=tmp_path / "cache")
    pair = next(iter(hosts2.pairs.values()))
    assert name.startswith("src-")
    src_build = hosts2.build_for(pair.source, name)
    dst_build = hosts2.build_for(pair.destination, name)
    assert src_build is not None and src_build == dst_build
    assert src_build.binary.exists()
    assert hosts2.qemu_builds == hosts.qemu_builds  # the rest is unchanged


def test_directory_symlinks_are_packed_as_links(tmp_path: Path) -> None:
    import io
    import tarfile

    from harness.ci.patchbuild import _files, pack

    tree = tmp_path / "src"
    (tree / "include" / "std").mkdir(parents=True)
    (tree / "include" / "std" / "h.h").write_text("x")
    (tree / "sub").mkdir()
    (tree / "sub" / "std").symlink_to("../include/std")
    rels = [p.relative_to(tree).as_posix() for p in _files(tree)]
    assert "sub/std" in rels and "sub/std/h.h" not in rels
    with tarfile.open(fileobj=io.BytesIO(pack(tree)), mode="r:gz") as tar:
        member = tar.getmember("sub/std")
        assert member.issym() and member.linkname == "../include/std"


@pytest.mark.timeout(20)
def test_a_fifo_in_the_tree_is_hashed_and_packed_without_being_read(tree: Path) -> None:
    """Reading a FIFO waits for a writer for ever: the tree's hash takes its kind instead."""
    before = patchbuild.content_hash(tree)
    os.mkfifo(tree / "pipe")
    after = patchbuild.content_hash(tree)
    assert after != before and after == patchbuild.content_hash(tree)
    assert len(patchbuild.pack(tree)) > 0
