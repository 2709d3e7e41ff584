"""The thread classes of a QEMU process, and how a thread's name maps to its class (pure).

A run record keeps each side's CPU per class (:class:`harness.results.record.model.CpuSide`); the
CPU sampler (:mod:`harness.run.sampling.cpu`) classifies the threads it saw, the metric
catalogue and the report name the same classes.

Thread classes (QEMU with ``-name NAME,debug-threads=on``; names truncated by the kernel to 15
bytes)::

    main          the main loop thread (tid == pid); it keeps the process name. On the
                  destination it also runs the incoming precopy stream (a coroutine).
    migration     live_migration / mig/src/main, the source return path (return path,
                  mig/src/rp-thr, mig/src/return), TLS handshake, bg snapshot, COLO, other mig/*
    postcopy      destination postcopy threads: postcopy/listen, postcopy/fault, fault-default,
                  fault-fast (7.x-8.x); mig/dst/listen, mig/dst/fault, mig/dst/preempt (9.0+)
    compress      legacy multithread compression (<= 9.0): compress
    decompress    decompress
    multifd_send  multifdsend_N (<= 8.2), mig/src/send_N (9.0+)
    multifd_recv  multifdrecv_N (<= 8.2), mig/dst/recv_N (9.0+)
    vcpu          CPU n/TCG, CPU n/KVM (any accelerator), ALL CPUs/TCG (single-threaded TCG)
    other         everything else: worker, call_rcu, IO threads, vnc, helper threads
"""

from __future__ import annotations

import re

MAIN = "main"
MIGRATION = "migration"
POSTCOPY = "postcopy"
COMPRESS = "compress"
DECOMPRESS = "decompress"
MULTIFD_SEND = "multifd_send"
MULTIFD_RECV = "multifd_recv"
VCPU = "vcpu"
OTHER = "other"
CLASSES = (MAIN, MIGRATION, POSTCOPY, COMPRESS, DECOMPRESS, MULTIFD_SEND, MULTIFD_RECV, VCPU,
           OTHER)

# Exact names first, then prefixes. Prefixes tolerate the kernel's 15-byte truncation
# ("multifdsend_123", "mig/src/send_10", "multifd-tls-han").
_EXACT = {
    "live_migration": MIGRATION,
    "return path": MIGRATION,
    "bg_snapshot": MIGRATION,
    "COLO incoming": MIGRATION,
    "compress": COMPRESS,
    "decompress": DECOMPRESS,
    "postcopy/listen": POSTCOPY,
    "postcopy/fault": POSTCOPY,
    "fault-default": POSTCOPY,
    "fault-fast": POSTCOPY,
    "mig/dst/listen": POSTCOPY,
    "mig/dst/fault": POSTCOPY,
    "mig/dst/preempt": POSTCOPY,
    "ALL CPUs/TCG": VCPU,
}
_PREFIXES = (
    ("multifdsend_", MULTIFD_SEND),
    ("mig/src/send_", MULTIFD_SEND),
    ("multifdrecv_", MULTIFD_RECV),
    ("mig/dst/recv_", MULTIFD_RECV),
    ("multifd-tls", MIGRATION),
    ("mig/", MIGRATION),  # mig/src/main, mig/src/rp-thr, mig/src/return, mig/src/tls, ...
    ("qemu-system-", MAIN),  # the unnamed process name, e.g. "qemu-system-x86" (15 bytes)
)
_VCPU = re.compile(r"CPU \d+/")


def classify(comm: str, process_comm: str | None = None) -> str:
    """The class of a QEMU thread from its name alone (pure).

    A name equal to ``process_comm`` (the process's own comm, i.e. the main thread's) or starting
    with ``qemu-system-`` is "main". Prefer :func:`classify_thread` when the tid is known: QEMU's
    ``call_rcu`` thread starts before ``debug-threads`` takes effect and also keeps the process
    name.
    """
    if process_comm is not None and comm == process_comm:
        return MAIN
    cls = _EXACT.get(comm)
    if cls is not None:
        return cls
    if _VCPU.match(comm):
        return VCPU
    for prefix, cls in _PREFIXES:
        if comm.startswith(prefix):
            return cls
    return OTHER


def classify_thread(tid: int, comm: str, pid: int, process_comm: str | None = None) -> str:
    """The class of thread ``tid`` of process ``pid`` (pure): main is exactly tid == pid.

    Any other thread that carries the process name (call_rcu, library threads that never named
    themselves) is "other".
    """
    if tid == pid:
        return MAIN
    cls = classify(comm, process_comm)
    return OTHER if cls == MAIN else cls
