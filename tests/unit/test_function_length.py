"""Functions a reader can hold (issue 14 item 4): none over 60 lines in the run path.

Checked: every function (methods and nested ones too) in ``harness/run/``, in what a run goes
through below it (``harness/hosts/``, ``harness/guest/``) and beside it (``harness/lab/``: a
worker's run), in ``harness/plan/matrix.py``, and the named functions that were split along
their steps elsewhere.
Length is ``end_lineno - lineno + 1`` of the ``def``, docstring and comments included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "harness"
LIMIT = 60
WHOLE = [*(p for stage in ("run", "hosts", "guest", "lab")
           for p in sorted((HARNESS / stage).rglob("*.py"))), HARNESS / "plan" / "matrix.py"]
NAMED = {
    "report/model.py": ("cell_page",),
    "hosts/provision.py": ("provision_host",),
    "ci/patchbuild.py": ("build_on_host",),
    "cli.py": ("cmd_run", "_run_progress"),  # the head of the run path
}
# Over the limit on purpose, each with why (none today). The test also fails once an entry is
# no longer over it, so this list cannot go stale.
ALLOWED: set[str] = set()


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(n.name, (n.end_lineno or n.lineno) - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _checked() -> list[tuple[str, int]]:
    out = []
    for path in WHOLE:
        rel = path.relative_to(HARNESS).as_posix()
        out += [(f"{rel}:{name}", length) for name, length in _functions(path)]
    for rel, names in NAMED.items():
        found = dict(_functions(HARNESS / rel))
        for name in names:
            assert name in found, f"{rel} has no function {name}: update NAMED"
            out.append((f"{rel}:{name}", found[name]))
    return out


def test_no_function_in_the_run_path_is_over_60_lines() -> None:
    checked = _checked()
    assert len(checked) > 100  # the walk really found the run path's functions
    long = [f"{where} ({length} lines)" for where, length in checked
            if length > LIMIT and where not in ALLOWED]
    assert not long, "split along its steps: " + ", ".join(long)


def test_every_allowed_function_is_still_over_the_limit() -> None:
    lengths = dict(_checked())
    stale = [where for where in ALLOWED if lengths.get(where, 0) <= LIMIT]
    assert not stale, f"no longer over {LIMIT} lines: remove from ALLOWED: {stale}"


@pytest.mark.parametrize("source, over", [
    ("def f():\n" + "    x = 1\n" * 60, True),
    ("def f():\n" + "    x = 1\n" * 59, False),
    ("class C:\n    def m(self):\n        def inner():\n" + "            y = 2\n" * 60, True),
])
def test_the_measure_counts_every_line_of_nested_functions_too(
        tmp_path: Path, source: str, over: bool) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert any(length > LIMIT for _, length in _functions(path)) is over
