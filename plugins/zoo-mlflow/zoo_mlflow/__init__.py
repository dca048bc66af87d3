"""zoo-mlflow: the ``mlflow`` logger — params, per-epoch metrics, summary and files in MLflow.

Registered through ``register_loggers`` like zoo's own ``csv`` and ``tensorboard``; a job
turns it on with ``loggers: [mlflow]`` (``--set loggers=[mlflow]``).  Offline: the tracking
store is a local ``sqlite:`` database (``$ZOO_HOME/mlflow/mlflow.db`` unless
``ZOO_MLFLOW_TRACKING_URI`` or ``MLFLOW_TRACKING_URI`` says otherwise), artifacts go next to
it, and MLflow's telemetry is switched off before mlflow is imported.

Importing this module imports no mlflow (nor torch): the logger imports it when a run
starts, so ``zoo --help`` and ``zoo plugins`` stay fast.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from zoo import settings
from zoo.errors import MissingDependencyError
from zoo.engine.loggers import flatten  # noqa: F401 (re-exported)
from zoo.hookspecs import hookimpl
from zoo.io.atomic import write_text

__all__ = ["MlflowLogger", "register_loggers", "tracking_uri", "flatten"]

EXPERIMENT = "zoo"
RUN_ID_FILE = "mlflow.json"  # in the run folder: which MLflow run --resume continues
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
ARTIFACTS = ("summary.json", "job.yaml", "metrics.jsonl")
MAX_PARAM = 6000  # MLflow's limit on a param value's length
#: bounded network behaviour (MLflow's defaults: 7 retries with backoff factor 2 and a 120 s
#: timeout each — minutes against a closed port); a user's own setting wins
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def zoo_home() -> Path:
    return settings.zoo_home()


def tracking_uri() -> str:
    """Where runs are recorded: ``$ZOO_MLFLOW_TRACKING_URI``, ``$MLFLOW_TRACKING_URI``, or a
    sqlite database under ``$ZOO_HOME`` (current MLflow refuses plain file stores)."""
    uri = settings.text("ZOO_MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(zoo_home() / 'mlflow' / 'mlflow.db').resolve()}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _import_mlflow():
    # telemetry off before the first import of mlflow, whatever the user's environment says
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        import mlflow  # lazy: mlflow is heavy (seconds to import)
        from mlflow.entities import Metric, Param  # lazy: mlflow
        from mlflow.tracking import MlflowClient  # lazy: mlflow
    except ImportError as exc:
        raise MissingDependencyError(
            f"logger 'mlflow' needs the mlflow package — pip install mlflow "
            f"({type(exc).__name__}: {exc})") from None
    return mlflow, MlflowClient, Metric, Param


class MlflowLogger:
    """One zoo run = one MLflow run (continued on ``--resume``)."""

    name = "mlflow"

    def __init__(self, run, first_epoch: int):
        _, MlflowClient, self._Metric, self._Param = _import_mlflow()
        self.dir = Path(run.dir)
        self.uri = tracking_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.last_epoch = first_epoch - 1
        self.run_id = self._resumed_run(first_epoch)
        if self.run_id is None:
            self.run_id = self._new_run(run)
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def _experiment_id(self) -> str:
        name = settings.text("ZOO_MLFLOW_EXPERIMENT", EXPERIMENT)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns
            location = (Path(self.uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def _resumed_run(self, first_epoch: int) -> str | None:
        path = self.dir / RUN_ID_FILE
        if first_epoch <= 1 or not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            if saved.get("tracking_uri") == self.uri:
                return self.client.get_run(saved["run_id"]).info.run_id
        except Exception:  # a missing or foreign run: start a new one
            return None
        return None

    def _new_run(self, run) -> str:
        job = run.job.to_dict() if hasattr(run.job, "to_dict") else dict(run.job)
        tags = {"zoo.run_dir": str(self.dir), "zoo.model": str(job.get("model"))}
        created = self.client.create_run(self._experiment_id(), run_name=self.dir.name,
                                         tags=tags)
        run_id = created.info.run_id
        params = [self._Param(k, ("null" if v is None else str(v))[:MAX_PARAM])
                  for k, v in flatten(job).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=params[i:i + 100])
        write_text(self.dir / RUN_ID_FILE, json.dumps({"run_id": run_id,
                                                      "tracking_uri": self.uri}) + "\n")
        return run_id

    def _log(self, values: dict, step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self._Metric(k, float(v), now, step) for k, v in values.items()
                   if _is_number(v)]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        self._log({k: v for k, v in flatten(metrics).items() if k != "epoch"}, epoch)
        self.last_epoch = epoch

    def close(self, summary: dict) -> None:
        test = summary.get("test") or {}
        self._log({f"test.{k}": v for k, v in test.items()}, max(self.last_epoch, 0))
        status = summary.get("status", "completed")
        self.client.set_tag(self.run_id, "zoo.status", status)
        files = [self.dir / n for n in ARTIFACTS]
        files += sorted(p for p in self.dir.glob("*") if p.suffix in (".csv", ".png"))
        for path in files:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"))


@hookimpl
def register_loggers(register):
    register("mlflow", MlflowLogger,
             description="MLflow: params, metrics per epoch, summary and files (sqlite store)")
