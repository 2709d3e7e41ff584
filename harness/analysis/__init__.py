"""Analysis: figures over run records: statistics, comparisons, regressions, models (pure).

Where it stands in the flow::

    plan -> run -> results -> [analysis] -> report

``stats`` (medians, intervals, tests, percentiles), ``stalls`` (the guest writer's stalls),
``compare`` (which runs count, before/after per cell), ``regress`` (verdicts against a
baseline), ``history`` (nights of one machine identity), ``convergence`` (the precopy model),
``patterns`` (what the writer's page patterns cost to send), ``advise`` (each feature's
predicted outcome for a workload and link), ``diagnosis`` (the limiting factor of a run),
``overhead`` (where a campaign's time goes) and ``stopping`` (when a cell has had enough
repetitions). They take and return data; the run stage may use them (percentiles of the ping
prober, the writer's stalls, the stopping rule), nothing here uses run or hosts.

May import: errors, inputs, output, digest, locations; plan, results.
"""
