"""Samplers of the run stage: the guest console, per-thread CPU (the /proc probe runs on the host
of each QEMU), the ping prober, fio and the writer's reports, each turned into record parts."""
