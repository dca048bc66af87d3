"""Driving the loggers a job names (``job.loggers``): every logger is a catalog component.

A logger comes from a ``register_loggers`` hook, built-in (csv, tensorboard) or third-party
(mlflow), and all are treated alike: ``factory(run, first_epoch)`` when the first epoch
ends, ``log_epoch(epoch, metrics)`` after each epoch, ``close(summary)`` once at the end.
Only rank 0 logs.  A logger must never stop training: a factory that raises skips its
logger, a logger that raises is disabled; both leave one line in ``summary.json``'s
``warnings``.  Nor may it block training: every call runs on the run's logger thread
(:mod:`zoo.engine.logger_worker`); the end of the run waits for it at most 30 s.  The state lives on the run context, so calling :func:`log_epoch` twice for
one epoch, or :func:`close_loggers` twice, logs once.
"""
from __future__ import annotations

from typing import Any

from zoo.engine.isolation import call_isolated
from zoo.engine.logger_worker import CLOSE_TIMEOUT_S, LoggerWorker
from zoo.errors import did_you_mean

_STATE = "_zoo_logger_state"
_WORKER = "_zoo_logger_worker"


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
    warn = getattr(run, "warn", None)
    if callable(warn):  # the run's warn: recorded in summary.json, printed even with -q
        warn(message)
        return
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
        comp = run.catalog.get("loggers", str(name))
        # a logger must never stop training: anything it raises (sys.exit too) skips it
        ok, logger = call_isolated(lambda: comp.obj(run, epoch),
                                   f"WARNING: plugin '{comp.plugin}': logger '{name}' (start)",
                                   lambda msg: _warn(run, f"{msg}; logger '{name}' skipped"))
        if ok:
            state.active[name] = logger
    return state


def _worker(run, create: bool = True) -> LoggerWorker | None:
    """The run's logger thread (rank 0 with loggers only), started on first use."""
    worker = getattr(run, _WORKER, None)
    if worker is None and create and getattr(run.job, "loggers", None) \
            and getattr(run, "rank", 0) == 0 and run.dir is not None:
        worker = LoggerWorker()
        setattr(run, _WORKER, worker)
    return worker


def log_epoch(run, epoch: int, metrics: dict) -> None:
    """Queue the epoch record for every active logger (started on the first call); returns
    at once — a slow logger never holds training up."""
    worker = _worker(run)
    if worker is not None:
        worker.submit(f"log_epoch({epoch})", lambda: _log_epoch_now(run, epoch, metrics))


def _log_epoch_now(run, epoch: int, metrics: dict) -> None:
    state = _state(run, epoch)
    if state.closed or epoch <= state.last_epoch:
        return
    state.last_epoch = epoch
    for name, logger in list(state.active.items()):
        ok, _ = call_isolated(lambda: logger.log_epoch(epoch, metrics),
                              f"WARNING: logger '{name}' failed: log_epoch",
                              lambda msg: _warn(run, f"{msg}; disabled for the rest of "
                                                     "this run"))
        if not ok:
            del state.active[name]


def close_loggers(run, summary: dict, timeout: float | None = None) -> None:
    """Give every active logger the run's summary and close it (once); wait for the
    loggers at most ``timeout`` seconds, then say which is still busy and go on."""
    worker = _worker(run, create=False)
    if worker is None:
        return
    worker.submit("close", lambda: _close_now(run, summary))
    timeout = CLOSE_TIMEOUT_S if timeout is None else timeout
    if not worker.drain(timeout):
        _warn(run, f"WARNING: the loggers were still busy ({worker.busy_with or 'queued'}) "
                   f"{timeout:g} s after the run ended — not waiting for them; what they "
                   "had not sent is not in their service")


def _close_now(run, summary: dict) -> None:
    state = getattr(run, _STATE, None)
    if state is None or state.closed:
        return
    state.closed = True
    for name, logger in list(state.active.items()):
        call_isolated(lambda: logger.close(summary),
                      f"WARNING: logger '{name}' failed at the end of the run: close",
                      lambda msg: _warn(run, msg))
    state.active.clear()
