"""zoo.testing, the plugin authors' kit: its fixtures work, its checks pass good components
(the built-ins) and catch broken ones with a message that says what to fix."""
from __future__ import annotations

import subprocess
import sys

import pytest

from zoo.kit import testing as T


def test_import_is_cheap():
    code = ("import sys, zoo.testing\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- fixtures ---------------------------------------------------------------------------------
def test_fixtures(zoo_catalog, tiny_dataset, tiny_backbone):
    assert set(zoo_catalog.pm.records) >= {"heads", "strategies", "zoo-testing"}
    assert not any(r.distribution not in (None, "zoo") for r in zoo_catalog.pm.records.values())
    assert zoo_catalog.has("datasets", "tiny") and "testing" in zoo_catalog.names("providers")
    image, label = tiny_dataset[0]
    assert image.dtype.is_floating_point is False and tuple(image.shape) == (3, 32, 32)
    assert tiny_dataset.classes == ["colour0", "colour1", "colour2"] and 0 <= label < 3
    assert tiny_backbone.feature_dim == 16


def test_zoo_run_fixture(zoo_run):
    summary = zoo_run(head={"name": "mlp", "params": {"hidden": 8}})
    assert summary["status"] == "completed" and summary["model"] == "testing:tiny_cnn"


class _Plugin:
    name = "zoo-kit-plugin"

    @T.hookimpl
    def register_heads(self, register):
        register("kit-head", lambda i, n: __import__("torch").nn.Linear(i, n))


@pytest.fixture
def zoo_plugins():
    return [_Plugin()]


def test_zoo_plugins_override(zoo_catalog):
    assert zoo_catalog.get("heads", "kit-head").plugin == "zoo-kit-plugin"


# -- the checks pass the built-ins ------------------------------------------------------------
def test_checks_pass_builtins():
    cat = T.make_catalog()
    T.check_head(cat.get("heads", "linear").obj)
    T.check_head(cat.get("heads", "mlp").obj, hidden=8)
    T.check_metric(cat.get("metrics", "accuracy").obj)
    T.check_metric(cat.get("metrics", "nll").obj, value_range=None)
    T.check_dataset(cat.get("datasets", "demo").obj, name="demo", params={"per_class": 10})
    T.check_dataset(T.tiny_dataset_factory, name="tiny")
    for name in ("finetune", "linear-probe"):
        T.check_strategy(cat.get("strategies", name).obj)
    T.check_backbone_provider(T.TinyProvider())
    T.check_backbone_provider(cat.provider("timm"), "test_resnet", image_size=64)


# -- and catch broken components --------------------------------------------------------------
def _fails(match, fn, *args, **kwargs):
    with pytest.raises(AssertionError, match=match):
        fn(*args, **kwargs)


def test_check_head_catches():
    from torch import nn

    _fails("not a torch.nn.Module", T.check_head, lambda i, n: "head")
    _fails(r"must give logits \(5, 3\)", T.check_head, lambda i, n: nn.Linear(i, n + 1))
    _fails("no trainable parameters", T.check_head,
           lambda i, n: nn.Linear(i, n).requires_grad_(False))

    class Unsaved(nn.Module):  # a learned-looking value kept outside parameters/buffers
        def __init__(self, i, n):
            super().__init__()
            import torch
            self.fc, self.bias = nn.Linear(i, n), torch.randn(n)

        def forward(self, x):
            return self.fc(x) + self.bias

    _fails("safetensors round trip", T.check_head, Unsaved)


def test_check_metric_catches():
    import torch
    from torchmetrics import Metric

    class BatchMean(Metric):  # averages per-batch accuracies: wrong with uneven batches
        def __init__(self):
            super().__init__()
            self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
            self.add_state("n", torch.tensor(0), dist_reduce_fx="sum")

        def update(self, preds, target):
            self.total += (preds.argmax(1) == target).float().mean()
            self.n += 1

        def compute(self):
            return self.total / self.n

    _fails("accumulate sums/counts", T.check_metric, lambda n: BatchMean())

    class OutOfRange(BatchMean):
        def compute(self):
            return super().compute() + 5

    _fails(r"outside \(0.0, 1.0\)", T.check_metric, lambda n: OutOfRange())
    _fails("returned None", T.check_metric, lambda n: None)


def test_check_dataset_catches():
    from zoo.jobspec import DataSpec

    good = T.tiny_dataset_factory

    def float_images(spec, split, transform, seed):
        ds = good(spec, split, None, seed)
        ds.images = ds.images.float()
        return ds

    _fails("uint8 tensor", T.check_dataset, float_images)

    def leaky(spec, split, transform, seed):
        return good(spec, "train", transform, seed)

    _fails("share items", T.check_dataset, leaky)

    def ignores_transform(spec, split, transform, seed):
        return good(spec, split, None, seed)

    _fails("transform must be applied", T.check_dataset, ignores_transform)
    counter = iter(range(100))

    def random_split(spec, split, transform, seed):  # a new split after the first three
        return good(spec, split, transform, seed + (next(counter) >= 3))

    _fails("same seed gave a different", T.check_dataset, random_split)
    T.check_dataset(good, spec=DataSpec(name="tiny", params={"classes": 4}))


def test_check_strategy_catches():
    from zoo.strategy import LossTerm, Phase, StrategyPlan, all_groups

    class NotAPlan:
        def plan(self, model, groups, job, ctx=None):
            return [Phase("p", 1, all_groups(groups))]

    _fails("returned list, not a zoo.strategy.StrategyPlan", T.check_strategy, NotAPlan())

    class UnknownGroup:
        def plan(self, model, groups, job, ctx=None):
            return StrategyPlan("u", [Phase("p", 1, {"layer9": None})])

    _fails("not well-formed.*unknown layer groups", T.check_strategy, UnknownGroup())

    class TrainModeTerm(LossTerm):   # runs the frozen backbone in train mode: BN stats move
        name = "leaky"

        def forward(self, ctx):
            ctx.model.backbone.train()
            return ctx.model.backbone(ctx.inputs).mean() * 0

    class LeakyProbe:
        def plan(self, model, groups, job, ctx=None):
            return StrategyPlan("leaky", [Phase("probe", 1, all_groups(groups, trainable=False),
                                                bn="freeze-all", loss_terms=[TrainModeTerm()])])

    _fails("BatchNorm statistic .* changed", T.check_strategy, LeakyProbe())

    class Editor(LossTerm):          # edits frozen weights in place
        name = "editor"

        def forward(self, ctx):
            ctx.model.backbone.body.stem[0].weight.data.mul_(0.5)
            return ctx.logits.sum() * 0

    class Editing:
        def plan(self, model, groups, job, ctx=None):
            return StrategyPlan("edit", [Phase("p", 1, all_groups(groups, trainable=False),
                                               bn="freeze-all", loss_terms=[Editor()])])

    _fails("frozen parameter backbone.body.stem.0.weight changed", T.check_strategy, Editing())


def test_check_backbone_provider_catches():
    provider = T.TinyProvider()

    class WrongDim(T.TinyProvider):
        def create(self, arch, tag=None, pretrained=False):
            backbone = super().create(arch, tag, pretrained)
            backbone.feature_dim = 99
            return backbone

    _fails("says feature_dim=99 but its forward", T.check_backbone_provider, WrongDim())

    class MissingGroup(T.TinyProvider):
        def layer_groups(self, backbone):
            return super().layer_groups(backbone)[1:]

    _fails("parameters of 'tiny_cnn' are in no layer group", T.check_backbone_provider,
           MissingGroup())

    class Twice(T.TinyProvider):
        def layer_groups(self, backbone):
            groups = super().layer_groups(backbone)
            return groups + [("again", groups[0][1])]

    _fails("is in layer groups 'stem' and 'again'", T.check_backbone_provider, Twice())

    class BuildsToList(T.TinyProvider):
        def list_models(self, pretrained=False):
            self.create("tiny_cnn")
            return super().list_models(pretrained)

    with pytest.raises(AssertionError, match="create called while listing|called create"):
        T.check_backbone_provider(BuildsToList())
    T.check_backbone_provider(provider, "tiny_cnn_wide")


def test_check_lazy_import_catches(tmp_path, monkeypatch):
    (tmp_path / "zoo_heavy_mod.py").write_text(
        "import torch\nfrom zoo.hookspecs import hookimpl\n"
        "@hookimpl\ndef register_heads(register):\n    register('h', None)\n")
    (tmp_path / "zoo_light_mod.py").write_text(
        "from zoo.hookspecs import hookimpl\n"
        "@hookimpl\ndef register_heads(register):\n    register('h', None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _fails("imported torch", T.check_lazy_import, "zoo_heavy_mod")
    T.check_lazy_import("zoo_light_mod")
