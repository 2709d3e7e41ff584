"""Analysis: figures over run records: statistics, comparisons, regressions, models (pure).

Where it stands in the flow::

    plan -> run -> results -> [analysis] -> report

``stats`` (medians, intervals, tests, percentiles), ``stalls`` (the guest writer's stalls),
``compare`` (which runs count, before/after per cell), ``regress`` (verdicts against a
baseline), ``history`` (nights of one machine identity), ``convergence`` (the precopy model) and
``diagnosis`` (the limiting factor of a run). They take and return data; the run stage may use
them (percentiles of the ping prober, the writer's stalls), nothing here uses run or hosts.

May import: errors, inputs, output, digest; plan, results.
"""
