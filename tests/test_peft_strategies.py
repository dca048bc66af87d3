"""Strategies v2: parameter-level selections, model changes, steps="none" phases, streams,
and the parameter-efficient strategies (bitfit, norm-tuning, lora, dora via peft)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo.backbones import Backbone, TransferModel, build_layer_groups
from zoo.catalog import Catalog
from zoo.errors import ConfigError
from zoo.kit.testing import make_catalog, run_tiny, tiny_job, tiny_transfer_model
from zoo.strategy import (Phase, Selection, StrategyPlan, all_groups, apply_model_changes,
                          apply_phase, finalize_model_changes, set_train_mode, validate_plan)

peft = pytest.importorskip("peft")


class _Fallback:
    def layer_groups(self, backbone):
        from zoo.backbones import default_layer_groups

        return default_layer_groups(backbone.body)


def _timm(arch):
    cat = Catalog()
    bb = cat.provider("timm").create(arch)
    model = TransferModel(bb, nn.Linear(bb.feature_dim, 3))
    return model, build_layer_groups(model, cat.provider("timm"))


def _tv_vit():  # a tiny torchvision ViT: nn.MultiheadAttention inside
    from torchvision.models import VisionTransformer

    body = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                             hidden_dim=16, mlp_dim=32)
    body.heads = nn.Identity()
    model = TransferModel(Backbone(body, 16, name="tiny_vit", provider="torchvision"),
                          nn.Linear(16, 3))
    return model, build_layer_groups(model, _Fallback())


MODELS = {"resnet": lambda: _timm("test_resnet"), "efficientnet": lambda: _timm("test_efficientnet"),
          "convnext": lambda: _timm("test_convnext"), "timm-vit": lambda: _timm("test_vit"),
          "tv-vit": _tv_vit, "provider-plugin": lambda: tiny_transfer_model(3)}


def _plan(name, model, groups, **params):
    import zoo_strategies

    job = tiny_job(strategy={"name": name, "params": params})
    plan = zoo_strategies.strategy_classes()[name]().plan(model, groups, job)
    validate_plan(plan, groups)
    return plan, job


def _one_step(name, make):
    torch.manual_seed(0)
    model, groups = make()
    for m in model.modules():  # no zero-init gamma: every branch gets a gradient
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    plan, job = _plan(name, model, groups)
    apply_model_changes(plan, model, groups)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # LoRA's B starts at 0 (then A's gradient is 0 on step one)
            nn.init.normal_(p, std=0.05)
    pgroups = apply_phase(model, groups, plan.phases[0], 0.05, job.train.weight_decay)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    set_train_mode(model, groups, plan.phases[0])
    opt = torch.optim.SGD(pgroups, lr=0.05)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    return model, groups, plan, trains, changed, x


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("name", ["bitfit", "lora"])
def test_selected_parameters_change_and_no_other_does(arch, name):
    model, _, plan, trains, changed, _ = _one_step(name, MODELS[arch])
    backbone_trains = {n for n in trains if n.startswith("backbone.")}
    assert backbone_trains, "the method trains part of the backbone"
    assert trains == changed  # every selected/adapter parameter moved; nothing else did
    assert any(n.startswith("head.") for n in trains)  # the head trains too
    if name == "bitfit":
        assert all(n.endswith(".bias") for n in backbone_trains)
    else:
        assert all("lora_" in n for n in backbone_trains)


@pytest.mark.parametrize("arch", ["efficientnet", "tv-vit", "timm-vit", "resnet"])
@pytest.mark.parametrize("name", ["lora", "dora"])
def test_merged_and_unmerged_models_give_the_same_logits(arch, name, tmp_path):
    model, _, plan, _, _, x = _one_step(name, MODELS[arch])
    model.eval()
    with torch.no_grad():
        unmerged = model(x)
    finalize_model_changes(plan, model, tmp_path)
    assert not isinstance(model.backbone.body, peft.PeftModel)
    with torch.no_grad():
        merged = model(x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8


def test_targets_per_architecture_are_exact_and_plan_says_what_is_left_out():
    model, groups = _timm("test_vit")
    plan, _ = _plan("lora", model, groups)
    targets = plan.model_changes[0].targets
    assert "patch_embed.proj" not in targets and any(t.endswith("attn.proj") for t in targets)
    assert any("patch_embed.proj" in n for n in plan.notes)
    model, groups = _timm("test_efficientnet")
    plan, _ = _plan("lora", model, groups)
    assert not any("conv_dw" in t for t in plan.model_changes[0].targets)
    assert any("depthwise" in n for n in plan.notes)
    model, groups = _tv_vit()
    plan, _ = _plan("lora", model, groups)
    assert all("mlp" in t for t in plan.model_changes[0].targets)
    assert any("MultiheadAttention" in n for n in plan.notes)
    with pytest.raises(ConfigError, match="groups>1"):
        _plan("lora", *_timm("test_efficientnet"), targets="blocks.3.0.conv_dw")
    with pytest.raises(ConfigError, match="names no module"):
        _plan("lora", *_timm("test_vit"), targets="nosuch")


def test_freeze_all_never_drops_parameters_a_selection_asked_for():
    model, groups = _timm("test_resnet")
    phase = Phase("p", 1, all_groups(groups, False), bn="freeze-all",
                  select=[Selection("biases", kinds=("bias",))])
    pgroups = apply_phase(model, groups, phase, 0.1, 0.05)
    bn_biases = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert bn_biases and all(f"{n}.bias" in trains for n in bn_biases)
    sel = next(g for g in pgroups if g["name"].startswith("select:"))
    assert sel["weight_decay"] == 0.0  # biases: no weight decay (timm's habit)


def test_plan_shows_what_trains_by_group_and_selection():
    model, groups = tiny_transfer_model(3)
    plan, job = _plan("bitfit", model, groups)
    d = plan.to_dict(groups, model, 0.01, 0.05)
    ph = d["phases"][0]
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias")
                 and not n.startswith("backbone.source_classifier."))  # the source's: never
    assert ph["selections"][0]["trainable_params"] == biases
    head = model.head.weight.numel()  # the head's bias is in the selection
    assert ph["trainable_params"] == biases + head
    assert ph["trainable_percent"] == pytest.approx(100 * (biases + head) / d["total_params"],
                                                    abs=1e-3)
    assert ph["steps"] == "gradient" and ph["streams"] == [] and not ph["backbone_frozen"]
    model, groups = tiny_transfer_model(3)
    plan, _ = _plan("lora", model, groups)
    apply_model_changes(plan, model, groups)
    d = plan.to_dict(groups, model, 0.01)
    assert d["model_changes"][0]["name"] == "lora" and d["phases"][0]["selections"][0]["tensors"]


def test_validate_plan_accepts_training_free_phases_and_checks_values():
    model, groups = tiny_transfer_model(3)
    free = Phase("fit", 1, all_groups(groups, False), steps="none", fit=lambda ctx: None)
    validate_plan(StrategyPlan("x", [free]), groups)
    for bad, msg in [(dict(steps="none"), "no fit"), (dict(steps="sgd"), "steps"),
                     (dict(streams=("nosuch",)), "unknown stream"),
                     (dict(streams="source"), "tuple"),
                     (dict(select=[Selection("s", kinds=("weights",))]), "kind")]:
        phase = Phase("p", 1, all_groups(groups, False), **bad)
        with pytest.raises(ConfigError, match=msg):
            validate_plan(StrategyPlan("x", [phase]), groups)


def test_core_strategy_base_rejects_unknown_params_and_reads_documented_arguments():
    import zoo_strategies
    from zoo.strategy import Strategy

    assert issubclass(zoo_strategies.Strategy, Strategy)

    class S(Strategy):
        name, defaults = "s", {"k": 1}

    with pytest.raises(ConfigError, match="no parameter 'j'"):
        S().params(tiny_job(strategy={"name": "finetune", "params": {"j": 2}}))
    model, _ = tiny_transfer_model(3)
    model.backbone.weights_source = "none"
    assert S.source_weights(model) is False
    assert S.source_classifier(model) is model.backbone.source_classifier is not None


# -- through the loop --------------------------------------------------------------------------
def _metrics(run_dir):
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def test_bitfit_never_runs_on_cached_features(tmp_path):
    s = run_tiny(make_catalog(), tmp_path, strategy={"name": "bitfit"},
                 data={"augment": "none"}, train={"epochs": 1})
    assert [r["cached_features"] for r in _metrics(s["run_dir"])] == [False]
    assert s["phases"][0]["optimizer_steps"] > 0
    lp = run_tiny(make_catalog(), tmp_path, strategy={"name": "linear-probe"},
                  data={"augment": "none"}, train={"epochs": 1})
    assert [r["cached_features"] for r in _metrics(lp["run_dir"])] == [True]


def test_training_free_phase_runs_fit_and_records_zero_steps(tmp_path):
    from zoo.hookspecs import hookimpl
    from zoo.strategy import Strategy

    seen = {}

    class Means(Strategy):
        """Head = class means of the train features (no gradient step)."""

        name = "means"

        def plan(self, model, groups, job, ctx=None):
            def fit(ctx):
                x, y = ctx.features("train")
                seen["n"] = len(x)
                w = torch.stack([x[y == c].mean(0) for c in range(len(ctx.classes))])
                linear = [m for m in ctx.model.head.modules() if isinstance(m, nn.Linear)][-1]
                linear.weight.data.copy_(w)
                linear.bias.data.zero_()

            return StrategyPlan(self.name, [Phase("fit", 1, all_groups(groups, False),
                                                  steps="none", fit=fit)])

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            register("means", Means())

    s = run_tiny(make_catalog(Plugin()), tmp_path, strategy={"name": "means"})
    assert s["status"] == "completed" and seen["n"] > 0
    assert s["phases"] == [{"name": "fit", "steps": "none", "epochs": 1, "optimizer_steps": 0,
                            "backbone_passes": s["phases"][0]["backbone_passes"]}]
    assert s["phases"][0]["backbone_passes"]["train"] == seen["n"]
    assert len(_metrics(s["run_dir"])) == 1  # val evaluated like an epoch


def test_streams_reach_loss_terms_every_step(tmp_path):
    from zoo.hookspecs import hookimpl
    from zoo.strategy import LossTerm, Strategy

    batches = []

    class Peek(LossTerm):
        name, needs_features = "peek", True

        def forward(self, ctx):
            batches.append(tuple(ctx.streams["target_unlabeled"].shape))
            return ctx.logits.sum() * 0.0

    class Uda(Strategy):
        """Reads unlabeled target images."""

        name = "peek"

        def plan(self, model, groups, job, ctx=None):
            return StrategyPlan(self.name, [Phase("p", 1, all_groups(groups, True),
                                                  loss_terms=[Peek()],
                                                  streams=("target_unlabeled",))])

    class Plugin:
        @hookimpl
        def register_strategies(self, register):
            register("peek", Uda())

    s = run_tiny(make_catalog(Plugin()), tmp_path, strategy={"name": "peek"})
    assert batches and len(batches) == s["phases"][0]["optimizer_steps"]
    assert all(b[1:] == (3, 32, 32) for b in batches)
    assert s["phases"][0]["backbone_passes"]["target_unlabeled"] == sum(b[0] for b in batches)


def test_lora_run_folder_adapter_loads_with_peft_and_weights_run_dir(tmp_path):
    from safetensors.torch import load_file

    from zoo.kit.testing.components import TinyProvider

    s = run_tiny(make_catalog(), tmp_path, strategy={"name": "lora", "params": {"r": 2}})
    run_dir = Path(s["run_dir"])
    adapter = run_dir / "adapter"
    assert {"adapter_model.safetensors", "adapter_config.json", "head.safetensors"} <= {
        p.name for p in adapter.iterdir()}
    state = load_file(run_dir / "model.safetensors")
    assert not any("lora_" in k or "base_layer" in k for k in state)  # merged
    fresh = TinyProvider().create("tiny_cnn")
    fresh.load_state_dict({k[len("backbone."):]: v for k, v in state.items()
                           if k.startswith("backbone.")}, strict=False)
    merged_body = fresh.body
    base = TinyProvider().create("tiny_cnn")  # same init as the run (weights none, seed 0)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    ok = peft.PeftModel.from_pretrained(base.body, str(adapter))
    assert ok is not None  # loads onto a fresh copy of the provider's model
    again = run_tiny(make_catalog(), tmp_path, strategy={"name": "finetune"},
                     weights=str(run_dir))
    assert again["status"] == "completed"
    del merged_body, x


def test_lora_resume_compare_and_export(tmp_path, monkeypatch):
    from zoo.errors import RunInterrupted
    from zoo.runs.export import export_run
    from zoo.tools.compare import compare

    cat = make_catalog()
    full = run_tiny(cat, tmp_path / "a", strategy={"name": "lora", "params": {"r": 2}},
                    train={"epochs": 2}, name="full")
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
    with pytest.raises(RunInterrupted):
        run_tiny(cat, tmp_path / "a", strategy={"name": "lora", "params": {"r": 2}},
                 train={"epochs": 2}, name="part")
    monkeypatch.delenv("ZOO_FAULT")
    from zoo.engine.pipeline import run
    from zoo.kit.testing.components import complete_job

    job = complete_job(tiny_job(strategy={"name": "lora", "params": {"r": 2}},
                                train={"epochs": 2}, out=str(tmp_path / "a"), name="part"), cat)
    resumed = run(job, cat, quiet=True, resume=str(tmp_path / "a" / "part"))
    assert resumed["test"] == pytest.approx(full["test"])
    out = export_run(full["run_dir"], "safetensors", catalog=cat)
    assert Path(out["path"]).is_file()
    result = compare("testing:tiny_cnn", ["bitfit", "lora"], catalog=cat, out=str(tmp_path),
                     flags={"weights": "none", "device": "cpu", "metrics": ["accuracy"],
                            "data": {"name": "tiny", "augment": "none", "num_workers": 0},
                            "train": {"epochs": 1, "batch_size": 16}})
    assert json.dumps(result) and "lora" in json.dumps(result)


def test_hooks_md_bitfit_example_runs_as_a_third_party_strategy(tmp_path):
    import re
    import types

    text = (Path(__file__).resolve().parents[1] / "docs" / "hooks.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "MyBitFit" in b)
    plugin = types.ModuleType("my_bitfit_plugin")
    exec(compile(block, "docs/hooks.md", "exec"), plugin.__dict__)  # the documented code
    s = run_tiny(make_catalog(plugin), tmp_path, strategy={"name": "my-bitfit"})
    assert s["status"] == "completed" and s["phases"][0]["optimizer_steps"] > 0
    plan = json.loads(Path(s["run_dir"], "summary.json").read_text())["params"]
    assert 0 < plan["trainable_percent"] < 100


@pytest.mark.parametrize("name", ["bitfit", "norm-tuning", "lora", "dora"])
def test_check_strategy_passes_the_peft_strategies(name):
    import zoo_strategies
    from zoo.kit.testing import check_strategy

    plan = check_strategy(zoo_strategies.strategy_classes()[name](), name=name)
    assert plan.phases[0].select


def test_check_strategy_fails_a_selection_that_picks_nothing():
    from zoo.kit.testing import check_strategy
    from zoo.strategy import Strategy

    class Nothing(Strategy):
        name = "nothing"

        def plan(self, model, groups, job, ctx=None):
            return StrategyPlan(self.name, [Phase("p", 1, all_groups(groups, False),
                                                  select=[Selection("x", params=("nope*",))])])

    with pytest.raises(AssertionError, match="matches no parameter"):
        check_strategy(Nothing())
