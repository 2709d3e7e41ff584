"""Results: the RunRecord (what a run produced) and the folder of records on disk.

Where it stands in the flow::

    plan -> run -> [results] -> analysis -> report

``record/`` is the versioned, validated model of one run and its one way in and out of files
(upgrades of old schema versions, the metric catalogue of a record); ``store`` writes and reads
a campaign folder (one JSON per run, summary.csv, DataFrame export); ``show`` prints a campaign.
The run stage imports this package to build and store records, which is why it sits below run
in the imports although data reaches it from run. No process, socket or host here.

May import: errors, inputs, output, digest, locations; plan.
"""
