"""matrices/seed-compress-bound.yaml: the compression-bound seed matrix expands to the cells the
talk's tuning advice needs (threads and channels 1/2/4, compress-wait-thread both ways, level 9,
no rate limit), legacy compress on 7.2 only and multifd zlib/zstd on 10.0 only."""

from __future__ import annotations

from pathlib import Path

from harness.plan.config import load_matrix
from harness.plan.matrix import Cell, expand

MATRIX = Path(__file__).resolve().parents[2] / "matrices" / "seed-compress-bound.yaml"


def test_cells_of_the_compress_bound_matrix() -> None:
    cells = expand(load_matrix(MATRIX), "10.0")
    by: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        by.setdefault((c.variant, c.feature), []).append(c)
    assert sorted(by) == [("qemu-10.0", "multifd"), ("qemu-10.0", "precopy"),
                          ("qemu-7.2", "compress"), ("qemu-7.2", "precopy")]
    compress = by[("qemu-7.2", "compress")]
    assert sorted((c.axes["compress-threads"], c.axes["compress-wait-thread"]) for c in compress) \
        == [(n, w) for n in (1, 2, 4) for w in (False, True)]
    for c in compress:
        p = c.migration.parameters
        assert p["compress-level"] == 9 and p["compress-wait-thread"] is c.axes["compress-wait-thread"]
        assert p["max-bandwidth"] == 0 and "max-bandwidth" in c.migration.unlimited
        assert c.build == "7.2"
    multifd = by[("qemu-10.0", "multifd")]
    assert sorted((c.axes["multifd-channels"], c.axes["multifd-compression"]) for c in multifd) \
        == [(n, m) for n in (1, 2, 4) for m in ("zlib", "zstd")]
    for c in multifd:
        p = c.migration.parameters
        assert p["multifd-zlib-level"] == 9 and p["multifd-zstd-level"] == 9
        assert "compress-threads" not in p and c.build == "10.0"
    assert len(cells) == 14
