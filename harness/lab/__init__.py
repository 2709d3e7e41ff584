"""A lab of host pairs: a matrix's runs distributed over workers by Celery with a Redis broker.

Where it stands: beside ``run/`` in the flow (it uses the local runner's per-run function,
never its own)::

    plan -> [lab] (run's runs on many host pairs) -> results -> analysis -> report

    migbench run MATRIX --engine celery://redis://...   submit: plan -> one task per cell x
                                                          repetition, routed to a queue of capable
                                                          workers; records come back, are validated
                                                          and stored (submit)
    migbench worker --hosts H.yaml --pair NAME            one worker = one host pair: probes it,
                                                          publishes what it can run, consumes one
                                                          run at a time, late acknowledgement,
                                                          a lease renewed while it runs (worker)
    migbench lab status                                   workers, pairs, capabilities, queues,
                                                          runs in flight (commands)

``broker`` holds the Celery app and the broker's keys, ``caps`` the pure part (what a worker
declares, which queue a cell goes to, why none can run it), ``job`` what one task carries.

May import: errors, inputs, output, digest, locations; plan, results, analysis, guest, hosts,
run.
"""
