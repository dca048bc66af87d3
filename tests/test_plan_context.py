"""Issue 23, points 2 and 3: stateless strategies planned with a frozen PlanContext; the old
3-argument ``plan`` still works with a one-line notice naming the plugin; the plan vocabulary
and the strategy base import without torch."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

import pytest

from zoo.hookspecs import hookimpl
from zoo.kit.testing import check_strategy, make_catalog, run_tiny, tiny_job
from zoo.kit.testing.checks import plan_shape
from zoo.plan import GroupSetting, Phase, PlanContext, StrategyPlan, all_groups

VOCABULARY = ("StrategyPlan", "Phase", "GroupSetting", "Selection", "ModelChange",
              "AutoCandidate", "PlanContext", "PhaseContext", "LossContext", "Choice")


def test_the_plan_vocabulary_and_the_base_import_without_torch():
    names = ", ".join(VOCABULARY)
    code = (f"import sys\nfrom zoo.plan import {names}, all_groups, validate_plan\n"
            "from zoo.strategy_base import Strategy, call_plan\n"
            f"from zoo import {names}, Strategy\n"
            "import zoo.plan, zoo.strategy_base\n"
            "assert Phase is zoo.plan.Phase and Strategy is zoo.strategy_base.Strategy\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print('clean')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_zoo_strategy_re_exports_the_same_classes():
    import zoo.plan
    import zoo.strategy

    for name in VOCABULARY:
        assert getattr(zoo.strategy, name) is getattr(zoo.plan, name)


def test_the_plan_context_is_frozen():
    ctx = PlanContext(device="cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.device = "cuda"  # type: ignore[misc]
    assert ctx.num_classes is None


class OldStyle:
    """A third-party strategy of the previous release: prepare(**extra), then 3-arg plan."""

    name = "old-style"
    defaults: dict = {}

    def __init__(self):
        self.seen: list = []

    def prepare(self, bundle=None, **_ignored):
        self.seen.append(len(bundle.classes) if bundle is not None else None)

    def plan(self, model, groups, job):
        return StrategyPlan(self.name, [Phase("head", job.train.epochs,
                                              all_groups(groups, trainable=False))])


class NewStyle:
    name = "new-style"
    defaults: dict = {}

    def plan(self, model, groups, job, ctx=None):
        classes = ctx.num_classes if ctx is not None else None
        return StrategyPlan(self.name, [Phase("head", job.train.epochs,
                                              all_groups(groups, trainable=False))],
                            notes=[f"{classes} classes"])


class StylePlugin:
    name = "styles-plugin"

    def __init__(self):
        self.old = OldStyle()

    @hookimpl
    def register_strategies(self, register):
        register("old-style", self.old)
        register("new-style", NewStyle())


def test_the_three_argument_plan_works_with_one_notice_naming_the_plugin(tmp_path, capfd):
    import zoo.strategy_base

    zoo.strategy_base._NOTIFIED.clear()
    plugin = StylePlugin()
    catalog = make_catalog(plugin)
    first = run_tiny(catalog, tmp_path, strategy={"name": "old-style"}, name="a")
    second = run_tiny(catalog, tmp_path, strategy={"name": "old-style"}, name="b")
    assert first["status"] == second["status"] == "completed"
    assert plugin.old.seen == [3, 3]  # prepare still gets the run's data, before each plan
    err = capfd.readouterr().err
    notices = [line for line in err.splitlines() if "deprecated" in line]
    assert len(notices) == 1, err  # once per process, one line
    assert "strategy 'old-style' (plugin styles-plugin)" in notices[0]
    assert "plan(self, model, groups, job, ctx=None)" in notices[0]


def test_the_four_argument_plan_gets_the_context_and_no_notice(tmp_path, capfd):
    summary = run_tiny(make_catalog(StylePlugin()), tmp_path, strategy={"name": "new-style"})
    assert summary["status"] == "completed"
    assert "deprecated" not in capfd.readouterr().err


def test_check_strategy_refuses_a_strategy_that_keeps_state():
    class Drifting:
        name = "drifting"
        defaults: dict = {}
        calls = 0

        def plan(self, model, groups, job, ctx=None):
            Drifting.calls += 1  # state kept between plans: the second plan differs
            return StrategyPlan(self.name, [Phase("p", Drifting.calls, {
                "head": GroupSetting(True)})])

    with pytest.raises(AssertionError, match="planning twice gave two plans"):
        check_strategy(Drifting())


def _resnet_and_bundle(classes: int):
    from test_strategy_pack import resnet, tiny_bundle

    return resnet(), tiny_bundle(classes)


@pytest.mark.parametrize("name", ["joint", "auto", "lp-ft", "l2-sp"])
def test_one_strategy_object_planned_concurrently_gives_each_its_own_plan(name):
    """Two threads plan the same registered object with different contexts at once; each
    gets the plan of its own context, the same as planning alone."""
    import zoo_strategies

    strategy = zoo_strategies.strategy_classes()[name]()
    (model, groups), four = _resnet_and_bundle(4)
    _, five = _resnet_and_bundle(5)
    job = dataclasses.replace(tiny_job(strategy={"name": name}, train={"epochs": 2}),
                              source_data=tiny_job().data)
    contexts = [PlanContext(source=four, catalog=make_catalog()),
                PlanContext(source=five, catalog=make_catalog())]
    alone = [strategy.plan(model, groups, job, ctx) for ctx in contexts]
    results: dict = {}
    barrier = threading.Barrier(2)

    def plan(i):
        barrier.wait()
        results[i] = strategy.plan(model, groups, job, contexts[i])

    threads = [threading.Thread(target=plan, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert plan_shape(results[i]) == plan_shape(alone[i])
    if name == "joint":  # the source head has as many outputs as that context's classes
        heads = [results[i].phases[0].loss_terms[0].head.out_features for i in range(2)]
        assert heads == [4, 5]
