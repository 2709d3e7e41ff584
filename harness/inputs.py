"""Reading input files a user hands the harness: bounded, whatever the file turns out to be.

A matrix or hosts file is untrusted until validated, and so is the file itself: it may be a FIFO
(an ``open`` would wait forever), huge, not UTF-8, nested thousands of levels deep (PyYAML's
composer recurses) or a YAML alias bomb (a few lines that expand to billions of nodes). Every
such file ends here in one :class:`~harness.errors.ConfigError` line, before anything is parsed
further:

- :func:`read_text`: a regular file of at most :data:`MAX_FILE_BYTES`, decoded as UTF-8
  (:func:`read_bytes`: the same file checks, for a caller that decodes it itself);
- :func:`load_yaml`: one YAML document nested at most :data:`MAX_DEPTH` levels, with at most
  :data:`MAX_ALIASES` aliases and :data:`MAX_NODES` nodes once aliases are expanded, and no key
  given twice in one mapping.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, one_line, shorten

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64  # nesting of mappings and lists, aliases followed
MAX_ALIASES = 256
MAX_NODES = 100_000  # scalars, mappings and lists, each alias counted as what it expands to
MAX_STRING = 4096  # characters in any one key or value


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_text(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of input file ``path`` (``what`` names it in errors: "matrix", "hosts").

    :raise ConfigError: missing, not a regular file, larger than ``max_bytes``, unreadable or
        not UTF-8.
    """
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(path, "", f"not UTF-8: byte {data[exc.start]:#04x} on line {line}",
                          "save the file as UTF-8") from None


def read_bytes(path: Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of input file ``path``: a regular file of at most ``max_bytes``.

    :raise ConfigError: missing, not a regular file, larger than ``max_bytes`` or unreadable.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, what, st.st_mode)
        if st.st_size > max_bytes:
            raise _too_large(path, what, st.st_size, max_bytes)
        # O_NONBLOCK: should the path turn into a FIFO after the check, open returns at once
        # (and fstat below refuses it) instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, what, st.st_mode)
            chunks = []
            left = max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ConfigError(path, "", f"{what} file not found",
                          "check the path; see `migbench --help`") from None
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise ConfigError(path, "", f"cannot read {what} file: {reason}") from None
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise _too_large(path, what, len(data), max_bytes)
    return data


def _not_regular(path: Path, what: str, mode: int) -> ConfigError:
    return ConfigError(path, "", f"{_kind(mode)}, not a regular file",
                       f"give the {what} file itself")


def _too_large(path: Path, what: str, size: int, limit: int) -> ConfigError:
    return ConfigError(path, "", f"{size} bytes, more than a {what} file may have "
                       f"({limit // 1024**2} MiB)", "check that this is the right file")


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting and many aliases while it composes.

    PyYAML's composer recurses once per level: 20,000 brackets end in a RecursionError long
    before anything is constructed, so the depth is checked here, as each node starts.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name)", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document that expands, through its aliases, beyond MAX_NODES or MAX_DEPTH,
    or that contains itself.

    Sizes are computed once per node (an alias shares its anchor's node), so this takes time
    in proportion to the file, not to its expansion.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height) once expanded
    active: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in active:
            raise _Refused("an alias refers to a node that contains it", node.start_mark)
        if key not in sizes:
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            active.add(key)
            total, height = 1, 1
            for child in children:
                n, h = measure(child, depth + 1)
                total += n
                height = max(height, h + 1)
                if total > MAX_NODES:
                    raise _Refused(f"more than {MAX_NODES} values once its aliases are expanded",
                                   node.start_mark)
            active.discard(key)
            sizes[key] = (total, height)
        total, height = sizes[key]
        if depth + height - 1 > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep once its aliases are "
                           "expanded", node.start_mark)
        return total, height

    measure(root, 1)


def _duplicate_key(loader: yaml.SafeLoader, node: yaml.Node, where: str,
                   visited: set[int] | None = None) -> tuple[str, str] | None:
    """The first key given twice in one mapping (PyYAML would keep the last) as
    (key path, what is wrong), or None."""
    visited = set() if visited is None else visited
    if id(node) in visited:  # an alias: checked where its anchor is
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except (yaml.YAMLError, TypeError, ValueError):
                continue  # left for the constructor to report
            path = f"{where}.{key}" if where else str(key)
            mark = key_node.start_mark
            if key in seen:
                first = seen[key]
                where_given = (f"twice on line {mark.line + 1}" if first.line == mark.line
                               else f"at lines {first.line + 1} and {mark.line + 1}")
                return path, f"duplicate key {shorten(key)}: given {where_given}"
            seen[key] = mark
            found = _duplicate_key(loader, value_node, path, visited)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(loader, item, f"{where}[{i}]", visited)
            if found:
                return found
    return None


#: Keys whose text may span lines (tabs and newlines allowed).
MULTILINE_KEYS = ("description",)


def _check_strings(data: Any, where: str, path: Path) -> None:
    """Refuse control characters and overlong strings, in keys and values alike: they would
    reach terminals, file names and argv (NUL ends a C string). Only the text of
    :data:`MULTILINE_KEYS` may hold tabs and newlines."""
    if isinstance(data, str):
        if len(data) > MAX_STRING:
            raise ConfigError(path, where or "(top level)",
                              f"a string of {len(data)} characters (at most {MAX_STRING})",
                              "shorten it")
        spaced = where.rpartition(".")[2] in MULTILINE_KEYS
        allowed = "\t\n" if spaced else ""
        if not (data.replace("\t", " ").replace("\n", " ") if spaced else data).isprintable():
            bad = next(ch for ch in data if not ch.isprintable() and ch not in allowed)
            raise ConfigError(path, where or "(top level)",
                              f"unprintable character {bad!r} in {shorten(data)}", "remove it")
    elif isinstance(data, dict):
        for k, v in data.items():
            _check_strings(k, where, path)
            _check_strings(v, f"{where}.{k}" if where else str(k), path)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _check_strings(v, f"{where}[{i}]", path)


def _at(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    """The one YAML mapping in input file ``path``, read within the limits above.

    :raise ConfigError: a file :func:`read_text` refuses, invalid YAML, a document beyond the
        limits, a key given twice, a control character in a string, or no mapping at the top.
    """
    text = read_text(path, what)
    try:
        loader = _BoundedLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_expansion(node)
            dup = _duplicate_key(loader, node, "") if node is not None else None
            if dup is not None:
                raise ConfigError(path, dup[0], dup[1], "keep one")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError(path, "", _at(exc) + exc.problem,
                          "simplify the file; it is refused to keep the harness bounded") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, "", f"not valid YAML: {_at(exc)}{problem}",
                          "fix the syntax") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # a scalar PyYAML cannot build: an int of thousands of digits, a date like 2024-13-45
        raise ConfigError(path, "", f"not valid YAML: a value PyYAML cannot build: "
                          f"{one_line(str(exc), 120)}", "fix the value") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"a {what} file must be a YAML mapping at the top level")
    _check_strings(data, "", path)
    return data
