"""The one writer of a run folder's records: ``summary.json`` (every status), ``job.yaml``,
``splits.json`` and ``metrics.jsonl``.

:class:`RunWriter` is made once per run (rank 0 writes; other ranks hold one that writes
nothing) and owns the summary record from set-up to the end::

    writer = RunWriter(run_dir)
    writer.begin({"model": ..., "strategy": ...})   # the record so far (not written yet)
    writer.write_job(job_yaml, splits)              # a new run's job.yaml and splits.json
    writer.write_metrics(history)                   # after every epoch
    writer.update(test=...)                         # more of the record
    writer.finish("completed", seconds=12.3)        # summary.json, atomically: the final record

``finish`` is also how an interrupt or a failure records ``status: interrupted|failed``
(:class:`zoo.engine.guard.RunRecord`); it writes before ``on_run_end`` fires, so loggers and
observers see the same record as the file.  Every write is atomic and none is torn by a
signal (:func:`zoo.engine.guard.signals_deferred`).
"""
from __future__ import annotations

from pathlib import Path

from zoo.engine.guard import signals_deferred
from zoo.io import atomic
from zoo.io import runfolder


class RunWriter:
    """Writes one run folder's records; ``summary`` is the record so far (None: not begun)."""

    def __init__(self, run_dir: str | Path, *, main: bool = True, resume: bool = False):
        self.dir = Path(run_dir)
        self.main = main            # rank 0 (or the only process): the one that writes
        self.resume = resume        # a resume keeps the files the run started with
        self.summary: dict | None = None
        self.completed = False      # the final record is written: an interrupt keeps it

    def begin(self, record: dict) -> dict:
        """Start the summary record (``schema``, ``status: running``, ``run_dir`` added)."""
        self.summary = {"schema": runfolder.SCHEMA, "status": "running",
                        "run_dir": str(self.dir), **record}
        return self.summary

    def update(self, **fields) -> None:
        """Add ``fields`` to the record (written by the next :meth:`finish`)."""
        if self.summary is not None:
            self.summary.update(fields)

    def write_job(self, job_yaml: str, splits: dict | None) -> None:
        """A new run's ``job.yaml`` and ``splits.json`` (a resume keeps its own; ``None``:
        no splits to record)."""
        if self.main and not self.resume:
            atomic.write_text(self.dir / "job.yaml", job_yaml)
            if splits is not None:
                atomic.write_json(self.dir / "splits.json", splits)

    def write_metrics(self, history: list[dict]) -> None:
        """``metrics.jsonl``: one line per finished epoch."""
        if self.main:
            runfolder.write_metrics(self.dir, history)

    def finish(self, status: str, **fields) -> dict | None:
        """Write ``summary.json`` with ``status`` and ``fields``; return the record.

        Before the record began, an interrupted or failed new run writes a stub (its
        folder says what happened); a refused or interrupted resume keeps the run's own
        summary (None is returned).  A record already completed is rewritten only by a
        completed status (a plot's warning); an interrupt after it keeps it.
        """
        if self.summary is None:
            if self.resume:
                return None
            self.summary = {"schema": runfolder.SCHEMA, "run_dir": str(self.dir)}
        if self.completed and status != "completed":
            return self.summary
        self.summary.update(status=status, **fields)
        if self.main:
            with signals_deferred():
                atomic.write_json(self.dir / "summary.json", self.summary)
        self.completed = status == "completed"
        return self.summary
