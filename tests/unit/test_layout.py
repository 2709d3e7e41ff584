"""The layout of harness/: stages as packages, imports only downward, one Host interface.

Walks every module under harness/ (imports inside functions and ``TYPE_CHECKING`` blocks
included) and fails on an import the layout forbids, on a pure module that imports an I/O
module, and on a transport branch outside ``harness/hosts/``. The table below is the one the
package docstrings and the README's Layout section draw.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[2] / "harness"

#: The base modules every stage may use: errors, files in and out, hashing.
BASE = {"errors", "output", "inputs", "digest", "locations"}
#: The command line sits on top of everything.
TOP = {"cli", "checks"}

#: Stage -> the stages its modules may import (its own package always).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "plan": {"base"},
    "results": {"base", "plan"},
    "analysis": {"base", "plan", "results"},
    "report": {"base", "plan", "results", "analysis"},
    "guest": {"base", "plan"},
    "hosts": {"base", "plan", "guest"},
    "run": {"base", "plan", "results", "analysis", "guest", "hosts"},
    "ci": {"base", "plan", "results", "analysis", "report", "guest", "hosts", "run"},
    # the lab of host pairs (Celery): beside run, whose per-run function it calls
    "lab": {"base", "plan", "results", "analysis", "guest", "hosts", "run"},
    "top": {"base", "plan", "results", "analysis", "report", "guest", "hosts", "run", "ci",
            "lab"},
}
#: Pure stages take and return data: no process, socket, host or QEMU anywhere below them.
PURE = {"plan", "results", "analysis", "report"}
IO_STAGES = {"guest", "hosts", "run", "ci", "lab", "top"}
IO_LIBRARIES = {"subprocess", "socket", "select", "selectors", "ssl", "fabric", "paramiko",
                "invoke", "qemu", "asyncio", "threading", "concurrent", "multiprocessing",
                "signal", "ctypes", "pty", "celery", "redis", "urllib", "http"}

#: What names the transport outside harness/hosts/ (see :func:`transport_branches`).
TRANSPORT_NAMES = {"is_local", "LocalHost", "SshHost"}
#: The hosts file's schema defines the ``transport`` field: it validates it and says what an
#: entry means (same machine, a path checkable before connecting). Nothing else may look at it.
TRANSPORT_SCHEMA = {"harness.plan.models"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(HARNESS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage(module: str) -> str:
    """``harness.run.vm`` -> ``run``; ``harness.errors`` -> ``base``; ``harness.cli`` -> ``top``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"  # the package itself (its __init__ imports nothing)
    head = parts[1]
    if head in BASE:
        return "base"
    if head in TOP:
        return "top"
    if head in ALLOWED:
        return head
    raise AssertionError(f"{module}: not in the layout table of {__file__}: add its stage")


def modules() -> list[tuple[str, ast.Module]]:
    return [(module_name(p), ast.parse(p.read_text(), str(p)))
            for p in sorted(HARNESS.rglob("*.py"))]


def imports(module: str, tree: ast.Module, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import anywhere in the module, relative ones resolved.
    ``from harness.x import y`` yields ``harness.x.y`` when y is a submodule, else
    ``harness.x``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                path = HARNESS.parent / sub.replace(".", "/")
                yield node.lineno, sub if (path.with_suffix(".py").exists() or path.is_dir()) \
                    else target


def layout_violations(found: list[tuple[str, ast.Module]]) -> list[str]:
    problems = []
    for module, tree in found:
        is_package = (HARNESS.parent / module.replace(".", "/") / "__init__.py").exists()
        mine = stage(module)
        for line, target in imports(module, tree, is_package):
            top = target.split(".")[0]
            if top == "harness":
                theirs = stage(target)
                if theirs != mine and theirs not in ALLOWED[mine]:
                    problems.append(f"{module}:{line}: {mine} imports {target} ({theirs})")
                if mine in PURE and theirs in IO_STAGES:
                    problems.append(f"{module}:{line}: pure {mine} imports I/O module {target}")
            elif mine in PURE and top in IO_LIBRARIES:
                problems.append(f"{module}:{line}: pure {mine} imports {target}")
    return problems


def transport_branches(found: list[tuple[str, ast.Module]]) -> list[str]:
    """Outside harness.hosts: any use of is_local, LocalHost or SshHost, and any comparison with
    a ``transport`` attribute or the literal ``"local"``/``"ssh"``."""
    problems = []
    for module, tree in found:
        if module.startswith("harness.hosts"):
            continue
        for node in ast.walk(tree):
            name = (node.attr if isinstance(node, ast.Attribute)
                    else node.id if isinstance(node, ast.Name) else None)
            if name in TRANSPORT_NAMES:
                problems.append(f"{module}:{node.lineno}: {name}")
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in TRANSPORT_NAMES:
                        problems.append(f"{module}:{node.lineno}: imports {alias.name}")
            if isinstance(node, ast.Compare) and module not in TRANSPORT_SCHEMA:
                for side in (node.left, *node.comparators):
                    if ((isinstance(side, ast.Attribute) and side.attr == "transport")
                            or (isinstance(side, ast.Constant) and side.value in ("local", "ssh"))):
                        problems.append(f"{module}:{node.lineno}: compares the transport")
                        break
    return problems


def test_every_module_has_a_stage_and_every_package_a_docstring() -> None:
    found = modules()
    assert len(found) > 50
    for module, tree in found:
        stage(module)
        if (HARNESS.parent / module.replace(".", "/") / "__init__.py").exists():
            assert ast.get_docstring(tree), f"{module}: a package says where it stands in the flow"
    for name in ALLOWED:
        if name not in ("base", "top"):
            assert (HARNESS / name / "__init__.py").exists(), name


def _packages() -> list[Path]:
    return sorted(p.parent for p in HARNESS.rglob("__init__.py"))


def _contents(package: Path) -> list[str]:
    """The modules and subfolders of a package (what its docstring has to name)."""
    return sorted(p.stem for p in package.iterdir()
                  if (p.suffix == ".py" and p.stem != "__init__")
                  or (p.is_dir() and p.name != "__pycache__"))


def _doc(package: Path) -> str:
    return ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""


def test_each_package_docstring_draws_its_place_and_names_what_it_holds() -> None:
    """Each package's docstring draws the flow (a line with ``->``), marks itself in it (a
    stage as ``[name]``), and names every module and folder it holds: a newcomer reading it
    finds every file. The top one names the stages."""
    for package in _packages():
        doc, name = _doc(package), package.name
        flow = [line for line in doc.splitlines() if "->" in line]
        assert flow, f"{package}: no flow drawn (a line with ->)"
        if name in ALLOWED:
            assert any(f"[{name}" in line for line in flow), f"{package}: [{name}] in its flow"
        words = set(re.findall(r"[\w]+", doc))
        missing = [m for m in _contents(package) if m not in words]
        assert not missing, f"{package}: its docstring does not name {missing}"


def test_package_docstrings_match_the_table() -> None:
    """Each stage package's docstring ends with the stages it may import, as in ALLOWED."""
    stages = [name for name in ALLOWED if name not in ("base", "top")]
    for name in stages:
        said = _doc(HARNESS / name).rsplit("May import:", 1)
        assert len(said) == 2, f"harness/{name}: no 'May import:' line"
        words = set(re.findall(r"\w+", said[1].split("(")[0]))
        for other in stages:
            assert (other in words) == (other in ALLOWED[name]), (name, other, said[1])
        assert {m for m in BASE} <= words, (name, "the base modules", said[1])


def test_the_readme_layout_table_is_this_table() -> None:
    """README's Layout section shows the same table (``all of the above``: every stage before)."""
    readme = (HARNESS.parent / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([a-z, ]+) \| ([^|]+) \|$", section, re.M)
    table = {r[0].strip(): r[1] for r in rows if r[0].strip() != "stage"}
    seen: list[str] = []
    for name in [n for n in ALLOWED if n not in ("base", "top")]:
        assert name in table, f"README's Layout table has no row {name}"
        said = table[name]
        words = set(seen) if said.strip() == "all of the above" else set(re.findall(r"\w+", said))
        assert {"base", *ALLOWED[name]} - {"base"} <= words | {"base"}, (name, said)
        assert words - {"base", "errors", "output", "inputs", "digest", "locations"} \
            <= ALLOWED[name], (name, said)
        seen.append(name)
    for module in BASE:
        assert module in section, f"README's Layout does not name the base module {module}"


#: Where a module may compute a path from its own file: locations (the package's own folder,
#: the one place that knows checkout from wheel), and package data read beside the module that
#: ships it. No module climbs out of the package to find the checkout (``REPO = ...parent``).
OWN_PATH = {
    "harness.locations": "the package's folder, the checkout when there is one",
    "harness.report.render": "its templates/ beside it (package data)",
    "harness.run.sampling.cpu": "the probe's own source, sent to a host without migbench",
}


def own_path_uses(found: list[tuple[str, ast.Module]]) -> list[str]:
    return [f"{module}:{node.lineno}: __file__" for module, tree in found
            for node in ast.walk(tree)
            if ((isinstance(node, ast.Name) and node.id == "__file__")
                or (isinstance(node, ast.Attribute) and node.attr == "__file__"))
            and module not in OWN_PATH]


def test_no_module_finds_files_from_its_own_path() -> None:
    assert own_path_uses(modules()) == []
    planted = ast.parse("REPO_ROOT = Path(__file__).resolve().parents[2]\n")
    assert own_path_uses([("harness.guest.image", planted)])


def test_imports_only_go_down() -> None:
    assert layout_violations(modules()) == []


def test_no_transport_branch_outside_hosts() -> None:
    assert transport_branches(modules()) == []


@pytest.mark.parametrize(("module", "source", "expect"), [
    ("harness.plan.matrix", "from harness.run import workload", "plan imports harness.run.workload"),
    ("harness.plan.matrix", "def f():\n    from harness.hosts.host import Host\n",
     "pure plan imports I/O module harness.hosts.host"),
    ("harness.results.store", "import subprocess", "pure results imports subprocess"),
    ("harness.analysis.history", "import threading", "pure analysis imports threading"),
    ("harness.report.render", "from celery import Celery", "pure report imports celery"),
    ("harness.report.model", "from harness.run.sampling import cpu", "report imports"),
    ("harness.analysis.stats", "from harness.report import model", "analysis imports"),
    ("harness.hosts.probe", "from harness.run.vm import Vm", "hosts imports harness.run.vm"),
    ("harness.run.runner", "from harness.ci import nightly", "run imports harness.ci.nightly"),
    ("harness.ci.nightly", "from harness import cli", "ci imports harness.cli"),
    ("harness.errors", "from harness.plan import models", "base imports"),
    ("harness.hosts.netsetup", "from harness.run import workload", "hosts imports"),
])
def test_a_forbidden_import_is_found(module: str, source: str, expect: str) -> None:
    found = [(module, ast.parse(source))]
    problems = layout_violations(found)
    assert any(expect in p for p in problems), problems


@pytest.mark.parametrize("source", [
    "if host.is_local:\n    pass\n",
    "from harness.hosts.host import SshHost\n",
    "x = isinstance(h, LocalHost)\n",
    "if spec.transport == 'local':\n    pass\n",
    "ok = h.spec.transport != other\n",
])
def test_a_transport_branch_outside_hosts_is_found(source: str) -> None:
    assert transport_branches([("harness.run.vm", ast.parse(source))])
    assert transport_branches([("harness.hosts.vmthing", ast.parse(source))]) == []


def test_allowed_imports_pass() -> None:
    ok = [("harness.run.runner", ast.parse("from harness.results import store\n"
                                           "from harness.analysis.stats import percentile\n"
                                           "from harness.hosts.host import Host\n")),
          ("harness.report.model", ast.parse("from harness.analysis import compare\n")),
          ("harness.cli", ast.parse("from harness.ci.nightly import register\n"))]
    assert layout_violations(ok) == []
