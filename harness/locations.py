"""Where migbench keeps what it computes and finds what it reads: from a checkout or installed.

The package runs the same from a source checkout and from a wheel installed anywhere, so nothing
is computed from the package's own path except the guest sources it ships
(``harness/guest/workloads``, package data) and the source checkout when there is one (only for
the git commit recorded with each run and for ``scripts/build-fio.sh``).

Caches (rebuildable, shared by every results folder) live under one folder:
``$MIGBENCH_CACHE``, else ``$XDG_CACHE_HOME/migbench``, else ``~/.cache/migbench``; below it
``image/`` (guest images), ``probe-cache/`` (what each QEMU build supports) and ``fio/`` (the
guest's static fio). The Makefile sets ``MIGBENCH_CACHE=build`` so that a checkout keeps them in
``build/`` as before. The hosts file is searched in :func:`hosts_candidates`.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

CACHE_ENV = "MIGBENCH_CACHE"
HOSTS_ENV = "MIGBENCH_HOSTS"
FIO_ENV = "MIGBENCH_FIO"

_PACKAGE = Path(__file__).resolve().parent
#: The guest sources (init.sh, *.c, fio/fiomon.c): package data in a wheel; in a checkout a
#: symlink to the top-level workloads/ folder.
WORKLOADS = _PACKAGE / "guest" / "workloads"


def source_checkout() -> Path | None:
    """The source tree this package runs from, or None when it runs installed from a wheel."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "workloads").is_dir():
        return root
    return None


def _xdg(var: str, fallback: str) -> Path:
    # The XDG spec: a relative value is invalid and must be ignored.
    value = os.environ.get(var, "")
    return Path(value) if value.startswith("/") else Path.home() / fallback


def cache_dir() -> Path:
    """The cache folder (read at each call, so that a test or the Makefile may set it)."""
    value = os.environ.get(CACHE_ENV, "")
    return Path(value).absolute() if value else _xdg("XDG_CACHE_HOME", ".cache") / "migbench"


def image_cache() -> Path:
    """Built guest images (``migbench image build --cache`` overrides it)."""
    return cache_dir() / "image"


def probe_cache() -> Path:
    """What each QEMU build on each host supports, keyed by host identity and binary."""
    return cache_dir() / "probe-cache"


def fio_dir() -> Path:
    """Where a built static fio is looked for (``fio-<version>/fio``) and built."""
    return cache_dir() / "fio"


def fio_binary() -> Path | None:
    """The static fio named by ``$MIGBENCH_FIO``, if set."""
    value = os.environ.get(FIO_ENV, "")
    return Path(value).absolute() if value else None


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/migbench`` (``~/.config/migbench``): where ``migbench init`` writes."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "migbench"


def hosts_candidates() -> list[Path]:
    """Where the hosts file is looked for when ``--hosts`` is not given, in order:
    ``$MIGBENCH_HOSTS``, ./hosts.yaml, ``$XDG_CONFIG_HOME/migbench/hosts.yaml``, and the
    checkout's hosts.yaml when running from one."""
    found = [Path(v) for v in [os.environ.get(HOSTS_ENV, "")] if v]
    found += [Path("hosts.yaml"), config_dir() / "hosts.yaml"]
    root = source_checkout()
    if root is not None:
        found.append(root / "hosts.yaml")
    return found


def version() -> str:
    """The installed distribution's version ("unknown" when the package is not installed)."""
    try:
        return metadata.version("migbench")
    except metadata.PackageNotFoundError:
        return "unknown"
