"""Built-in loggers ``csv`` and ``tensorboard``, registered like any plugin's loggers.

Enable them per job with the ``loggers`` list (``--set loggers=[csv]`` or, in a job file,
``loggers: [csv, tensorboard]``).  They come through the ``register_loggers`` hook, exactly
as a third-party logger does (``plugins/zoo-mlflow``); the core drives them all
(:mod:`zoo.engine.loggers`): ``factory(run, first_epoch)``, ``log_epoch(epoch, metrics)``,
``close(summary)``.

``csv``
    ``log.csv`` in the run folder: one row per epoch, the epoch record flattened
    (``train.loss``, ``val.accuracy``, ``lr.0`` ...).  No dependency.  On ``--resume`` the
    rows of earlier epochs are kept.
``tensorboard``
    Scalars per epoch (``train/loss``, ``val/accuracy`` ...) and the test metrics at the end,
    under ``<run>/tensorboard``.  Needs the ``tensorboard`` package; without it the logger is
    skipped with a one-line warning (``pip install tensorboard``).

Importing this module imports no torch (``torch.utils.tensorboard`` is imported when a
tensorboard logger starts).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from zoo.errors import MissingDependencyError
from zoo.engine.loggers import flatten  # noqa: F401 (re-exported)
from zoo.hookspecs import hookimpl
from zoo.io.atomic import write_text

#: name → description of every logger this plugin provides
LOGGERS = {
    "csv": "log.csv in the run folder, one row per epoch",
    "tensorboard": "TensorBoard scalars under <run>/tensorboard (needs tensorboard)",
}


def known_loggers() -> dict[str, str]:
    """The logger names ``job.loggers`` may contain, with a description each."""
    return dict(LOGGERS)


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

    def log_epoch(self, epoch: int, metrics: dict) -> None:
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

    def close(self, summary: dict) -> None:
        pass


class TensorBoardLogger:
    """Scalars through ``torch.utils.tensorboard.SummaryWriter`` (step = epoch)."""

    name = "tensorboard"

    def __init__(self, run, first_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency (torch)
        except ImportError as exc:
            raise MissingDependencyError(
                "logger 'tensorboard' needs the tensorboard package — pip install tensorboard "
                f"({type(exc).__name__}: {exc})") from None
        self.writer = SummaryWriter(log_dir=str(Path(run.dir) / "tensorboard"))
        self.last_epoch = first_epoch

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        for key, value in flatten(metrics).items():
            if key != "epoch" and _is_number(value):
                self.writer.add_scalar(key.replace(".", "/"), value, epoch)
        self.writer.flush()
        self.last_epoch = epoch

    def close(self, summary: dict) -> None:
        for key, value in (summary.get("test") or {}).items():
            if _is_number(value):
                self.writer.add_scalar(f"test/{key}", value, self.last_epoch)
        self.writer.close()


FACTORIES = {"csv": CsvLogger, "tensorboard": TensorBoardLogger}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _write_atomic(path: Path, text: str) -> None:
    write_text(path, text, durable=False)  # rewritten every epoch: no fsync needed


@hookimpl
def register_loggers(register):
    for name, factory in FACTORIES.items():
        register(name, factory, description=LOGGERS[name])
