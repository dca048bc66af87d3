"""Every environment variable zoo reads, parsed in one place with one set of rules.

:data:`VARIABLES` is the table (docs/cli.md prints the same one); the readers below are
what the rest of zoo calls instead of ``os.environ``:

* :func:`flag` — one truthiness rule for every on/off variable: ``1/true/yes/on`` is on,
  ``0/false/no/off`` or unset/empty is off, anything else is a :class:`SettingsError`;
* :func:`zoo_home` — ``$ZOO_HOME``, default ``~/.cache/zoo`` (the only place it is computed);
* :func:`text`, :func:`names`, :func:`seconds`, :func:`integer` — the other shapes;
* :func:`fault` — ``ZOO_FAULT`` checked against its grammar (docs/reliability.md);
* :func:`check_environment` — every variable that is set, checked once at the CLI's start,
  so a malformed value is a one-line error with exit code 2 before any work.

Values are read when asked (never cached): tests set variables per process or per test.
"""
from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ConfigError

ON = ("1", "true", "yes", "on")
OFF = ("", "0", "false", "no", "off")


class SettingsError(ConfigError):
    """An environment variable with a value zoo cannot read (exit code 2)."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: its shape (flag, path, text, names, seconds, integer,
    fault), its default as shown to users, and what it does."""

    name: str
    kind: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("ZOO_HOME", "path", "~/.cache/zoo", "weights, model-list caches, datasets, MLflow"),
    Variable("ZOO_REGISTRY", "path", "unset", "a user registry file over registry.yaml"),
    Variable("ZOO_LOAD_PLUGINS", "names", "unset (all)", "load only these entry points (a,b)"),
    Variable("ZOO_STRICT_PLUGINS", "flag", "off", "a plugin that fails to load is fatal"),
    Variable("ZOO_TRACE_PLUGINS", "flag", "off", "log every hook call with its duration"),
    Variable("ZOO_NO_MODEL_CACHE", "flag", "off", "never use the cached provider model lists"),
    Variable("ZOO_OFFLINE", "flag", "off", "never ask a hub (weights, datasets)"),
    Variable("HF_HUB_OFFLINE", "flag", "off", "the same, Hugging Face's own name for it"),
    Variable("HF_ENDPOINT", "text", "https://huggingface.co", "the Hugging Face hub to ask"),
    Variable("HF_HOME", "path", "~/.cache/huggingface",
             "the Hugging Face cache (hf-hub: weights, hf: datasets)"),
    Variable("HF_HUB_CACHE", "path", "$HF_HOME/hub", "the Hugging Face hub cache, if set apart"),
    Variable("ZOO_DEBUG", "flag", "off", "tracebacks instead of one-line errors (as --debug)"),
    Variable("ZOO_NORMAL_EXIT", "flag", "off", "end the CLI with normal interpreter teardown"),
    Variable("ZOO_DIST_TIMEOUT", "seconds", "300", "torchrun: how long a rank waits for others"),
    Variable("ZOO_DDP_FIND_UNUSED", "flag", "off", "torchrun: DDP's find_unused_parameters"),
    Variable("ZOO_MALLOC_THRESHOLD", "bytes", "off",
             "a run's glibc mmap threshold (off: glibc's own; docs/benchmarks.md)"),
    Variable("ZOO_MLFLOW_TRACKING_URI", "text", "$ZOO_HOME/mlflow", "zoo-mlflow: tracking store"),
    Variable("ZOO_MLFLOW_EXPERIMENT", "text", "zoo", "zoo-mlflow: the experiment name"),
    Variable("ZOO_FAULT", "fault", "unset", "test-only fault injection (docs/reliability.md)"),
)
_BY_NAME = {v.name: v for v in VARIABLES}

# ZOO_FAULT's grammar (docs/reliability.md); one regular expression per form
_SIGNAL = r"(?::(?P<sig>[A-Z]+))?"
FAULT_FORMS = {
    "interrupt_after_epoch": r"interrupt_after_epoch:\d+",
    "interrupt_at": r"interrupt_at:\d+:\d+",
    "signal_at": r"signal_at:\d+:\d+" + _SIGNAL,
    "nan_at": r"nan_at:\d+:\d+",
    "nan_always": r"nan_always",
    "crash_rank": r"crash_rank:\d+",
    "kill_during_write": r"kill_during_write:[^:]+(?::\d+)?",
    "abort_in_export": r"abort_in_export",
}


def _raw(name: str) -> str | None:
    return os.environ.get(name)


def flag(name: str) -> bool:
    """The on/off variable ``name`` (unset: off); a value of neither kind is an error."""
    value = (_raw(name) or "").strip().lower()
    if value in ON:
        return True
    if value in OFF:
        return False
    raise SettingsError(f"{name}={_raw(name)!r} is not an on/off value — use 1/0, true/false, "
                        "yes/no or on/off (or unset it)")


def text(name: str, default: str | None = None) -> str | None:
    """The variable as a string; ``default`` when unset or empty."""
    value = _raw(name)
    return value if value else default


def names(name: str) -> set[str] | None:
    """A comma-separated list (``a,b``) as a set; ``None`` when unset (empty: no names)."""
    value = _raw(name)
    return None if value is None else {n.strip() for n in value.split(",") if n.strip()}


def seconds(name: str, default: float) -> float:
    """A positive number of seconds; ``default`` when unset or empty."""
    value = _raw(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected a number of seconds, e.g. "
                            f"{default:g}") from None
    if not number > 0:
        raise SettingsError(f"{name}={value!r}: must be positive")
    return number


def integer(name: str, default: int) -> int:
    """An integer set by a launcher (torchrun's ``RANK``...); ``default`` when unset or not
    a number, as torch itself reads them."""
    try:
        return int(_raw(name) or default)
    except ValueError:
        return default


def zoo_home() -> Path:
    """``$ZOO_HOME``, else ``~/.cache/zoo``: where zoo keeps what outlives a run."""
    value = text("ZOO_HOME")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "zoo"


def fault() -> str:
    """``ZOO_FAULT`` (empty when unset), checked against :data:`FAULT_FORMS`."""
    value = (_raw("ZOO_FAULT") or "").strip()
    if not value:
        return ""
    for pattern in FAULT_FORMS.values():
        match = re.fullmatch(pattern, value)
        if match is None:
            continue
        sig = match.groupdict().get("sig")
        if sig and not isinstance(getattr(signal, f"SIG{sig}", None), int):
            raise SettingsError(f"ZOO_FAULT={value!r}: no signal SIG{sig} — use INT, TERM "
                                "or HUP")
        return value
    forms = ", ".join(FAULT_FORMS)
    raise SettingsError(f"ZOO_FAULT={value!r} is not a fault this zoo knows — forms: {forms} "
                        "(docs/reliability.md); unset it outside tests")


def malloc_threshold(value: str | None = None) -> int | bool | None:
    """``ZOO_MALLOC_THRESHOLD`` (or ``value``): a byte count, ``True`` for on (16 MiB),
    ``False`` for off, ``None`` when unset (off: glibc as it is)."""
    raw = (_raw("ZOO_MALLOC_THRESHOLD") if value is None else value) or ""
    setting = raw.strip().lower()
    if not setting:
        return None
    if setting in OFF:
        return False
    if setting in ON:
        return True
    if not setting.isdigit() or not 4096 <= int(setting) <= 32 << 20:
        raise SettingsError(f"ZOO_MALLOC_THRESHOLD={raw!r} is not a size — use a number of "
                            f"bytes from 4096 to {32 << 20}, or off (or unset it)")
    return int(setting)


_CHECKS = {"flag": flag, "fault": lambda name: fault(),
           "seconds": lambda name: seconds(name, 1.0), "bytes": lambda name: malloc_threshold()}


def check_environment() -> None:
    """Read every set variable once: a malformed one raises :class:`SettingsError`."""
    for var in VARIABLES:
        check = _CHECKS.get(var.kind)
        if check is not None and _raw(var.name) is not None:
            check(var.name)


def markdown_table() -> str:
    """:data:`VARIABLES` as the Markdown table docs/cli.md shows (a test keeps them equal)."""
    rows = ["| variable | kind | default | what it does |", "|---|---|---|---|"]
    rows += [f"| `{v.name}` | {v.kind} | {v.default} | {v.meaning} |" for v in VARIABLES]
    return "\n".join(rows)
