"""The run context: what observers (``on_epoch_end``/``on_run_end``) and a run's pieces share.

In the contract layer because the hook specs name it (:mod:`zoo.hookspecs`); the engine
makes one per run.  Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class RunContext:
    """What observers (``on_epoch_end``/``on_run_end``) and the pieces of a run share."""

    job: Any
    dir: Path | None
    catalog: Any
    rank: int = 0
    world_size: int = 1
    warnings: list = field(default_factory=list)
    log: Callable = print
    #: the run's warn(message): recorded in summary.json's warnings, printed even with -q
    warn: Callable | None = None
