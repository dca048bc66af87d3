"""``ssf`` (scale and shift, Lian et al. 2022): the sites per architecture, exact merging on
timm and torchvision models (fused norm+act, nn.MultiheadAttention included), deep copies,
trainable %, and a run end to end whose model.safetensors loads with its provider alone."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from zoo.backbones import Backbone, TransferModel, build_layer_groups
from zoo.catalog import Catalog
from zoo.kit.testing import make_catalog, run_tiny, tiny_job
from zoo.strategy import (apply_model_changes, apply_phase, finalize_model_changes,
                          set_train_mode, validate_plan)


class _Fallback:
    def layer_groups(self, backbone):
        from zoo.backbones import default_layer_groups

        return default_layer_groups(backbone.body)


def _provider_model(provider, arch):
    cat = Catalog()
    bb = cat.provider(provider).create(arch)
    model = TransferModel(bb, nn.Linear(bb.feature_dim, 3))
    return model, build_layer_groups(model, cat.provider(provider))


def _tv_vit():  # a tiny torchvision ViT: nn.MultiheadAttention inside
    from torchvision.models import VisionTransformer

    body = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                             hidden_dim=16, mlp_dim=32)
    body.heads = nn.Identity()
    bb = Backbone(body, 16, name="tiny_vit", provider="torchvision")
    bb.pretrained_cfg.input_size = 32
    model = TransferModel(bb, nn.Linear(16, 3))
    return model, build_layer_groups(model, _Fallback())


def _tv_mobilenet():  # torchvision: conv+BN+activation, squeeze-excitation convs with bias
    model, groups = _provider_model("torchvision", "mobilenet_v3_small")
    model.backbone.pretrained_cfg.input_size = 32
    return model, groups


MODELS = {"timm-resnet": lambda: _provider_model("timm", "test_resnet"),
          "timm-efficientnet": lambda: _provider_model("timm", "test_efficientnet"),
          "timm-convnext": lambda: _provider_model("timm", "test_convnext"),
          "timm-vit": lambda: _provider_model("timm", "test_vit"),
          "tv-vit": _tv_vit, "tv-mobilenet": _tv_mobilenet}


def _plan(model, groups, **params):
    import zoo_strategies

    job = tiny_job(strategy={"name": "ssf", "params": params})
    plan = zoo_strategies.strategy_classes()["ssf"]().plan(model, groups, job)
    validate_plan(plan, groups)
    return plan, job


def _trained(make):
    """The model with SSF applied after one SGD step (so γ, β are not the init)."""
    torch.manual_seed(0)
    model, groups = make()
    plan, job = _plan(model, groups, init_std=0.2)
    apply_model_changes(plan, model, groups)
    pgroups = apply_phase(model, groups, plan.phases[0], 0.05, job.train.weight_decay)
    set_train_mode(model, groups, plan.phases[0])
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(pgroups, lr=0.05)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    return model, groups, plan, job, changed, x


@pytest.mark.parametrize("arch", list(MODELS))
def test_merged_model_gives_the_unmerged_outputs_and_is_the_provider_architecture(arch, tmp_path):
    model, _, plan, _, changed, x = _trained(MODELS[arch])
    ssf = {n for n in changed if "ssf_s" in n}
    assert ssf and changed == ssf | {n for n in changed if n.startswith("head.")}
    model.eval()
    with torch.no_grad():
        unmerged = model(x)
    fresh_keys = set(MODELS[arch]()[0].state_dict())
    finalize_model_changes(plan, model, tmp_path)
    assert set(model.state_dict()) == fresh_keys  # no ssf_* left: loads with its provider
    with torch.no_grad():
        merged = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.backbone.modules())


def test_traps_are_handled_and_said_in_the_notes():
    model, groups = MODELS["timm-efficientnet"]()
    plan, _ = _plan(model, groups)
    change = plan.model_changes[0]
    assert change.describe()["fused_norm_act"] > 0  # BatchNormAct2d: before the activation
    assert any("fused norm+activation" in n for n in plan.notes)
    assert any(s.kind == "act" and s.path.endswith(".act") for s in change.sites)
    model, groups = MODELS["tv-vit"]()
    plan, _ = _plan(model, groups)
    sites = {s.path: s for s in plan.model_changes[0].sites}
    assert not any(p.endswith("out_proj") for p in sites)  # its forward never runs
    assert any(s.kind == "mha" for s in sites.values())
    assert any("MultiheadAttention" in n for n in plan.notes)
    model, groups = MODELS["timm-resnet"]()
    plan, _ = _plan(model, groups)
    assert any("convs without bias" in n for n in plan.notes)


def test_a_layer_whose_forward_never_runs_is_left_out():
    class Bypass(nn.Module):  # reads lin.weight directly, like nn.MultiheadAttention
        def __init__(self):
            super().__init__()
            self.lin, self.used = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x):
            x = x.mean((2, 3)).repeat(1, 3)[:, :8]
            return self.used(nn.functional.linear(x, self.lin.weight, self.lin.bias))

    bb = Backbone(Bypass(), 4, name="bypass", provider="testing")
    bb.pretrained_cfg.input_size = 8
    model = TransferModel(bb, nn.Linear(4, 2))
    plan, _ = _plan(model, build_layer_groups(model, _Fallback()))
    assert [s.path for s in plan.model_changes[0].sites] == ["used"]
    assert any("bypasses" in n for n in plan.notes)


def test_a_deep_copy_trains_its_own_scale_and_shift():
    model, groups = MODELS["timm-vit"]()
    plan, _ = _plan(model, groups)
    apply_model_changes(plan, model, groups)
    twin = copy.deepcopy(model).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for n, p in twin.named_parameters():
            if n.endswith("ssf_scale"):
                p.mul_(3.0)
        assert not torch.allclose(twin(x), before)  # the copy's hooks read the copy's γ
        torch.testing.assert_close(model(x), before)  # ... and never the original's


def test_trainable_percent_is_the_scale_and_shift_and_the_head():
    model, groups = MODELS["timm-vit"]()
    plan, job = _plan(model, groups)
    apply_model_changes(plan, model, groups)
    info = plan.to_dict(groups, model, job.train.lr)
    named = dict(model.named_parameters())
    ssf = sum(p.numel() for n, p in named.items() if "ssf_s" in n)
    head = sum(p.numel() for n, p in named.items() if n.startswith("head."))
    assert ssf == plan.model_changes[0].describe()["params"]
    assert info["phases"][0]["trainable_params"] == ssf + head
    total = info["total_params"]
    assert info["phases"][0]["trainable_percent"] == round(100.0 * (ssf + head) / total, 4)
    assert 0 < info["phases"][0]["trainable_percent"] < 20


def test_ssf_run_end_to_end_saves_a_merged_model(tmp_path):
    from zoo.runs.reuse import evaluate_run

    cat = make_catalog()
    summary = run_tiny(cat, tmp_path, strategy={"name": "ssf"}, train={"epochs": 2})
    assert summary["status"] == "completed"
    assert summary["model_changes"][0]["name"] == "ssf"
    assert 0 < summary["params"]["trainable_percent"] < 100
    run_dir = summary["run_dir"]
    from safetensors.torch import load_file

    assert not any("ssf_" in k for k in load_file(f"{run_dir}/model.safetensors"))
    again = evaluate_run(run_dir, catalog=cat)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert json.loads((tmp_path.glob("*/summary.json").__next__()).read_text())["strategy"] == "ssf"


def test_check_strategy_passes_ssf():
    import zoo_strategies
    from zoo.kit.testing import check_strategy

    plan = check_strategy(zoo_strategies.strategy_classes()["ssf"](), name="ssf")
    assert plan.phases[0].select and plan.model_changes[0].name == "ssf"


def test_an_interrupted_ssf_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from zoo.api import load_run_job
    from zoo.engine.pipeline import run
    from zoo.errors import RunInterrupted
    from zoo.layering import complete_job

    cat = make_catalog()

    def job(name):
        return complete_job(tiny_job(out=str(tmp_path), name=name, strategy={"name": "ssf"},
                                     train={"epochs": 3}), cat)

    full = run(job("full"), cat, quiet=True)
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
    with pytest.raises(RunInterrupted):
        run(job("part"), cat, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    part_dir = tmp_path / "part"
    resumed = run(load_run_job(part_dir), cat, quiet=True, resume=str(part_dir))
    assert resumed["test"] == full["test"]
    lines = [json.loads(x) for x in (part_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["train"]["loss"] for r in lines] == [
        json.loads(x)["train"]["loss"]
        for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]


def test_auto_trains_ssf_trials_on_deep_copies(tmp_path):
    from safetensors.torch import save_file

    from zoo.kit.testing.components import TinyProvider

    weights = tmp_path / "source.safetensors"  # source weights: auto runs its trials
    save_file({k: v.contiguous() for k, v in
               TinyProvider().create("tiny_cnn").source_state_dict().items()}, str(weights))
    cat = make_catalog()
    summary = run_tiny(cat, tmp_path / "runs", weights=str(weights),
                       strategy={"name": "auto", "params": {
                           "candidates": "ssf,linear-probe", "rungs": 1}},
                       data={"params": {"per_class": 16}}, train={"epochs": 2})
    assert summary["status"] == "completed"
    trials = summary["auto"]["trials"]  # auto keeps no state: its record is the summary's
    ssf = [c for c in trials if c["strategy"] == "ssf"]
    assert any(c["scores"] for c in ssf)  # trained and scored on a copy of the model
    if summary["strategy"] == "auto" and summary["model_changes"]:
        assert summary["model_changes"][0]["name"] == "ssf"
