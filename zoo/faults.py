"""Test-only fault switches, all in one place (documented in docs/reliability.md).

``ZOO_FAULT`` places a fault deterministically so tests can prove recovery:

``interrupt_after_epoch:N``       KeyboardInterrupt right after epoch N's checkpoint
``interrupt_at:E:S``              KeyboardInterrupt after step S of epoch E
``signal_at:E:S[:SIG]``           send ourselves SIGINT/SIGTERM/... after step S of epoch E
``nan_at:E:S`` / ``nan_always``   treat that step's loss (or every loss) as non-finite
``crash_rank:R``                  under torchrun, rank R dies like an OOM kill after its first step
``kill_during_write:NAME[:N]``    SIGKILL during the N-th atomic write of a file named NAME,
                                  after the temp file is written and before the rename
``abort_in_export``               the export child process aborts (SIGABRT) like a C++ crash

Nothing here runs unless the variable is set; the values are read when asked, so tests can
set the variable per process.
"""
from __future__ import annotations

import os
import signal

from zoo import settings

_WRITES: dict[str, int] = {}


def current() -> str:
    """``ZOO_FAULT`` as :mod:`zoo.settings` reads it (checked against its grammar)."""
    return settings.fault()


def interrupt_after_epoch() -> int | None:
    f = current()
    return int(f.split(":", 1)[1]) if f.startswith("interrupt_after_epoch:") else None


def nan_at(epoch: int, step: int) -> bool:
    """``step`` counts from 0 here; the switch counts steps from 1."""
    f = current()
    return f == "nan_always" or f == f"nan_at:{epoch}:{step + 1}"


def after_step(epoch: int, step: int, rank: int, distributed: bool, crash) -> None:
    """The faults placed after a training step: crash a rank, send a signal, interrupt."""
    f = current()
    if not f:
        return
    if distributed and epoch == 1 and step == 0 and f == f"crash_rank:{rank}":
        crash()
    if f.startswith("signal_at:"):
        _, e, s, sig = (f.split(":") + ["INT"])[:4]
        if int(e) == epoch and int(s) == step + 1:
            os.kill(os.getpid(), getattr(signal, f"SIG{sig}"))
    if f == f"interrupt_at:{epoch}:{step + 1}":
        raise KeyboardInterrupt


def during_write(path) -> None:
    """``kill_during_write``: SIGKILL after the temp file, before the rename."""
    f = current()
    if not f.startswith("kill_during_write:"):
        return
    parts = f.split(":")
    name, nth = parts[1], int(parts[2]) if len(parts) > 2 else 1
    if path.name != name:
        return
    _WRITES[name] = _WRITES.get(name, 0) + 1
    if _WRITES[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)


def in_export() -> None:
    """``abort_in_export``: abort like torch.export crashing in C++ (zoo.runs.export)."""
    if current() == "abort_in_export":
        os.abort()
