"""migbench: a benchmark and evaluation harness for QEMU live migration.

The flow, one stage per package, data moving right and imports only going down::

    hosts.yaml + matrices/X.yaml -> plan -> run -> results -> analysis -> report
                                             uses hosts (local or SSH) and guest (the image)
    ci drives the whole flow unattended; lab spreads run's runs over host pairs (Celery)

Below every stage, the base modules: ``errors``, ``inputs`` and ``output`` (files in and out),
``digest``, ``locations`` (caches, the hosts file, the guest sources: from a checkout or a wheel).
On top, the command line: ``cli`` (the only place that turns a HarnessError into an exit code)
and ``checks`` (the range check of every flag). Each package's docstring says where it stands;
tests/unit/test_layout.py holds the table of what may import what.
"""
