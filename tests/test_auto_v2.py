"""``auto`` v2 (successive halving over discovered (strategy, LR) candidates) and ``--lr auto``,
on tiny models: rung sizes, budgets, discovery of a third-party candidate, unmet needs,
no test label ever read, and the LR range test's LR recorded in job.yaml and summary.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from zoo.api import run
from zoo.hookspecs import hookimpl
from zoo.io.yamlio import load_yaml
from zoo.kit.testing import make_catalog, tiny_dataset_factory, tiny_job, tiny_transfer_model
from zoo.strategy import AutoCandidate, Strategy
from zoo_cli_helpers import assert_one_line_error, cli
from zoo_strategies.auto import Auto
from zoo_strategies.auto_halving import rung_budgets
from zoo.plan import PlanContext


class HeadOnlyCandidate(Strategy):
    """A third-party strategy that offers itself to auto (cheap: frozen backbone)."""

    name = "third-head"
    defaults: dict = {}
    auto = AutoCandidate(cost="cheap")

    def plan(self, model, groups, job, ctx=None):
        from zoo.strategy import Phase, StrategyPlan, all_groups

        phase = Phase("head", job.train.epochs, all_groups(groups, trainable=False),
                      bn="freeze-all")
        return StrategyPlan(self.name, [phase])


class NeedsSource(HeadOnlyCandidate):
    """Declares source weights as a need."""

    name = "third-needs-weights"
    auto = AutoCandidate(cost="cheap", needs_source_weights=True)


class NeedsStream(HeadOnlyCandidate):
    """Declares an unlabeled target stream as a need."""

    name = "third-needs-target"
    auto = AutoCandidate(cost="full", needs=("target_unlabeled",))


class Plugin:
    name = "third-auto"

    @hookimpl
    def register_strategies(self, register):
        for cls in (HeadOnlyCandidate, NeedsSource, NeedsStream):
            register(cls.name, cls(), description=cls.__doc__)


class _Raising:
    """A split that fails on any read: proof that trials never touch it."""

    classes = ["a", "b", "c"]

    def __len__(self):
        return 12

    def __getitem__(self, i):
        raise AssertionError("auto read the test split")


def bundle(test=None):
    from zoo.engine.data import DataBundle
    from zoo.jobspec import DataSpec

    spec = DataSpec(name="tiny", params={"classes": 3, "per_class": 12}, val_split=0.25,
                    test_split=0.25)
    splits = {s: tiny_dataset_factory(spec, s, lambda img: img.float() / 255.0, 0)
              for s in ("train", "val", "test")}
    return DataBundle(splits["train"], splits["val"], test or splits["test"],
                      splits["train"].classes, [])


def model(source: bool = True):
    torch.manual_seed(0)
    m, groups = tiny_transfer_model(3)
    m.backbone.weights_source = "file:test" if source else "random-init"
    return m, groups


def auto_job(**params):
    return tiny_job(strategy={"name": "auto", "params": params}, train={"epochs": 3})


def test_rung_budgets_spend_the_budget_and_grow_by_eta():
    b = rung_budgets(9, epochs=5, eta=3, rungs=3, budget=0.6)
    assert b[1] == pytest.approx(3 * b[0]) and b[2] == pytest.approx(9 * b[0])
    spent = 9 * b[0] + 3 * b[1] + 1 * b[2]
    assert spent == pytest.approx(0.6 * 5)
    assert max(rung_budgets(1, 2, 3, 3, 10.0)) <= 2  # never more than train.epochs


def test_a_lone_survivor_is_not_trained_again_but_the_finalist_has_two_points():
    from zoo_strategies.auto_halving import rung_alive

    assert rung_alive(9, 3, 3) == [9, 3, 1]
    assert rung_alive(3, 3, 3) == [3, 1]       # one left after rung 0: it is the final rung
    assert rung_alive(1, 3, 3) == [1, 1]       # two points for the trend
    assert rung_alive(10, 3, 3) == [10, 4, 2]  # rungs caps it
    assert rung_alive(5, 3, 1) == [5]
    b = rung_budgets(3, epochs=8, eta=3, rungs=3, budget=0.5)
    assert len(b) == 2 and 3 * b[0] + b[1] == pytest.approx(4.0)


def test_trial_epochs_are_exactly_the_budget():
    from zoo_strategies.auto_trials import Candidate, Trials

    paid = Candidate("finetune", None, "full", auto_job(), "target")
    cheap = Candidate("linear-probe", None, "cheap", auto_job(), "target")
    t = Trials.__new__(Trials)  # epochs_for reads nothing of the instance
    assert t.epochs_for(paid, 1.8) == (2, pytest.approx(0.9))  # not 1 epoch: 2 of 90 %
    assert t.epochs_for(paid, 0.3) == (1, pytest.approx(0.3))
    assert t.epochs_for(paid, 2.0) == (2, 1.0)
    assert t.epochs_for(cheap, 0.3) == (3, 1.0)  # as the run trains it (train.epochs 3)
    assert t.epochs_for(cheap, 0.3, equal_budget=True) == (1, pytest.approx(0.3))


def test_paid_candidates_are_kept_by_priority():
    from zoo_strategies.auto_halving import by_priority
    from zoo_strategies.auto_trials import Candidate

    def c(name, cost, lr_from):
        return Candidate(name, None, cost, None, "target", lr=0.1, lr_from=lr_from)

    paid = [c("bitfit", "partial", "default"), c("finetune", "full", "default ÷ 3"),
            c("finetune", "full", "default"), c("finetune", "full", "default × 3"),
            c("lp-ft", "full", "default")]
    order = by_priority(paid, {"lp-ft": True})
    assert [(x.strategy, x.lr_from) for x in order] == [
        ("finetune", "default"), ("finetune", "default × 3"), ("finetune", "default ÷ 3"),
        ("lp-ft", "default"), ("bitfit", "default")]


def test_the_measured_probes_lr_lean_goes_first():
    """A cheap probe's LR variant that beats its default (trained as the run would) on val
    accuracy and loss says which way a paid strategy's LR goes first; no lean when the
    default holds on either count or two strategies disagree."""
    from zoo_strategies.auto_halving import FULL, by_priority, lr_lean
    from zoo_strategies.auto_trials import Candidate

    def c(name, cost, lr_from, score=None):
        cand = Candidate(name, None, cost, None, "target", lr=0.1, lr_from=lr_from)
        if score is not None:
            cand.scores[FULL] = score
        return cand

    def probes(small, default, large, name="linear-probe"):  # (accuracy, loss) each
        return [c(name, "cheap", "default ÷ 3", (*small, 0)),
                c(name, "cheap", "default", (*default, 0)),
                c(name, "cheap", "default × 3", (*large, 0))]

    # 100 val images: 0.01 is one image
    assert lr_lean(probes((0.80, 0.6), (0.85, 0.5), (0.86, 0.4)), 100) == "×"
    assert lr_lean(probes((0.90, 0.4), (0.85, 0.5), (0.80, 0.6)), 100) == "÷"
    assert lr_lean(probes((0.80, 0.6), (0.90, 0.4), (0.85, 0.5)), 100) == ""
    # better by one count only: the same accuracy at a lower loss, or more right at a
    # higher loss, is no lean
    assert lr_lean(probes((0.85, 0.3), (0.85, 0.5), (0.80, 0.6)), 100) == ""
    assert lr_lean(probes((0.80, 0.6), (0.85, 0.5), (0.86, 0.55)), 100) == ""
    # two strategies that disagree, or none measured at several LRs: no lean
    assert lr_lean(probes((0.80, 0.6), (0.85, 0.5), (0.86, 0.4))
                   + probes((0.90, 0.4), (0.85, 0.5), (0.80, 0.6), "knn-lr"), 100) == ""
    assert lr_lean([c("ncm", "free", "", (0.9, 1.0, 0))], 100) == ""

    paid = [c("finetune", "full", "default ÷ 3"), c("finetune", "full", "default"),
            c("finetune", "full", "default × 3"), c("bitfit", "partial", "default × 3"),
            c("bitfit", "partial", "default")]
    order = by_priority(paid, {}, "×")
    assert [(x.strategy, x.lr_from) for x in order] == [
        ("finetune", "default × 3"), ("finetune", "default"), ("finetune", "default ÷ 3"),
        ("bitfit", "default × 3"), ("bitfit", "default")]
    order = by_priority(paid, {}, "÷")
    assert [x.lr_from for x in order][:3] == ["default ÷ 3", "default", "default × 3"]


class _Rival:
    """Trials stand-in: the rival's score at a budget (equal-budget runs)."""

    def __init__(self, curve):
        self.curve, self.calls = curve, []

    def run(self, cand, budget, equal_budget=False):
        from zoo_strategies.auto_halving import TrialResult

        self.calls.append((cand.label, budget, equal_budget))
        return TrialResult(cand.label, self.curve[budget], 1.0, 0.1, "")


@pytest.mark.parametrize("paid_scores, rival_curve, full, wins", [
    ((0.30, 0.60), {0.5: 0.77, 2.0: 0.81}, 0.90, "finetune"),  # closing fast: it will pass
    ((0.10, 0.20), {0.5: 0.55, 2.0: 0.65}, 0.80, "linear-probe"),  # not closing
    ((0.60, 0.70), {0.5: 0.60, 2.0: 0.70}, 0.70, "linear-probe"),  # level: a tie, measured
    ((0.50, 0.95), {0.5: 0.90, 2.0: 0.90}, 0.90, "finetune"),  # already past it
])
def test_the_finalist_is_compared_at_equal_budgets_and_extrapolated(
        paid_scores, rival_curve, full, wins):
    from zoo_strategies.auto_halving import FULL, paid_or_measured
    from zoo_strategies.auto_trials import Candidate

    fin = Candidate("finetune", None, "full", None, "target",
                    scores={0: (paid_scores[0], 1.0, 0), 1: (paid_scores[1], 1.0, 0)})
    rival = Candidate("linear-probe", None, "cheap", None, "target",
                      scores={FULL: (full, 0.5, 0)})
    trials = _Rival(rival_curve)
    winner, why, hedged = paid_or_measured(fin, rival, [0.5, 2.0], 8, 100, trials)
    assert winner.strategy == wins and hedged is False  # no fallback offered: none used
    assert trials.calls == [("linear-probe", 0.5, True), ("linear-probe", 2.0, True)]
    assert rival.scores[0][0] == rival_curve[0.5] and "equal budgets" in why
    free = Candidate("knn", None, "free", None, "target", scores={FULL: (full, 0.5, 0)})
    trials = _Rival(rival_curve)
    paid_or_measured(fin, free, [0.5, 2.0], 8, 100, trials)
    assert trials.calls == [] and free.scores[1] == free.scores[FULL]  # no training: same


@pytest.mark.parametrize("paid_scores, rival_curve, full, wins, hedged, says", [
    # catching up (gap -0.47 -> -0.26) but predicted 0.85 < 0.90: cannot tell -> trains it
    ((0.30, 0.55), {0.5: 0.77, 2.0: 0.81}, 0.90, "finetune", True, "cannot tell"),
    # not closing (gap -0.45 -> -0.45): the probe, measured, wins outright
    ((0.10, 0.20), {0.5: 0.55, 2.0: 0.65}, 0.80, "linear-probe", False, "a tie goes"),
    # falling behind with more training: the probe
    ((0.60, 0.55), {0.5: 0.60, 2.0: 0.70}, 0.70, "linear-probe", False, "a tie goes"),
    # catching up (gap -0.40 -> -0.36), but too slowly to win even linearly in epochs
    # (0.80 - 0.36 + 0.027 x 6 = 0.60): the probe, without a full fine-tune
    ((0.10, 0.16), {0.5: 0.50, 2.0: 0.52}, 0.80, "linear-probe", False, "at most 0.6"),
    # predicted to win: it trains, with the probe as its fallback all the same
    ((0.30, 0.60), {0.5: 0.77, 2.0: 0.81}, 0.90, "finetune", True, "predicted val"),
    # the gap does not close (-0.20 -> -0.21: the probe gained as fast over those budgets)
    # but the probe is done early (0.87 at 2 epochs, 0.90 at 8) while the fine-tune's own
    # curve, 0.40 -> 0.66, extended in log-epochs ends at 0.92: cannot tell -> trains it
    ((0.40, 0.66), {0.5: 0.60, 2.0: 0.87}, 0.90, "finetune", True, "its own curve"),
])
def test_when_auto_cannot_tell_the_finalist_trains_with_the_rival_as_fallback(
        paid_scores, rival_curve, full, wins, hedged, says):
    from zoo_strategies.auto_halving import FULL, paid_or_measured
    from zoo_strategies.auto_trials import Candidate

    fin = Candidate("finetune", None, "full", None, "target",
                    scores={0: (paid_scores[0], 1.0, 0), 1: (paid_scores[1], 1.0, 0)})
    rival = Candidate("linear-probe", None, "cheap", None, "target",
                      scores={FULL: (full, 0.5, 0)})
    winner, why, used = paid_or_measured(fin, rival, [0.5, 2.0], 8, 100, _Rival(rival_curve),
                                         fallback=rival)
    assert (winner.strategy, used) == (wins, hedged) and says in why
    if hedged:
        assert "fallback" in why
    # the same trials when the run cannot carry a fallback: the prediction decides alone
    rival.scores = {FULL: (full, 0.5, 0)}
    winner, _, used = paid_or_measured(fin, rival, [0.5, 2.0], 8, 100, _Rival(rival_curve))
    assert used is False and winner.strategy == ("finetune" if says == "predicted val"
                                                 else "linear-probe")


def test_successive_halving_keeps_the_top_third_per_rung():
    from zoo_strategies.auto_halving import FULL

    m, groups = model()
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    # a budget that affords every candidate's trials (test_budget_... covers the pruning)
    plan = auto.plan(m, groups, auto_job(candidates="linear-probe,finetune,lp-ft", eta=3,
                                         rungs=3, budget=10.0), auto_ctx)
    cands = plan.choice.trials
    assert len(cands) == 9  # 3 strategies × (lr ÷ 3, lr, lr × 3)
    paid = [c for c in cands if c.cost == "full"]
    per_rung = [sum(1 for c in paid if r in c.scores) for r in range(3)]
    assert per_rung == [6, 2, 1]  # the paid ones halve among themselves
    probes = [c for c in cands if c.strategy == "linear-probe"]
    assert all(FULL in c.scores for c in probes)  # the cheap ones: trained as they run
    # the survivors of each rung are its best by val accuracy
    r0 = sorted(paid, key=lambda c: -c.scores[0][0])
    second = r0[1].scores[0][0]
    assert all(c.scores[0][0] >= second for c in paid if 1 in c.scores)
    table = "\n".join(plan.notes)
    assert "successive halving" in table and "<- chosen" in table
    assert "equal budgets" in plan.notes[0]  # the finalist against the best cheap one
    lrs = sorted({c.lr for c in cands if c.strategy == "finetune"})
    assert lrs == pytest.approx([1e-3, 3e-3, 9e-3])
    # the run gets the winner's LR on every phase that used the base LR
    assert all(p.lr is not None for p in plan.phases)


def test_discovers_a_third_party_candidate_and_skips_unmet_needs():
    catalog = make_catalog(Plugin())
    m, groups = model(source=False)  # no source weights: needs_source_weights unmet
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=catalog)
    plan = auto.plan(m, groups, auto_job(), auto_ctx)
    assert plan.choice.skipped["third-needs-weights"] == "needs source weights"
    assert "target_unlabeled" in plan.choice.skipped["third-needs-target"]
    m, groups = model(source=True)
    plan = auto.plan(m, groups, auto_job(lr_factor=1, rungs=2), auto_ctx)
    names = {c.strategy for c in plan.choice.trials}
    assert {"third-head", "third-needs-weights", "finetune", "linear-probe"} <= names
    assert "third-needs-target" not in names and "auto" not in names
    assert "third-head" in "\n".join(plan.notes)
    # the training-free strategies join with their own heads (a model change, issue #15)
    assert {"ncm", "knn"} <= names and "ncm" not in plan.choice.skipped
    assert {c.cost for c in plan.choice.trials if c.strategy in ("ncm", "knn")} == {"free"}
    assert all(set(c.scores.values()) == {c.scores["full"]} for c in plan.choice.trials
               if c.strategy in ("ncm", "knn"))  # one evaluation, no rungs
    assert "zero-shot" in plan.choice.skipped  # no text tower: still no candidate


def test_explicit_candidates_override_discovery():
    m, groups = model()
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"),
                           catalog=make_catalog(Plugin()))
    plan = auto.plan(m, groups, auto_job(candidates="third-head,finetune", lr_factor=1),
                     auto_ctx)
    assert {c.strategy for c in plan.choice.trials} == {"third-head", "finetune"}


def test_never_reads_test_labels():
    m, groups = model()
    job = auto_job(candidates="linear-probe,finetune", rungs=2)
    choices = []
    for test in (None, _Raising()):
        auto = Auto()
        auto_ctx = PlanContext(data=bundle(test), device=torch.device("cpu"),
                               catalog=make_catalog())
        plan = auto.plan(m, groups, job, auto_ctx)
        choices.append((plan.notes[0], [c.scores for c in plan.choice.trials]))
    assert choices[0][0] == choices[1][0]  # same choice, same reason
    assert [{r: s[:2] for r, s in c.items()} for c in choices[0][1]] == \
        [{r: s[:2] for r, s in c.items()} for c in choices[1][1]]


def test_lr_auto_per_candidate_uses_the_range_test():
    m, groups = model()
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    plan = auto.plan(m, groups, auto_job(candidates="linear-probe,finetune", lr="auto",
                                         rungs=1), auto_ctx)
    assert {c.lr_from for c in plan.choice.trials} == {"lr-find"}
    assert all(math.isfinite(c.lr) and 1e-7 <= c.lr <= 10 for c in plan.choice.trials)


def test_lr_auto_on_run_records_the_lr(tmp_path):
    catalog = make_catalog()
    job = tiny_job(out=str(tmp_path), train={"lr": "auto", "epochs": 1},
                   strategy={"name": "finetune"}, head={"name": "linear"})
    summary = run(job, catalog=catalog)
    found = summary["lr_find"]
    lr = load_yaml(Path(summary["run_dir"]) / "job.yaml")[0]["train"]["lr"]
    assert isinstance(lr, float) and math.isfinite(lr) and 1e-7 <= lr <= 10.0
    assert lr == pytest.approx(found["lr"]) and found["strategy"] == "finetune"
    on_disk = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert on_disk["lr_find"]["lr"] == pytest.approx(lr)


def test_lr_flag_accepts_auto_and_rejects_words(capsys, tmp_path):
    code, _, err = cli(capsys, "run", "testing:tiny_cnn", "--lr", "fast", "--plan")
    assert code == 2 and "fast" in err
    code, _, err = cli(capsys, "run", "testing:tiny_cnn", "--set", "train.lr=fast", "--plan")
    assert "positive number or auto" in assert_one_line_error(err, code)


def test_lr_auto_on_compare_sweeps_once_per_strategy(tmp_path):
    from zoo.tools.compare import compare

    flags = {"weights": "none", "device": "cpu", "out": str(tmp_path), "metrics": ["accuracy"],
             "head": {"name": "linear"}, "train": {"epochs": 1, "batch_size": 16, "lr": "auto"},
             "data": {"name": "tiny", "augment": "none", "num_workers": 0}}
    result = compare("testing:tiny_cnn", ["finetune", "linear-probe"], seeds=2, flags=flags,
                     catalog=make_catalog())
    rows = {(r["strategy"], r["seed"]): r for r in result["runs"]}
    assert all(r["status"] == "completed" for r in rows.values()), rows
    for s in ("finetune", "linear-probe"):
        lrs = [rows[(s, seed)]["lr_find"]["lr"] for seed in (0, 1)]
        assert lrs[0] == lrs[1] and math.isfinite(lrs[0]) and 1e-7 <= lrs[0] <= 10
        job = load_yaml(Path(rows[(s, 0)]["run_dir"]) / "job.yaml")[0]
        assert job["train"]["lr"] == pytest.approx(lrs[0])


def test_training_free_candidates_get_their_own_head_and_the_cached_features(monkeypatch):
    from zoo_strategies import auto_trials
    from zoo_strategies.head_change import ReplaceHead

    seen = []
    real_fit = auto_trials.fit

    def spy(model, groups, plan, *args, **kwargs):
        state = real_fit(model, groups, plan, *args, **kwargs)
        seen.append((plan.strategy, type(model.head).__name__, state.history[0]))
        return state

    monkeypatch.setattr(auto_trials, "fit", spy)
    m, groups = model()
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    plan = auto.plan(m, groups, auto_job(candidates="ncm,knn"), auto_ctx)
    # one evaluation each, with its own head, fitted on the shared cached features
    assert sorted((s, h) for s, h, _ in seen) == [("knn", "KNNHead"), ("ncm", "NCMHead")]
    assert all(rec["cached_features"] and rec["train"]["optimizer_steps"] == 0
               for _, _, rec in seen)
    chosen = plan.notes[0].split("'")[1]
    (change,) = plan.model_changes  # the final plan: "head → ncm" + the strategy's phase
    assert isinstance(change, ReplaceHead) and change.head == chosen
    assert change.describe() == {"name": "head", "head": chosen, "params": {},
                                 "replaces": None}
    assert [p.name for p in plan.phases] == [chosen] and plan.phases[0].steps == "none"
    assert isinstance(m.head, torch.nn.Linear)  # planning left the job's model as it was
    assert any(f"→ '{chosen}'" in n for n in plan.notes)


def test_replace_head_keeps_the_head_group_true_and_tags_the_head():
    from zoo.strategy import StrategyPlan, apply_model_changes
    from zoo_strategies.head_change import ReplaceHead

    catalog = make_catalog()
    m, groups = model()
    change = ReplaceHead("mlp", {"hidden": 4}, catalog.get("heads", "mlp").obj,
                         m.backbone.feature_dim, 3, replaces="linear")
    before = [g.params for g in groups if g.name != "head"]
    apply_model_changes(StrategyPlan("x", [], model_changes=[change]), m, groups)
    assert m.head.zoo_head == {"name": "mlp", "params": {"hidden": 4}}
    head = next(g for g in groups if g.name == "head")
    assert head.params == [n for n, _ in m.named_parameters() if n.startswith("head.")]
    assert len(head.params) == 4 and [g.params for g in groups if g.name != "head"] == before
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_budget_counts_each_trials_val_pass_and_prunes_what_it_cannot_afford():
    from zoo_strategies.auto_halving import MIN_BUDGET, MIN_FINAL, affordable, rung_alive

    # 18 paid candidates, val pass 0.2 epoch each, budget 0.4 × 5 epochs = 2 epochs
    n = affordable(18, epochs=5, eta=3, rungs=3, budget=0.4, val_cost=0.2)
    assert 1 <= n < 18
    b = rung_budgets(n, epochs=5, eta=3, rungs=3, budget=0.4, val_cost=0.2)
    alive = rung_alive(n, 3, 3)
    spent = sum(a * (b[r] + 0.2) for r, a in enumerate(alive))
    assert spent <= 0.4 * 5 + 1e-9 and b[0] >= MIN_BUDGET and b[-1] >= MIN_FINAL * 5
    assert affordable(18, 5, 3, 3, 0.4, val_cost=0.0) > n  # val passes are what prune here
    assert affordable(18, 5, 3, 3, 10.0, val_cost=0.2) == 18  # a large budget: all of them
    assert affordable(0, 5, 3, 3, 0.4, 0.2) == 0


def test_a_rung_tie_between_lr_variants_goes_to_the_larger_lr():
    from zoo_strategies.auto_halving import TrialResult, rank_rung
    from zoo_strategies.auto_trials import Candidate

    def c(name, lr):
        return Candidate(name, None, "full", None, "target", lr=lr)

    alive = [c("finetune", 0.003), c("finetune", 0.009), c("bitfit", 0.01), c("finetune", 0.001)]
    res = [TrialResult("a", 0.20, 2.38, 0, ""), TrialResult("b", 0.20, 2.45, 0, ""),
           TrialResult("c", 0.20, 2.00, 0, ""), TrialResult("d", 0.30, 2.60, 0, "")]
    # 0.30 first (more right); then the tie at 0.20: bitfit by its lower loss, and of the
    # finetune pair the larger LR although its loss is higher (short-horizon bias)
    assert rank_rung(alive, res, 100) == [3, 2, 1, 0]
    res[1] = TrialResult("b", 0.19, 2.45, 0, "")  # one val image fewer: no tie any more
    assert rank_rung(alive, res, 100) == [3, 2, 0, 1]


@pytest.mark.parametrize("params", [
    {"candidates": "finetune,lp-ft", "rungs": 1},          # paid only, one rung: no trend
    {"candidates": "linear-probe,knn"},                     # nothing paid: the best measured
    {"candidates": "finetune,linear-probe", "budget": 0.0},  # no budget: one paid, 0.1 epoch
    {"candidates": "finetune,linear-probe", "rungs": 1, "eta": 2},
])
def test_auto_edge_settings_still_choose_and_explain(params):
    m, groups = model()
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    plan = auto.plan(m, groups, auto_job(**params), auto_ctx)
    chosen = plan.notes[0].split("'")[1]
    assert chosen in params["candidates"].split(",")
    assert any(n.startswith("trials:") for n in plan.notes)
    paid = [c for c in plan.choice.trials if c.cost in ("partial", "full") and c.scores]
    assert all(all(isinstance(r, int) for r in c.scores) for c in paid)


def _weights(m) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("reuse", [True, False])
def test_the_paid_winner_starts_from_its_trial_weights(reuse):
    m, groups = model()
    source = _weights(m)
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    plan = auto.plan(m, groups, auto_job(candidates="finetune", rungs=2, reuse_trial=reuse),
                     auto_ctx)
    assert plan.notes[0].startswith("auto chose 'finetune'")
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, source[k])]
    if reuse:  # the last rung's trial trained every layer: the run starts from there
        assert "starts from its trial's weights" in plan.notes[1]
        assert any(k.startswith("backbone.") for k in changed)
        assert any(k.startswith("head.") for k in changed)
    else:
        assert changed == [] and "trial's weights" not in "\n".join(plan.notes)
    assert all(c.trained is None for c in plan.choice.trials)  # no weights held on to


def test_a_cheap_winner_or_a_winner_with_model_changes_keeps_the_source_weights():
    from types import SimpleNamespace

    from zoo_strategies.auto import _reuse_trial

    m, _ = model()
    source = _weights(m)
    trained = {k: v + 1 if v.is_floating_point() else v for k, v in source.items()}
    plan = SimpleNamespace(model_changes=[])

    def winner(cost, weights):
        return SimpleNamespace(cost=cost, trained=weights, label="x @ 0.1", trained_for="1")

    assert _reuse_trial(winner("cheap", trained), ("x", 0, 0, 0, 0, []), plan, m, True) is None
    note = _reuse_trial(winner("full", trained), ("x", 0, 0, 0, 0, ["head"]), plan, m, True)
    assert note.startswith("starts from the source weights")
    note = _reuse_trial(winner("full", {"nope": torch.zeros(1)}), ("x", 0, 0, 0, 0, []),
                        plan, m, True)
    assert note.startswith("starts from the source weights") and "do not fit" in note
    assert all(torch.equal(v, source[k]) for k, v in m.state_dict().items())
    assert _reuse_trial(winner("full", trained), ("x", 0, 0, 0, 0, []), plan, m, True)
    assert all(torch.equal(v, trained[k]) for k, v in m.state_dict().items())


def test_reuse_trial_must_be_a_flag():
    from zoo.errors import ConfigError

    m, groups = model()
    auto = Auto()
    auto_ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    with pytest.raises(ConfigError, match="reuse_trial.*true or false"):
        auto.plan(m, groups, auto_job(candidates="finetune", reuse_trial="maybe"), auto_ctx)


def test_trial_weights_that_half_fit_leave_the_model_untouched():
    from types import SimpleNamespace

    from zoo_strategies.auto import _reuse_trial

    m, _ = model()
    source = _weights(m)
    half = {k: v + 1 if v.is_floating_point() else v for k, v in source.items()}
    half.pop(sorted(half)[-1])  # one key missing: load_state_dict would copy the rest
    w = SimpleNamespace(cost="full", trained=half, label="x", trained_for="1")
    note = _reuse_trial(w, ("x", 0, 0, 0, 0, []), SimpleNamespace(model_changes=[]), m, True)
    assert "do not fit" in note
    assert all(torch.equal(v, source[k]) for k, v in m.state_dict().items())


def test_a_run_with_a_head_start_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """End to end: the run really starts from the trial (its test loss differs from a cold
    start), and an interrupted run resumes to the same result (the trials re-run, same
    seed, then the checkpoint is loaded over their weights)."""
    from zoo.engine.pipeline import run as run_job
    from zoo.errors import RunInterrupted
    from zoo.kit.testing.components import complete_job, run_tiny, tiny_job

    cat = make_catalog()
    source = Path(run_tiny(cat, tmp_path / "src", train={"epochs": 1})["run_dir"])

    def job(name, reuse=True):
        return complete_job(tiny_job(
            out=str(tmp_path), name=name, weights=str(source / "model.safetensors"),
            train={"epochs": 3}, strategy={"name": "auto", "params": {
                "candidates": "finetune", "rungs": 2, "reuse_trial": reuse}}), cat)

    plan: dict = {}
    full = run_job(job("full"), cat, quiet=True, on_plan=plan.update)
    assert any(str(n).startswith("starts from its trial's weights") for n in plan["notes"])
    cold = run_job(job("cold", reuse=False), cat, quiet=True)
    assert cold["test"]["loss"] != full["test"]["loss"]
    # after epoch 2 of the run (a trial here trains 1 epoch: the fault is not hit in one)
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:2")
    with pytest.raises(RunInterrupted):
        run_job(job("part"), cat, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    resumed = run_job(job("part"), cat, quiet=True, resume=str(tmp_path / "part"))
    assert resumed["status"] == "completed" and resumed["test"] == full["test"]


def test_a_hedged_paid_winner_carries_the_probe_as_fallback(monkeypatch, tmp_path):
    """When auto cannot tell, the plan's fallback is the *source* backbone with the probe's
    trained head — taken before the winner's trial weights are loaded into the model."""
    from zoo_strategies import auto_halving

    real = auto_halving.paid_or_measured

    def cannot_tell(finalist, rival, budgets, epochs, n_val, trials, fallback=None):
        assert fallback is not None  # a probe and a fine-tune: the run can carry it
        real(finalist, rival, budgets, epochs, n_val, trials, fallback)
        return finalist, "cannot tell (forced)", True

    monkeypatch.setattr(auto_halving, "paid_or_measured", cannot_tell)
    m, groups = model()
    source = {k: v.clone() for k, v in m.state_dict().items()}
    ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=make_catalog())
    # ncm joins too: its own head cannot be the fallback, the probe's can
    plan = Auto().plan(m, groups, auto_job(candidates="ncm,linear-probe,finetune", rungs=2),
                       ctx)
    assert plan.choice.chosen == "finetune" and plan.fallback is not None
    assert plan.fallback.label.startswith("linear-probe @")
    weights = plan.fallback.weights
    assert weights.keys() == source.keys()
    heads = [k for k in source if k.startswith("head.")]
    body = [k for k in source if not k.startswith("head.") and source[k].is_floating_point()]
    assert all(torch.equal(weights[k], source[k]) for k in body)  # the source backbone
    assert any(not torch.equal(weights[k], source[k]) for k in heads)  # the probe's head
    now = m.state_dict()  # the run starts from the fine-tune's trial (reuse_trial)
    assert any(not torch.equal(now[k], source[k]) for k in body)
    # a run: summary.json says where the fallback came from, its val score, whether kept
    from zoo.kit.testing.components import run_tiny

    cat = make_catalog()
    src = Path(run_tiny(cat, tmp_path / "src", train={"epochs": 1})["run_dir"])
    summary = run_tiny(cat, tmp_path, weights=str(src / "model.safetensors"),
                       train={"epochs": 3}, strategy={"name": "auto", "params": {
                           "candidates": "linear-probe,finetune", "rungs": 2}})
    fb = summary["fallback"]
    assert summary["auto"]["chosen"] == "finetune" and fb["from"].startswith("linear-probe @")
    assert fb["kept"] == (summary["best_epoch"] == 0)
    assert 0.0 <= fb["val"]["accuracy"] <= 1.0 and summary["monitor"]["best"] >= \
        fb["val"]["accuracy"]


def test_the_fallback_is_the_best_measured_candidate_that_fits_the_model():
    from zoo_strategies.auto_halving import FULL, best_fallback
    from zoo_strategies.auto_trials import Candidate

    fin = Candidate("finetune", None, "full", None, "target")

    def measured(name, acc, loss, changes=(), trained=True):
        c = Candidate(name, None, "cheap", None, "target", changes=list(changes),
                      scores={FULL: (acc, loss, 0)})
        c.trained, c.trained_diff = ({"head.weight": torch.zeros(1)} if trained else None), True
        return c

    ncm = measured("ncm", 0.95, 0.1, changes=["head → ncm"])  # best, but its own head
    lp_a, lp_b = measured("linear-probe", 0.90, 0.3), measured("linear-probe", 0.90, 0.2)
    weak = measured("bitfit-ish", 0.99, 0.1, trained=False)   # kept no weights
    assert best_fallback(fin, [ncm, lp_a, lp_b, weak]) is lp_b  # same accuracy: lower loss
    assert best_fallback(fin, [ncm, weak]) is None
    fin.changes_model = True  # adapters on the finalist: nothing fits its state dict
    assert best_fallback(fin, [lp_a]) is None


def test_a_shadowed_strategy_is_a_candidate_by_its_plugin_name():
    """Two plugins register one name: the winner is a candidate by the bare name, the other
    by PLUGIN:NAME (issue 25's names) — neither is silently left out."""
    class Shadow:
        name = "shadow-pack"

        @hookimpl
        def register_strategies(self, register):
            register("linear-probe", HeadOnlyCandidate(), description="a second linear-probe")

    cat = make_catalog(Shadow())
    shadowed = [f"{c.plugin}:linear-probe" for c in cat.shadowed["strategies"]["linear-probe"]]
    assert len(shadowed) == 1 and cat.get("strategies", "linear-probe").plugin == "shadow-pack"
    m, groups = model()
    ctx = PlanContext(data=bundle(), device=torch.device("cpu"), catalog=cat)
    found, skipped, _ = Auto().discover(m, groups, auto_job(), None, ctx)
    names = [f[0] for f in found]
    assert "linear-probe" in names and shadowed[0] in names
    assert found[names.index("linear-probe")][1] is cat.get("strategies", "linear-probe").obj
    assert found[names.index(shadowed[0])][1] is cat.get("strategies", shadowed[0]).obj


def test_the_cached_features_pass_is_paid_out_of_the_budget():
    from types import SimpleNamespace

    from zoo_strategies.auto_halving import cache_cost, rung_budgets
    from zoo_strategies.auto_trials import Candidate

    data = {"target": SimpleNamespace(train=[0] * 90, val=[0] * 30)}
    paid = Candidate("finetune", None, "full", None, "target")
    probe = Candidate("linear-probe", None, "cheap", None, "target")
    assert cache_cost(data, [paid, probe]) == pytest.approx((90 + 30) / 90 / 3)
    assert cache_cost(data, [paid]) == 0.0  # nothing cached: nothing to pay
    # what is left for the paid trials: 0.4 of 4 epochs less the pass (0.44 epochs)
    left = 0.4 - cache_cost(data, [paid, probe]) / 4
    assert sum(n * b for n, b in zip([2, 1], rung_budgets(2, 4, 3, 3, left))) == \
        pytest.approx(0.4 * 4 - (90 + 30) / 90 / 3)
