"""What a plugin returns is checked where it returns (the hook boundary).

A head factory, a metric factory, a provider's ``create()`` and a strategy's ``plan`` run
plugin code whose *return value* zoo then uses deep inside the pipeline.  A wrong value
(``None``, a string, a module of the wrong output width, a plan method with the wrong
signature) would otherwise fail later, inside zoo, as a "zoo bug" that names no plugin.
Each checker here runs right where zoo receives the value and raises one
:class:`~zoo.errors.PluginError` line naming the plugin, the component and what was wrong
with the value; the pipeline records it as ``status: failed`` like any plugin error.

The checks are cheap on purpose: types, and for a head one forward of a two-row batch of
zeros (no randomness drawn, train/eval mode restored).
"""
from __future__ import annotations

import contextlib
import inspect
import zlib
from typing import Any

from zoo.errors import PluginError, one_line

#: catalog kind → the word the messages use
_KIND_WORD = {"providers": "provider", "heads": "head", "strategies": "strategy",
              "metrics": "metric", "datasets": "dataset", "loggers": "logger"}


def _what(value: Any) -> str:
    """A short, safe description of a returned value (its type, and a short repr)."""
    if value is None:
        return "None"
    text = repr(value) if isinstance(value, (str, int, float, bool)) else ""
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__}" + (f" {text}" if text else "")


def contract_error(comp, problem: str) -> PluginError:
    """One line: which plugin, which component, what it returned wrong, and that it is the
    plugin's bug (so the user knows whom to tell)."""
    kind = _KIND_WORD.get(getattr(comp, "kind", ""), getattr(comp, "kind", "component"))
    return PluginError(f"plugin '{comp.plugin}' broke the {kind} contract in its {kind} "
                       f"'{comp.name}': {problem} — a bug in that plugin, not in your job")


def check_backbone(comp, arch: str, backbone: Any) -> Any:
    """A provider's ``create(arch, ...)`` must return a :class:`zoo.backbones.Backbone` with
    a positive int ``feature_dim``; returns it unchanged."""
    from zoo.backbones import Backbone  # lazy: imports torch

    if not isinstance(backbone, Backbone):
        raise contract_error(comp, f"create({arch!r}) returned {_what(backbone)}, not a "
                                   "zoo.backbones.Backbone")
    dim = getattr(backbone, "feature_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise contract_error(comp, f"create({arch!r}) returned a backbone whose feature_dim "
                                   f"is {_what(dim)}, not a positive int")
    return backbone


def check_backbone_output(comp, backbone: Any, image_size: int) -> None:
    """The backbone's forward on one ``(1, 3, S, S)`` batch of zeros gives
    ``(1, feature_dim)`` pooled features (eval mode, no gradient, mode restored): a width
    that disagrees with ``feature_dim`` would otherwise fail inside the head, blamed on it."""
    import torch  # lazy: torch

    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad(), isolated_rng():
            out = backbone(torch.zeros(1, 3, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 - a failure here is the provider's model
        raise contract_error(comp, f"its backbone fails on a (1, 3, {image_size}, "
                                   f"{image_size}) batch ({one_line(exc)[:160]})") from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, backbone.feature_dim):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else _what(out)
        raise contract_error(comp, f"its backbone says feature_dim={backbone.feature_dim} but "
                                   f"maps a (1, 3, {image_size}, {image_size}) batch to {got}")


def create_backbone(catalog, provider_name: str, arch: str, tag, pretrained: bool):
    """``provider.create(arch, tag, pretrained=...)`` with its return value checked."""
    comp = catalog.get("providers", provider_name)
    with isolated_rng():  # every attempt starts from the same random state
        backbone = comp.obj.create(arch, tag, pretrained=pretrained)
    return check_backbone(comp, arch, backbone)


def check_head(comp, head: Any, feature_dim: int, num_classes: int) -> Any:
    """A head factory must return an ``nn.Module`` mapping ``(N, feature_dim)`` features to
    ``(N, num_classes)`` logits; checked on one batch of two rows of zeros."""
    import torch  # lazy: torch
    from torch import nn  # lazy: torch

    if not isinstance(head, nn.Module):
        raise contract_error(comp, f"the factory returned {_what(head)}, not a "
                                   "torch.nn.Module")
    was_training = head.training
    head.eval()
    try:
        with torch.no_grad():
            out = head(torch.zeros(2, feature_dim))
    except Exception as exc:  # noqa: BLE001 - any failure here is the head's
        raise contract_error(comp, f"its module fails on a (2, {feature_dim}) feature batch "
                                   f"({one_line(exc)[:160]})") from None
    finally:
        head.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else _what(out)
        raise contract_error(comp, f"its module maps (2, {feature_dim}) features to {got}, "
                                   f"not (2, {num_classes}) logits")
    return head


def check_metric(comp, metric: Any) -> Any:
    """A metric factory returns ``None`` (does not apply) or a torchmetrics-like object:
    ``update``, ``compute``, ``reset`` and ``to`` callables."""
    if metric is None:
        return None
    missing = [m for m in ("update", "compute", "reset", "to")
               if not callable(getattr(metric, m, None))]
    if missing:
        raise contract_error(comp, f"the factory returned {_what(metric)}, not None or a "
                                   f"torchmetrics Metric (no {', '.join(missing)})")
    return metric


def check_plan_callable(comp, strategy: Any, args: tuple, kwargs: dict | None = None):
    """The strategy's ``plan`` exists and accepts what zoo is about to pass; returns it."""
    plan = getattr(strategy, "plan", None)
    if not callable(plan):
        raise contract_error(comp, f"the registered object ({_what(strategy)}) has no "
                                   "plan(model, groups, job, ctx) method")
    try:
        signature = inspect.signature(plan)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return plan
    error = None
    for n in dict.fromkeys((len(args), 3)):  # plan(model, groups, job, ctx), or the old 3
        try:
            signature.bind(*args[:n], **(kwargs or {}))
            return plan
        except TypeError as exc:
            error = error or exc
    raise contract_error(comp, f"plan{signature} cannot be called as "
                               f"plan(model, groups, job[, ctx]) ({error})") from None


def check_plan(comp, plan: Any) -> Any:
    """``plan(...)`` must return a :class:`zoo.strategy.StrategyPlan`."""
    from zoo.strategy import StrategyPlan  # lazy: imports torch

    if not isinstance(plan, StrategyPlan):
        raise contract_error(comp, f"plan() returned {_what(plan)}, not a "
                                   "zoo.strategy.StrategyPlan")
    return plan


#: job-level keys no component's ``job_defaults`` may set: where the run goes and what it
#: is (the user's alone), and the other data streams
_JOB_LEVEL = ("out", "name", "weights", "seed", "device", "loggers", "source_data",
              "target_data")
#: paths inside sections: only the user names files and folders
_PATHS = (("data", "path"), ("data", "root"), ("head", "templates"))
#: which kinds may set each component's own parameters (a strategy may set its head's:
#: zero-shot normalises it)
_OWN_PARAMS = {("data", "params"): ("datasets",), ("head", "params"): ("heads", "strategies"),
               ("strategy", "params"): ("strategies",), ("strategy", "bn"): ("strategies",)}


def job_defaults_overreach(kind: str, tree: dict) -> list[str]:
    """The keys of a component's ``job_defaults`` that are outside what it may set: job-level
    keys (``out``, ``name``, ``weights``, ``seed``, ``device``, ...), paths, and another
    component's own parameters."""
    bad = [key for key in _JOB_LEVEL if key in tree]
    for section, key in _PATHS:
        if isinstance(tree.get(section), dict) and key in tree[section]:
            bad.append(f"{section}.{key}")
    for (section, key), kinds in _OWN_PARAMS.items():
        if kind not in kinds and isinstance(tree.get(section), dict) and key in tree[section]:
            bad.append(f"{section}.{key}")
    return bad


@contextlib.contextmanager
def isolated_rng(seed: int | None = None, stream: str = ""):
    """Run plugin code on its own copy of torch's CPU random stream: the global stream is
    the same afterwards whatever the code drew.  With ``seed`` the copy is first seeded from
    ``(seed, stream)``, so what is built inside depends on the job's seed alone — not on
    how many failed attempts came before (a hub that is offline, a store miss) or on which
    plugins looked for weights."""
    import torch  # lazy: torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed((int(seed) * 1_000_003 + zlib.crc32(stream.encode()))
                              % (2 ** 63))
        yield
