"""How a guest build says what it is doing: a callback taking one line at a time.

The command line passes ``print``; code that builds an image for itself (tests, a lab worker)
passes nothing and gets :func:`quiet`. One definition for every builder of ``guest/``.
"""

from __future__ import annotations

from collections.abc import Callable

#: The type of a build's progress callback.
BuildLog = Callable[[str], None]


def quiet(_: str) -> None:
    """The default: a build started from code says nothing."""
