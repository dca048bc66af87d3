"""Strategy plans at run time: loss terms, applying model changes, BatchNorm modes.

The plan vocabulary (:class:`StrategyPlan`, :class:`Phase`, :class:`GroupSetting`,
:class:`Selection`, :class:`ModelChange`, :class:`AutoCandidate`, :class:`PlanContext`...)
lives in :mod:`zoo.plan`, which imports no torch; it is re-exported here for the plugins that
import it from this module.  What needs torch stays here: :class:`LossTerm` (an
``nn.Module`` added to a phase's loss), :func:`apply_model_changes`,
:func:`finalize_model_changes` and :func:`set_train_mode`.
"""
from __future__ import annotations

from torch import nn

from zoo.backbones import LayerGroup, TransferModel
from zoo.plan import (BN_MODES, PHASE_STEPS, SELECTION_KINDS, STREAMS,  # noqa: F401
                      AutoCandidate, Choice, Fallback, GroupSetting, LossContext, ModelChange,
                      Phase, PhaseContext, PlanContext, Selection, StrategyPlan, all_groups,
                      resolve_bn, validate_plan)
from zoo.selection import NORM_TYPES, apply_phase, bn_param_names, choose_params  # noqa: F401
from zoo.strategy_base import Strategy  # noqa: F401  (the authors' base class, re-exported)

_BN_TYPES = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


class LossTerm(nn.Module):
    """A term added to the task loss: ``forward(ctx) -> scalar tensor`` (already weighted).

    Parameters of a loss term (e.g. the joint strategy's source head) are trained too.
    """

    name: str = "term"
    needs_features: bool = True  # the term reads ctx.features / ctx.inputs

    def forward(self, ctx: LossContext):  # pragma: no cover - interface
        raise NotImplementedError


def apply_model_changes(plan: StrategyPlan, model: TransferModel,
                        groups: list[LayerGroup]) -> bool:
    """Apply the plan's model changes once (idempotent per model); keep ``groups`` true.

    A change may move parameters and modules (peft wraps a ``Linear`` as ``base_layer``):
    every layer group is renamed by object identity, so the groups still name the same
    tensors; new parameters (adapters) belong to no group — a phase trains them through a
    :class:`Selection` — except a replaced head's (``head.*``), which join the head group.
    Returns True when something was applied now.
    """
    done = model.__dict__.setdefault("_zoo_applied_changes", [])
    todo = [c for c in plan.model_changes if not any(c is d for d in done)]
    if not todo:
        return False
    before_p = {n: id(p) for n, p in model.named_parameters()}
    before_m = {n: id(m) for n, m in model.named_modules()}
    for change in todo:
        change.apply(model)
        done.append(change)
    after_p = {id(p): n for n, p in model.named_parameters()}
    after_m = {id(m): n for n, m in model.named_modules()}
    for g in groups:
        g.params = [after_p[before_p[n]] for n in g.params if before_p.get(n) in after_p]
        g.modules = [after_m[before_m[n]] for n in g.modules if before_m.get(n) in after_m]
    head = next((g for g in groups if g.name == "head"), None)
    if head is not None:  # a replaced head: its new parameters are the head group's
        grouped = {n for g in groups for n in g.params}
        fresh = [n for n in after_p.values() if n.startswith("head.") and n not in grouped]
        head.params += fresh
        head.modules = list(dict.fromkeys(head.modules + [n.rsplit(".", 1)[0] for n in fresh]))
    return True


def finalize_model_changes(plan: StrategyPlan, model: TransferModel, run_dir) -> TransferModel:
    """After training: each change may write files to ``run_dir`` and return the model that
    loads with its provider alone (adapters merged); the last such model is returned."""
    for change in plan.model_changes:
        out = change.finalize(model, run_dir)
        if out is not None:
            model = out
    return model


def set_train_mode(model: TransferModel, groups: list[LayerGroup], phase: Phase) -> None:
    """``model.train()``, then BatchNorm (and dropout) of frozen groups back to ``eval``.

    Call after every ``model.train()``: a frozen layer's BN must not update its running
    statistics (Lightning #15062 got this wrong), and ``freeze-stats``/``freeze-all`` keep
    trainable groups' statistics fixed too.
    """
    model.train()
    if model.backbone.source_classifier is not None:
        model.backbone.source_classifier.eval()
    for group in groups:
        frozen = not phase.setting(group.name).trainable
        if not frozen and (phase.bn == "train" or group.name == "head"):
            continue
        for mname in group.modules:
            module = model.get_submodule(mname)
            if frozen or isinstance(module, _BN_TYPES):
                module.eval()
    if phase.backbone_frozen():
        # the whole backbone is a fixed function: eval mode everywhere (dropout, BN, ...)
        model.backbone.eval()
