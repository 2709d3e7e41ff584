"""The validation pass every command runs before it starts anything.

``migbench`` parses its flags, then :func:`preflight` checks each flag's value (every option a
command takes has a check in :data:`FLAG_CHECKS`: a range, a pattern, a known name) and loads the
input files the command names (hosts, matrix) through :mod:`harness.plan.config`. A bad value ends the
command in one line, before a host is contacted, a folder made or a process started.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, UsageError, shorten
from harness.plan.models import MAX_MEMORY_MIB, NAME_PATTERN, WORKDIR_PATTERN

#: (flag as typed, value) -> None, or UsageError
Check = Callable[[str, Any], None]

MAX_ARG = 4096  # characters of any one path or token (Linux's PATH_MAX)
CONFIGURE_ARG_PATTERN = r"^--[A-Za-z0-9]"
# tc's own syntax (tc(8)), a number and a unit; ranges below
_RATE = re.compile(r"^([0-9]{1,12}(?:\.[0-9]{1,6})?)(bit|kbit|mbit|gbit)$")
_DELAY = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)(us|ms|s)$")
_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
RATE_RANGE = (8_000, 100 * 10**9)  # bit/s: 8kbit (tc's burst needs a few bytes) to 100gbit
MAX_DELAY_S = 10.0


def _refuse(flag: str, value: Any, problem: str) -> UsageError:
    return UsageError(f"{flag} {shorten(value)}: {problem}")


def text(flag: str, value: Any) -> None:
    """A path or token: printable, at most MAX_ARG characters."""
    s = str(value)
    if len(s) > MAX_ARG:
        raise _refuse(flag, value, f"{len(s)} characters, more than {MAX_ARG}")
    if not s.isprintable():
        raise _refuse(flag, value, "contains control characters: remove them")
    if not s:
        raise _refuse(flag, value, "is empty")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def number(lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> Check:
    """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    low = f"above {_num(lo)}" if lo_open else f"at least {_num(lo)}"

    def check(flag: str, value: Any) -> None:
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise _refuse(flag, value, "must be a whole number")
        # an int is finite whatever its size (math.isfinite overflows past 1e308)
        if not isinstance(value, (int, float)) or (isinstance(value, float)
                                                   and not math.isfinite(value)):
            raise _refuse(flag, value, "must be a finite number")
        if value < lo or (lo_open and value == lo) or value > hi:
            raise _refuse(flag, value, f"must be {low} and at most {_num(hi)}")

    return check


def name(flag: str, value: Any) -> None:
    text(flag, value)
    if not re.fullmatch(NAME_PATTERN, str(value)):
        raise _refuse(flag, value, f"is not a name: use {NAME_PATTERN}")


def remote_folder(flag: str, value: Any) -> None:
    """A folder on every host of a pair (it reaches remote shells): the workdir pattern."""
    text(flag, value)
    if not re.fullmatch(WORKDIR_PATTERN, str(value)) or ".." in Path(str(value)).parts:
        raise _refuse(flag, value, f"must match {WORKDIR_PATTERN} without '..' (an absolute "
                                   "path of letters, digits and ._/+-)")


def configure_arg(flag: str, value: Any) -> None:
    text(flag, value)
    if not re.match(CONFIGURE_ARG_PATTERN, str(value)):
        raise _refuse(flag, value, "QEMU's configure takes options like --enable-debug "
                                   f"(match {CONFIGURE_ARG_PATTERN})")


def metric_effect(flag: str, value: Any) -> None:
    from harness.analysis.regress import METRIC_KEYS

    text(flag, value)
    key, sep, pct = str(value).partition("=")
    if not sep or key.strip() not in METRIC_KEYS:
        raise _refuse(flag, value, f"use METRIC=PERCENT, METRIC one of {', '.join(METRIC_KEYS)}")
    try:
        percent = float(pct.strip().rstrip("%"))
    except ValueError:
        percent = math.nan
    if not (math.isfinite(percent) and 0 < percent <= 1000):
        raise _refuse(flag, value, "PERCENT must be a finite number above 0 and at most 1000")


def slide_pair(flag: str, value: Any) -> None:
    """``BEFORE..AFTER`` (report --slides): the cells themselves are checked against the
    records (harness.report.slides.parse_pair)."""
    text(flag, value)
    before, sep, after = str(value).partition("..")
    if not sep or not before.strip() or not after.strip():
        raise _refuse(flag, value, "use BEFORE..AFTER, each a cell id (or its first 4+ "
                                   "characters) or variant=...,axis=value")


def tc_rate(flag: str, value: Any) -> None:
    m = _RATE.fullmatch(str(value))
    if not m:
        raise _refuse(flag, value, "use a tc rate like 1gbit, 200mbit or 500kbit")
    bits = float(m.group(1)) * _BITS[m.group(2)]
    if not RATE_RANGE[0] <= bits <= RATE_RANGE[1]:
        raise _refuse(flag, value, "must be between 8kbit and 100gbit")


def tc_delay(flag: str, value: Any) -> None:
    m = _DELAY.fullmatch(str(value))
    if not m:
        raise _refuse(flag, value, "use a time like 1ms or 500us")
    if not 0 < float(m.group(1)) * _SECONDS[m.group(2)] <= MAX_DELAY_S:
        raise _refuse(flag, value, f"must be above 0 and at most {MAX_DELAY_S:g}s")


def broker_url(flag: str, value: Any) -> None:
    """A Redis URL for the lab's broker (``redis://HOST:PORT/DB``)."""
    from harness.lab.broker import broker_problem, shown

    text(flag, value)
    problem = broker_problem(str(value))
    if problem:
        try:
            display = shown(str(value))
        except ValueError:  # not even a URL (``redis://[::1``): mask what a password could be
            display = re.sub(r"(?<=:)[^:@/]*(?=@)", "***", str(value))
        raise _refuse(flag, display, problem)


def engine(flag: str, value: Any) -> None:
    """``local`` or ``celery://`` and a broker URL."""
    from harness.lab.broker import ENGINE_PREFIX, LOCAL_ENGINE

    text(flag, value)
    s = str(value)
    if s == LOCAL_ENGINE:  # the engine, not a host's transport
        return
    if not s.startswith(ENGINE_PREFIX):
        raise _refuse(flag, value, f"use local or {ENGINE_PREFIX}redis://HOST:PORT/DB")
    broker_url(flag, s[len(ENGINE_PREFIX):])


#: Every option of every command, by argparse ``dest``: its check. tests/unit/test_hostile_input
#: fails when a command gains an option that is not here.
FLAG_CHECKS: dict[str, Check] = {
    # files and folders read or written on this machine
    "matrix": text, "hosts": text, "out": text, "history": text, "junit": text,
    "verdict": text, "report": text, "image_cache": text, "cache": text,
    "path": text, "results": text, "output": text, "fio": text, "campaign": text,
    "qemu": text,  # init: NAME=PATH, parsed by hosts.hostsfile.parse_qemu_flag
    # names and tokens
    "pair": name, "before": text, "after": text, "baseline": text,
    "slides": slide_pair,
    # numbers
    "min_effect": number(0, 1000, lo_open=True),
    "alpha": number(0, 0.5, lo_open=True),
    "persist": number(1, 100, integer=True),
    "memory_mib": number(128, MAX_MEMORY_MIB, integer=True),
    "calibration_s": number(2, 600),  # advise: pass 0 needs a few seconds; 10 min is plenty
    "metric_effect": metric_effect,
    # reach shells on the hosts (quoted there too)
    "build_cache": remote_folder, "configure_arg": configure_arg,
    "dir": remote_folder,  # testbed: <dir>/work is the namespace hosts' workdir
    "rate": tc_rate, "delay": tc_delay,
    # the lab (harness.lab)
    "engine": engine, "broker": broker_url, "worker_name": name,
    "redeliveries": number(0, 10, integer=True),
    "lease_s": number(10, 24 * 3600),  # below 10 s a busy broker could expire a live lease
}


def _chosen_parsers(parser: argparse.ArgumentParser, args: argparse.Namespace
                    ) -> list[argparse.ArgumentParser]:
    """The parser and the sub-command parsers ``args`` went through, outermost first."""
    chain = [parser]
    while True:
        sub = next((a for a in chain[-1]._actions if isinstance(a, argparse._SubParsersAction)),
                   None)
        if sub is None:
            return chain
        chosen = getattr(args, sub.dest, None)
        if chosen is None or chosen not in sub.choices:
            return chain
        chain.append(sub.choices[chosen])


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every option value ``args`` got from the command line.

    :raise UsageError: the first bad value (one line naming the flag and the fix).
    """
    for p in _chosen_parsers(parser, args):
        for action in p._actions:
            if not action.option_strings and action.nargs == 0:
                continue
            value = getattr(args, action.dest, None)
            if value is None or isinstance(value, bool) or action.dest not in FLAG_CHECKS:
                continue
            flag = action.option_strings[-1] if action.option_strings else action.metavar
            values = value if isinstance(value, list) else [value]
            for v in values:
                FLAG_CHECKS[action.dest](str(flag or action.dest), v)


def unchecked_options(parser: argparse.ArgumentParser) -> list[str]:
    """Options of ``parser`` and its sub-commands that take a value but have no check."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                missing += unchecked_options(sub)
        elif action.nargs != 0 and action.choices is None and action.dest not in FLAG_CHECKS:
            missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


def _pairs(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def preflight(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The validation pass: flags, then the hosts and matrix files the command names.

    ``run`` and ``nightly`` plan the matrix on the hosts file (builds defined, local binaries
    present); ``compare`` expands it without its variants (the sides replace them) and checks
    both sides; ``doctor`` expands it (checking the builds is doctor's own job).

    :raise HarnessError: one line naming the file or flag, the key and the fix.
    """
    from harness.plan import config
    from harness.plan.matrix import ExpansionError, expand

    check_flags(parser, args)
    command = getattr(args, "command", "")
    values = vars(args)
    if command == "run":
        _check_engine_flags(values)
    hosts_file = hosts = None
    # a lab's --attach without --hosts plans from the broker, not a hosts file (harness.lab)
    lab = str(values.get("engine") or "").startswith("celery://") or bool(values.get("broker"))
    if "hosts" in values and not (command == "run" and lab and values.get("attach")
                                  and not values.get("hosts")):
        hosts_file = config.hosts_path(args.hosts)
        hosts = config.load_hosts(hosts_file)
        for pair in _pairs(values.get("pair")):
            if pair not in hosts.pairs:
                raise ConfigError(hosts_file, "pairs", f"no pair {shorten(pair)}",
                                  f"--pair takes one of: {', '.join(hosts.pairs)}")
    if not values.get("matrix") or hosts is None or hosts_file is None:
        return
    matrix = Path(args.matrix)
    spec = config.load_matrix(matrix)
    if command in ("run", "nightly"):
        config.plan(matrix, spec, hosts_file, hosts)
        return
    if command == "advise":  # what advise runs: its calibration campaign, planned the same way
        from harness.run.calibrate import calibration_spec

        config.plan(matrix, calibration_spec(spec, args.calibration_s), hosts_file, hosts)
        return
    if command == "compare":
        spec = spec.model_copy(update={
            "axes": {k: v for k, v in spec.axes.items() if k != "variant"},
            "exclude": [r for r in spec.exclude if "variant" not in r],
            "include": [r for r in spec.include if "variant" not in r]})
        chosen = _pairs(values.get("pair"))
        source = hosts.pairs[chosen[0] if chosen else next(iter(hosts.pairs))].source
        for flag in ("--before", "--after"):
            _check_side(flag, values[flag[2:]], list(spec.variants),
                        [*hosts.qemu_builds, *source.qemu])
    try:
        expand(spec, hosts.default_build)
    except ExpansionError as exc:
        raise ConfigError(matrix, exc.key, str(exc)) from None


def _check_engine_flags(values: dict[str, Any]) -> None:
    """``run``'s lab flags go together: --attach needs a lab; --pair is a local run's."""
    from harness.lab.broker import engine_broker

    lab = engine_broker(values.get("engine"), values.get("broker")) is not None
    if values.get("attach") and not lab:
        raise UsageError("--attach collects a campaign's runs from a lab: give --engine "
                         "celery://URL or --broker URL")
    if values.get("pair") and lab:
        raise UsageError("--pair chooses pairs for a local run; in a lab each worker owns its "
                         "pair (`migbench worker --pair NAME`): drop --pair")


def _check_side(flag: str, token: str, variants: Sequence[str], builds: Sequence[str]) -> None:
    if token in variants or token in builds:
        return
    if token.startswith("src:"):
        from harness.ci.patchbuild import parse_source

        parse_source(token)  # the tree and patches exist (built later, once both sides pass)
        return
    raise _refuse(flag, token, f"is not a variant of the matrix ({', '.join(variants)}), nor a "
                               f"QEMU build of the hosts file ({', '.join(builds)}), nor "
                               "src:TREE[+PATCH...]")
