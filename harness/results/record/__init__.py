"""The run record: a frozen, validated model of one run, and its one way in and out of files.

Where it stands: the data between the run stage, which builds a record, and every reader of
results (store, show, report, compare, history, nightly)::

    run -> [results/record] -> store -> analysis -> report

``model`` holds the record and its parts, ``qmp`` the QMP replies it keeps, ``scalars`` the
rules for its numbers, ``metrics`` the catalogue of a run's figures, ``threadclass`` the thread
classes of a QEMU process, ``upgrade`` turns every schema version migbench wrote into the
current one, ``codec`` reads and writes the bytes, ``errors`` turns a record that does not
validate into one line: ``FILE: field path: what was expected; fix``.
"""

from harness.results.record.codec import dump, loads, parse, read
from harness.results.record.errors import RecordError, validation_line
from harness.results.record.model import SCHEMA_VERSION, RunRecord
from harness.results.record.upgrade import upgrade

__all__ = ["SCHEMA_VERSION", "RecordError", "RunRecord", "dump", "loads", "parse", "read",
           "upgrade", "validation_line"]
