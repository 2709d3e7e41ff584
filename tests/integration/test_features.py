"""Issue 4: migration features on real QEMU under TCG, asserted on QEMU's own statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import store
from harness.image import GuestImage
from harness.models import HostsConfig
from harness.runner import run_matrix

from .conftest import REPO, matrix

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, hosts: HostsConfig,
         image: GuestImage) -> dict[tuple[str, str], dict[str, Any]]:
    spec = matrix(
        name="features", repetitions=1,
        limits={"max_time_s": 40, "observe_after_s": 1},
        workload={"writer": {"working_set_mib": 64, "rate_mib_s": 16, "pattern": "sparse"}},
        migration={
            "max-bandwidth": "200mbit", "xbzrle-cache-size": "64MiB",
            "multifd-channels": 2, "multifd-compression": "zstd",
            "compress-threads": 2, "decompress-threads": 2,
            "cpu-throttle-initial": 30, "cpu-throttle-increment": 20,
            "postcopy-after-syncs": 2,
        },
        variants={"q10": {"build": "10.0"}, "q72": {"build": "7.2"}},
        axes={"feature": ["xbzrle", "compress", "multifd", "auto-converge", "postcopy",
                          "dirty-limit"]},
        exclude=[{"variant": "q72", "feature": f} for f in
                 ("xbzrle", "multifd", "auto-converge", "postcopy", "dirty-limit")],
    )
    out = tmp_path_factory.mktemp("features") / "features"
    run_matrix(Path("features.yaml"), spec, REPO / "hosts.yaml", hosts, out, None, image)
    return {(r["cell"]["variant"], r["cell"]["migration"]["feature"]): r
            for _, r in store.iter_runs(out)}


def test_every_cell_recorded_once(runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert len(runs) == 7


def test_xbzrle_uses_its_cache(runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    r = runs[("q10", "xbzrle")]
    assert r["outcome"] == "completed", r["error"]
    assert r["integrity"] == "ok"
    assert r["migration"]["applied"]["source"]["capabilities"]["xbzrle"] is True
    assert r["migration"]["applied"]["source"]["parameters"]["xbzrle-cache-size"] == 64 * 1024**2
    x = r["final"]["xbzrle-cache"]
    assert x["pages"] > 0 and x["bytes"] > 0


def test_legacy_compress_runs_on_72_and_is_skipped_on_10(
        runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    skipped = runs[("q10", "compress")]
    assert skipped["outcome"] == "skipped"
    assert "compress" in skipped["error"] and "9.1" in skipped["error"]
    r = runs[("q72", "compress")]
    assert r["outcome"] == "completed", r["error"]
    # 7.2 loses dirty pages under TCG: the run may be corrupted; it is never reported as "ok"
    # without a check, and compression statistics are QEMU's own.
    assert r["integrity"] in ("ok", "corrupted")
    assert r["final"]["compression"]["pages"] > 0
    cpu = r["cpu"]
    assert cpu["source"]["classes"]["compress"] > 0
    assert cpu["destination"]["classes"]["decompress"] > 0
    assert "compress" not in cpu["destination"]["classes"]
    assert "decompress" not in cpu["source"]["classes"]


def test_multifd_threads_on_both_sides(runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    r = runs[("q10", "multifd")]
    assert r["outcome"] == "completed", r["error"]
    assert r["integrity"] == "ok"
    assert r["migration"]["applied"]["destination"]["parameters"]["multifd-channels"] == 2
    send = [t for t in r["cpu"]["source"]["threads"] if t["class"] == "multifd_send"]
    recv = [t for t in r["cpu"]["destination"]["threads"] if t["class"] == "multifd_recv"]
    assert len(send) >= 2 and len(recv) >= 2
    assert r["cpu"]["source"]["classes"]["multifd_send"] > 0
    assert r["cpu"]["destination"]["classes"]["multifd_recv"] > 0


def test_auto_converge_throttles(runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    r = runs[("q10", "auto-converge")]
    assert r["outcome"] in ("completed", "not-converged"), r["error"]
    throttle = [s.get("cpu-throttle-percentage", 0) for s in r["timeline"]]
    assert max(throttle) > 0


def test_postcopy_completes_after_switch(runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    r = runs[("q10", "postcopy")]
    assert r["outcome"] == "completed", r["error"]
    assert r["integrity"] == "ok"
    assert "postcopy_start_t" in r
    assert "postcopy-active" in {s["status"] for s in r["timeline"]}


def test_dirty_limit_skipped_with_reason(runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    r = runs[("q10", "dirty-limit")]
    assert r["outcome"] == "skipped"
    assert "KVM" in r["error"] and "tcg" in r["error"]
