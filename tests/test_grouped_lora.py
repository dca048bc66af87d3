"""LoRA/DoRA on depthwise/grouped convs where peft accepts them (r divisible by groups): the
plan says what was adapted or left out and why; the adapters train; a run keeps them
unmerged (peft cannot merge groups > 1) and eval/predict re-apply them when loading."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.backbones import TransferModel, build_layer_groups
from zoo.catalog import Catalog
from zoo.errors import ConfigError
from zoo.kit.testing import make_catalog, run_tiny, tiny_job
from zoo.strategy import apply_model_changes, apply_phase, validate_plan

peft = pytest.importorskip("peft")


def _convnext():
    cat = Catalog()
    bb = cat.provider("timm").create("test_convnext")  # depthwise convs: groups 24..64
    model = TransferModel(bb, nn.Linear(bb.feature_dim, 3))
    return model, build_layer_groups(model, cat.provider("timm"))


def _plan(name, model, groups, **params):
    import zoo_strategies

    job = tiny_job(strategy={"name": name, "params": params})
    plan = zoo_strategies.strategy_classes()[name]().plan(model, groups, job)
    validate_plan(plan, groups)
    return plan, job


def test_grouped_convs_join_only_where_r_is_divisible_by_groups():
    model, groups = _convnext()
    mods = dict(model.backbone.body.named_modules())
    plan, _ = _plan("lora", model, groups)  # r=8: no depthwise conv of this model qualifies
    change = plan.model_changes[0]
    assert change.grouped == [] and change.describe()["merges"] is True
    assert any("divisible by groups" in n and "r=8" in n for n in plan.notes)
    plan, _ = _plan("lora", model, groups, r=64)
    grouped = plan.model_changes[0].grouped
    assert grouped and all(64 % mods[n].groups == 0 for n in grouped)
    left_out = [n for n, m in mods.items() if isinstance(m, nn.Conv2d) and m.groups > 1
                and n not in grouped]
    assert left_out and all(64 % mods[n].groups for n in left_out)  # groups 24, 48
    assert any("cannot merge" in n for n in plan.notes)
    assert any("kept unmerged" in n for n in plan.notes)
    plan, _ = _plan("lora", model, groups, r=64, grouped=False)
    assert plan.model_changes[0].grouped == []
    assert any("grouped=false" in n for n in plan.notes)
    name = next(n for n, m in mods.items() if isinstance(m, nn.Conv2d) and m.groups == 24)
    with pytest.raises(ConfigError, match="r=64 is not divisible"):
        _plan("lora", model, groups, r=64, targets=name)


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_grouped_adapters_train(name):
    torch.manual_seed(0)
    model, groups = _convnext()
    plan, job = _plan(name, model, groups, r=64)
    apply_model_changes(plan, model, groups)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            nn.init.normal_(p, std=0.05)
    pgroups = apply_phase(model, groups, plan.phases[0], 0.05, job.train.weight_decay)
    grouped = plan.model_changes[0].grouped
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(2, 3, 32, 32)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    torch.optim.SGD(pgroups, lr=0.05).step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(f".{grouped[0]}.lora_A" in n for n in moved)
    assert all("lora_" in n or n.startswith("head.") for n in moved)


def test_a_grouped_lora_run_keeps_its_adapters_and_loads_with_eval_and_predict(tmp_path):
    from PIL import Image

    from zoo.runs.predict import predict
    from zoo.runs.reuse import evaluate_run, load_run

    cat = make_catalog()
    summary = run_tiny(cat, tmp_path, model="timm:test_convnext",
                       strategy={"name": "lora", "params": {"r": 64}},
                       data={"image_size": 32}, train={"epochs": 1})
    assert summary["status"] == "completed"
    assert summary["model_changes"][0]["grouped"] > 0
    run = load_run(summary["run_dir"], cat)
    assert run.meta["unmerged"][0]["strategy"] == "lora"
    assert run.meta["unmerged"][0]["state"]["r"] == 64
    assert isinstance(run.model.backbone.body, peft.PeftModel)
    again = evaluate_run(summary["run_dir"], catalog=cat)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    Image.new("RGB", (40, 40), (20, 200, 30)).save(tmp_path / "x.png")
    assert predict(summary["run_dir"], [tmp_path / "x.png"], catalog=cat)[0]["top"]
    assert (tmp_path.glob("*/adapter/adapter_model.safetensors").__next__()).is_file()
