"""``vpt`` (visual prompt tuning, Jia et al. 2022): shallow and deep prompts in timm ViTs,
what trains, deep copies, a clear error on other backbones, and a run folder that keeps its
prompts unmerged and still loads with eval/predict/export."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from zoo.backbones import TransferModel, build_layer_groups
from zoo.catalog import Catalog
from zoo.errors import ConfigError
from zoo.kit.testing import make_catalog, run_tiny, tiny_job
from zoo.strategy import apply_model_changes, apply_phase, validate_plan


def _vit(arch="test_vit"):
    cat = Catalog()
    bb = cat.provider("timm").create(arch)
    model = TransferModel(bb, nn.Linear(bb.feature_dim, 3))
    return model, build_layer_groups(model, cat.provider("timm"))


def _plan(model, groups, **params):
    import zoo_strategies

    job = tiny_job(strategy={"name": "vpt", "params": params})
    plan = zoo_strategies.strategy_classes()["vpt"]().plan(model, groups, job)
    validate_plan(plan, groups)
    return plan, job


@pytest.mark.parametrize("deep", [False, True])
def test_prompts_enter_the_blocks_and_leave_before_the_norm(deep):
    model, groups = _vit()
    body = model.backbone.body
    seen = []
    body.blocks[0].register_forward_pre_hook(lambda m, i: seen.append(i[0].shape[1]))
    body.norm.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape[1]))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        plain = model(x)
    plan, job = _plan(model, groups, tokens=5, deep=deep)
    apply_model_changes(plan, model, groups)
    named = dict(model.named_parameters())
    prompts = [n for n in named if n.endswith("vpt_prompt")]
    assert len(prompts) == (len(body.blocks) if deep else 1)
    assert all(named[n].shape == (5, body.embed_dim) for n in prompts)
    seen.clear()
    with torch.no_grad():
        prompted = model(x)
    tokens = 1 + (32 // 16) ** 2  # class token + patches
    # the prompt pre-hook registered after the probe: block 0 sees the input, the norm
    # sees the original token count (prompts removed after the last block)
    assert seen == [tokens, tokens]
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain)
    pgroups = apply_phase(model, groups, plan.phases[0], 0.1, job.train.weight_decay)
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains == set(prompts) | {n for n in named if n.startswith("head.")}
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    torch.optim.SGD(pgroups, lr=0.1).step()
    assert all(named[n].grad is not None and named[n].grad.abs().sum() > 0 for n in prompts)
    assert any("VPT-" + ("deep" if deep else "shallow") in n for n in plan.notes)


def test_a_deep_copy_uses_its_own_prompts():
    model, groups = _vit()
    plan, _ = _plan(model, groups, deep=True)
    apply_model_changes(plan, model, groups)
    twin = copy.deepcopy(model).eval()
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        for n, p in twin.named_parameters():
            if n.endswith("vpt_prompt"):
                p.add_(torch.randn_like(p))  # (a constant would vanish in LayerNorm)
        assert not torch.allclose(twin(x), before)
        torch.testing.assert_close(model(x), before)


def test_a_cnn_is_a_one_line_error():
    cat = Catalog()
    bb = cat.provider("timm").create("test_resnet")
    model = TransferModel(bb, nn.Linear(bb.feature_dim, 3))
    with pytest.raises(ConfigError, match="needs a ViT-family backbone"):
        _plan(model, build_layer_groups(model, cat.provider("timm")))


def test_vpt_run_folder_loads_with_eval_predict_export(tmp_path):
    from PIL import Image

    from zoo.runs.export import example_input, export_run
    from zoo.runs.predict import predict
    from zoo.runs.reuse import evaluate_run, load_run

    cat = make_catalog()
    summary = run_tiny(cat, tmp_path, model="timm:test_vit",
                       strategy={"name": "vpt", "params": {"tokens": 3, "deep": True}},
                       data={"image_size": 32}, train={"epochs": 2})
    assert summary["status"] == "completed"
    run = load_run(summary["run_dir"], cat)
    assert run.meta["unmerged"] == [{"strategy": "vpt", "state": {"tokens": 3, "deep": True}}]
    assert sum(1 for n, _ in run.model.named_parameters() if n.endswith("vpt_prompt")) == \
        len(run.model.backbone.body.blocks)
    again = evaluate_run(summary["run_dir"], catalog=cat)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "x.png")
    assert predict(summary["run_dir"], [tmp_path / "x.png"], catalog=cat)[0]["top"]
    from zoo.errors import WeightsError
    from zoo.weights.resolve import resolve_and_load

    with pytest.raises(WeightsError, match="vpt changes that could not merge"):
        resolve_and_load(cat, cat.resolve_model("timm:test_vit"), summary["run_dir"], [])
    out = export_run(summary["run_dir"], "torch-export", catalog=cat)
    program = torch.export.load(out["path"]).module()
    x = example_input(run)
    with torch.no_grad():
        torch.testing.assert_close(program(x), run.model(x), atol=1e-4, rtol=1e-4)


def test_open_clip_towers_take_prompts():
    open_clip = pytest.importorskip("open_clip")
    from open_clip.transformer import VisionTransformer

    from zoo.backbones import Backbone

    body = VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2,
                             mlp_ratio=2.0, output_dim=16)
    bb = Backbone(body, 16, name="tiny_clip", provider="openclip")
    model = TransferModel(bb, nn.Linear(16, 3))
    groups = build_layer_groups(model, _FallbackGroups())
    seen = []
    body.ln_post.register_forward_pre_hook(lambda m, i: seen.append(tuple(i[0].shape)))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        plain = model(x)
    plan, _ = _plan(model, groups, tokens=4, deep=True)
    apply_model_changes(plan, model, groups)
    with torch.no_grad():
        prompted = model(x)
    assert seen[0] == seen[1]  # the prompts are gone before the final norm
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain)
    assert sum(1 for n, _ in model.named_parameters() if n.endswith("vpt_prompt")) == 2


class _FallbackGroups:
    def layer_groups(self, backbone):
        from zoo.backbones import default_layer_groups

        return default_layer_groups(backbone.body)


def test_an_interrupted_vpt_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from zoo.api import load_run_job
    from zoo.engine.pipeline import run
    from zoo.errors import RunInterrupted
    from zoo.layering import complete_job

    cat = make_catalog()

    def job(name):
        return complete_job(tiny_job(out=str(tmp_path), name=name, model="timm:test_vit",
                                     strategy={"name": "vpt", "params": {"deep": True}},
                                     data={"image_size": 32}, train={"epochs": 2}), cat)

    full = run(job("full"), cat, quiet=True)
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
    with pytest.raises(RunInterrupted):
        run(job("part"), cat, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    resumed = run(load_run_job(tmp_path / "part"), cat, quiet=True, resume=str(tmp_path / "part"))
    assert resumed["test"] == full["test"]
