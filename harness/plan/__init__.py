"""Plan: the hosts and matrix files become frozen models and an ordered list of Cells (pure).

Where it stands in the flow (data moves right; this package imports only the base modules)::

    hosts.yaml + matrices/X.yaml -> [plan] -> run -> results -> analysis -> report

``config`` loads and validates each file once (``models``: frozen pydantic models) and plans a
matrix against a hosts file; ``matrix`` expands axes, include and exclude into Cells with stable
ids; ``features`` turns knobs into QEMU capabilities and parameters; ``units`` parses sizes and
rates; ``repetitions`` says how many runs a cell gets. Nothing here starts a process, opens a
socket or reaches a host.

May import: errors, inputs, output, digest, locations.
"""
