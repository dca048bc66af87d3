"""Built-in loggers: the worked example of zoo's observer hooks.

Enable them per job with the ``loggers`` list (``--set loggers=[csv]`` or, in a job file,
``loggers: [csv, tensorboard]``).  They listen to ``on_epoch_end`` and ``on_run_end``; zoo's
loop does not know they exist.

``csv``
    ``log.csv`` in the run folder: one row per epoch, the epoch record flattened
    (``train.loss``, ``val.accuracy``, ``lr.0`` ...).  No dependency.  On ``--resume`` the
    rows of earlier epochs are kept.
``tensorboard``
    Scalars per epoch (``train/loss``, ``val/accuracy`` ...) and the test metrics at the end,
    under ``<run>/tensorboard``.  Needs the ``tensorboard`` package; without it the logger is
    skipped with a one-line warning (``pip install tensorboard``).

Unknown names in ``job.loggers`` are reported once per run as a warning (with a "did you
mean"), recorded in ``summary.json``'s ``warnings``.  Only rank 0 logs.  Importing this module
imports no torch (``torch.utils.tensorboard`` is imported when a tensorboard logger starts).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from zoo.hookspecs import hookimpl

#: name → description of every logger this plugin provides
LOGGERS = {
    "csv": "log.csv in the run folder, one row per epoch",
    "tensorboard": "TensorBoard scalars under <run>/tensorboard (needs tensorboard)",
}
_STATE = "_zoo_loggers"  # attribute on the RunContext holding this run's active loggers


def known_loggers() -> dict[str, str]:
    """The logger names ``job.loggers`` may contain, with a description each."""
    return dict(LOGGERS)


def flatten(record: dict, prefix: str = "") -> dict:
    """``{"train": {"loss": 1}, "lr": [0.1]}`` → ``{"train.loss": 1, "lr.0": 0.1}``."""
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


class CsvLogger:
    """``log.csv``: one row per epoch; columns are the union of every epoch's keys."""

    name = "csv"

    def __init__(self, run, first_epoch: int):
        self.path = Path(run.dir) / "log.csv"
        self.rows: list[dict] = []
        if self.path.is_file():  # a resumed run: keep the earlier epochs' rows
            with open(self.path, newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh)
                             if r.get("epoch", "").isdigit() and int(r["epoch"]) < first_epoch]

    def log(self, epoch: int, metrics: dict) -> None:
        self.rows.append({"epoch": epoch, **{k: v for k, v in flatten(metrics).items()
                                             if k != "epoch"}})
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        _write_atomic(self.path, buf.getvalue())

    def end(self, summary: dict) -> None:
        pass


class TensorBoardLogger:
    """Scalars through ``torch.utils.tensorboard.SummaryWriter`` (step = epoch)."""

    name = "tensorboard"

    def __init__(self, run, first_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            from zoo.errors import MissingDependencyError

            raise MissingDependencyError(
                "logger 'tensorboard' needs the tensorboard package — pip install tensorboard "
                f"({type(exc).__name__}: {exc})") from None
        self.writer = SummaryWriter(log_dir=str(Path(run.dir) / "tensorboard"))
        self.last_epoch = first_epoch

    def log(self, epoch: int, metrics: dict) -> None:
        for key, value in flatten(metrics).items():
            if key != "epoch" and _is_number(value):
                self.writer.add_scalar(key.replace(".", "/"), value, epoch)
        self.writer.flush()
        self.last_epoch = epoch

    def end(self, summary: dict) -> None:
        for key, value in (summary.get("test") or {}).items():
            if _is_number(value):
                self.writer.add_scalar(f"test/{key}", value, self.last_epoch)
        self.writer.close()


FACTORIES = {"csv": CsvLogger, "tensorboard": TensorBoardLogger}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _write_atomic(path: Path, text: str) -> None:
    from zoo.io.atomic import write_text

    write_text(path, text, durable=False)  # rewritten every epoch: no fsync needed


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


def _active(run, epoch: int) -> dict:
    """This run's loggers, started on the first call (unknown names reported then)."""
    state = getattr(run, _STATE, None)
    if state is not None:
        return state
    state = {}
    setattr(run, _STATE, state)
    names = list(dict.fromkeys(getattr(run.job, "loggers", None) or []))
    if not names or getattr(run, "rank", 0) != 0 or run.dir is None:
        return state
    from zoo.errors import did_you_mean

    for name in names:
        factory = FACTORIES.get(str(name))
        if factory is None:
            _warn(run, f"WARNING: unknown logger '{name}'{did_you_mean(str(name), LOGGERS)} "
                       f"(known: {', '.join(LOGGERS)}); ignored")
            continue
        try:
            state[name] = factory(run, epoch)
        except Exception as exc:  # a logger must never stop training
            _warn(run, f"WARNING: {str(exc).splitlines()[0]}; logger '{name}' skipped")
    return state


@hookimpl
def on_epoch_end(run, epoch, metrics):
    state = _active(run, epoch)
    for name, logger in list(state.items()):
        try:
            logger.log(epoch, metrics)
        except Exception as exc:
            del state[name]
            _warn(run, f"WARNING: logger '{name}' failed ({type(exc).__name__}: {exc}); "
                       "disabled for the rest of this run")


@hookimpl
def on_run_end(run, summary):
    state = getattr(run, _STATE, None) or {}
    for name, logger in list(state.items()):
        try:
            logger.end(summary)
        except Exception as exc:
            _warn(run, f"WARNING: logger '{name}' failed at the end of the run "
                       f"({type(exc).__name__}: {exc})")
    if state:
        state.clear()
