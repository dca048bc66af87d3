"""The timm and torchvision backbone providers, and the on-disk model-list cache.

Everything runs offline on CPU with tiny models and 64 px inputs; big architectures are only
built on the meta device.  Hub downloads are exercised against local stand-ins: a local HTTP
server for torchvision's URLs, a pre-populated Hugging Face cache for timm.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo.weights import network
from zoo.backbones import Backbone, TransferModel, build_layer_groups
from zoo.errors import UnknownComponentError, WeightsError
from zoo.modelcache import cached_model_info, cached_model_list
from zoo_timm import TimmProvider
from zoo_torchvision import TorchvisionProvider

torch.set_num_threads(1)

TIMM = TimmProvider()
TV = TorchvisionProvider()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real caches, no real network, a fresh probe cache for every test."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.delenv("ZOO_ASSUME_ONLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    network.reset_cache()
    yield
    network.reset_cache()


def _x(size=64, batch=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


# -- lazy imports ------------------------------------------------------------------------------
def test_importing_and_registering_providers_imports_no_torch():
    code = """
import sys, zoo_timm, zoo_torchvision
got = []
zoo_timm.register_backbone_providers(register=lambda n, p, **kw: got.append((n, p)))
zoo_torchvision.register_backbone_providers(register=lambda n, p, **kw: got.append((n, p)))
versions = [p.version() for _, p in got]
heavy = [m for m in ("torch", "timm", "torchvision") if m in sys.modules]
print([n for n, _ in got], versions, heavy)
assert not heavy, heavy
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "['timm', 'torchvision']" in out.stdout and "timm-" in out.stdout


# -- listing and info --------------------------------------------------------------------------
def test_listing():
    timm_all, tv_all = TIMM.list_models(), TV.list_models()
    assert "resnet18" in timm_all and "resnet18" in tv_all
    assert all("." not in n for n in timm_all + tv_all)
    assert "resnet18.IMAGENET1K_V1" in TV.list_models(pretrained=True)
    timm_pre = TIMM.list_models(pretrained=True)
    assert "resnet10t.c3_in1k" in timm_pre and all("." in n for n in timm_pre)
    assert "deeplabv3_resnet50" not in tv_all  # classification models only


def test_info():
    info = TIMM.info("resnet10t")
    assert info["provider"] == "timm" and info["feature_dim"] == 512
    assert info["default_tag"] == "c3_in1k" and info["pretrained_tags"] == ["c3_in1k"]
    assert info["pretrained_cfg"]["input_size"] == 176
    assert info["pretrained_cfg"]["interpolation"] == "bicubic"
    assert info["num_source_classes"] == 1000 and info["params"] > 1_000_000
    tv = TV.info("resnet18")
    assert tv["feature_dim"] == 512 and tv["params"] == 11_689_512
    assert tv["acc1"] == pytest.approx(69.758) and tv["default_tag"] == "IMAGENET1K_V1"
    assert tv["pretrained_cfg"] == {"input_size": 224, "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                                    "crop_pct": 0.875, "channels": 3}
    assert TV.info("vit_b_16.IMAGENET1K_SWAG_E2E_V1")["pretrained_cfg"]["input_size"] == 384
    json.dumps(info), json.dumps(tv)  # cacheable


def test_unknown_names_suggest():
    with pytest.raises(UnknownComponentError, match="did you mean"):
        TIMM.create("resnet10tt")
    with pytest.raises(UnknownComponentError, match="did you mean"):
        TV.create("resnet181")
    with pytest.raises(UnknownComponentError, match="c3_in1k"):
        TIMM.create("resnet10t", "nope")
    with pytest.raises(UnknownComponentError, match="IMAGENET1K_V1"):
        TV.create("resnet18", "IMAGENET1K_V9")


# -- create: features and classifier split -------------------------------------------------------
CASES = [  # provider, arch, classifier_name, has source classifier
    (TIMM, "resnet10t", "fc", True),
    (TIMM, "mobilenetv3_small_050", "classifier", True),
    (TIMM, "test_efficientnet", "classifier", True),
    (TV, "resnet18", "fc", True),
    (TV, "mobilenet_v3_small", "classifier.3", True),
    (TV, "squeezenet1_0", "classifier", False),
    (TV, "googlenet", "fc", True),
]


@pytest.mark.parametrize("provider,arch,clf,has_source", CASES,
                         ids=[f"{p.name}-{a}" for p, a, _, _ in CASES])
def test_create_gives_features_of_feature_dim(provider, arch, clf, has_source):
    torch.manual_seed(0)
    backbone = provider.create(arch)
    assert isinstance(backbone, Backbone) and backbone.provider == provider.name
    assert backbone.classifier_name == clf
    assert (backbone.source_classifier is not None) == has_source
    assert not any(n.startswith(clf + ".") for n, _ in backbone.body.named_parameters())
    with torch.no_grad():
        out = backbone.eval()(_x())
        train_out = backbone.train()(_x(batch=2))  # aux heads removed: still one tensor
    assert out.shape == (1, backbone.feature_dim)
    assert isinstance(train_out, torch.Tensor) and train_out.shape == (2, backbone.feature_dim)
    if has_source:
        logits = backbone.source_logits(out)
        assert logits.shape == (1, backbone.num_source_classes) and not logits.requires_grad


META_CASES = {"vit_b_16": ("heads.head", 768), "swin_t": ("head", 768),
              "convnext_tiny": ("classifier.2", 768), "maxvit_t": ("classifier.5", 512),
              "efficientnet_b0": ("classifier.1", 1280), "densenet121": ("classifier", 1024),
              "inception_v3": ("fc", 2048), "vgg11": ("classifier.6", 4096)}


@pytest.mark.parametrize("arch", sorted(META_CASES))
def test_torchvision_classifier_split_on_meta(arch):
    with torch.device("meta"):
        backbone = TV.create(arch)
        size = backbone.pretrained_cfg.input_size
        out = backbone.eval()(torch.empty(2, 3, size, size))
    assert (backbone.classifier_name, backbone.feature_dim) == META_CASES[arch]
    assert out.shape == (2, backbone.feature_dim)
    _assert_groups_partition(TV, backbone)


def test_timm_vit_classifier_split():
    backbone = TIMM.create("test_vit")
    size = backbone.pretrained_cfg.input_size
    with torch.no_grad():
        out = backbone.eval()(_x(size))
    assert backbone.classifier_name == "head" and out.shape == (1, backbone.feature_dim)


def test_timm_models_without_a_single_classifier():
    with torch.device("meta"):
        distilled = TIMM.create("deit_tiny_distilled_patch16_224")  # (head, head_dist)
        out = distilled.eval()(torch.empty(1, 3, 224, 224))
        assert distilled.source_classifier is None and out.shape == (1, 192)
        with pytest.raises(UnknownComponentError, match="encoder"):
            TIMM.create("qwen3_vit_88m_enc")  # token outputs, no classifier API


# -- the original state dicts load, and source logits match the original model --------------------
def _original(provider, arch):
    if provider is TIMM:
        import timm

        return timm.create_model(arch)
    import torchvision.models as tvm

    return tvm.get_model(arch)


@pytest.mark.parametrize("provider,arch", [(TIMM, "resnet10t"), (TIMM, "mobilenetv3_small_050"),
                                           (TV, "resnet18"), (TV, "mobilenet_v3_small")],
                         ids=lambda v: getattr(v, "name", v))
def test_source_state_dict_round_trip(provider, arch):
    torch.manual_seed(1)
    original = _original(provider, arch).eval()
    torch.manual_seed(2)
    backbone = provider.create(arch).eval()
    state = original.state_dict()
    backbone.load_source_state_dict(state, strict=True)
    assert set(backbone.source_state_dict()) == set(state)
    with torch.no_grad():
        x = _x()
        assert torch.allclose(backbone.source_logits(backbone(x)), original(x), atol=1e-5)


def test_squeezenet_loads_original_state_without_source_classifier():
    import torchvision.models as tvm

    original = tvm.squeezenet1_0()
    backbone = TV.create("squeezenet1_0")
    backbone.load_source_state_dict(original.state_dict(), strict=True)
    with torch.no_grad():
        expected = original.features(_x()).mean((2, 3))
        assert torch.allclose(backbone.eval()(_x()), expected, atol=1e-5)


# -- layer groups ---------------------------------------------------------------------------------
def _assert_groups_partition(provider, backbone):
    groups = provider.layer_groups(backbone)
    order = {n: i for i, (n, _) in enumerate(backbone.body.named_parameters())}
    flat = [p for _, names in groups for p in names]
    assert sorted(flat) == sorted(order) and len(flat) == len(set(flat))  # exactly once
    assert len({g for g, _ in groups}) == len(groups)  # unique names
    spans = [(min(order[p] for p in names), max(order[p] for p in names)) for _, names in groups]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), "groups not input → output"
    return [g for g, _ in groups]


@pytest.mark.parametrize("provider,arch,expected", [
    (TIMM, "resnet10t", ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]),
    (TIMM, "mobilenetv3_small_050", ["stem", *[f"blocks.{i}" for i in range(6)], "final"]),
    (TIMM, "test_vit", None),
    (TV, "resnet18", ["stem", "layer1", "layer2", "layer3", "layer4"]),
    (TV, "mobilenet_v3_small", None),
    (TV, "squeezenet1_0", None),
], ids=lambda v: getattr(v, "name", v) if not isinstance(v, (list, type(None))) else "")
def test_layer_groups_cover_body_once_in_order(provider, arch, expected):
    backbone = provider.create(arch)
    names = _assert_groups_partition(provider, backbone)
    if expected:
        assert names == expected
    assert len(names) >= 4
    model = TransferModel(backbone, torch.nn.Linear(backbone.feature_dim, 3))
    built = build_layer_groups(model, provider)
    assert [g.name for g in built][-1] == "head" and "<other>" not in [g.name for g in built]


def test_vgg_groups_are_blocks_then_fcs():
    with torch.device("meta"):
        names = _assert_groups_partition(TV, TV.create("vgg11"))
    assert names == ["block1", "block2", "block3", "block4", "block5", "fc6", "fc7"]


# -- weights: offline, local hub stand-ins --------------------------------------------------------
@pytest.mark.parametrize("provider,arch", [(TIMM, "resnet10t"), (TV, "resnet18")],
                         ids=["timm", "torchvision"])
def test_offline_pretrained_fails_fast_with_actionable_message(provider, arch):
    start = time.monotonic()
    with pytest.raises(WeightsError) as err:
        provider.create(arch, pretrained=True)
    assert time.monotonic() - start < 2.0
    msg = str(err.value)
    assert "\n" not in msg and arch in msg and "ZOO_OFFLINE" in msg
    assert "--weights none" in msg and "zoo weights import" in msg


def test_timm_hf_hub_offline_with_empty_cache_fails_fast(monkeypatch):
    import huggingface_hub.constants as hfc

    monkeypatch.delenv("ZOO_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)  # as if set before huggingface_hub loaded
    start = time.monotonic()
    with pytest.raises(WeightsError, match="resnet10t"):
        TIMM.create("resnet10t", pretrained=True)  # goes through timm → offline HF client
    assert time.monotonic() - start < 2.0


def test_timm_loads_weights_from_the_hf_cache_offline(tmp_path):
    import huggingface_hub.constants as hfc
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    original = timm.create_model("resnet10t")
    revision = hashlib.sha1(b"zoo-test").hexdigest()
    repo = Path(hfc.HF_HUB_CACHE) / "models--timm--resnet10t.c3_in1k"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file(original.state_dict(), repo / "snapshots" / revision / "model.safetensors")

    backbone = TIMM.create("resnet10t", pretrained=True)  # ZOO_OFFLINE=1: cache only
    for key, value in original.state_dict().items():
        assert torch.equal(backbone.source_state_dict()[key], value), key
    assert backbone.pretrained_cfg.input_size == 176


def test_torchvision_downloads_through_torch_hub_then_loads_offline(monkeypatch, tmp_path,
                                                                    weights_server):
    from conftest import serve_mobilenet_weights

    state, served = serve_mobilenet_weights(weights_server, monkeypatch, seed=4)

    backbone = TV.create("mobilenet_v3_small", pretrained=True)
    assert (Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / served.name).is_file()
    for key, value in state.items():
        assert torch.equal(backbone.source_state_dict()[key], value), key

    monkeypatch.setenv("ZOO_OFFLINE", "1")  # now from the torch hub cache, no network
    served.unlink()
    again = TV.create("mobilenet_v3_small", "imagenet1k_v1", pretrained=True)
    assert torch.equal(again.body.features[0][0].weight, state["features.0.0.weight"])


def test_torchvision_download_failure_is_a_weights_error(monkeypatch, weights_server):
    import torchvision.models as tvm

    _, base = weights_server
    entry = tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    monkeypatch.setattr(entry.value, "url", f"{base}/missing-0123abcd.pth")
    monkeypatch.delenv("ZOO_OFFLINE")
    with pytest.raises(WeightsError, match="HTTPError") as err:
        TV.create("mobilenet_v3_small", pretrained=True)
    assert "\n" not in str(err.value)


# -- model-list cache -------------------------------------------------------------------------------
class FakeProvider:
    def __init__(self, version="1"):
        self.calls = []
        self._version = version

    def list_models(self, pretrained=False):
        self.calls.append(("list", pretrained))
        return ["b.tag"] if pretrained else ["a", "b"]

    def info(self, arch):
        self.calls.append(("info", arch))
        return {"arch": arch, "feature_dim": 8}

    def version(self):
        return self._version


class FakeCatalog:
    def __init__(self, **providers):
        self.providers = providers

    def provider(self, name):
        return self.providers[name]


def test_model_list_is_cached_per_provider_version(tmp_path):
    fake = FakeProvider("1.0")
    catalog = FakeCatalog(fake=fake)
    assert cached_model_list(catalog, "fake", False) == ["a", "b"]
    assert cached_model_list(catalog, "fake", False) == ["a", "b"]
    assert cached_model_list(catalog, "fake", True) == ["b.tag"]
    assert fake.calls == [("list", False), ("list", True)]
    assert cached_model_info(catalog, "fake", "a") == {"arch": "a", "feature_dim": 8}
    assert cached_model_info(catalog, "fake", "a")["feature_dim"] == 8
    assert fake.calls.count(("info", "a")) == 1

    fake._version = "2.0"  # a new library version: recompute
    cached_model_list(catalog, "fake", False)
    assert fake.calls.count(("list", False)) == 2


def test_corrupt_cache_is_rewritten_and_no_version_means_no_cache(tmp_path):
    fake = FakeProvider()
    catalog = FakeCatalog(fake=fake)
    cached_model_list(catalog, "fake", False)
    files = list((tmp_path / "zoo" / "cache" / "models").rglob("list-all.json"))
    assert len(files) == 1
    files[0].write_text("{not json")
    assert cached_model_list(catalog, "fake", False) == ["a", "b"]
    assert json.loads(files[0].read_text())["value"] == ["a", "b"]
    assert not list(files[0].parent.glob(".*.tmp"))

    class Unversioned:
        calls = 0

        def list_models(self, pretrained=False):
            Unversioned.calls += 1
            return ["x"]

    catalog = FakeCatalog(u=Unversioned())
    cached_model_list(catalog, "u", False), cached_model_list(catalog, "u", False)
    assert Unversioned.calls == 2


def test_warm_list_imports_no_timm_or_torchvision(tmp_path):
    catalog = FakeCatalog(timm=TIMM, torchvision=TV)
    for name in ("timm", "torchvision"):
        cached_model_list(catalog, name, False)  # warm the cache (ZOO_HOME in tmp_path)
    code = """
import sys
from zoo.modelcache import cached_model_list
from zoo_timm import TimmProvider
from zoo_torchvision import TorchvisionProvider
class C:
    def provider(self, name):
        return {"timm": TimmProvider(), "torchvision": TorchvisionProvider()}[name]
assert "resnet18" in cached_model_list(C(), "timm", False)
assert "resnet18" in cached_model_list(C(), "torchvision", False)
heavy = [m for m in ("torch", "timm", "torchvision") if m in sys.modules]
assert not heavy, heavy
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
