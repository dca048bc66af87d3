"""Output helpers for commands: rich tables for people, plain JSON for ``--json``."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

DEBUG = False  # set by zoo.cli.main from --debug / ZOO_DEBUG=1


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit (2: bad input; 1: a bug)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def console(stderr: bool = False):
    from rich.console import Console  # lazy: rich

    return Console(stderr=stderr, highlight=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]], caption: str = ""):
    from rich.table import Table  # lazy: rich

    t = Table(title=title, caption=caption or None, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
