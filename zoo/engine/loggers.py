"""Driving the loggers a job names (``job.loggers``): every logger is a catalog component.

A logger comes from a ``register_loggers`` hook, built-in (csv, tensorboard) or third-party
(mlflow), and all are treated alike: ``factory(run, first_epoch)`` when the first epoch
ends, ``log_epoch(epoch, metrics)`` after each epoch, ``close(summary)`` once at the end.
Only rank 0 logs.  A logger must never stop training: a factory that raises skips its
logger, a logger that raises is disabled; both leave one line in ``summary.json``'s
``warnings``.  The state lives on the run context, so calling :func:`log_epoch` twice for
one epoch, or :func:`close_loggers` twice, logs once.
"""
from __future__ import annotations

from typing import Any

from zoo.errors import did_you_mean

_STATE = "_zoo_logger_state"


def flatten(record: dict, prefix: str = "") -> dict:
    """For logger authors: a nested record as flat keys, ``{"train": {"loss": 1}, "lr": [0.1]}`` → ``{"train.loss": 1, "lr.0": 0.1}``."""
    out: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, name + "."))
        else:
            out[name] = value
    return out


class _State:
    def __init__(self) -> None:
        self.active: dict[str, Any] = {}
        self.last_epoch = 0
        self.closed = False


def unknown_message(catalog, name: str) -> str:
    known = catalog.names("loggers")
    return (f"unknown logger '{name}'{did_you_mean(str(name), known)} "
            f"(known: {', '.join(known) or 'none installed'})")


def _warn(run, message: str) -> None:
    warnings = getattr(run, "warnings", None)
    if isinstance(warnings, list) and message not in warnings:
        warnings.append(message)
    log = getattr(run, "log", None)
    if callable(log):
        try:
            log(message, style="yellow")
        except TypeError:
            log(message)


def _state(run, epoch: int) -> _State:
    """This run's loggers, started at the first call (unknown names reported then)."""
    state = getattr(run, _STATE, None)
    if state is not None:
        return state
    state = _State()
    setattr(run, _STATE, state)
    names = list(dict.fromkeys(getattr(run.job, "loggers", None) or []))
    if not names or getattr(run, "rank", 0) != 0 or run.dir is None:
        return state
    for name in names:
        if not run.catalog.has("loggers", str(name)):
            _warn(run, f"WARNING: {unknown_message(run.catalog, str(name))}; ignored")
            continue
        factory = run.catalog.get("loggers", str(name)).obj
        try:
            state.active[name] = factory(run, epoch)
        except Exception as exc:  # a logger must never stop training
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            _warn(run, f"WARNING: {first}; logger '{name}' skipped")
    return state


def log_epoch(run, epoch: int, metrics: dict) -> None:
    """Hand the epoch record to every active logger (started on the first call)."""
    state = _state(run, epoch)
    if state.closed or epoch <= state.last_epoch:
        return
    state.last_epoch = epoch
    for name, logger in list(state.active.items()):
        try:
            logger.log_epoch(epoch, metrics)
        except Exception as exc:
            del state.active[name]
            _warn(run, f"WARNING: logger '{name}' failed ({type(exc).__name__}: {exc}); "
                       "disabled for the rest of this run")


def close_loggers(run, summary: dict) -> None:
    """Give every active logger the run's summary and close it (once)."""
    state = getattr(run, _STATE, None)
    if state is None or state.closed:
        return
    state.closed = True
    for name, logger in list(state.active.items()):
        try:
            logger.close(summary)
        except Exception as exc:
            _warn(run, f"WARNING: logger '{name}' failed at the end of the run "
                       f"({type(exc).__name__}: {exc})")
    state.active.clear()
