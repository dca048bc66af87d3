"""``--weights local-dir:PATH`` and ``hf-hub:ORG/NAME``: a model folder (an exported run, a
Hub snapshot in the local HF cache) as the source weights of a new run, its classifier kept
as the source classifier, so runs chain A → B → C (docs/weights.md)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoo.api import load_job, run
from zoo_cli_helpers import assert_one_line_error, cli

TINY = {"model": "timm:test_resnet", "seed": 0, "train": {"epochs": 1, "batch_size": 32},
        "data": {"name": "demo", "params": {"per_class": 20}},
        "strategy": {"name": "linear-probe"}}


def tiny(out, name, weights: str, seed: int = 0) -> dict:
    from zoo.jobspec import deep_merge

    return run(load_job(flags=deep_merge(TINY, {"out": str(out), "name": name, "seed": seed,
                                                "weights": weights})), quiet=True)


def export(res, capsys) -> Path:
    code, out, err = cli(capsys, "export", res["run_dir"], "--format", "hf", "--json")
    assert code == 0, err
    return Path(json.loads(out)["path"])


def saved(res) -> dict:
    return load_file(str(Path(res["run_dir"]) / "model.safetensors"))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("a"), "a", "none")


def test_exported_runs_chain_a_b_c_keeping_each_classifier(run_a, tmp_path, capsys):
    folder_a = export(run_a, capsys)
    # another seed: the head's init is seeded per part (same numbers whatever weights are
    # looked up), so B on A's features with A's seed would train A's head again exactly
    b = tiny(tmp_path, "b", f"local-dir:{folder_a}", seed=1)
    assert b["weights"]["source"] == f"local-dir:{folder_a}"
    a_head, b_state = saved(run_a), saved(b)
    # A's head is B's source classifier; A's trained body is B's (frozen) body
    torch.testing.assert_close(b_state["backbone.source_classifier.weight"],
                               a_head["head.0.weight"] if "head.0.weight" in a_head
                               else a_head["head.weight"])
    torch.testing.assert_close(b_state["backbone.body.conv1.0.weight"],
                               a_head["backbone.body.conv1.0.weight"])
    folder_b = export(b, capsys)
    c = tiny(tmp_path, "c", f"local-dir:{folder_b}")
    c_state = saved(c)
    b_head = [v for k, v in b_state.items() if k.startswith("head.") and k.endswith("weight")]
    torch.testing.assert_close(c_state["backbone.source_classifier.weight"], b_head[0])
    assert not torch.equal(c_state["backbone.source_classifier.weight"],
                           b_state["backbone.source_classifier.weight"])


def _cache_snapshot(hf_home: Path, repo: str, folder: Path) -> None:
    """``folder`` as a snapshot of Hub repo ``repo`` in an HF cache under ``hf_home``."""
    revision = hashlib.sha1(repo.encode()).hexdigest()
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(revision)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, snap / name)


def test_hf_hub_weights_come_from_the_local_cache_offline(run_a, tmp_path, capsys,
                                                          monkeypatch):
    folder_a = export(run_a, capsys)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    _cache_snapshot(tmp_path / "hf", "zoo-test/shapes", folder_a)
    code, out, err = cli(capsys, "run", "timm:test_resnet", "--weights", "hf-hub:zoo-test/shapes",
                         "-s", "linear-probe", "--epochs", "1", "--batch-size", "32", "--set",
                         "data.params.per_class=20", "--out", tmp_path, "--name", "b", "--json")
    assert code == 0, err
    b = json.loads(out)
    assert b["weights"]["source"] == "hf-hub:zoo-test/shapes"
    torch.testing.assert_close(saved(b)["backbone.source_classifier.weight"],
                               load_file(str(folder_a / "model.safetensors"))["fc.weight"])

    code, _, err = cli(capsys, "run", "timm:test_resnet", "--weights", "hf-hub:zoo-test/absent",
                       "--out", tmp_path, "--epochs", "1")
    line = assert_one_line_error(err, code)
    assert "not in the local Hugging Face cache" in line and str(tmp_path / "hf") in line
    assert "ZOO_OFFLINE=1" in line and "local-dir:" in line


def test_bad_local_dir_sources_are_one_line(run_a, tmp_path, capsys):
    code, _, err = cli(capsys, "run", "timm:test_resnet", "--weights",
                       f"local-dir:{tmp_path / 'nowhere'}", "--out", tmp_path)
    assert "is not a folder" in assert_one_line_error(err, code)
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "run", "timm:test_resnet", "--weights",
                       f"local-dir:{tmp_path / 'empty'}", "--out", tmp_path)
    assert "holds no weights file" in assert_one_line_error(err, code)
    folder_a = export(run_a, capsys)
    code, _, err = cli(capsys, "run", "timm:resnet18", "--weights", f"local-dir:{folder_a}",
                       "--out", tmp_path)
    line = assert_one_line_error(err, code)
    assert "holds test_resnet, not timm:resnet18" in line


def test_local_weights_helper_reads_an_exported_folder(run_a, capsys):
    from zoo.weights.formats import sha256_file
    from zoo.weights.local import load_local_weights

    folder = export(run_a, capsys)
    local = load_local_weights(folder)
    assert local.path == folder / "model.safetensors"
    assert local.classifier == "fc." and local.classes == run_a["classes"]
    assert local.architecture == "test_resnet" and local.pretrained_cfg["crop_pct"] == 1.0
    assert local.sha256 == sha256_file(folder / "model.safetensors")
    assert list(local.tensors) == list(load_file(str(folder / "model.safetensors")))


def test_offline_no_weights_names_the_models_that_have_weights_offline(tmp_path, capsys,
                                                                      monkeypatch):
    from zoo.weights.store import WeightStore

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    WeightStore().put("timm:test_vit", None, {"w": torch.zeros(2)}, "test")
    folder = tmp_path / "snap"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    _cache_snapshot(tmp_path / "hf", "timm/test_resnet.r160_in1k", folder)
    code, _, err = cli(capsys, "run", "timm:resnet18", "--weights", "pretrained", "--out",
                       tmp_path)
    line = assert_one_line_error(err, code)
    assert "no pretrained weights for timm:resnet18" in line
    assert ("models with weights offline: timm:test_vit (zoo store), "
            "timm:test_resnet.r160_in1k (HF cache)") in line
