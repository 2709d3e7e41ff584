"""Guest RAM comparison for the ``integrity: ram`` mode (pure hashing + file helpers).

Each host dumps the guest's RAM with QMP ``pmemsave`` and hashes it page by page where the dump
is (:data:`HASH_PAGES_PY`, the same digests as :func:`file_digests`); only the digests travel, so
the comparison works the same for local and remote hosts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PAGE = 4096


def page_digests(data: bytes, page: int = PAGE) -> list[bytes]:
    """An 8-byte BLAKE2b digest per page."""
    return [hashlib.blake2b(data[i:i + page], digest_size=8).digest()
            for i in range(0, len(data), page)]


def file_digests(path: Path, page: int = PAGE) -> list[bytes]:
    out: list[bytes] = []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(page * 4096)
            if not chunk:
                break
            out.extend(page_digests(chunk, page))
    return out


def differing_pages(a: list[bytes], b: list[bytes]) -> list[int]:
    """Indices of pages whose digests differ; a length mismatch counts the extra pages."""
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    diff.extend(range(min(len(a), len(b)), max(len(a), len(b))))
    return diff


#: :func:`file_digests` as a script for ``python3 -c SCRIPT DUMP`` on the host that holds the dump
#: (local or SSH): hex digests, one page per line, then the dump is deleted, so only digests
#: travel, never guest RAM.
HASH_PAGES_PY = (
    "import hashlib,os,sys\n"
    "p=sys.argv[1]\n"
    "w=sys.stdout.write\n"
    "with open(p,'rb') as f:\n"
    "    while True:\n"
    "        b=f.read(4096*4096)\n"
    "        if not b: break\n"
    "        w(''.join(hashlib.blake2b(b[i:i+4096],digest_size=8).hexdigest()+'\\n'"
    " for i in range(0,len(b),4096)))\n"
    "os.unlink(p)\n"
)
