"""The mlflow logger end to end: a tiny `zoo run --set loggers=[mlflow]`, then the sqlite
store read back with MLflow's own client, compared with the run folder's metrics.jsonl."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import zoo_mlflow

TINY = ["timm:test_resnet", "--weights", "none", "--epochs", "2", "--batch-size", "16",
        "--set", "data.params.per_class=10", "--set", "data.augment=none",
        "--set", "data.num_workers=0", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    import zoo.catalog

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    for var in ("ZOO_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "ZOO_MLFLOW_EXPERIMENT",
                "ZOO_LOAD_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    zoo.catalog._CATALOG = None
    yield
    zoo.catalog._CATALOG = None


def _invoke(args) -> tuple[int, str, str]:
    """``zoo ARGS`` in this process through the real entry point: (code, stdout, stderr)."""
    from zoo.cli import main

    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return code, out.getvalue().decode(), err.getvalue().decode()


def _zoo(args) -> str:
    code, out, err = _invoke(args)
    assert code == 0, err
    return out


def test_importing_the_plugin_imports_no_mlflow():
    code = ("import sys, zoo_mlflow; from zoo.catalog import Catalog; Catalog(); "
            "assert 'mlflow' not in sys.modules and 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_logger_is_a_catalog_component():
    from zoo.catalog import Catalog

    comp = Catalog().get("loggers", "mlflow")
    assert comp.plugin == "mlflow" and comp.obj is zoo_mlflow.MlflowLogger


def test_default_tracking_uri_is_sqlite_under_zoo_home(tmp_path):
    assert zoo_mlflow.tracking_uri() == f"sqlite:///{(tmp_path / 'home' / 'mlflow' / 'mlflow.db').resolve()}"


def test_a_run_logs_params_metrics_and_summary_to_mlflow(tmp_path):
    _zoo(["run", *TINY, "--set", "loggers=[mlflow]", "--out", str(tmp_path / "runs"),
          "--name", "logged", "--json"])
    run_dir = tmp_path / "runs" / "logged"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert not [w for w in summary["warnings"] if "mlflow" in w]
    history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]

    from mlflow.tracking import MlflowClient

    db = tmp_path / "home" / "mlflow" / "mlflow.db"
    assert db.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (exp,) = [e for e in client.search_experiments() if e.name == "zoo"]
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "logged" and run.info.status == "FINISHED"
    assert run.data.tags["zoo.run_dir"] == str(run_dir)
    assert run.data.tags["zoo.status"] == "completed"
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == run.info.run_id
    # params: the job, flattened
    assert run.data.params["model"] == "timm:test_resnet"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["loggers.0"] == "mlflow"
    # metrics per epoch equal metrics.jsonl, step = epoch
    for key in ("train.loss", "val.accuracy", "val.loss"):
        section, name = key.split(".")
        logged = [(m.step, m.value) for m in
                  sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        assert logged == [(r["epoch"], r[section][name]) for r in history], key
    # the final summary: test metrics and files
    for name, value in summary["test"].items():
        assert run.data.metrics[f"test.{name}"] == pytest.approx(value)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "job.yaml", "metrics.jsonl", "confusion.csv"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())["test"] == summary["test"]
    assert not (tmp_path / "mlruns").exists() and not Path("mlruns").exists()


def test_unknown_logger_is_refused_with_did_you_mean(tmp_path):
    code, _, err = _invoke(["run", *TINY, "--set", "loggers=[mlflw]", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown logger 'mlflw'" in err and "did you mean mlflow" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any run folder was made


def test_a_tracking_server_that_is_down_never_holds_the_run_up(tmp_path, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    _zoo(["run", *TINY, "--set", "loggers=[mlflow]", "--out", str(tmp_path / "runs"),
          "--name", "down", "--json"])
    assert time.monotonic() - start < 120  # MLflow's defaults retry for minutes
    summary = json.loads((tmp_path / "runs" / "down" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert any("mlflow" in w for w in summary["warnings"])
