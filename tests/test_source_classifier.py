"""Weights from a file or zoo's store bring their own source classifier (issue #14): lwf
distills through *it*, a provider that builds none gets one from the tensors, and weights
without one make lwf say "has none" instead of distilling a random classifier.

In-process runs on the tiny components of :mod:`zoo.kit.testing` (32 px, 1 epoch).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoo.catalog import ModelRef
from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl
from zoo.kit.testing import TinyProvider, make_catalog, run_tiny
from zoo.runs.reuse import load_run
from zoo.weights import resolve_and_load
from zoo.weights.manage import import_file

SOURCE_CLASSES = 5  # not TinyProvider's 10: the shape must come from the file


class HeadlessProvider(TinyProvider):
    """Like a provider that keeps a classifier only for its hub weights: none without them,
    and no ``classifier_name`` either (zoo must find ``head.*`` in the file itself)."""

    name = "acme"

    def create(self, arch, tag=None, pretrained=False):
        backbone = super().create(arch, tag, pretrained)
        backbone.source_classifier, backbone.classifier_name = None, None
        backbone.num_source_classes, backbone.provider = 0, "acme"
        return backbone


class AcmePlugin:
    name = "zoo-acme"

    @hookimpl
    def register_backbone_providers(self, register):
        register("acme", HeadlessProvider(), description="no classifier without hub weights")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))


def _weights_file(path: Path, classifier: str | None = "classifier") -> dict:
    """A tiny_cnn state dict (provider naming) with a 5-class classifier named ``classifier``."""
    torch.manual_seed(3)
    state = {k: v.clone() for k, v in TinyProvider().create("tiny_cnn").body.state_dict().items()}
    if classifier:
        state[f"{classifier}.weight"] = torch.randn(SOURCE_CLASSES, 16)
        state[f"{classifier}.bias"] = torch.randn(SOURCE_CLASSES)
    save_file(state, str(path))
    return state


def test_file_classifier_is_kept_with_its_own_shape(tmp_path):
    state = _weights_file(tmp_path / "w.safetensors")
    backbone, summary = resolve_and_load(make_catalog(), ModelRef("testing", "tiny_cnn"),
                                         str(tmp_path / "w.safetensors"), [])
    assert summary["source"].startswith("file:")
    assert backbone.num_source_classes == SOURCE_CLASSES
    assert torch.equal(backbone.source_classifier.weight, state["classifier.weight"])
    assert torch.equal(backbone.source_classifier.bias, state["classifier.bias"])
    assert not backbone.source_classifier.weight.requires_grad  # frozen like a provider's
    features = backbone(torch.zeros(2, 3, 32, 32))
    assert tuple(backbone.source_logits(features).shape) == (2, SOURCE_CLASSES)


def test_lwf_trains_from_a_file_and_the_run_reloads(tmp_path):
    _weights_file(tmp_path / "w.safetensors")
    catalog = make_catalog()
    summary = run_tiny(catalog, tmp_path / "runs", weights=str(tmp_path / "w.safetensors"),
                       strategy={"name": "lwf"})
    assert summary["status"] == "completed"
    run_dir, = (tmp_path / "runs").iterdir()
    loaded = load_run(run_dir, catalog)  # the provider alone builds a 10-class classifier
    assert loaded.model.backbone.source_classifier.out_features == SOURCE_CLASSES


def test_a_provider_without_classifier_gets_one_from_the_file(tmp_path):
    state = _weights_file(tmp_path / "w.safetensors", classifier="head")
    catalog = make_catalog(AcmePlugin())
    backbone, _ = resolve_and_load(catalog, ModelRef("acme", "tiny_cnn"),
                                   str(tmp_path / "w.safetensors"), [])
    assert backbone.classifier_name == "head"   # found in the file: the only Linear left over
    assert torch.equal(backbone.source_classifier.weight, state["head.weight"])
    assert set(backbone.source_state_dict()) == set(state)  # round-trips in the file's naming
    summary = run_tiny(catalog, tmp_path / "runs", model="acme:tiny_cnn",
                       weights=str(tmp_path / "w.safetensors"), strategy={"name": "lwf"})
    assert summary["status"] == "completed"


def test_store_entries_keep_the_classifier(tmp_path):
    state = _weights_file(tmp_path / "w.safetensors")
    catalog = make_catalog()
    result = import_file(catalog, tmp_path / "w.safetensors", "testing:tiny_cnn")
    assert result["report"]["missing"] == [] and result["report"]["unexpected"] == []
    backbone, summary = resolve_and_load(catalog, ModelRef("testing", "tiny_cnn"),
                                         "pretrained", [])
    assert summary["source"] == "store"
    assert torch.equal(backbone.source_classifier.weight, state["classifier.weight"])
    summary = run_tiny(catalog, tmp_path / "runs", weights="pretrained",
                       strategy={"name": "lwf"})
    assert summary["status"] == "completed"


def test_weights_without_classifier_make_lwf_say_has_none(tmp_path):
    path = tmp_path / "headless.safetensors"
    _weights_file(path, classifier=None)
    catalog = make_catalog()
    backbone, _ = resolve_and_load(catalog, ModelRef("testing", "tiny_cnn"), str(path), [])
    assert backbone.source_classifier is None  # the provider's random one is not kept
    with pytest.raises(ConfigError) as info:
        run_tiny(catalog, tmp_path / "runs", weights=str(path), strategy={"name": "lwf"})
    message = str(info.value)
    assert "needs a source classifier" in message and "has none" in message
    assert str(path) in message and "\n" not in message
    # finetune from the same file still runs, and its run reloads without a classifier
    summary = run_tiny(catalog, tmp_path / "runs", weights=str(path))
    assert summary["status"] == "completed"
    run_dir, = [d for d in (tmp_path / "runs").iterdir() if (d / "model.safetensors").is_file()]
    assert load_run(run_dir, catalog).model.backbone.source_classifier is None
