"""Samplers of the run stage: what the guest, QEMU and the link report while a run runs.

Where it stands: inside ``run/``, beside the migration that starts and stops them::

    plan -> [run: migration + sampling] -> results -> analysis -> report

``console`` reads the guest console; ``cpu`` per-thread CPU (``cpuprobe``, the /proc probe,
runs on the host of each QEMU); ``ping`` the ping prober; ``fio`` and ``writer`` the guest
workloads' reports; ``service`` the request load on a guest service (``service_proto`` its wire
protocols, ``servicestats`` what its clients saw, ``service_run`` its lifecycle in a run).
Each turns what it saw into record parts.
"""
