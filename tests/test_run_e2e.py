"""End to end: `zoo run` on a tiny model and tiny demo data, outputs, reload, determinism.

Exercises the register_metrics and register_datasets hooks through a real run.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zoo.api import load_job, run
from zoo.runs.reuse import evaluate_run, load_run

TINY = {"model": "timm:test_resnet", "weights": "none",
        "train": {"epochs": 2, "batch_size": 32},
        "data": {"name": "demo", "params": {"per_class": 40}}}


def tiny_job(tmp_path, **over):
    from zoo.jobspec import deep_merge

    return load_job(flags=deep_merge(TINY, {"out": str(tmp_path), **over}))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cmd = [sys.executable, "-m", "zoo", "run", "timm:test_resnet", "--strategy", "finetune",
           "--weights", "none", "--epochs", "2", "--batch-size", "32", "--out", str(out),
           "--name", "e2e", "--set", "data.params.per_class=40", "--metrics",
           "accuracy,f1,confusion", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_run_writes_every_output(cli_run):
    from pathlib import Path

    d = Path(cli_run["run_dir"])
    for name in ("job.yaml", "metrics.jsonl", "splits.json", "model.safetensors",
                 "summary.json", "curves.png", "confusion.png", "confusion.csv"):
        assert (d / name).is_file(), name
    assert cli_run["status"] == "completed" and cli_run["schema"] == 1
    assert set(cli_run["test"]) >= {"accuracy", "f1", "loss"}
    assert "confusion" not in cli_run["test"]
    assert 0.0 <= cli_run["test"]["accuracy"] <= 1.0
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert set(rec) >= {"epoch", "phase", "train", "val", "lr", "seconds"}
    assert cli_run["versions"]["torch"] and "heads" in cli_run["versions"]["plugins"]
    # warnings are one-line strings (the console and the summary show the same)
    assert all(isinstance(w, str) and w and "\n" not in w for w in cli_run["warnings"])


def test_saved_model_reevaluates_to_summary(cli_run):
    again = evaluate_run(cli_run["run_dir"])
    for key in ("accuracy", "f1"):
        assert again[key] == pytest.approx(cli_run["test"][key], abs=1e-6)


def test_reload_has_classes_and_metadata(cli_run):
    loaded = load_run(cli_run["run_dir"])
    assert loaded.classes == cli_run["classes"]
    assert loaded.meta["model"] == "timm:test_resnet"


def test_same_seed_same_metrics(tmp_path):
    a = run(tiny_job(tmp_path, name="a"))
    b = run(tiny_job(tmp_path, name="b"))
    assert a["test"] == b["test"]
    assert (tmp_path / "a" / "confusion.png").is_file()  # drawn even if not in metrics
    hist_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    hist_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["train"]["loss"] for x in hist_a] == \
           [json.loads(x)["train"]["loss"] for x in hist_b]


def test_run_learns_demo_above_chance(tmp_path):
    s = run(tiny_job(tmp_path, train={"epochs": 6, "lr": 3e-3, "scheduler": "constant"},
                     data={"augment": "none", "params": {
                         "per_class": 150,
                         "classes": ["horizontal stripes", "vertical stripes", "checkerboard"]}}))
    chance = 1 / s["num_classes"]
    assert s["test"]["accuracy"] > chance + 0.2, s["test"]
    losses = [json.loads(x)["train"]["loss"]
              for x in open(f"{s['run_dir']}/metrics.jsonl").read().splitlines()]
    assert losses[-1] < 0.8 * losses[0], losses


def test_tiny_input_for_pretrained_weights_warns(tmp_path):
    pytest.importorskip("zoo_efficientnet_lite")
    s = run(load_job("efficientnet_lite0", out=str(tmp_path), sets=[
        "strategy.name=linear-probe", "train.epochs=1", "data.params.per_class=5"]))
    assert s["weights"]["source"] == "plugin:efficientnet-lite"
    assert any("far below the 224 px" in w for w in s["warnings"]), s["warnings"]
