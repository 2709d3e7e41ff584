"""Pure helpers: console parsing, RAM digests, accelerator choice, QEMU argv, migration helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.stalls import longest_stall_ms
from harness.hosts.host import detect_accel
from harness.plan.matrix import expand
from harness.plan.models import MatrixSpec, QemuBuild
from harness.results.record.model import GuestCrash, GuestSilent, Integrity, RamCheck, StampsCheck
from harness.run.integrity import HASH_PAGES_PY, PAGE, differing_pages, file_digests, page_digests
from harness.run.migration import kernel_append
from harness.run.sampling.console import ConsoleLine, parse_line
from harness.run.vm import VmConfig, qemu_argv

# --- console.parse_line ----------------------------------------------------------------------


def test_parse_line_plain() -> None:
    rec = parse_line("@mb writer t=12.5 rate=31.9 stall_ms=3 bad=0", host_time=42.0)
    assert rec is not None
    assert rec.kind == "writer"
    assert rec.fields == {"t": "12.5", "rate": "31.9", "stall_ms": "3", "bad": "0"}
    assert rec.host_time == 42.0
    assert rec.num("rate") == pytest.approx(31.9)
    assert rec.num("t") == 12.5


def test_parse_line_after_kernel_message_prefix() -> None:
    rec = parse_line("[    3.141592] random: crng init done@mb boot uptime=1.25")
    assert rec is not None
    assert rec.kind == "boot"
    assert rec.fields == {"uptime": "1.25"}
    rec2 = parse_line("[   12.000001] init: @mb writer-ready pages=16384")
    assert rec2 is not None and rec2.kind == "writer-ready" and rec2.num("pages") == 16384


@pytest.mark.parametrize("text", [
    "", "Linux version 6.1.0", "[    0.000000] Command line: console=ttyS0",
    "@mbwriter rate=3", "@mb ", "@mb    ", "mb writer rate=3",
])
def test_parse_line_ignores_other_lines(text: str) -> None:
    assert parse_line(text) is None


def test_parse_line_key_value_details() -> None:
    rec = parse_line("@mb error msg=a=b lonely rate= x=1")
    assert rec is not None
    assert rec.kind == "error"
    assert rec.fields == {"msg": "a=b", "rate": "", "x": "1"}  # tokens without '=' are ignored


def test_num_defaults() -> None:
    rec = parse_line("@mb writer rate=fast")
    assert rec is not None
    assert rec.num("rate") == 0.0
    assert rec.num("rate", -1.0) == -1.0
    assert rec.num("missing", 7.0) == 7.0


def test_console_line_mb_property() -> None:
    line = ConsoleLine(host_time=5.5, text="@mb verify pages=10 bad=2")
    rec = line.mb
    assert rec is not None and rec.kind == "verify" and rec.num("bad") == 2
    assert rec.host_time == 5.5
    assert ConsoleLine(1.0, "hello").mb is None


# --- integrity -------------------------------------------------------------------------------


def ram(pages: int) -> bytearray:
    return bytearray(b"".join(bytes([i % 251]) * PAGE for i in range(pages)))


def test_page_digests_shape() -> None:
    d = page_digests(bytes(ram(8)))
    assert len(d) == 8
    assert all(isinstance(x, bytes) and len(x) == 8 for x in d)
    assert len(set(d)) == 8
    assert len(page_digests(b"x" * (PAGE + 1))) == 2  # a partial last page counts
    assert page_digests(b"") == []


def test_one_flipped_byte() -> None:
    a = ram(8)
    b = bytearray(a)
    b[3 * PAGE + 100] ^= 0x01
    assert differing_pages(page_digests(bytes(a)), page_digests(bytes(b))) == [3]
    assert differing_pages(page_digests(bytes(a)), page_digests(bytes(a))) == []


def test_length_mismatch_counts_extra_pages() -> None:
    a = page_digests(bytes(ram(8)))
    b = page_digests(bytes(ram(5)))
    assert differing_pages(a, b) == [5, 6, 7]
    assert differing_pages(b, a) == [5, 6, 7]
    c = list(b)
    c[0] = b"\x00" * 8
    assert differing_pages(a, c) == [0, 5, 6, 7]


def test_file_digests_match_page_digests(tmp_path: Path) -> None:
    data = bytes(ram(4100)) + b"tail"  # spans more than one read chunk (4096 pages)
    p = tmp_path / "ram.dump"
    p.write_bytes(data)
    assert file_digests(p) == page_digests(data)


def test_host_hash_script_gives_file_digests_and_deletes_the_dump(tmp_path: Path) -> None:
    """The script a host runs on its RAM dump (local or SSH) is the same hash as file_digests."""
    import subprocess
    import sys

    data = bytes(ram(4100)) + b"tail"  # more than one read chunk
    p = tmp_path / "ram.dump"
    p.write_bytes(data)
    want = file_digests(p)
    out = subprocess.run([sys.executable, "-c", HASH_PAGES_PY, str(p)], capture_output=True,
                         text=True, check=True).stdout
    assert [bytes.fromhex(line) for line in out.split()] == want == page_digests(data)
    assert not p.exists()


# --- detect_accel ----------------------------------------------------------------------------


@pytest.fixture
def dev_kvm(tmp_path: Path) -> Path:
    p = tmp_path / "kvm"
    p.write_text("")
    return p


def test_accel_explicit(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    kvm = detect_accel("kvm", dev_kvm=absent, pvm_module=absent)
    tcg = detect_accel("tcg", dev_kvm=absent, pvm_module=absent)
    assert (kvm.accel, tcg.accel) == ("kvm", "tcg")
    assert "hosts.yaml" in kvm.reason


def test_accel_auto_missing_device(tmp_path: Path) -> None:
    absent = tmp_path / "kvm"
    choice = detect_accel("auto", dev_kvm=absent, pvm_module=tmp_path / "pvm")
    assert choice.accel == "tcg"
    assert str(absent) in choice.reason and "absent" in choice.reason


def test_accel_auto_pvm(tmp_path: Path, dev_kvm: Path) -> None:
    pvm = tmp_path / "kvm_pvm"
    pvm.mkdir()
    choice = detect_accel("auto", dev_kvm=dev_kvm, pvm_module=pvm)
    assert choice.accel == "tcg"
    assert "PVM" in choice.reason


def test_accel_auto_usable(tmp_path: Path, dev_kvm: Path) -> None:
    choice = detect_accel("auto", dev_kvm=dev_kvm, pvm_module=tmp_path / "no_pvm")
    assert choice.accel == "kvm"
    assert "usable" in choice.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root can access any file")
def test_accel_auto_not_accessible(tmp_path: Path, dev_kvm: Path) -> None:
    dev_kvm.chmod(0)
    try:
        choice = detect_accel("auto", dev_kvm=dev_kvm, pvm_module=tmp_path / "no_pvm")
    finally:
        dev_kvm.chmod(0o600)
    assert choice.accel == "tcg"
    assert "not accessible" in choice.reason


# --- qemu_argv -------------------------------------------------------------------------------


def vm_config(tmp_path: Path, **over: Any) -> VmConfig:
    kw: dict[str, Any] = {
        "name": "mb-src",
        "role": "source",
        "build": QemuBuild(binary=Path("/opt/q/bin/qemu-system-x86_64"),
                        datadirs=(Path("/opt/q/share/qemu"), Path("/opt/q/share/seabios"))),
        "accel": "tcg",
        "vcpus": 2,
        "memory_mib": 512,
        "kernel": Path("/img/vmlinuz"),
        "initrd": Path("/img/initrd"),
        "append": "console=ttyS0 quiet",
        "workdir": tmp_path / "source",
    }
    kw.update(over)
    return VmConfig(**kw)


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_qemu_argv_source(tmp_path: Path) -> None:
    cfg = vm_config(tmp_path)
    argv = qemu_argv(cfg)
    assert argv[0] == "/opt/q/bin/qemu-system-x86_64"
    assert pairs(argv, "-L") == ["/opt/q/share/qemu", "/opt/q/share/seabios"]
    assert pairs(argv, "-name") == ["mb-src,debug-threads=on"]
    assert pairs(argv, "-accel") == ["tcg"]
    assert pairs(argv, "-cpu") == ["qemu64"]
    assert pairs(argv, "-smp") == ["2"]
    assert pairs(argv, "-m") == ["512M"]
    assert pairs(argv, "-kernel") == ["/img/vmlinuz"]
    assert pairs(argv, "-initrd") == ["/img/initrd"]
    assert pairs(argv, "-append") == ["console=ttyS0 quiet"]
    assert pairs(argv, "-qmp") == [f"unix:{tmp_path / 'source' / 'qmp.sock'},server=on,wait=off"]
    (chardev,) = pairs(argv, "-chardev")
    assert f"path={tmp_path / 'source' / 'serial.sock'}" in chardev
    assert f"logfile={tmp_path / 'source' / 'console.log'}" in chardev
    assert "-incoming" not in argv
    assert "-S" not in argv


def test_qemu_argv_incoming_paused_extra(tmp_path: Path) -> None:
    cfg = vm_config(tmp_path, role="destination", incoming=True, start_paused=True,
                    extra_args=("-global", "foo.bar=1"))
    argv = qemu_argv(cfg)
    assert pairs(argv, "-incoming") == ["defer"]
    assert argv.count("-S") == 1
    assert argv[-2:] == ["-global", "foo.bar=1"]


def test_qemu_argv_paused_only(tmp_path: Path) -> None:
    argv = qemu_argv(vm_config(tmp_path, start_paused=True))
    assert "-S" in argv and "-incoming" not in argv


def test_qemu_argv_kvm_and_no_datadirs(tmp_path: Path) -> None:
    argv = qemu_argv(vm_config(tmp_path, accel="kvm",
                               build=QemuBuild(binary=Path("/usr/bin/qemu-system-x86_64"))))
    assert "-L" not in argv
    assert pairs(argv, "-accel") == ["kvm"]
    assert pairs(argv, "-cpu") == ["host"]


def test_qemu_argv_dirty_ring_only_on_kvm(tmp_path: Path) -> None:
    # dirty-limit needs KVM's dirty ring; TCG has none, so the option must not reach it
    assert pairs(qemu_argv(vm_config(tmp_path, accel="kvm", dirty_ring_size=4096)),
                 "-accel") == ["kvm,dirty-ring-size=4096"]
    assert pairs(qemu_argv(vm_config(tmp_path, accel="tcg", dirty_ring_size=4096)),
                 "-accel") == ["tcg"]


# --- kernel_append ---------------------------------------------------------------------------


def cell(**kw: Any) -> Any:
    (c,) = expand(MatrixSpec.model_validate({"name": "t", **kw}), "10.0")
    return c


def test_kernel_append_writer() -> None:
    c = cell(workload={"writer": {"working_set_mib": 64, "rate_mib_s": 32, "pattern": "sparse"}})
    append = kernel_append(c)
    assert "mb.writer=ws:64,rate:32,pattern:sparse,threads:1" in append.split()
    assert append.split()[0] == "console=ttyS0"


def test_kernel_append_threads_and_fractional_rate() -> None:
    c = cell(guest={"vcpus": 4},
             workload={"writer": {"working_set_mib": 128, "rate_mib_s": 12.5, "pattern": "random"}})
    assert "mb.writer=ws:128,rate:12.5,pattern:random,threads:4" in kernel_append(c).split()
    c2 = cell(guest={"vcpus": 4}, workload={"writer": {"threads": 2, "rate_mib_s": 0}})
    assert "mb.writer=ws:64,rate:0,pattern:sparse,threads:2" in kernel_append(c2).split()


def test_kernel_append_idle() -> None:
    c = cell(workload={"writer": None})
    assert "mb.writer" not in kernel_append(c)
    assert kernel_append(c) == "console=ttyS0 quiet panic=0 loglevel=4"


# --- the writer's longest stall -------------------------------------------------------------


def series(times: list[float]) -> list[float]:
    return times


def host_stall_ms(times: list[float], start: float, end: float) -> float | None:
    return longest_stall_ms(times, start, end)


def test_host_stall_one_gap() -> None:
    times = [round(i * 0.1, 4) for i in range(21)]  # 0.0 .. 2.0
    times += [round(2.5 + i * 0.1, 4) for i in range(21)]  # 2.5 .. 4.5: one 0.5 s gap
    assert host_stall_ms(series(times), 0.0, 4.5) == pytest.approx(400.0, abs=1.0)


def test_host_stall_regular_reports() -> None:
    times = [round(i * 0.1, 4) for i in range(50)]
    assert host_stall_ms(series(times), 0.0, 5.0) == pytest.approx(0.0, abs=1e-6)


def test_host_stall_window_and_order() -> None:
    # a big gap before the window start is ignored; unsorted input is fine
    times = [-3.0, 0.0, 0.1, 0.2, 0.5, 0.6]
    s = series(list(reversed(times)))
    assert host_stall_ms(s, 0.0, 1.0) == pytest.approx(200.0, abs=1.0)
    assert host_stall_ms(s, 0.0, 0.2) == pytest.approx(0.0, abs=1e-6)


def test_host_stall_too_few_reports() -> None:
    assert host_stall_ms([], 0.0, 10.0) is None
    assert host_stall_ms(series([1.0]), 0.0, 10.0) is None
    assert host_stall_ms(series([1.0, 20.0]), 0.0, 10.0) is None


# --- integrity_verdict -----------------------------------------------------------------------


@pytest.mark.parametrize(("checks", "verdict"), [
    ({}, "unchecked"),
    ({"guest_crash": {"lines": ["Kernel panic"]}}, "corrupted"),
    ({"guest_crash": {"lines": ["Oops: "]}, "ram": {"verdict": "ok"},
      "stamps": {"verdict": "ok"}}, "corrupted"),
    ({"ram": {"verdict": "ok"}, "stamps": {"verdict": "ok"}}, "ok"),
    ({"ram": {"verdict": "ok"}}, "ok"),
    ({"stamps": {"verdict": "ok"}}, "ok"),
    ({"stamps": {"verdict": "corrupted", "bad_pages": 3}}, "corrupted"),
    ({"ram": {"verdict": "ok"}, "stamps": {"verdict": "corrupted"}}, "corrupted"),
    ({"ram": {"verdict": "corrupted"}, "stamps": {"verdict": "ok"}}, "corrupted"),
    ({"stamps": {"verdict": "unchecked"}}, "unchecked"),
    ({"stamps": {"verdict": "unchecked"}, "guest_silent": {"reason": "stopped"}}, "corrupted"),
    ({"ram": {"verdict": "unchecked"}, "stamps": {"verdict": "ok"}}, "ok"),
    ({"other": {"verdict": "corrupted"}}, "unchecked"),
])
def test_integrity_verdict(checks: dict[str, Any], verdict: str) -> None:
    models = {"stamps": StampsCheck, "ram": RamCheck, "guest_crash": GuestCrash,
              "guest_silent": GuestSilent}
    # a check the record does not know ("other") has no place in it: it cannot change a verdict
    typed = {k: models[k].model_validate(v) for k, v in checks.items() if k in models}
    assert Integrity.judge(**typed).verdict == verdict  # type: ignore[arg-type]


# --- one definition each: host identity, file hashes, cell coordinates -----------------------


def test_same_machine_is_one_rule_for_doctor_and_builds() -> None:
    from harness.plan.models import HostSpec

    local, other_local = HostSpec(), HostSpec(workdir=Path("/srv/mb"))
    ssh = HostSpec(transport="ssh", address="10.0.0.9")
    assert local.same_machine(other_local)
    assert ssh.same_machine(ssh.model_copy(update={"user": "mb"}))  # another account there
    assert not ssh.same_machine(ssh.model_copy(update={"port": 2222}))
    assert not ssh.same_machine(ssh.model_copy(update={"address": "10.0.0.10"}))
    assert not ssh.same_machine(local) and not local.same_machine(ssh)


def test_sha256_file_is_the_content_hash_and_follows_changes(tmp_path: Path) -> None:
    import hashlib

    from harness.digest import sha256_file

    f = tmp_path / "f"
    f.write_bytes(b"a" * 3_000_000)
    assert sha256_file(f) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
    f.write_bytes(b"b")  # a new version of the file: read again
    assert sha256_file(f) == hashlib.sha256(b"b").hexdigest()


def test_cell_coordinates_are_one_key_for_history_compare_and_run_order() -> None:
    from harness.analysis import compare, history
    from harness.plan.matrix import coordinate_key
    from harness.results.record import read
    from harness.run.runner import run_order

    spec = MatrixSpec.model_validate({
        "name": "m", "variants": {"a": {"build": "10.0"}, "b": {"build": "7.2"}},
        "axes": {"feature": ["precopy", "xbzrle"]}})
    cells = expand(spec, "10.0")
    order = run_order(cells, 1, "interleaved")
    # the variants of one point run next to each other: the key leaves the variant out
    assert [(c.variant, c.feature) for c, _ in order] == [
        ("a", "precopy"), ("b", "precopy"), ("a", "xbzrle"), ("b", "xbzrle")]
    rec = read(Path(__file__).resolve().parent.parent / "data/v1/615439fa7f3c/1.json")
    assert history.coordinate_key(rec) == coordinate_key(rec.cell)
    assert compare.cell_key(rec) == coordinate_key(rec.cell, variant=False, matrix=False)
    assert compare.cell_key(rec, with_variant=True) == coordinate_key(rec.cell, matrix=False)
    assert '"variant":"new"' in history.coordinate_key(rec)
