"""The strategy pack, strategy by strategy: plans (phases, trainable groups, LRs, BN), the
contract check of zoo.testing (frozen tensors and BN statistics bitwise unchanged after
steps), the L2-SP / LwF / joint loss terms computed independently, ``--plan`` output for
every strategy, and how ``auto`` chooses and explains."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import zoo_strategies
from zoo.api import load_job, run
from zoo.errors import ConfigError
from zoo.jobspec import deep_merge
from zoo.strategy import LossContext, apply_phase
from zoo.testing import check_strategy, tiny_dataset_factory, tiny_job
from zoo.plan import PlanContext

CLASSES = zoo_strategies.strategy_classes()
ALL = sorted(CLASSES)
TINY = {"model": "timm:test_resnet", "device": "cpu", "metrics": ["accuracy"],
        "train": {"epochs": 1, "batch_size": 32, "scheduler": "constant"},
        "data": {"name": "demo", "params": {"per_class": 20}, "num_workers": 0}}


def resnet(num_classes: int = 3, source: bool = True, arch: str = "test_resnet"):
    """test_resnet + a linear head and its layer groups; ``source``: pretend source weights."""
    from zoo.api import create_model, get_catalog
    from zoo.backbones import build_layer_groups

    torch.manual_seed(0)
    model = create_model(f"timm:{arch}", num_classes, weights="none")
    model.backbone.pretrained_cfg.input_size = 32  # keep the contract check's inputs small
    if source:
        model.backbone.weights_source = "file:test"
    return model, build_layer_groups(model, get_catalog().provider("timm"))


def model_for(name: str):
    """:func:`resnet` with what a strategy needs: the head it fits (``ncm``, ``knn``), a
    (stand-in) text tower (``zero-shot``, ``wise-ft``; the real one: plugins/zoo-openclip's tests)."""
    model, groups = resnet(arch="test_vit" if name == "vpt" else "test_resnet")  # vpt: a ViT
    if name in ("ncm", "knn"):
        import zoo_heads
        from zoo.api import get_catalog
        from zoo.backbones import build_layer_groups

        model.head = getattr(zoo_heads, f"{name}_head")(model.backbone.feature_dim, 3)
        groups = build_layer_groups(model, get_catalog().provider("timm"))
    if name in ("zero-shot", "wise-ft"):
        dim = model.backbone.feature_dim
        model.backbone.encode_text = lambda texts: torch.randn(len(texts), dim)
    return model, groups


def job_for(name: str, epochs: int = 2, bn=None, **params):
    return tiny_job(strategy={"name": name, "params": params, "bn": bn},
                    train={"epochs": epochs})


def tiny_bundle(classes: int = 3, per_class: int = 12):
    """A DataBundle of the zoo.testing ``tiny`` dataset as float tensors (no transforms)."""
    from zoo.engine.data import DataBundle
    from zoo.jobspec import DataSpec

    spec = DataSpec(name="tiny", params={"classes": classes, "per_class": per_class},
                    val_split=0.25, test_split=0.25)

    def to_float(img):
        return img.float() / 255.0

    splits = {s: tiny_dataset_factory(spec, s, to_float, 0) for s in ("train", "val", "test")}
    return DataBundle(splits["train"], splits["val"], splits["test"],
                      splits["train"].classes, [])


def trainable(phase) -> list[str]:
    return phase.trainable_groups()


# -- every strategy passes zoo.testing's contract check ---------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_contract_frozen_bitwise_and_bn(name):
    """check_strategy: per phase, frozen params and fixed BN statistics bitwise unchanged."""
    strategy = CLASSES[name]()
    model, groups = model_for(name)
    strategy_ctx = PlanContext()
    if name == "joint":
        strategy_ctx = PlanContext(source=tiny_bundle(4))
        job = dataclasses.replace(job_for(name), source_data=tiny_job().data)
    else:
        job = job_for(name)
    plan = check_strategy(strategy, model=model, groups=groups, job=job, name=name,
                          ctx=strategy_ctx)
    assert plan.strategy == name


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("joint", "auto")])
def test_bn_policy_is_honoured_by_every_strategy(name):
    model, groups = model_for(name)
    for bn in ("train", "freeze-stats", "freeze-all"):
        plan = CLASSES[name]().plan(model, groups, job_for(name, epochs=3, bn=bn))
        for phase in plan.phases:
            expected = "freeze-all" if phase.backbone_frozen() else bn
            assert phase.bn == expected, (name, phase.name, bn)


@pytest.mark.parametrize("name,param", [("lp-ft", "probe_epoch"), ("partial", "kk"),
                                        ("layer-decay", "decy"), ("l2-sp", "alfa"),
                                        ("lwf", "lamb"), ("auto", "budgt")])
def test_unknown_param_says_did_you_mean(name, param):
    model, groups = resnet()
    with pytest.raises(ConfigError, match="did you mean"):
        CLASSES[name]().plan(model, groups, job_for(name, **{param: 1}))


# -- schedules ---------------------------------------------------------------------------------
def test_lp_ft_probe_then_all_at_lower_lr():
    model, groups = resnet()
    job = job_for("lp-ft", epochs=5, probe_epochs=2, ft_lr_mult=0.1, probe_lr_mult=10)
    probe, ft = CLASSES["lp-ft"]().plan(model, groups, job).phases
    lr = job.train.lr
    assert (probe.name, probe.epochs, probe.bn, trainable(probe)) == ("probe", 2, "freeze-all",
                                                                      ["head"])
    assert probe.lr == pytest.approx(lr * 10) and probe.backbone_frozen()
    assert ft.epochs == 3 and ft.lr == pytest.approx(lr * 0.1)
    assert trainable(ft) == [g.name for g in groups]
    assert {s.lr_mult for s in ft.groups.values()} == {1.0}
    one = CLASSES["lp-ft"]().plan(model, groups, job_for("lp-ft", epochs=1))
    assert [p.epochs for p in one.phases] == [1, 1] and any("= 2" in n for n in one.notes)


def test_lp_ft_probes_at_the_linear_probe_lr_not_the_jobs():
    model, groups = resnet()
    for lr in (1e-3, 1e-2):  # the job's LR is a fine-tuning LR: the probe does not scale
        job = tiny_job(strategy={"name": "lp-ft"}, train={"epochs": 3, "lr": lr})
        probe, ft = CLASSES["lp-ft"]().plan(model, groups, job).phases
        assert probe.lr == pytest.approx(0.01) and ft.lr == pytest.approx(lr * 0.1)
    probe, _ = CLASSES["lp-ft"]().plan(model, groups, job_for("lp-ft", probe_lr=0.05)).phases
    assert probe.lr == pytest.approx(0.05)


def test_gradual_unfreeze_schedule():
    model, groups = resnet()
    body = [g.name for g in groups if g.name != "head"]
    plan = CLASSES["gradual-unfreeze"]().plan(model, groups, job_for("gradual-unfreeze",
                                                                     epochs=8))
    assert [p.epochs for p in plan.phases] == [1, 1, 1, 1, 1, 3]
    assert [p.name for p in plan.phases] == ["head"] + [f"+{n}" for n in reversed(body)]
    for k, phase in enumerate(plan.phases):  # stage k: the head + the top k groups
        assert trainable(phase) == body[len(body) - k:] + ["head"]
    assert plan.phases[0].bn == "freeze-all"
    short = CLASSES["gradual-unfreeze"]().plan(model, groups, job_for(
        "gradual-unfreeze", epochs=3, epochs_per_stage=2))
    assert [(p.name, p.epochs) for p in short.phases] == [("head", 2), (f"+{body[-1]}", 1)]
    assert any("stay frozen" in n for n in short.notes)


def test_gradual_unfreeze_run_keeps_never_unfrozen_groups_bitwise(tmp_path):
    import timm

    torch.manual_seed(5)
    path = tmp_path / "src.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    job = load_job(flags=deep_merge(TINY, {"out": str(tmp_path), "name": "gu",
                                           "weights": str(path), "train": {"epochs": 2},
                                           "strategy": {"name": "gradual-unfreeze"}}))
    summary = run(job)
    run_dir = Path(summary["run_dir"])
    phases = [json.loads(x)["phase"]
              for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["head", "+blocks.3"]
    from safetensors.torch import load_file

    final = load_file(str(run_dir / "model.safetensors"))
    source = torch.load(path, weights_only=True)
    for key, value in source.items():
        if key.startswith(("conv1", "bn1", "layer1", "layer2", "layer3")):
            assert torch.equal(final[f"backbone.body.{key}"], value), key
        elif key.startswith("layer4") and summary["best_epoch"] == 2:  # saved: best epoch
            assert not torch.equal(final[f"backbone.body.{key}"], value), key


def test_partial_last_k_groups():
    model, groups = resnet()
    body = [g.name for g in groups if g.name != "head"]
    for k in range(len(body) + 1):
        (phase,) = CLASSES["partial"]().plan(model, groups, job_for("partial", k=k)).phases
        assert trainable(phase) == body[len(body) - k:] + ["head"]
        assert phase.bn == ("freeze-all" if k == 0 else "train")
    with pytest.raises(ConfigError, match="has only 5 layer groups"):
        CLASSES["partial"]().plan(model, groups, job_for("partial", k=6))
    with pytest.raises(ConfigError, match="must be an integer"):
        CLASSES["partial"]().plan(model, groups, job_for("partial", k="two"))


def test_layer_decay_multipliers():
    model, groups = resnet()
    plan = CLASSES["layer-decay"]().plan(model, groups, job_for("layer-decay", decay=0.5))
    d = plan.to_dict(groups, model, 1.0)
    lrs = [g["lr"] for g in d["phases"][0]["groups"]]
    depth = len(groups) - 1
    assert lrs == pytest.approx([0.5 ** (depth - i) for i in range(depth)] + [1.0])
    with pytest.raises(ConfigError, match="decay"):
        CLASSES["layer-decay"]().plan(model, groups, job_for("layer-decay", decay=1.5))


def test_finetune_variants_auto_lr_mult_follows_source_weights():
    for source, mult in ((True, 0.1), (False, 1.0)):
        model, groups = resnet(source=source)
        for name in ("finetune", "l2-sp", "lwf", "partial", "gradual-unfreeze"):
            plan = CLASSES[name]().plan(model, groups, job_for(name))
            backbone = [s.lr_mult for n, s in plan.phases[-1].groups.items()
                        if n != "head" and s.trainable]
            assert set(backbone) == {mult}, (name, source)


# -- L2-SP -------------------------------------------------------------------------------------
def _ctx(model, x=None, y=None):
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)) if x is None else x
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if y is None else y
    features = model.backbone(x)
    return LossContext(model, x, y, features, model.head(features))


def test_l2sp_penalty_zero_at_start_then_grows_and_matches_formula():
    model, groups = resnet()
    job = job_for("l2-sp", alpha=0.3, beta=0.02)
    (phase,) = CLASSES["l2-sp"]().plan(model, groups, job).phases
    (term,) = phase.loss_terms
    assert term.needs_features is False and list(term.parameters()) == []
    source = {n: p.detach().clone() for n, p in model.backbone.body.named_parameters()}

    def head_sq():
        return sum(p.detach().pow(2).sum() for p in model.head.parameters() if p.dim() > 1)

    model.eval()
    penalty0 = term.sp(model)
    assert penalty0.item() == 0.0
    assert term(_ctx(model)).item() == pytest.approx(0.5 * 0.02 * head_sq().item())
    optimizer = torch.optim.SGD(apply_phase(model, groups, phase, 0.05), lr=0.05)
    seen = []
    for _ in range(4):
        ctx = _ctx(model)
        loss = F.cross_entropy(ctx.logits, ctx.targets)  # task loss only: drift from source
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.append(term.sp(model).item())
    assert 0 < seen[0] < seen[-1]
    manual = sum((p.detach() - source[n]).pow(2).sum()
                 for n, p in model.backbone.body.named_parameters())
    expected = 0.5 * 0.3 * manual + 0.5 * 0.02 * head_sq()
    assert term(_ctx(model)).item() == pytest.approx(expected.item(), rel=1e-5)


# -- LwF ---------------------------------------------------------------------------------------
def _perturb(module, scale=0.05):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_lwf_term_is_lambda_times_kl_to_the_frozen_source():
    model, groups = resnet()
    reference = copy.deepcopy(model.backbone).eval()  # the source model, made independently
    plan = CLASSES["lwf"]().plan(model, groups, job_for("lwf", lam=2.5, temperature=3.0))
    (term,) = plan.phases[0].loss_terms
    assert list(term.parameters()) == [] and not any("teacher" in k for k in term.state_dict())
    model.eval()
    assert term(_ctx(model)).item() == pytest.approx(0.0, abs=1e-6)  # nothing forgotten yet
    _perturb(model.backbone.body)
    ctx = _ctx(model)
    with torch.no_grad():
        target = reference.source_logits(reference(ctx.inputs))
    student = model.backbone.source_logits(ctx.features)
    kl = F.kl_div(F.log_softmax(student / 3.0, 1), F.softmax(target / 3.0, 1),
                  reduction="batchmean") * 9.0
    assert kl.item() > 0
    assert term(ctx).item() == pytest.approx(2.5 * kl.item(), rel=1e-5)
    task = F.cross_entropy(ctx.logits, ctx.targets)
    assert (task + term(ctx)).item() - task.item() == pytest.approx(2.5 * kl.item(), rel=1e-4)
    # the frozen copy follows .to() (dtype here) but never trains
    term.to(torch.float64)
    assert next(term.teacher.parameters()).dtype == torch.float64
    assert not any(p.requires_grad for p in term.teacher.parameters())


def test_lwf_without_source_classifier_is_a_config_error():
    model, groups = resnet()
    model.backbone.source_classifier = None  # e.g. a provider that dropped it
    with pytest.raises(ConfigError, match="source classifier"):
        CLASSES["lwf"]().plan(model, groups, job_for("lwf"))


# -- joint -------------------------------------------------------------------------------------
def test_joint_needs_source_data():
    model, groups = resnet()
    strategy = CLASSES["joint"]()
    strategy_ctx = PlanContext()
    with pytest.raises(ConfigError, match="--source-data"):
        strategy.plan(model, groups, job_for("joint"), strategy_ctx)


def test_joint_term_is_lambda_times_source_ce_and_its_head_trains():
    model, groups = resnet()
    strategy = CLASSES["joint"]()
    strategy_ctx = PlanContext(source=tiny_bundle(4))
    job = dataclasses.replace(job_for("joint", lam=0.7), source_data=tiny_job().data)
    (phase,) = strategy.plan(model, groups, job, strategy_ctx).phases
    (term,) = phase.loss_terms
    assert term.head.out_features == 4 and term.head.in_features == model.backbone.feature_dim
    param_groups = apply_phase(model, groups, phase, 0.01)
    extra = [g for g in param_groups if g["name"] == "term:joint-source"]
    assert extra and {id(p) for p in extra[0]["params"]} == {id(p) for p in term.parameters()}
    model.eval()
    x_src, y_src = term.next_batch()
    term.next_batch = lambda: (x_src, y_src)  # pin the source batch
    ctx = _ctx(model)
    expected = 0.7 * F.cross_entropy(term.head(model.backbone(x_src)), torch.as_tensor(y_src))
    assert term(ctx).item() == pytest.approx(expected.item(), rel=1e-6)
    # the iterator cycles through the source train split forever
    fresh = CLASSES["joint"]()
    fresh_ctx = PlanContext(source=tiny_bundle(4))
    (t2,) = fresh.plan(model, groups, job, fresh_ctx).phases[0].loss_terms
    n = len(t2.loader)
    assert all(t2.next_batch()[0].shape[1:] == (3, 32, 32) for _ in range(2 * n + 1))


def test_joint_and_lwf_and_l2sp_run_through_the_loop(tmp_path):
    for name, over in (("joint", {"source_data": {"name": "demo", "params": {
                            "per_class": 8, "classes": 4, "data_seed": 9}}}),
                       ("lwf", {}), ("l2-sp", {})):
        job = load_job(flags=deep_merge(TINY, {"out": str(tmp_path), "name": name,
                                               "weights": "none", "strategy": {"name": name},
                                               **over}))
        summary = run(job)
        assert summary["status"] == "completed"
        rec = json.loads((Path(summary["run_dir"]) / "metrics.jsonl").read_text().split("\n")[0])
        n_groups = 6 + (1 if name == "joint" else 0)  # 5 body groups + head (+ source head)
        assert len(rec["lr"]) == n_groups and rec["phase"] == name


# -- --plan for every strategy -----------------------------------------------------------------
def _cli(capsys, *args):
    from zoo.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    return code, *capsys.readouterr()


def _plan_args(name):
    model = "timm:test_vit" if name == "vpt" else "timm:test_resnet"  # vpt needs a ViT
    args = ["run", model, "-s", name, "--weights", "none", "--epochs", "3",
            "--set", "data.params.per_class=20", "--plan"]
    if name == "joint":
        args += ["--source-data", "demo", "--set", "source_data.params.per_class=8"]
    return args


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("zero-shot", "wise-ft")])
def test_plan_output_for_every_strategy(capsys, monkeypatch, name):  # those two need a text
    # tower: plugins/zoo-openclip/tests run their --plan
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width
    code, out, err = _cli(capsys, *_plan_args(name), "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["strategy"] == name and plan["epochs"] == sum(p["epochs"] for p in plan["phases"])
    code, text, err = _cli(capsys, *_plan_args(name))
    assert code == 0, err
    assert f"plan {name}" in text
    for phase in plan["phases"]:
        assert f"phase '{phase['name']}'" in text
        for term in phase["loss_terms"]:
            assert term in text
        for g in phase["groups"]:
            assert g["name"] in text
    for note in plan["notes"]:
        assert note.split()[0] in text
    expected_terms = {"l2-sp": ["l2-sp"], "lwf": ["lwf"], "joint": ["joint-source"],
                      "dann": ["dann"], "mcc": ["mcc"]}
    assert [t for p in plan["phases"] for t in p["loss_terms"]] == expected_terms.get(name, [])
    if name == "auto":
        assert "auto chose 'finetune'" in text


def test_joint_plan_without_source_data_names_the_flag(capsys):
    code, out, err = _cli(capsys, "run", "timm:test_resnet", "-s", "joint", "--weights", "none",
                          "--plan")
    assert code == 2 and "--source-data" in err


# -- auto ---------------------------------------------------------------------------------------
def test_auto_random_init_leans_to_finetune_without_trials():
    model, groups = resnet(source=False)
    auto = CLASSES["auto"]()
    auto_ctx = PlanContext(data=tiny_bundle())
    plan = auto.plan(model, groups, job_for("auto", epochs=3), auto_ctx)
    assert plan.strategy == "auto" and [p.name for p in plan.phases] == ["finetune"]
    assert plan.notes[0].startswith("auto chose 'finetune': no source weights")
    assert plan.choice.trials == [] and plan.choice.chosen == "finetune"


def test_auto_with_source_weights_runs_trials_explains_and_leaves_model_alone():
    model, groups = resnet(source=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    auto = CLASSES["auto"]()
    auto_ctx = PlanContext(data=tiny_bundle(), device=torch.device("cpu"))
    plan = auto.plan(model, groups, job_for("auto", epochs=3,
                                            candidates="linear-probe,finetune,lp-ft"), auto_ctx)
    assert {t.strategy for t in plan.choice.trials} == {"linear-probe", "finetune", "lp-ft"}
    chosen = plan.notes[0].split("'")[1]
    assert chosen in ("linear-probe", "finetune", "lp-ft")
    assert any(n.startswith("trials: successive halving") for n in plan.notes)
    assert any(n.startswith("data: 3 classes") for n in plan.notes)
    # cheap candidates are scored as they run, paid ones on rungs; the winner is one of the
    # two finalists (the paid one's last rung, the best cheap one), never a pruned one
    paid = [c for c in plan.choice.trials if c.cost != "cheap"]
    last = max(r for c in paid for r in c.scores)
    finalists = {c.strategy for c in paid if last in c.scores} | {"linear-probe"}
    assert chosen in finalists
    assert all("full" in c.scores for c in plan.choice.trials if c.cost == "cheap")
    expected = {"linear-probe": ["probe"], "finetune": ["finetune"],
                "lp-ft": ["probe", "finetune"]}[chosen]
    assert [p.name for p in plan.phases] == expected
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # trials used copies
    assert all(p.requires_grad for p in model.head.parameters())


def test_auto_choice_rule_and_fallbacks():
    from zoo_strategies.auto_halving import TrialResult, choose

    clear = [TrialResult("linear-probe", 0.80, 0.5, 1, ""), TrialResult("lp-ft", 0.90, 0.6, 1, ""),
             TrialResult("finetune", 0.70, 0.4, 1, "")]
    assert choose(clear, 20)[0] == "lp-ft"
    tied = [TrialResult("linear-probe", 0.90, 0.3, 1, ""), TrialResult("lp-ft", 0.95, 0.6, 1, "")]
    name, why = choose(tied, 20)  # 0.05 = one of 20 val images: a tie, lower loss wins
    assert name == "linear-probe" and "ties" in why
    model, groups = resnet(source=True)
    auto = CLASSES["auto"]()
    auto_ctx = PlanContext(data=None)
    plan = auto.plan(model, groups, job_for("auto"), auto_ctx)
    assert plan.notes[0].startswith("auto chose 'lp-ft': no val split")
    with pytest.raises(ConfigError, match="candidate 'bogus'"):
        auto.plan(model, groups, job_for("auto", candidates="finetune,bogus"), auto_ctx)
    only = auto.plan(model, groups, job_for("auto", candidates="linear-probe", lr_factor=1),
                     auto_ctx)
    assert [p.name for p in only.phases] == ["probe"] and only.phases[0].lr == 0.01


def test_auto_linear_probe_choice_trains_on_unaugmented_images():
    model, groups = resnet(source=True)
    bundle = tiny_bundle()
    bundle.val.transform = val_transform = (lambda img: img.float() / 255.0)
    auto = CLASSES["auto"]()
    auto_ctx = PlanContext(data=bundle)
    job = tiny_job(strategy={"name": "auto", "params": {"candidates": "linear-probe",
                                                        "lr_factor": 1}},
                   data={"augment": "light"})
    train_transform = bundle.train.transform
    plan = auto.plan(model, groups, job, auto_ctx)
    assert plan.augment is False and plan.to_dict(groups, model, 0.01)["augment"] is False
    assert bundle.train.transform is train_transform  # the context's data is left alone
    assert any("un-augmented" in n for n in plan.notes)
    from zoo.engine.data import eval_view

    view = eval_view(bundle.train, bundle.val)  # what the run reads train through
    assert view.transform is val_transform and bundle.train.transform is train_transform
    assert len(view) == len(bundle.train)
