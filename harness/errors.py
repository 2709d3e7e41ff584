"""The harness's error tree.

Every error the harness raises on purpose derives from :class:`HarnessError`; the CLI catches it
once, prints its one-line message and exits 1. Anything else is a bug and keeps its traceback::

    HarnessError
     +-- ConfigError        bad hosts.yaml / matrix file (names file, key and fix)
     +-- ImageError         guest image could not be built
     +-- HostError          a host could not be reached or lacks something
     |    +-- CommandFailed a command on a host exited non-zero or timed out
     +-- VmError            a QEMU process failed to start, died, or did not answer
     +-- QmpError           a QMP command failed (carries QEMU's own error text)
     +-- MigrationError     a migration could not be set up
     +-- StoreError         a results, report or export file could not be written
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every error the harness reports to the user."""


class ConfigError(HarnessError):
    """A configuration file is missing, malformed, or has a bad value."""

    def __init__(self, path: object, key: str, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        msg = where + problem
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class ImageError(HarnessError):
    """The guest image could not be built."""


class HostError(HarnessError):
    """A host is unreachable or lacks what the harness needs."""


class CommandFailed(HostError):
    """A command on a host exited non-zero or timed out."""

    def __init__(
        self, host: str, command: str, exit_code: int | None, stdout: str = "", stderr: str = ""
    ) -> None:
        self.host = host
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if exit_code is None else f"exited {exit_code}"
        tail = (stderr or stdout).strip().splitlines()[-3:]
        msg = f"{host}: `{command}` {status}"
        if tail:
            msg += ": " + " | ".join(tail)
        super().__init__(msg)


class VmError(HarnessError):
    """A QEMU process failed to start, died unexpectedly, or stopped answering."""


class QmpError(HarnessError):
    """A QMP command returned an error; the message carries QEMU's own text."""


class MigrationError(HarnessError):
    """A migration could not be set up or driven."""


class StoreError(HarnessError):
    """A results, report or export file could not be written (full, read-only or vanished
    folder); the message names the path and the fix."""
