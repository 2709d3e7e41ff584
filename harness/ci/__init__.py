"""CI: unattended commands that run matrices and give a verdict with an exit code.

Where it stands: on top of the whole flow, which it drives end to end::

    plan -> run -> results -> analysis -> report    (all driven by [ci])

``nightly`` runs a night into a history and judges it against earlier nights; ``abtest`` is
``migbench compare`` (two variants interleaved, a before/after verdict); ``verdict`` holds what
both give (verdict documents, JUnit, thresholds); ``patchbuild`` builds QEMU from a source tree
plus patches on the hosts.

May import: errors, inputs, output, digest, locations; plan, results, analysis, report, guest,
hosts, run (everything but lab and the command line).
"""
