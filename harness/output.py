"""Output that leaves the harness, made safe for where it goes.

Result files, QEMU and guests are untrusted: their text reaches CSV files, terminals and file
names. Each destination has one helper here, used by every writer:

- :func:`csv_cell` / :func:`csv_row`: a spreadsheet runs a cell that starts with ``=``, ``+``,
  ``-``, ``@``, tab or carriage return as a formula; such text gets a leading ``'`` (OWASP's
  rule). Numbers are left alone, and so is text that is a plain number (``-3.5``, ``-23.2%``).
- :func:`terminal_text`: escape sequences (CSI, OSC, DCS ...), C0 and C1 control characters, DEL
  and bidirectional overrides are dropped, so a record cannot clear the screen, set the window
  title, hide text or move the cursor. :func:`console_text` also escapes rich markup.
- :func:`write_atomic` and :func:`write_failure`: the one way the harness writes a file: whole
  or not at all (no temporary file is left behind on a full, read-only or vanished folder), with
  one mode (:data:`FILE_MODE`); a write that fails becomes one line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from harness.errors import StoreError

# --------------------------------------------------------------------------------------------
# CSV

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# How the harness writes a number as text; a spreadsheet reads it as that number, nothing more.
# A leading "+" is not in it: "+1" is how a formula starts, not how a figure is written.
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?\Z")


def csv_cell(value: Any) -> Any:
    """``value`` safe for a CSV cell: text a spreadsheet would run as a formula gets a ``'``.

    Only text changes: numbers, booleans and None are returned as they are.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not (
            _PLAIN_NUMBER.match(value)):
        return "'" + value
    return value


def csv_row(values: Iterable[Any]) -> list[Any]:
    """:func:`csv_cell` of each value, None as an empty cell."""
    return ["" if v is None else csv_cell(v) for v in values]


# --------------------------------------------------------------------------------------------
# Terminal

# ESC sequences go whole (their parameters would otherwise show, or act, once the ESC is gone):
# CSI (ESC [ or C1 0x9b) params final; OSC/DCS/SOS/PM/APC strings ended by BEL or ST (an
# unended one loses only its introducer, so no text after it is hidden); any other escape.
# Then single characters: C0 but tab and newline, DEL, C1, lone surrogates (unprintable: the
# write to a UTF-8 terminal would fail), bidirectional controls (they reorder what is shown).
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f"
                    "\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: object, *, newlines: bool = False) -> str:
    """``text`` (from a file, QEMU or a guest) with every control sequence and character
    dropped. Tabs become spaces; newlines too, unless ``newlines`` (text printed as a block)."""
    s = _CHARS.sub("", _SEQUENCE.sub("", str(text)))
    s = s.replace("\t", " ")
    return s if newlines else s.replace("\n", " ")


def console_text(text: object, *, newlines: bool = False) -> str:
    """:func:`terminal_text`, with rich markup escaped: for text inside a rich markup string."""
    from rich.markup import escape

    return escape(terminal_text(text, newlines=newlines))


# --------------------------------------------------------------------------------------------
# Files


def write_failure(path: Path | str, what: str, exc: OSError, fix: str) -> StoreError:
    """One line for a write that failed: ``PATH: cannot write WHAT: reason; remedy FIX``.

    The remedy follows the cause: free space, make the folder writable, or (for a folder that
    was removed meanwhile) recreate it.
    """
    reason = exc.strerror or str(exc)
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        remedy = "free space there"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        remedy = "make it writable"
    elif code in (errno.ENOENT, errno.ENOTDIR):
        remedy = "its folder is gone (removed meanwhile?): recreate it"
    else:
        remedy = "fix that"
    return StoreError(f"{path}: cannot write {what}: {reason}; {remedy} {fix}".rstrip())


#: The mode of every file the harness writes (results, summaries, exports, reports, verdicts,
#: caches): readable by everyone, writable by its owner, as a plain ``open()`` under the usual
#: umask makes it. A temporary file starts private (0600); results and reports are for sharing.
FILE_MODE = 0o644


def write_atomic(path: Path, data: str | bytes | Callable[[BinaryIO], None], *,
                 overwrite: bool = True) -> None:
    """Write ``path`` whole: a temporary file in its folder, flushed to disk, given
    :data:`FILE_MODE`, then renamed to ``path`` (or linked, with ``overwrite=False``).

    ``data`` is text (written as UTF-8, newlines as given), bytes, or a function that writes to
    the open binary file. On any failure the temporary file is removed and ``path`` is as it
    was; the folder is not created.

    :raise FileExistsError: ``overwrite`` is False and ``path`` exists (it is left alone).
    :raise OSError: the write failed (callers turn it into :func:`write_failure`).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and fails if the file exists: never overwrite
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
