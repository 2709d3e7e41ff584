"""Run: cells become RunRecords, by booting VMs on host pairs and migrating them.

Where it stands in the flow::

    plan -> [run] -> results -> analysis -> report

``runner`` takes the planned Cells (pairs, order, resume, progress) and stores each record,
``schedule`` picks the next run when cells stop once they are sure; ``migration`` is one
migration as a state machine; ``vm`` and ``qmp`` a QEMU process and its QMP session;
``workload`` the guest workloads' arguments and summaries; ``integrity`` the RAM comparison;
``storage`` the disk copied with a migration (``storage: copy``); ``warm`` saved guests that
every run restores; ``dirtyrate`` QEMU's dirty-rate measurement before a migration;
``calibrate`` the short runs ``migbench advise`` needs; ``cancel`` the stop every wait wakes on
(Ctrl-C, SIGTERM); ``sampling/`` the samplers (console, per-thread CPU, ping, fio, writer, the
service load). Everything transport-specific is behind the Host interface of ``hosts``.

May import: errors, inputs, output, digest, locations; plan, results, analysis, guest, hosts.
"""
