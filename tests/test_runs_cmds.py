"""Runs are reusable: ``zoo eval``, ``zoo runs``, ``zoo predict``, ``zoo export``, and a run's
``model.safetensors`` as the source weights of the next run (source task → target task)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from zoo.api import load_job, run
from zoo_cli_helpers import assert_one_line_error, cli

TINY = {"model": "timm:test_resnet", "weights": "none", "seed": 0,
        "train": {"epochs": 1, "batch_size": 32},
        "data": {"name": "demo", "params": {"per_class": 20}}}


def tiny(out, name, **over) -> dict:
    from zoo.jobspec import deep_merge

    tree = deep_merge(TINY, {"out": str(out), "name": name})
    return run(load_job(flags=deep_merge(tree, over)), quiet=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    a = tiny(out, "a", strategy={"name": "finetune"},
             metrics=["accuracy", "top5", "f1", "confusion"])
    b = tiny(out, "b", strategy={"name": "linear-probe"})
    os.utime(Path(a["run_dir"]) / "job.yaml", (1_700_000_000, 1_700_000_000))  # a is older
    return out, a, b


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


# -- zoo eval ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["a", "b"])
def test_eval_equals_the_runs_own_test_metrics(runs, capsys, which):
    _, a, b = runs
    summary = {"a": a, "b": b}[which]
    code, out, err = cli(capsys, "eval", summary["run_dir"], "--json")
    assert code == 0, err
    got = json.loads(out)
    assert set(got["metrics"]) == set(summary["test"])
    for key, value in summary["test"].items():
        assert got["metrics"][key] == pytest.approx(value, abs=1e-5), key
    code, out, _ = cli(capsys, "eval", summary["run_dir"])
    assert code == 0 and "accuracy" in out and "summary.json" in out


def test_eval_on_other_data(runs, capsys):
    _, a, _ = runs
    code, out, err = cli(capsys, "eval", a["run_dir"], "--data", "demo", "--json")
    assert code == 0, err   # the same dataset named explicitly: same classes, same split
    assert json.loads(out)["metrics"]["accuracy"] == pytest.approx(a["test"]["accuracy"])
    code, _, err = cli(capsys, "eval", a["run_dir"], "--data", "digits")
    assert "classes" in assert_one_line_error(err, code)


# -- zoo runs ------------------------------------------------------------------------------------
def test_runs_lists_newest_first(runs, capsys):
    out_dir, a, b = runs
    (out_dir / "not-a-run").mkdir(exist_ok=True)
    code, out, _ = cli(capsys, "runs", out_dir, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["b", "a"]
    assert rows[1]["model"] == "timm:test_resnet"
    assert rows[1]["strategy"] == "finetune" and rows[1]["status"] == "completed"
    assert rows[1]["accuracy"] == pytest.approx(a["test"]["accuracy"])
    assert rows[1]["date"].startswith("2023-11-")
    code, out, _ = cli(capsys, "runs", out_dir)
    for word in ("name", "model", "strategy", "status", "test accuracy", "date",
                 "linear-probe", "finetune", "completed"):
        assert word in out
    code, out, _ = cli(capsys, "runs", out_dir / "nothing-here")
    assert code == 0 and "no runs" in out


# -- zoo predict ---------------------------------------------------------------------------------
def _test_image(run_dir: Path, tmp_path: Path):
    """One test image of the run as a PNG, and the model's probabilities for it."""
    from PIL import Image

    from zoo.api import get_catalog
    from zoo.engine.data import load_splits
    from zoo.runs.reuse import load_run
    from zoo.engine.transforms import build_transform

    loaded = load_run(run_dir)
    bundle = load_splits(get_catalog(), loaded.job.data, loaded.job.seed, {})
    raw, label = bundle.test[0]
    path = tmp_path / "sample.png"
    Image.fromarray(raw.permute(1, 2, 0).numpy()).save(path)
    tf = build_transform(loaded.model.backbone.pretrained_cfg, loaded.image_size, "none", False)
    with torch.no_grad():
        probs = loaded.model(tf(raw)[None]).softmax(1)[0]
    return path, probs, loaded.classes


def test_predict_gives_the_models_probabilities(runs, capsys, tmp_path):
    from PIL import Image
    from skimage import data

    _, a, _ = runs
    path, probs, classes = _test_image(Path(a["run_dir"]), tmp_path)
    cat = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(cat)
    code, out, err = cli(capsys, "predict", a["run_dir"], path, cat, "--top-k", "3", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert [r["image"] for r in res] == [str(path), str(cat)]
    top = res[0]["top"]
    assert len(top) == 3 and all(t["class"] in classes for t in top)
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top),
                                                     reverse=True)
    best = int(probs.argmax())
    assert top[0]["class"] == classes[best]
    assert top[0]["probability"] == pytest.approx(float(probs[best]), abs=1e-5)
    code, out, _ = cli(capsys, "predict", a["run_dir"], cat, "--top-k", "50", "--json")
    everything = json.loads(out)[0]["top"]
    assert len(everything) == len(classes)
    assert sum(t["probability"] for t in everything) == pytest.approx(1.0, abs=1e-5)
    code, out, _ = cli(capsys, "predict", a["run_dir"], cat)
    assert code == 0 and "probability" in out and str(cat) in out


# -- zoo export ----------------------------------------------------------------------------------
def test_export_formats_match_the_runs_model(runs, capsys, tmp_path):
    from zoo.runs.export import example_input, run_onnx
    from zoo.runs.reuse import load_run

    _, a, _ = runs
    loaded = load_run(a["run_dir"])
    x = example_input(loaded, batch=3, seed=1)
    with torch.no_grad():
        expected = loaded.model(x)

    code, out, err = cli(capsys, "export", a["run_dir"], "--format", "safetensors", "--out",
                         tmp_path / "m.safetensors", "--json")
    assert code == 0, err
    from safetensors.torch import load_file

    from zoo.weights import read_safetensors

    state = load_file(json.loads(out)["path"])
    assert all(torch.equal(state[k], v) for k, v in loaded.model.state_dict().items())
    assert json.loads(read_safetensors(tmp_path / "m.safetensors")[1]["zoo"])["classes"] == \
        loaded.classes

    code, out, err = cli(capsys, "export", a["run_dir"], "--format", "torch-export", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["path"] == str(Path(a["run_dir"]) / "export" / "model.pt2")
    program = torch.export.load(res["path"])
    got = program.module()(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert json.loads(Path(res["sidecar"]).read_text())["classes"] == loaded.classes

    code, out, err = cli(capsys, "export", a["run_dir"], "--format", "onnx", "--out",
                         tmp_path / "m.onnx", "--json")
    assert code == 0, err
    res = json.loads(out)
    got = torch.from_numpy(run_onnx(res["path"], x))  # onnxruntime, else onnx's reference
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    sidecar = json.loads(Path(res["sidecar"]).read_text())
    assert sidecar["image_size"] == loaded.image_size and sidecar["mean"]


def test_onnx_without_the_export_extra_names_it(runs, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    _, a, _ = runs
    before = sorted(p.name for p in Path(a["run_dir"]).rglob("*"))
    code, _, err = cli(capsys, "export", a["run_dir"], "--format", "onnx", "--out",
                       Path(a["run_dir"]) / "x.onnx")
    line = assert_one_line_error(err, code)
    assert "onnxscript" in line and "pip install 'zoo[export]'" in line
    assert sorted(p.name for p in Path(a["run_dir"]).rglob("*")) == before


# -- a run as the source of the next transfer -----------------------------------------------------
def test_run_model_is_the_source_weights_of_a_new_run(runs, tmp_path):
    from safetensors.torch import load_file

    from zoo.api import get_catalog
    from zoo.runs.reuse import load_run
    from zoo.weights import resolve_and_load, sha256_file

    _, a, _ = runs
    source = Path(a["run_dir"]) / "model.safetensors"
    a_model = load_run(a["run_dir"]).model
    a_backbone = {k: v for k, v in a_model.backbone.state_dict().items()}

    # what the new run starts from: A's backbone, exactly (built the way runs build it)
    cat = get_catalog()
    backbone, summary = resolve_and_load(cat, cat.resolve_model("timm:test_resnet"),
                                         str(source), [])
    assert summary["source"] == f"file:{source}" and summary["sha256"] == sha256_file(source)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, a_backbone[key]), key

    # B: 4 demo classes instead of 8; a linear probe leaves the transferred backbone as it is
    b = tiny(tmp_path, "b4", weights=str(source), strategy={"name": "linear-probe"},
             data={"params": {"per_class": 20, "classes": 4}})
    assert b["num_classes"] == 4 and b["weights"]["source"] == f"file:{source}"
    b_state = load_file(Path(b["run_dir"]) / "model.safetensors")
    head = [v for k, v in b_state.items() if k.startswith("head.") and k.endswith("weight")]
    assert head and head[-1].shape[0] == 4                     # the head was rebuilt
    for key, value in a_backbone.items():                     # the backbone transferred
        assert torch.equal(b_state[f"backbone.{key}"], value), key


def test_runs_on_a_file_is_a_one_line_error(tmp_path):
    from zoo.errors import CheckpointError
    from zoo.runs.reuse import list_runs

    not_a_folder = tmp_path / "f.txt"
    not_a_folder.write_text("x")
    with pytest.raises(CheckpointError, match="is not a folder"):
        list_runs(not_a_folder)
    assert list_runs(tmp_path / "missing") == []
