"""The training loop's fault points, wired once at a run's entry.

The loop (:mod:`zoo.engine.loop`) calls the three hooks of a :class:`LoopHooks` at fixed
points and knows nothing of faults: production runs get :data:`NO_HOOKS`; a run whose
environment sets ``ZOO_FAULT`` (test-only, docs/reliability.md; read by :mod:`zoo.faults`)
gets hooks that place the fault.  Checkpoints are decided the same way in both: a fault
that interrupts after an epoch relies on the same pacing and the same flush on interrupt
as a Ctrl-C does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from zoo import faults
from zoo.engine import distributed


def _nothing(*_args) -> None:
    return None


def _never(*_args) -> bool:
    return False


@dataclass(frozen=True)
class LoopHooks:
    """What the loop calls: ``after_step(epoch, step)`` after every optimizer step (step
    from 0), ``after_epoch(epoch)`` after the epoch's checkpoint decision, and
    ``bad_loss(epoch, step)``: treat that step's loss as non-finite."""

    after_step: Callable[[int, int], None] = _nothing
    after_epoch: Callable[[int], None] = _nothing
    bad_loss: Callable[[int, int], bool] = _never


NO_HOOKS = LoopHooks()


def loop_hooks() -> LoopHooks:
    """The hooks of this process's ``ZOO_FAULT`` (:data:`NO_HOOKS` when it is unset)."""
    if not faults.current():
        return NO_HOOKS
    fault_epoch = faults.interrupt_after_epoch()

    def after_epoch(epoch: int) -> None:
        if epoch == fault_epoch:
            raise KeyboardInterrupt  # ZOO_FAULT=interrupt_after_epoch:N

    def after_step(epoch: int, step: int) -> None:
        faults.after_step(epoch, step, distributed.rank(), distributed.active(),
                          distributed.crash_now)

    return LoopHooks(after_step, after_epoch, faults.nan_at)
