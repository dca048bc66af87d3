"""``zoo soup``: uniform and greedy model soups over fine-tuned runs of one model, written as
a normal run folder; runs that cannot be averaged are refused, naming why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoo.api import load_job, run, soup_runs
from zoo_cli_helpers import assert_one_line_error, cli

TINY = {"model": "timm:test_resnet", "weights": "none", "seed": 0,
        "train": {"epochs": 1, "batch_size": 32}, "strategy": {"name": "finetune"},
        "data": {"name": "demo", "params": {"per_class": 20}, "augment": "none",
                 "num_workers": 0}}


def tiny(out, name, **over) -> dict:
    from zoo.jobspec import deep_merge

    tree = deep_merge(TINY, {"out": str(out), "name": name})
    return run(load_job(flags=deep_merge(tree, over)), quiet=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("soup")
    found = [tiny(out, f"lr{i}", train={"lr": lr, "epochs": epochs})
             for i, (lr, epochs) in enumerate([(3e-3, 2), (1e-3, 1), (1e-2, 1)])]
    other_seed = tiny(out, "seed1", seed=1)
    return out, found, other_seed


def _tensors(run_dir) -> dict:
    return load_file(str(Path(run_dir) / "model.safetensors"))


def test_uniform_soup_is_the_mean_of_the_weights(runs, tmp_path):
    _, found, _ = runs
    summary = soup_runs([r["run_dir"] for r in found], method="uniform", out=tmp_path,
                        name="uniform")
    soup = _tensors(summary["run_dir"])
    parts = [_tensors(r["run_dir"]) for r in found]
    floats = [k for k, v in soup.items() if v.is_floating_point()]
    assert floats
    for key in floats:
        mean = sum(p[key].double() for p in parts) / len(parts)
        assert torch.allclose(soup[key].double(), mean, atol=1e-6), key
    ints = [k for k, v in soup.items() if not v.is_floating_point()]
    for key in ints:  # num_batches_tracked: the best run's, not a mean
        assert any(torch.equal(soup[key], p[key]) for p in parts)
    assert summary["soup"]["used"] == 3 and summary["strategy"] == "soup-uniform"
    assert Path(summary["run_dir"]).name == "uniform"


def test_greedy_soup_never_loses_val_and_reloads_like_any_run(runs, tmp_path, capsys):
    _, found, _ = runs
    code, out, err = cli(capsys, "soup", *[r["run_dir"] for r in found], "--out", tmp_path,
                         "--name", "greedy", "--json")
    assert code == 0, err
    summary = json.loads(out)
    info = summary["soup"]
    vals = [r["val"] for r in info["ingredients"]]
    assert vals == sorted(vals, reverse=True)            # best first
    assert info["ingredients"][0]["in_soup"]             # the best run is always in
    assert info["val"] >= vals[0]                        # greedy never drops val
    kept = [c["kept"] for c in info["greedy_curve"]]
    assert info["used"] == sum(kept) and kept[0]
    folder = Path(summary["run_dir"])
    for name in ("model.safetensors", "summary.json", "job.yaml", "splits.json", "soup.png"):
        assert (folder / name).is_file(), name
    # the folder is a run: zoo eval reproduces the recorded test metrics
    code, out, err = cli(capsys, "eval", folder, "--json")
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    for key, value in summary["test"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-5), key
    code, out, err = cli(capsys, "soup", *[r["run_dir"] for r in found[:2]], "--out",
                         tmp_path, "-q")
    assert code == 0 and Path(out.strip()).is_dir(), err


def test_refuses_runs_on_other_splits(runs, capsys):
    _, found, other_seed = runs
    code, _, err = cli(capsys, "soup", found[0]["run_dir"], other_seed["run_dir"])
    line = assert_one_line_error(err, code)
    assert "different data splits" in line and "seed1" in line


def test_refuses_a_single_run_and_unknown_method(runs, capsys):
    _, found, _ = runs
    code, _, err = cli(capsys, "soup", found[0]["run_dir"], found[0]["run_dir"])
    assert "at least two" in assert_one_line_error(err, code)
    with pytest.raises(Exception, match="greedy or uniform"):
        soup_runs([found[0]["run_dir"], found[1]["run_dir"]], method="mean")


def test_refuses_different_classes_and_unmerged_adapters(runs, tmp_path, capsys):
    import shutil

    from safetensors.torch import save_file

    _, found, _ = runs
    copy = tmp_path / "copy"
    shutil.copytree(found[1]["run_dir"], copy)
    tensors, meta = _tensors(copy), None
    from safetensors import safe_open

    with safe_open(str(copy / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    zoo_meta = json.loads(meta["zoo"])
    zoo_meta["classes"] = list(reversed(zoo_meta["classes"]))
    save_file(tensors, str(copy / "model.safetensors"), {"zoo": json.dumps(zoo_meta)})
    code, _, err = cli(capsys, "soup", found[0]["run_dir"], copy)
    assert "different classes" in assert_one_line_error(err, code)

    from zoo.runs.soup import _check_tensors

    state = {"head.weight": torch.zeros(2, 3)}
    with pytest.raises(Exception, match="adapters not merged"):
        _check_tensors("a and b", state, {"head.base_layer.weight": torch.zeros(2, 3)})
    with pytest.raises(Exception, match=r"head.weight is \(2, 3\)"):
        _check_tensors("a and b", state, {"head.weight": torch.zeros(3, 3)})


def test_compare_soup_adds_the_soups_row(tmp_path, capsys):
    code, out, err = cli(capsys, "compare", "timm:test_resnet", "-S", "finetune,linear-probe",
                         "--soup", "--weights", "none", "--batch-size", "32", "--epochs", "1",
                         "--set", "data.params.per_class=20", "--set", "data.num_workers=0",
                         "--out", tmp_path, "--name", "cmp", "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = {e["strategy"]: e for e in result["leaderboard"]}
    assert set(rows) == {"finetune", "linear-probe", "soup"}
    assert rows["soup"]["runs"] == 1, rows["soup"]["error"]
    soup_row = next(r for r in result["runs"] if r["strategy"] == "soup")
    summary = json.loads((Path(soup_row["run_dir"]) / "summary.json").read_text())
    assert summary["test"] == soup_row["test"]
    assert {Path(i["run_dir"]).name for i in summary["soup"]["ingredients"]} == {
        "finetune-seed0", "linear-probe-seed0"}


def test_compare_soup_row_fails_with_its_reason(runs, tmp_path):
    from zoo.tools.compare_soup import add_soup_rows

    _, found, other_seed = runs
    result = {"strategies": ["finetune"], "seeds": [0, 1], "runs": [
        {"strategy": "finetune", "seed": 0, "status": "completed",
         "run_dir": found[0]["run_dir"]},
        {"strategy": "finetune", "seed": 1, "status": "completed",
         "run_dir": other_seed["run_dir"]}]}
    logged = []
    add_soup_rows(result, tmp_path, None, logged.append)
    rows = [r for r in result["runs"] if r["strategy"] == "soup"]
    assert result["strategies"] == ["finetune", "soup"] and len(rows) == 2
    assert all(r["status"] == "failed" and "at least two" in r["error"] for r in rows)
    assert len(logged) == 2 and "FAILED" in logged[0]
