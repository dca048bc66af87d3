"""Output helpers for commands: rich tables for people, plain JSON for ``--json``."""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterator

import click

DEBUG = False  # set by zoo.cli.main from --debug / ZOO_DEBUG=1


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit (2: bad input; 1: a bug)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def console(stderr: bool = False):
    from rich.console import Console  # lazy: rich

    return Console(stderr=stderr, highlight=False)


#: the real stdout while :func:`json_stdout` holds it (``--json``): only JSON goes there
_JSON_OUT: list = []


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """While a ``--json`` command runs, stdout belongs to zoo: anything else printed to it
    (a plugin's print in a hook, a library's chatter) goes to stderr, and
    :func:`print_json` alone writes to the real stdout."""
    real = sys.stdout
    _JSON_OUT.append(real)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        if sys.stdout is sys.stderr:
            sys.stdout = real
        _JSON_OUT.pop()


def quiet_option(func):
    """``-q/--quiet`` as every command that shows progress takes it."""
    return click.option("--quiet", "-q", is_flag=True,
                        help="No progress lines: only the result (warnings and errors "
                             "still go to stderr).")(func)


def progress_log(out, quiet: bool):
    """The ``log(message)`` a command hands the API: its progress lines, or nothing."""
    if quiet:
        return lambda message: None
    return lambda message: out.print(message, markup=False, highlight=False)


def print_json(obj: Any) -> None:
    out = _JSON_OUT[-1] if _JSON_OUT else sys.stdout
    out.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.flush()


def table(title: str | None, columns: list[str], rows: list[list[Any]], caption: str = ""):
    from rich.table import Table  # lazy: rich

    t = Table(title=title, caption=caption or None, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
