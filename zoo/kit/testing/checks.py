"""Contract checks of model components: backbone providers, strategies, heads, and the
lazy-import rule.  Each raises ``AssertionError`` with a message that says what to fix.

Importing this module imports no torch; each check imports it when it runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from zoo.errors import ConfigError
from zoo.plan import PlanContext
from zoo.strategy_base import call_plan
from zoo.kit.testing.components import HEAVY_MODULES, _fail, tiny_job, tiny_transfer_model
from zoo.kit.testing.provider_checks import check_backbone_provider  # noqa: F401


def check_lazy_import(module: str, forbidden: tuple[str, ...] = HEAVY_MODULES,
                      timeout: float = 120) -> None:
    """Import ``module`` and run its ``register_*`` hooks in a fresh interpreter; none of
    ``forbidden`` may be imported (zoo's lazy-import rule: ``zoo --help`` stays fast)."""
    code = f"""
import sys
import {module} as plugin
from zoo.hookspecs import hookimpl
for name in dir(plugin):
    fn = getattr(plugin, name)
    if name.startswith("register_") and callable(fn) and hasattr(fn, "zoo_impl"):
        if name == "register_commands":
            continue
        fn(register=lambda *args, **kwargs: None)
heavy = sorted(m for m in {tuple(forbidden)!r} if m in sys.modules)
print(",".join(heavy))
"""
    # the child sees what this process sees (a package found through pytest's pythonpath)
    path = [p for p in sys.path if p and os.path.isdir(p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        _fail(f"importing {module} and registering its components failed:\n{proc.stderr}")
    heavy = [m for m in proc.stdout.strip().split(",") if m]
    if heavy:
        _fail(f"importing {module} and registering its components imported "
              f"{', '.join(heavy)}: move those imports inside the functions that build "
              "things (create, factories, plan) — zoo's lazy-import rule")


def _check_fit_phase(sname: str, phase, model, job, size: int, num_classes: int,
                     gen) -> None:
    """A ``steps="none"`` phase: ``fit(ctx)`` runs on a PhaseContext of random images and
    leaves finite parameters.  Closed-form work may change anything (AdaBN re-estimates
    BatchNorm statistics, WiSE-FT averages weights), so nothing is required to stay fixed."""
    import torch  # lazy: torch (the pytest plugin imports the kit)
    from torch.utils.data import DataLoader, TensorDataset  # lazy: torch

    from zoo.strategy import PhaseContext  # lazy: imports torch

    if not callable(getattr(phase, "fit", None)):
        _fail(f"strategy {sname!r} phase {phase.name!r}: steps='none' needs fit(ctx)")
    x = torch.randn(4 * num_classes, 3, size, size, generator=gen)
    y = torch.arange(num_classes).repeat(4)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(x)
    data = TensorDataset(x, y)
    ctx = PhaseContext(model=model, job=job, device=torch.device("cpu"),
                       classes=[f"class{i}" for i in range(num_classes)],
                       features=lambda split: (feats, y),
                       loader=lambda name: DataLoader(data, batch_size=4),
                       log=lambda *a, **k: None)
    phase.fit(ctx)
    for n, p in model.named_parameters():
        if not torch.isfinite(p).all():
            _fail(f"strategy {sname!r} phase {phase.name!r} (steps='none'): fit() left "
                  f"non-finite values in {n}")


def _check_model_changes(sname: str, plan, model, groups) -> None:
    """Declared model changes: ModelChange objects whose ``describe()`` is JSON (``--plan``);
    applied once (as the loop does), the layer groups must still name real parameters."""
    from zoo.strategy import ModelChange, apply_model_changes  # lazy: imports torch

    for change in plan.model_changes:
        if not isinstance(change, ModelChange):
            _fail(f"strategy {sname!r}: model change {change!r} is not a zoo.strategy.ModelChange")
        try:
            json.dumps(change.describe())
        except (TypeError, ValueError) as exc:
            _fail(f"strategy {sname!r}: model change {change.name!r} describe() is not JSON "
                  f"({exc})")
    apply_model_changes(plan, model, groups)
    names = {n for n, _ in model.named_parameters()}
    for g in groups:
        lost = [n for n in g.params if n not in names]
        if lost:
            _fail(f"strategy {sname!r}: after its model changes, group {g.name!r} names "
                  f"missing parameters ({lost[0]})")


def plan_shape(plan) -> list:
    """What a plan decides, comparable between two plans (notes and objects left out)."""
    return [plan.strategy, plan.train_on, [c.describe() for c in plan.model_changes],
            [(p.name, p.epochs, p.bn, p.lr, p.steps, tuple(p.streams),
              {g: (s.trainable, s.lr_mult) for g, s in p.groups.items()},
              [t.name for t in p.loss_terms],
              [{k: v for k, v in s.to_dict().items() if k != "where"} for s in p.select])
             for p in plan.phases]]


def check_strategy(strategy, params: dict | None = None, *, job=None, model=None,
                   groups=None, steps: int = 2, name: str | None = None, ctx=None):
    """Check a strategy object; return its :class:`zoo.plan.StrategyPlan`.

    Plans on a tiny model (or ``model``/``groups``) with a job whose ``strategy.params`` are
    ``params`` and the plan context ``ctx`` (:class:`zoo.plan.PlanContext`; default: an
    empty one); the plan must be a well-formed StrategyPlan (:func:`zoo.plan.validate_plan`),
    and planning again must give the same plan (strategies are stateless).
    Then every phase runs ``steps`` SGD steps the way zoo's loop does (``apply_phase``,
    ``set_train_mode``, loss terms added): frozen parameters and the BatchNorm statistics the
    phase keeps fixed must not change, and something trainable must.
    """
    import torch  # lazy: torch (the pytest plugin imports the kit)
    from torch import nn  # lazy: torch

    sname = name or getattr(strategy, "name", None) or type(strategy).__name__
    if not callable(getattr(strategy, "plan", None)):
        _fail(f"strategy {sname!r} has no plan(model, groups, job, ctx) method")
    defaults = getattr(strategy, "defaults", {})
    if not isinstance(defaults, dict):
        _fail(f"strategy {sname!r}: defaults must be a dict of its parameters")
    if model is None:
        model, groups = tiny_transfer_model()
    elif groups is None:
        model, groups = tiny_transfer_model(backbone=model.backbone, head=model.head)
    if job is None:
        job = tiny_job(strategy={"name": sname, "params": dict(params or {})},
                       train={"epochs": 2})
    plan = _well_formed_plan(strategy, sname, model, groups, job,
                             ctx if ctx is not None else PlanContext())
    _check_model_changes(sname, plan, model, groups)
    plan.to_dict(groups, model, job.train.lr)  # what `zoo run --plan` prints must work
    size = int(model.backbone.pretrained_cfg.input_size)
    num_classes = model.head(torch.zeros(1, model.backbone.feature_dim)).shape[-1] \
        if isinstance(model.head, nn.Module) else 2
    gen = torch.Generator().manual_seed(0)
    for phase in plan.phases:
        if getattr(phase, "steps", "gradient") == "none":  # closed-form: fit(ctx), no steps
            _check_fit_phase(sname, phase, model, job, size, int(num_classes), gen)
            continue
        for sel in getattr(phase, "select", []):  # a selection that picks nothing is a bug
            if not sel.matches(model):
                _fail(f"strategy {sname!r} phase {phase.name!r}: selection {sel.name!r} "
                      "matches no parameter of the model")
        _check_phase_steps(sname, phase, model, groups, job, steps,
                           (size, int(num_classes), gen))
    return plan


def _well_formed_plan(strategy, sname: str, model, groups, job, ctx):
    """The strategy's plan, checked: a StrategyPlan, valid, at least one epoch, and the
    same when planned again (strategies keep no state between plans)."""
    from zoo.strategy import StrategyPlan, validate_plan  # lazy: imports torch

    plan = call_plan(strategy, model, groups, job, ctx, sname)
    if not isinstance(plan, StrategyPlan):
        _fail(f"strategy {sname!r}: plan() returned {type(plan).__name__}, not a "
              "zoo.strategy.StrategyPlan — return StrategyPlan(name, [Phase(...)])")
    try:
        validate_plan(plan, groups)
    except ConfigError as exc:
        _fail(f"strategy {sname!r}: the plan is not well-formed: {exc}")
    if plan.epochs < 1:
        _fail(f"strategy {sname!r}: the plan has {plan.epochs} epochs in all")
    again = call_plan(strategy, model, groups, job, ctx, sname)
    if not isinstance(again, StrategyPlan) or plan_shape(plan) != plan_shape(again):
        _fail(f"strategy {sname!r}: planning twice gave two plans — a strategy must keep no "
              "state between plans (read the run from plan(..., ctx))")
    return plan


def _fixed_bn(model, groups, phase) -> set:
    """The BatchNorm modules whose statistics ``phase`` keeps fixed."""
    from zoo.strategy import _BN_TYPES  # lazy: imports torch

    bn_modules = {n for n, m in model.named_modules() if isinstance(m, _BN_TYPES)}
    fixed = set()
    for g in groups:
        setting = phase.groups.get(g.name)
        trainable = setting is not None and setting.trainable
        if g.name == "head":
            continue
        if not trainable or phase.bn != "train" or phase.backbone_frozen():
            fixed.update(m for m in g.modules if m in bn_modules)
    return fixed


def _check_phase_steps(sname: str, phase, model, groups, job, steps: int, data) -> None:
    """``steps`` SGD steps of ``phase`` as the loop takes them: frozen parameters and fixed
    BatchNorm statistics unchanged, something trainable changed."""
    import torch  # lazy: torch (the pytest plugin imports the kit)

    from zoo.strategy import apply_phase  # lazy: imports torch

    param_groups = apply_phase(model, groups, phase, job.train.lr)
    in_optimizer = {id(p) for g in param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    frozen = [n for n, p in named.items() if id(p) not in in_optimizer]
    for n in frozen:
        if named[n].requires_grad:
            _fail(f"strategy {sname!r} phase {phase.name!r}: {n} requires grad but is "
                  "not trained")
    fixed_bn = _fixed_bn(model, groups, phase)
    before = {n: p.detach().clone() for n, p in named.items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()
               if n.rsplit(".", 1)[0] in fixed_bn}
    optimizer = torch.optim.SGD(param_groups, lr=job.train.lr)
    for step in range(steps):
        _one_step(model, groups, phase, optimizer, step, *data)
    for n in frozen:
        if not torch.equal(before[n], named[n].detach()):
            _fail(f"strategy {sname!r} phase {phase.name!r}: frozen parameter {n} changed "
                  f"after {steps} steps")
    for n, value in buffers.items():
        if value.is_floating_point() and not torch.equal(value, dict(
                model.named_buffers())[n]):
            _fail(f"strategy {sname!r} phase {phase.name!r} (bn={phase.bn}): BatchNorm "
                  f"statistic {n} of a frozen or fixed-statistics group changed")
    moving = [n for n in named if id(named[n]) in in_optimizer
              and not torch.equal(before[n], named[n].detach())]
    if any(g["lr"] > 0 for g in param_groups) and not moving:
        _fail(f"strategy {sname!r} phase {phase.name!r}: no trainable parameter changed "
              f"after {steps} steps")


def _one_step(model, groups, phase, optimizer, step: int, size: int, num_classes: int,
              gen) -> None:
    """One SGD step on random images, loss terms added, as zoo's loop does."""
    import torch  # lazy: torch (the pytest plugin imports the kit)
    from torch import nn  # lazy: torch

    from zoo.strategy import LossContext, set_train_mode  # lazy: imports torch

    set_train_mode(model, groups, phase)
    x = torch.randn(4, 3, size, size, generator=gen)
    y = torch.randint(0, num_classes, (4,), generator=gen)
    features = model.backbone(x)
    logits = model.head(features)
    loss = nn.functional.cross_entropy(logits, y)
    # one batch of random images per declared stream, as the loop gives
    streams = {s: torch.randn(4, 3, size, size, generator=gen)
               for s in getattr(phase, "streams", ())}
    for term in phase.loss_terms:
        ctx = LossContext(model=model, inputs=x, targets=y, features=features,
                          logits=logits, step=step, epoch=1, streams=streams)
        loss = loss + term(ctx)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def check_head(factory: Callable, in_features: int = 16, num_classes: int = 3, **params):
    """Check a head factory ``factory(in_features, num_classes, **params)``; return the head.

    The head must be a ``torch.nn.Module`` mapping ``(N, in_features)`` to finite
    ``(N, num_classes)`` logits (also for N=1 in eval mode), with trainable parameters that
    receive gradients, and its ``state_dict`` must survive a safetensors round trip.
    """
    import torch  # lazy: torch (the pytest plugin imports the kit)
    from torch import nn  # lazy: torch

    fname = getattr(factory, "__name__", repr(factory))
    torch.manual_seed(0)
    head = factory(in_features, num_classes, **params)
    if not isinstance(head, nn.Module):
        _fail(f"head factory {fname} returned {type(head).__name__}, not a torch.nn.Module")
    x = torch.randn(5, in_features)
    head.train()
    out = head(x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (5, num_classes):
        _fail(f"head {fname}: input (5, {in_features}) must give logits (5, {num_classes}), "
              f"got {tuple(getattr(out, 'shape', ()))}")
    if not torch.isfinite(out).all():
        _fail(f"head {fname}: logits are not finite")
    trainable = [p for p in head.parameters() if p.requires_grad]
    if not trainable:
        _fail(f"head {fname} has no trainable parameters")
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0, 1]) % num_classes).backward()
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable):
        _fail(f"head {fname}: no parameter received a gradient")
    head.eval()
    with torch.no_grad():
        if tuple(head(x[:1]).shape) != (1, num_classes):
            _fail(f"head {fname}: a batch of one image in eval mode fails")
        expected = head(x)
    from safetensors.torch import load_file, save_file  # lazy: imports torch

    state = {k: v.detach().contiguous().clone() for k, v in head.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.safetensors"
        save_file(state, str(path))
        loaded = load_file(str(path))
    torch.manual_seed(1)
    again = factory(in_features, num_classes, **params)
    try:
        again.load_state_dict(loaded)
    except RuntimeError as exc:
        _fail(f"head {fname}: state_dict does not load back after a safetensors round "
              f"trip: {str(exc).splitlines()[0]}")
    again.eval()
    with torch.no_grad():
        if not torch.allclose(again(x), expected, atol=1e-6):
            _fail(f"head {fname}: outputs differ after a safetensors round trip (keep every "
                  "learned value in parameters or registered buffers)")
    return head
