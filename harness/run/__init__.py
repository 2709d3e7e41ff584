"""Run: cells become RunRecords, by booting VMs on host pairs and migrating them.

Where it stands in the flow::

    plan -> [run] -> results -> analysis -> report

``runner`` takes the planned Cells (pairs, order, resume, progress) and stores each record;
``migration`` is one migration as a state machine; ``vm`` and ``qmp`` a QEMU process and its QMP
session; ``workload`` the guest workloads' arguments and summaries; ``integrity`` the RAM
comparison; ``sampling/`` the samplers (console, per-thread CPU, ping, fio, writer). Everything
transport-specific is behind the Host interface of ``hosts``.

May import: errors, inputs, output, digest; plan, results, analysis, guest, hosts.
"""
