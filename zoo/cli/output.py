"""Output helpers for commands: rich tables for people, plain JSON for ``--json``."""
from __future__ import annotations

import json
import sys
from typing import Any


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]], caption: str = ""):
    from rich.table import Table

    t = Table(title=title, caption=caption or None, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
