"""Across domains: the ``shift:`` datasets and the UDA strategies ``adabn``, ``dann``, ``mcc``.

The loss terms are tested directly on a :class:`zoo.strategy.LossContext` built here (the
loop fills ``ctx.streams`` the same way: one unlabeled target batch per step).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo_datasets
from zoo.errors import ConfigError, DataError
from zoo.jobspec import DataSpec
from zoo.kit.testing import make_catalog, tiny_job, tiny_transfer_model
from zoo.strategy import LossContext, PhaseContext, validate_plan
from zoo_datasets import memo
from zoo_datasets.shift import TRANSFORMS
from zoo_strategies.domain_terms import (DANNTerm, MCCTerm, adabn_fit, dann_coefficient,
                                         mcc_loss, reverse_grad)

SPLITS = ("train", "val", "test")


pytestmark = pytest.mark.usefixtures("fresh_dataset_memo")


def shifted(base="digits", split="test", **params):
    return zoo_datasets.shift_dataset(DataSpec(name=f"shift:{base}", params=params), split,
                                      None, 0)


def stack(ds, n=60):
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))]).float()


# -- shift: datasets ------------------------------------------------------------------------
def test_shift_keeps_labels_splits_and_ids_of_the_wrapped_dataset():
    for split in SPLITS:
        plain = zoo_datasets.digits_dataset(DataSpec(name="digits"), split, None, 0)
        ds = shifted(split=split, transform="invert", severity=2)
        assert ds.targets == plain.targets and ds.sample_ids == plain.sample_ids
        assert ds.classes == plain.classes and ds.split == split
        image, label = ds[0]
        assert image.dtype == torch.uint8 and image.shape == plain[0][0].shape
        assert label == plain.targets[0]


@pytest.mark.parametrize("name", TRANSFORMS)
def test_every_transform_grows_with_severity_and_is_deterministic(name):
    base = "demo" if name in ("color", "grayscale") else "digits"  # digits are grey already
    plain = stack(zoo_datasets.demo_dataset(DataSpec(name="demo"), "test", None, 0)
                  if base == "demo" else
                  zoo_datasets.digits_dataset(DataSpec(name="digits"), "test", None, 0))
    gaps = []
    for severity in (1, 3, 5):
        memo.clear()
        x = stack(shifted(base, transform=name, severity=severity))
        gaps.append((x - plain).abs().mean().item())
    assert 0 < gaps[0] < gaps[1] < gaps[2], (name, gaps)
    a, b = shifted(base, transform=name, severity=4), shifted(base, transform=name, severity=4)
    assert torch.equal(a[3][0], b[3][0])


def test_random_draws_follow_the_sample_not_the_split():
    """An image shifts the same way whichever split (split seed) it lands in."""
    a = zoo_datasets.shift_dataset(DataSpec(name="shift:digits",
                                            params={"transform": "noise"}), "train", None, 0)
    b = zoo_datasets.shift_dataset(DataSpec(name="shift:digits",
                                            params={"transform": "noise"}), "train", None, 1)
    common = sorted(set(a.sample_ids) & set(b.sample_ids))[:5]
    for sid in common:
        assert torch.equal(a[a.sample_ids.index(sid)][0], b[b.sample_ids.index(sid)][0])
    c = zoo_datasets.shift_dataset(DataSpec(name="shift:digits", params={
        "transform": "noise", "shift_seed": 1}), "train", None, 0)
    assert not torch.equal(a[0][0], c[0][0])


def test_shift_chains_transforms_and_passes_other_params_on():
    ds = shifted("demo", transform="rotate+noise", severity=2, size=24, per_class=5)
    assert ds[0][0].shape == (3, 24, 24) and len(ds.classes) == 8


@pytest.mark.parametrize("name,params,needle", [
    ("shift:digits", {}, "data.params.transform"),
    ("shift:digits", {"transform": "invrt"}, "did you mean invert"),
    ("shift:digits", {"transform": "blur", "severity": 6}, "from 1 to 5"),
    ("shift:", {"transform": "blur"}, "shift:NAME"),
    ("shift:shift:digits", {"transform": "blur"}, "joined by '\\+'"),
    ("shift:digits", {"transform": "blur", "colour": 1}, "digits parameter 'colour'"),
])
def test_shift_errors_name_the_fix(name, params, needle):
    with pytest.raises(DataError, match=needle):
        zoo_datasets.shift_dataset(DataSpec(name=name, params=params), "train", None, 0)


def test_shift_resolves_through_the_catalog():
    catalog = make_catalog()
    comp = catalog.get("datasets", "shift:digits")
    assert comp.name == "shift" and comp.options.get("prefix") is True
    ds = comp.obj(spec=DataSpec(name="shift:demo", params={"transform": "background",
                                                           "per_class": 4}),
                  split="train", transform=None, seed=0)
    assert len(ds) > 0 and len(ds.classes) == 8


# -- the loss terms, on a LossContext built here --------------------------------------------
def _ctx(model, source, target, step=0, epoch=1):
    feats = model.backbone(source)
    ctx = LossContext(model, source, torch.zeros(len(source), dtype=torch.long), feats,
                      model.head(feats), step, epoch)
    ctx.streams = {"target_unlabeled": target}
    return ctx


def test_gradient_reversal_is_identity_forward_and_negated_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_grad(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))
    assert dann_coefficient(0) == 0 and 0.99 < dann_coefficient(1) < 1
    assert dann_coefficient(0.25) < dann_coefficient(0.5)


def test_dann_trains_its_classifier_and_reverses_the_backbone_gradient():
    torch.manual_seed(0)
    term = DANNTerm(feature_dim=4, hidden=8, lam=1.0)
    term.eval()  # no dropout: the two backward passes below see the same network
    source = torch.randn(8, 4, requires_grad=True)
    target = (torch.randn(8, 4) + 2).requires_grad_(True)
    term.domain_loss(source, target, coeff=1.0).backward()
    reversed_grad = source.grad.clone()
    source.grad = None
    term.zero_grad()
    feats = torch.cat([source, target])
    labels = torch.cat([torch.zeros(8), torch.ones(8)])
    nn.functional.binary_cross_entropy_with_logits(term.domain(feats).squeeze(1),
                                                   labels).backward()
    assert torch.allclose(reversed_grad, -source.grad, atol=1e-6)
    # the domain classifier itself learns to separate the domains (its gradient is not reversed)
    term.train()
    opt = torch.optim.Adam(term.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        term.domain_loss(source.detach(), target.detach(), 1.0).backward()
        opt.step()
    term.eval()
    term.domain_loss(source.detach(), target.detach(), 1.0)
    assert float(term.last["domain_accuracy"]) > 0.9


def test_dann_term_reads_the_target_stream_and_ramps_its_coefficient():
    torch.manual_seed(0)
    model, _ = tiny_transfer_model()
    term = DANNTerm(model.backbone.feature_dim, 8, lam=1.0, epochs=2)
    src, tgt = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    loss = term(_ctx(model, src, tgt, epoch=1))
    assert loss.dim() == 0 and torch.isfinite(loss)
    early = term.last["coefficient"]
    loss.backward()
    assert model.backbone.body.stem[0].weight.grad is not None
    assert term.domain[0].weight.grad is not None
    term(_ctx(model, src, tgt, epoch=2, step=0))
    assert term.last["coefficient"] > early > 0
    ctx = _ctx(model, src, tgt)
    ctx.streams = {}
    with pytest.raises(ConfigError, match="target_unlabeled"):
        term(ctx)


def test_mcc_is_zero_for_confident_distinct_predictions_and_high_for_confusion():
    confident = torch.eye(4).repeat(3, 1) * 50.0  # every class predicted, each sure
    assert mcc_loss(confident).item() < 1e-4
    uniform = torch.zeros(12, 4)
    assert mcc_loss(uniform).item() == pytest.approx(3 / 4, abs=1e-6)  # (C−1)/C
    collapsed = torch.tensor([[5.0, 4.9, 0, 0]]).repeat(12, 1)
    assert mcc_loss(collapsed) > mcc_loss(confident) + 0.3


def test_mcc_term_lowers_the_class_confusion_of_target_predictions():
    torch.manual_seed(0)
    model, _ = tiny_transfer_model(num_classes=3)
    with torch.no_grad():  # away from uniform predictions (a stationary point of L_MCC)
        model.head.weight.mul_(30.0)
    term = MCCTerm(mu=1.0)
    target = torch.rand(16, 3, 32, 32)
    src = torch.rand(4, 3, 32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(15):
        opt.zero_grad()
        loss = term(_ctx(model, src, target, step=step))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


# -- adabn ---------------------------------------------------------------------------------
def _phase_ctx(model, batches, logs):
    return PhaseContext(model=model, job=None, device=torch.device("cpu"), classes=[],
                        features=lambda split: None,
                        loader=lambda name: batches if name == "target_unlabeled" else [],
                        log=logs.append)


def test_adabn_replaces_batchnorm_statistics_by_the_targets_and_nothing_else():
    torch.manual_seed(0)
    model, _ = tiny_transfer_model()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    target = [(torch.rand(8, 3, 32, 32) * 0.2 + 0.8, torch.zeros(8)) for _ in range(3)]
    logs: list = []
    info = adabn_fit(_phase_ctx(model, target, logs), None)
    assert info == {"layers": 2, "images": 24}
    stem_conv, stem_bn = model.backbone.body.stem[0], model.backbone.body.stem[1]
    with torch.no_grad():
        out = stem_conv(torch.cat([x for x, _ in target]))
    assert torch.allclose(stem_bn.running_mean, out.mean(dim=(0, 2, 3)), atol=1e-4)
    assert stem_bn.momentum == 0.1 and not model.training
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    assert "2 BatchNorm layers" in logs[0]


def test_adabn_says_it_does_nothing_on_a_model_without_batchnorm():
    model, _ = tiny_transfer_model()
    body = model.backbone.body
    body.stem[1] = nn.Identity()
    body.stage1[1] = nn.Identity()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logs: list = []
    assert adabn_fit(_phase_ctx(model, [torch.rand(2, 3, 32, 32)], logs))["layers"] == 0
    assert "nothing to re-estimate" in logs[0]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- the strategies' plans --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["adabn", "dann", "mcc"])
def test_uda_plans_read_the_target_stream_and_name_their_validator(name):
    catalog = make_catalog()
    strategy = catalog.get("strategies", name).obj
    model, groups = tiny_transfer_model()
    job = tiny_job(strategy={"name": name})
    plan = strategy.plan(model, groups, job)
    validate_plan(plan, groups)
    assert all("target_unlabeled" in p.streams for p in plan.phases if p.name != "source")
    assert any("source val accuracy" in n for n in plan.notes)
    assert strategy.auto.needs == ("target_unlabeled",)
    if name == "adabn":
        assert [p.steps for p in plan.phases] == ["gradient", "none"]
        assert plan.phases[1].fit is not None
    else:
        assert [t.name for t in plan.phases[0].loss_terms] == [name]


def test_adabn_plan_on_a_model_without_batchnorm_says_so():
    catalog = make_catalog()
    model, groups = tiny_transfer_model()
    model.backbone.body.stem[1] = nn.Identity()
    model.backbone.body.stage1[1] = nn.Identity()
    plan = catalog.get("strategies", "adabn").obj.plan(model, groups, tiny_job(
        strategy={"name": "adabn", "params": {"base": "linear-probe"}}))
    assert any("no BatchNorm" in n for n in plan.notes)
    with pytest.raises(ConfigError, match="'base' must be"):
        catalog.get("strategies", "adabn").obj.plan(model, groups, tiny_job(
            strategy={"name": "adabn", "params": {"base": "lora"}}))


# -- end to end: a tiny UDA run (labels only in the source) -------------------------------------
@pytest.mark.parametrize("name", ["adabn", "dann", "mcc"])
def test_uda_run_trains_on_the_source_reads_the_target_and_tests_on_it(tmp_path, name):
    from zoo.engine.pipeline import run
    from zoo.layering import complete_job

    catalog = make_catalog()
    job = tiny_job(out=str(tmp_path), strategy={"name": name}, head={"name": "linear"},
                   data={"name": "shift:digits", "max_per_class": 4, "test_split": 0.05,
                         "params": {"transform": "noise", "severity": 3}},
                   source_data={"name": "digits", "max_per_class": 4, "num_workers": 0,
                                "val_split": 0.05},
                   train={"epochs": 1, "batch_size": 20})
    summary = run(complete_job(job, catalog), catalog, quiet=True)
    assert summary["status"] == "completed"
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    phases = {p["name"]: p for p in summary["phases"]}
    n_val = len(zoo_datasets.digits_dataset(DataSpec(name="digits", val_split=0.05), "val",
                                            None, 0))
    if name == "adabn":
        assert list(phases) == ["source", "adabn"]
        assert phases["source"]["backbone_passes"]["train"] == 40  # 4 per class, source
    else:
        passes = phases[name]["backbone_passes"]
        assert passes["train"] == 40 and passes["target_unlabeled"] == 40
    # the validator is the source's val split: no target label is read before the test
    assert phases[next(iter(phases))]["backbone_passes"]["val"] == n_val


def test_photos_dataset_and_its_grayscale_shift():
    splits = {s: zoo_datasets.photos_dataset(DataSpec(name="photos", params={
        "size": 32, "per_class": 10}), s, None, 0) for s in SPLITS}
    assert splits["train"].classes[:2] == ["astronaut", "chelsea"]
    assert sum(len(d) for d in splits.values()) == 60
    assert not set(splits["train"].sample_ids) & set(splits["test"].sample_ids)
    image = splits["train"][0][0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    grey = shifted("photos", split="train", transform="grayscale", severity=5, size=32,
                   per_class=10)
    g = grey[0][0].float()
    assert torch.allclose(g[0], g[1], atol=1) and torch.allclose(g[1], g[2], atol=1)
    with pytest.raises(DataError, match="photos parameter 'sise'"):
        zoo_datasets.photos_dataset(DataSpec(name="photos", params={"sise": 3}), "train",
                                    None, 0)


# -- target_data: a folder of unlabeled images --------------------------------------------------
def _write_images(folder, n, size=12, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            folder / f"{i:03d}.png")


def test_unlabeled_folder_reads_any_layout_and_only_train_of_split_folders(tmp_path):
    flat, nested, split = tmp_path / "flat", tmp_path / "nested", tmp_path / "split"
    _write_images(flat, 5)
    (flat / "notes.txt").write_text("not an image")
    _write_images(nested / "a" / "deeper", 3)
    _write_images(nested / "b", 2)
    _write_images(split / "train" / "cat", 4)
    _write_images(split / "test" / "cat", 6)
    for root, n in ((flat, 5), (nested, 5), (split, 4)):
        spec = DataSpec(name="unlabeled", path=str(root))
        train = zoo_datasets.unlabeled_dataset(spec, "train", None, 0)
        assert len(train) == n and train.classes == ["unlabeled"]
        assert set(train.targets) == {0} and train[0][0].shape == (3, 12, 12)
        assert len(zoo_datasets.unlabeled_dataset(spec, "test", None, 0)) == 0
    assert all(i.startswith("train/") for i in zoo_datasets.unlabeled_dataset(
        DataSpec(name="unlabeled", path=str(split)), "train", None, 0).sample_ids)
    flat_train = zoo_datasets.unlabeled_dataset(DataSpec(name="unlabeled", path=str(flat)),
                                                "train", None, 0)
    assert any("unreadable" in w and "notes.txt" in w for w in flat_train.warnings)
    capped = zoo_datasets.unlabeled_dataset(
        DataSpec(name="unlabeled", path=str(flat), max_per_class=2), "train", None, 0)
    assert len(capped) == 2


def test_unlabeled_folder_without_images_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable images.*target_data needs a folder"):
        zoo_datasets.unlabeled_dataset(DataSpec(name="unlabeled", path=str(tmp_path / "empty")),
                                       "train", None, 0)


def test_target_data_path_is_served_by_the_unlabeled_dataset():
    from zoo.api import load_job

    catalog = make_catalog()
    assert catalog.unlabeled_path_dataset() == "unlabeled"
    assert catalog.resolve_dataset_arg("./target", unlabeled=True) == {
        "name": "unlabeled", "path": "./target"}
    assert catalog.resolve_dataset_arg("./target")["name"] == "folder"
    job = load_job(flags={"target_data": {"path": "./target"}})
    assert job.target_data.name == "unlabeled"


def test_uda_run_adapts_to_a_flat_folder_of_target_images(tmp_path):
    from zoo.engine.pipeline import run
    from zoo.layering import complete_job

    target = tmp_path / "target"
    _write_images(target, 30, size=16)
    catalog = make_catalog()
    job = tiny_job(out=str(tmp_path / "runs"), strategy={"name": "mcc"},
                   head={"name": "linear"},
                   data={"name": "digits", "max_per_class": 4, "test_split": 0.05},
                   source_data={"name": "digits", "max_per_class": 4, "val_split": 0.05},
                   target_data={"name": "unlabeled", "path": str(target), "num_workers": 0},
                   train={"epochs": 1, "batch_size": 10})
    summary = run(complete_job(job, catalog), catalog, quiet=True)
    assert summary["status"] == "completed"
    # one target batch (10) per source step (40 images / 10), cycling through the 30 images
    assert summary["phases"][0]["backbone_passes"]["target_unlabeled"] == 40


def test_cli_run_takes_target_data():
    from zoo.cli.run_cmd import flags_tree

    tree = flags_tree(make_catalog(), target_data="./unlabeled_images")
    assert tree["target_data"] == {"name": "unlabeled", "path": "./unlabeled_images"}


def test_missing_target_folder_names_the_target_flag(tmp_path):
    with pytest.raises(DataError, match="does not exist — pass --target-data PATH"):
        zoo_datasets.unlabeled_dataset(DataSpec(name="unlabeled", path=str(tmp_path / "no")),
                                       "train", None, 0)
