"""What the guest writer's own page patterns cost to send, for predictions made before a run has
measured it (pure data).

The writer (workloads/writer.c) fills pages in one of four patterns: ``zero``, ``text``
(English-like words), ``random`` (incompressible) and ``sparse`` (random bytes of which 8
change at a time). These figures are what a migration of them costs:

* :data:`XBZRLE_COST`: wire bytes of an XBZRLE hit as a share of the page, as the patterns are
  built to be (an 8-byte change encodes in a few dozen bytes; a random rewrite overflows);
* :data:`WIRE_RATIO`: wire bytes per RAM byte of a page sent whole with multifd ``zstd`` or
  ``zlib`` at level 1, and :data:`ENCODE_RATE`: RAM bytes one multifd send thread compresses
  per CPU-second, by (method, level): measured on this machine (2 vCPUs of an AMD EPYC, QEMU
  10.0, TCG guest) in real migrations, ``benchmarks/multifd-encoder.yaml`` read by
  ``benchmarks/encoder_rate.py`` (one channel, no rate limit; medians of two runs that agreed
  within 5 %; docs/diagnosis.md has the table). A ``sparse`` page holds random bytes: it
  compresses no better than ``random`` (their runs' 0.8 over the whole guest is the guest's
  other pages). A faster host compresses faster.
* legacy ``compress`` (QEMU 7.2, zlib): :data:`COMPRESS_RATIO` and :data:`COMPRESS_RATE`, from
  ``benchmarks/compress-encoder.yaml`` (one compress thread, no rate limit, the same reader).
  Its runs are corrupted under TCG here (7.2's dirty-page bug), which does not touch what the
  source sent.
"""

from __future__ import annotations

MiB = 1 << 20

#: Bytes on the wire per page of an XBZRLE hit, as a share of the page, per writer pattern.
XBZRLE_COST = {"sparse": 0.01, "text": 0.3, "random": 1.0, "zero": 0.01}
#: Wire bytes per RAM byte with multifd zstd at level 1, per writer pattern (text measured 0.294).
ZSTD_RATIO = {"sparse": 1.0, "text": 0.3, "random": 1.0, "zero": 0.001}
#: The same with multifd zlib at level 1 (text measured 0.335).
ZLIB_RATIO = {"sparse": 1.0, "text": 0.34, "random": 1.0, "zero": 0.001}
#: The same with legacy compress (QEMU 7.2, zlib) at compress-level 1 (text measured 0.368).
COMPRESS_RATIO = {"sparse": 1.0, "text": 0.37, "random": 1.0, "zero": 0.001}
WIRE_RATIO = {"zstd": ZSTD_RATIO, "zlib": ZLIB_RATIO, "compress": COMPRESS_RATIO}
#: RAM bytes one multifd send thread handles per CPU-second, by (method, level) and writer
#: pattern. Zero pages are found before the codec: no figure, not a limit.
ENCODE_RATE: dict[tuple[str, int], dict[str, float]] = {
    ("zstd", 1): {"text": 357 * MiB, "random": 1294 * MiB, "sparse": 1294 * MiB},
    ("zstd", 9): {"text": 50 * MiB, "random": 98 * MiB, "sparse": 98 * MiB},
    ("zlib", 1): {"text": 129 * MiB, "random": 64 * MiB, "sparse": 68 * MiB},
    ("zlib", 9): {"text": 9 * MiB, "random": 34 * MiB, "sparse": 34 * MiB},
}
#: RAM bytes per second legacy compress (QEMU 7.2) delivers, all its threads together, by
#: compress-level and writer pattern: what one compress thread sent with max-bandwidth unlimited
#: (benchmarks/compress-encoder.yaml, medians of 2 runs). Not a per-thread figure times the
#: threads: the thread compressed 80-88 MiB/s per CPU-second (45-61 at level 9) but was busy
#: only 43-72 % of the time. 7.2's migration thread hands it one page at a time and copies each
#: result into the stream, and that sets the pace; two threads did 46-65 MiB/s (tests/data/v1,
#: seed-compression), one 38-46.
COMPRESS_RATE: dict[int, dict[str, float]] = {
    1: {"text": 43 * MiB, "random": 38 * MiB, "sparse": 42 * MiB},
    9: {"text": 40 * MiB, "random": 30 * MiB, "sparse": 30 * MiB},
}
