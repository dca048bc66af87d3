"""Reliability round 3, class A (issue 24): what a plugin *returns* is checked where it
returns — head and metric factories, a provider's ``create()``, a strategy's ``plan`` — and a
wrong value is one line naming the plugin and the component, never a "zoo bug".

The property test feeds generated return values through each contract checker: every value
is either accepted (and is then usable) or refused with a PluginError naming the plugin.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from zoo import contracts
from zoo.catalog import Component
from zoo.errors import PluginError
from zoo.hookspecs import hookimpl
from zoo.kit.testing import make_catalog, run_tiny
from zoo.kit.testing.components import TinyProvider


def _summary(out: Path) -> dict | None:
    dirs = [p for p in Path(out).iterdir() if p.is_dir()] if Path(out).exists() else []
    return json.loads((dirs[0] / "summary.json").read_text()) if dirs else None


def _assert_names_plugin(err: PluginError, plugin: str, component: str) -> str:
    msg = str(err)
    assert "\n" not in msg and "zoo bug" not in msg
    assert f"plugin '{plugin}'" in msg and component in msg, msg
    return msg


class HeadPlugin:
    name = "bad-head-plugin"

    def __init__(self, returned):
        self.returned = returned

    @hookimpl
    def register_heads(self, register):
        register("badhead", lambda in_features, num_classes, **kw: self.returned(
            in_features, num_classes))


@pytest.mark.parametrize("returned, problem", [
    (lambda d, c: None, "returned None"),
    (lambda d, c: "linear", "returned str 'linear'"),
    (lambda d, c: nn.Linear(d, c + 4), "to (2, 7)"),  # wrong output width
    (lambda d, c: nn.Linear(d + 1, c), "fails on a (2, 16) feature batch"),  # wrong input
])
def test_bad_head_factory_return_is_one_line_naming_the_plugin(tmp_path, returned, problem):
    cat = make_catalog(HeadPlugin(returned))
    with pytest.raises(PluginError) as info:
        run_tiny(cat, tmp_path, head={"name": "badhead"})
    msg = _assert_names_plugin(info.value, "bad-head-plugin", "head 'badhead'")
    assert problem in msg


class MetricPlugin:
    name = "bad-metric-return"

    @hookimpl
    def register_metrics(self, register):
        register("stringy", lambda num_classes: "accuracy")


def test_metric_factory_returning_a_string_fails_the_run_naming_the_plugin(tmp_path):
    cat = make_catalog(MetricPlugin())
    with pytest.raises(PluginError) as info:
        run_tiny(cat, tmp_path, metrics=["accuracy", "stringy"])
    _assert_names_plugin(info.value, "bad-metric-return", "metric 'stringy'")
    summary = _summary(tmp_path)  # metrics are built at the first validation: folder exists
    assert summary["status"] == "failed" and "bad-metric-return" in summary["error"]


class ProviderPlugin:
    name = "bad-provider-plugin"

    def __init__(self, returned):
        self.returned = returned

    @hookimpl
    def register_backbone_providers(self, register):
        outer = self

        class Provider(TinyProvider):
            name = "badprov"

            def create(self, arch, tag=None, pretrained=False):
                return outer.returned

        register("badprov", Provider())


@pytest.mark.parametrize("returned", [None, "resnet18", nn.Linear(3, 3)])
def test_provider_create_returning_a_non_backbone_names_the_plugin(tmp_path, returned):
    cat = make_catalog(ProviderPlugin(returned))
    with pytest.raises(PluginError) as info:
        run_tiny(cat, tmp_path, model="badprov:tiny_cnn")
    msg = _assert_names_plugin(info.value, "bad-provider-plugin", "provider 'badprov'")
    assert "create('tiny_cnn') returned" in msg and "Backbone" in msg


class StrategyPlugin:
    name = "bad-strategy-return"

    def __init__(self, strategy):
        self.strategy = strategy

    @hookimpl
    def register_strategies(self, register):
        register("oddplan", self.strategy)


class _NoArgsPlan:
    def plan(self, model):
        raise AssertionError("never called: the signature is refused first")


class _DictPlan:
    def plan(self, model, groups, job):
        return {"phases": []}


@pytest.mark.parametrize("strategy, problem", [
    (_NoArgsPlan(), "cannot be called as plan(model, groups, job"),
    (_DictPlan(), "plan() returned dict"),
    (object(), "has no plan(model, groups, job, ctx) method"),
])
def test_strategy_with_wrong_plan_signature_or_return_names_the_plugin(tmp_path, strategy,
                                                                       problem):
    cat = make_catalog(StrategyPlugin(strategy))
    with pytest.raises(PluginError) as info:
        run_tiny(cat, tmp_path, strategy={"name": "oddplan"})
    msg = _assert_names_plugin(info.value, "bad-strategy-return", "strategy 'oddplan'")
    assert problem in msg


def test_plan_with_extra_optional_context_is_accepted():
    comp = Component("strategies", "s", None, "p")

    class WithCtx:
        def plan(self, model, groups, job, ctx=None):
            return None

    assert contracts.check_plan_callable(comp, WithCtx(), (1, 2, 3)) is not None


# -- property test: generated return values through every checker -----------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                     st.text(max_size=30), st.binary(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3),
    st.tuples(inner, inner)), max_leaves=6)
_modules = st.builds(lambda i, o: nn.Linear(i, o), st.integers(1, 6), st.integers(1, 6))
_returned = st.one_of(_values, _modules, st.builds(lambda: torch.zeros(2, 3)))


def _comp(kind: str) -> Component:
    return Component(kind, "gen", None, "generated-plugin")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=_returned, feature_dim=st.integers(1, 6), num_classes=st.integers(1, 6))
def test_property_any_head_return_is_accepted_only_when_usable(value, feature_dim,
                                                               num_classes):
    try:
        head = contracts.check_head(_comp("heads"), value, feature_dim, num_classes)
    except PluginError as err:
        _assert_names_plugin(err, "generated-plugin", "head 'gen'")
        return
    out = head(torch.randn(5, feature_dim))  # accepted: really maps features to logits
    assert tuple(out.shape) == (5, num_classes)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=_returned)
def test_property_any_metric_backbone_or_plan_return_is_checked(value):
    from zoo.backbones import Backbone
    from zoo.strategy import StrategyPlan

    for check, kind, usable in (
            (lambda v: contracts.check_metric(_comp("metrics"), v), "metric",
             lambda v: v is None or callable(getattr(v, "compute", None))),
            (lambda v: contracts.check_backbone(_comp("providers"), "a", v), "provider",
             lambda v: isinstance(v, Backbone)),
            (lambda v: contracts.check_plan(_comp("strategies"), v), "strategy",
             lambda v: isinstance(v, StrategyPlan))):
        try:
            accepted = check(value)
        except PluginError as err:
            _assert_names_plugin(err, "generated-plugin", f"{kind} 'gen'")
            assert not usable(value)
        else:
            assert usable(accepted) and accepted is value


def _tiny_backbone(feature_dim):
    backbone = TinyProvider().create("tiny_cnn")
    backbone.feature_dim = feature_dim
    return backbone


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(feature_dim=st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True), st.none(),
                             st.booleans(), st.text(max_size=3)))
def test_property_a_backbone_is_accepted_only_with_a_positive_int_width(feature_dim):
    backbone = _tiny_backbone(feature_dim)
    valid = (isinstance(feature_dim, int) and not isinstance(feature_dim, bool)
             and feature_dim > 0)
    try:
        assert contracts.check_backbone(_comp("providers"), "tiny_cnn", backbone) is backbone
    except PluginError as err:
        _assert_names_plugin(err, "generated-plugin", "provider 'gen'")
        assert not valid
    else:
        assert valid


def test_backbone_with_a_bad_feature_dim_is_refused():
    backbone = TinyProvider().create("tiny_cnn")
    for bad in (0, -3, 2.5, True, "16"):
        backbone.feature_dim = bad
        with pytest.raises(PluginError, match="feature_dim"):
            contracts.check_backbone(_comp("providers"), "tiny_cnn", backbone)


class WidthLiar:
    name = "width-liar-plugin"

    @hookimpl
    def register_backbone_providers(self, register):
        class Provider(TinyProvider):
            name = "liar"

            def create(self, arch, tag=None, pretrained=False):
                backbone = super().create(arch, tag, pretrained)
                backbone.feature_dim = 5  # its body gives 16
                return backbone

        register("liar", Provider())


def test_backbone_whose_output_disagrees_with_feature_dim_names_the_provider(tmp_path):
    with pytest.raises(PluginError) as info:
        run_tiny(make_catalog(WidthLiar()), tmp_path, model="liar:tiny_cnn")
    msg = _assert_names_plugin(info.value, "width-liar-plugin", "provider 'liar'")
    assert "feature_dim=5" in msg and "(1, 16)" in msg
