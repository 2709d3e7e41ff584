"""The harness's error tree.

Every error the harness raises on purpose derives from :class:`HarnessError`; the CLI catches it
once, prints its one-line message and exits 1. Anything else is a bug and keeps its traceback::

    HarnessError
     +-- ConfigError        bad hosts.yaml / matrix file (names file, key and fix)
     +-- UsageError         a bad command line: an unknown option, a flag out of range
     +-- ImageError         guest image could not be built
     +-- HostError          a host could not be reached or lacks something
     |    +-- CommandFailed a command on a host exited non-zero or timed out
     +-- VmError            a QEMU process failed to start, died, or did not answer
     +-- QmpError           a QMP command failed (carries QEMU's own error text)
     +-- MigrationError     a migration could not be set up
     +-- StoreError         a results, report or export file could not be written
     +-- RecordError        a run file that does not validate (harness.results.record.errors: one line
                            naming file, field, what was expected and the fix)
"""

from __future__ import annotations

import reprlib

#: Longest error line: a hostile file must not print megabytes, and one line stays readable.
MAX_LINE = 300
_VALUE_CHARS = 60


def shorten(value: object, limit: int = _VALUE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters with an ellipsis, for echoing input in errors.

    ``repr`` shows control characters escaped (a newline stays ``\\n``), so an echoed value can
    neither break the one-line message nor drive the terminal.
    """
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too long for str() (Python's digit limit)
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# bounded work on anything: a huge or deeply nested value is cut, never walked whole
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _VALUE_CHARS
_REPR.maxlevel = 3


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` as one printable line of at most ``limit`` characters.

    Control characters are escaped the way ``repr`` would show them; the end is cut with an
    ellipsis.
    """
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


class HarnessError(Exception):
    """Base class of every error the harness reports to the user."""


class ConfigError(HarnessError):
    """A configuration file is missing, malformed, or has a bad value."""

    def __init__(self, path: object, key: str, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.fix = fix
        # The fix is the useful end of the line: keep it whole, cut the problem to fit.
        where = one_line(f"{self.path}: {key}: " if key else f"{self.path}: ", 120)
        tail = one_line(f" ({fix})", 150) if fix else ""
        super().__init__(where + one_line(problem, MAX_LINE - len(where) - len(tail)) + tail)


class UsageError(HarnessError):
    """The command line is wrong: an unknown option, a missing argument, a flag out of range."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


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
