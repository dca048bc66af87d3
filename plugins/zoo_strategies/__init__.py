"""Built-in transfer strategies, from frozen features to full fine-tuning.

Each strategy is a small class with ``defaults`` (its ``strategy.params``, overridable with
``--set strategy.params.X=V``) and ``plan(model, groups, job, ctx) -> StrategyPlan``.  A
strategy that needs run data (``joint``: the source task, ``auto``: the target splits for its
trials) reads it from the frozen plan context ``ctx`` (:class:`zoo.plan.PlanContext`); the
strategy objects hold no state between plans.

Importing this package imports no torch: the plan classes live in :mod:`zoo.strategy`,
imported when a plan is made, and the torch modules of this pack (:mod:`.terms`,
the trials of :mod:`.auto`) are imported inside ``plan``.

Modules: :mod:`.base` (base class, ``finetune``, ``linear-probe``), :mod:`.schedules`
(``lp-ft``, ``gradual-unfreeze``, ``partial``, ``layer-decay``), :mod:`.regularized`
(``l2-sp``, ``lwf``, ``joint``), :mod:`.auto` (``auto``; its trials: :mod:`.auto_halving`,
:mod:`.auto_trials`), :mod:`.domain` (``source-only``,
``adabn``, ``dann``, ``mcc``: unsupervised domain adaptation), :mod:`.training_free` (``ncm``,
``knn``, ``zero-shot``: no gradient steps; ``wise-ft``), :mod:`.peft` (``bitfit``,
``norm-tuning``, ``lora``, ``dora``), :mod:`.ssf` (``ssf``: scale and shift, merged), :mod:`.vpt`
(``vpt``: prompt tokens, kept unmerged and re-applied on load).  docs/strategies.md describes each.
"""
from zoo.hookspecs import hookimpl

from .auto import Auto
from .base import Finetune, LinearProbe, Strategy, backbone_groups, backbone_lr_mult, has_source_weights  # noqa: F401
from .domain import DANN, MCC, AdaBN, SourceOnly
from .regularized import L2SP, Joint, LwF
from .schedules import GradualUnfreeze, LayerDecay, LpFt, Partial
from .training_free import JOB_DEFAULTS as _TRAINING_FREE_DEFAULTS
from .training_free import KNN, NCM, WiseFt, ZeroShot
from .peft import JOB_DEFAULTS as _PEFT_DEFAULTS
from .peft import BitFit, DoRA, LoRA, NormTuning
from .ssf import JOB_DEFAULTS as _SSF_DEFAULTS
from .ssf import SSF
from .vpt import JOB_DEFAULTS as _VPT_DEFAULTS
from .vpt import VPT


def strategy_classes() -> dict:
    """Every strategy class of this pack by name (imports no torch)."""
    classes = [Finetune, LinearProbe, LpFt, GradualUnfreeze, Partial, LayerDecay, L2SP, LwF, Joint,
               Auto, SourceOnly, AdaBN, DANN, MCC, NCM, KNN, ZeroShot, WiseFt, BitFit, NormTuning,
               LoRA, DoRA, SSF, VPT]
    return {cls.name: cls for cls in classes}


#: each strategy's job defaults (``register(..., job_defaults=...)``), applied when it is
#: chosen: over the dataset's defaults, under registry.yaml, presets, config and flags
JOB_DEFAULTS: dict[str, dict] = {
    # auto: 0.1 with source weights, 1.0 without
    "finetune": {"strategy": {"params": {"backbone_lr_mult": "auto"}}},
    "linear-probe": {"data": {"augment": "none"}, "train": {"lr": 0.01, "weight_decay": 0.0}},
    # probe_epochs auto: 40% of train.epochs; probe at 0.01 (linear-probe's LR; or lr ×
    # probe_lr_mult when set), then all at lr×0.1
    "lp-ft": {"strategy": {"params": {"probe_epochs": "auto", "probe_lr": 0.01,
                                      "probe_lr_mult": "none", "ft_lr_mult": 0.1}}},
    # one more layer group (from the top) per stage
    "gradual-unfreeze": {"strategy": {"params": {"epochs_per_stage": 1,
                                                 "backbone_lr_mult": "auto"}}},
    # only the last k layer groups and the head train
    "partial": {"strategy": {"params": {"k": 1, "backbone_lr_mult": "auto"}}},
    # group i of d at lr × decay^(d − i), head at lr
    "layer-decay": {"strategy": {"params": {"decay": 0.7}}},
    # the α/β penalties replace weight decay
    "l2-sp": {"strategy": {"params": {"alpha": 0.1, "beta": 0.01, "backbone_lr_mult": "auto"}},
              "train": {"weight_decay": 0.0}},
    "lwf": {"strategy": {"params": {"lam": 1.0, "temperature": 2.0,
                                    "backbone_lr_mult": "auto"}}},
    # needs --source-data DATA
    "joint": {"strategy": {"params": {"lam": 1.0, "source_batch_size": "auto",
                                      "backbone_lr_mult": "auto"}}},
    # successive halving over (strategy, LR) candidates on the val split, then the
    # winner's plan; candidates auto: every strategy that declares `auto` and fits the job
    "auto": {"strategy": {"params": {"candidates": "auto", "eta": 3, "rungs": 3,
                                     "budget": 0.4, "lr": "grid", "lr_factor": 3.0}}},
}
JOB_DEFAULTS.update(_PEFT_DEFAULTS)  # bitfit, norm-tuning, lora, dora
JOB_DEFAULTS.update(_SSF_DEFAULTS)  # ssf
JOB_DEFAULTS.update(_VPT_DEFAULTS)  # vpt
JOB_DEFAULTS.update(_TRAINING_FREE_DEFAULTS)  # ncm, knn, zero-shot: the heads they fill
DEFAULT = "finetune"  # the strategy of a job that names none


@hookimpl
def register_strategies(register):
    for name, cls in strategy_classes().items():
        first = (cls.__doc__ or "").strip().splitlines()[0]
        register(name, cls(), description=first.replace("``", ""), default=name == DEFAULT,
                 job_defaults=JOB_DEFAULTS.get(name))
