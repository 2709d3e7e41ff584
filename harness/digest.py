"""Content hashes of files: the one SHA-256 of a file the harness computes (guest image parts,
uploads checked on a host, patches of a QEMU build).

A file is read once per version: the digest is remembered by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_memo: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file ``path``, as hex.

    :raise OSError: it cannot be read.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        known = _memo.get(key)
    if known is not None:
        return known
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _memo[key] = digest
    return digest
