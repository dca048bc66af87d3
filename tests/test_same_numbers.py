"""Reliability round 3, class F (issue 24): the same command and seed give the same numbers,
whatever the environment says — however weights were looked for (an offline hub that fails
after building a model, a store miss, plugins asked first) and whichever plugins are
installed.  Model init draws from streams seeded by (seed, what is built), and weight
resolution runs on its own copy of the random stream (``zoo.contracts.isolated_rng``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.errors import WeightsError
from zoo.hookspecs import hookimpl
from zoo.kit.testing import make_catalog, run_tiny
from zoo.kit.testing.components import TinyProvider


class _HubThatDrawsThenFails(TinyProvider):
    """Like a hub provider offline: builds the model (drawing random numbers), then finds
    no weights."""

    name = "drawing"

    def create(self, arch, tag=None, pretrained=False):
        if pretrained:
            super().create(arch)          # the model built before the download fails
            torch.rand(1000)
            raise WeightsError("offline: no weights")
        return super().create(arch)


class DrawingProvider:
    name = "drawing-provider"

    @hookimpl
    def register_backbone_providers(self, register):
        register("drawing", _HubThatDrawsThenFails())


class RandomLookingPlugin:
    """A resolve_weights plugin that draws random numbers and finds nothing."""

    name = "random-looking"

    @hookimpl
    def resolve_weights(self, backbone, tag, store):
        torch.randn(77)
        return None


@pytest.fixture(autouse=True)
def empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))


def _build(catalog, weights: str):
    from zoo.engine.build import build_model
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    job = complete_job(tiny_job(model="drawing:tiny_cnn", weights=weights), catalog)
    torch.manual_seed(job.seed)
    built = build_model(catalog, job, 3, [])
    return built, torch.get_rng_state()


@pytest.mark.parametrize("plugins", [(), (RandomLookingPlugin(),)], ids=["alone", "with-plugin"])
def test_model_init_is_independent_of_how_weights_were_looked_for(plugins):
    base = make_catalog(DrawingProvider())
    other = make_catalog(DrawingProvider(), *plugins)
    direct, rng_direct = _build(base, "none")          # no looking at all
    looked, rng_looked = _build(other, "auto")          # store, plugins, hub: random init
    assert looked.weights["source"] == "random-init"
    a, b = direct.model.state_dict(), looked.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(rng_direct, rng_looked)  # what is drawn next does not differ either


def test_a_whole_run_gives_the_same_numbers_however_weights_were_looked_for(tmp_path):
    runs = {}
    for label, weights, plugins in (("none", "none", ()),
                                    ("auto", "auto", (RandomLookingPlugin(),))):
        out = tmp_path / label
        summary = run_tiny(make_catalog(DrawingProvider(), *plugins), out,
                           model="drawing:tiny_cnn", weights=weights, train={"epochs": 2})
        history = [json.loads(line) for line in
                   (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        runs[label] = (summary["test"], [r["train"]["loss"] for r in history])
    assert runs["none"] == runs["auto"]


def test_head_and_backbone_draw_from_different_streams():
    """Seeded per (seed, part): the head does not reuse the backbone's first numbers."""
    from zoo.contracts import isolated_rng

    with isolated_rng(0, "backbone"):
        a = torch.rand(5)
    with isolated_rng(0, "head"):
        b = torch.rand(5)
    with isolated_rng(0, "head"):
        c = torch.rand(5)
    assert not torch.equal(a, b) and torch.equal(b, c)
