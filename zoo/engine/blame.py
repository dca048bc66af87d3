"""A plugin's bug at run time, named: which plugin, which component, what it raised.

A provider's ``create``, a strategy's ``plan``, a metric's ``compute``, a dataset or head
factory run inside zoo's pipeline; when one raises something that is not a
:class:`~zoo.errors.ZooError`, the traceback says where.  :func:`plugin_error` walks it
from the innermost frame out and attributes the first frame that lives in the module of
one of the job's components to that component — one line instead of a bare traceback
(``--debug`` shows it).  Observer hooks (``on_epoch_end``, ``on_run_end``) are called one
plugin at a time by :func:`notify`, so one that raises is reported and the run goes on.
"""
from __future__ import annotations

from typing import Any, Callable

from zoo.engine.isolation import call_isolated
from zoo.errors import PluginError, one_line

#: where a job names its components: (catalog kind, job attribute path)
_JOB_COMPONENTS = (("datasets", ("data", "name")), ("heads", ("head", "name")),
                   ("strategies", ("strategy", "name")))


def _top(module: str | None) -> str:
    return (module or "").split(".", 1)[0]


def _job_components(catalog, job, extra: list | None = None) -> list:
    """The catalog components this job uses, in the order they are blamed."""
    comps = list(extra or [])
    for kind, (a, b) in _JOB_COMPONENTS:
        name = getattr(getattr(job, a, None), b, None)
        if isinstance(name, str) and catalog.has(kind, name):
            comps.append(catalog.get(kind, name))
    model = getattr(job, "model", None)
    provider = getattr(model, "provider", None) if not isinstance(model, str) else None
    if isinstance(model, str) and ":" in model:
        provider = model.split(":", 1)[0]
    if isinstance(provider, str) and catalog.has("providers", provider):
        comps.append(catalog.get("providers", provider))
    for kind in ("metrics", "loggers"):
        for name in getattr(job, kind, None) or []:
            if isinstance(name, str) and catalog.has(kind, name):
                comps.append(catalog.get(kind, name))
    for kind in ("metrics", "providers"):  # metrics every run computes; any provider
        for comp in catalog.components.get(kind, {}).values():
            if comp not in comps:
                comps.append(comp)
    return comps


def _module_of(obj: Any) -> str:
    mod = getattr(obj, "__module__", None)
    if not isinstance(mod, str):
        mod = type(obj).__module__
    return mod


def plugin_error(exc: BaseException, catalog, job, stage: str = "",
                 extra: list | None = None) -> PluginError | None:
    """A :class:`PluginError` naming the plugin and component ``exc`` came from, or None
    (the exception did not come from a plugin's code: a zoo bug)."""
    comps = [c for c in _job_components(catalog, job, extra)
             if _top(_module_of(c.obj)) not in ("zoo", "builtins", "")]
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    for module in reversed(frames):  # innermost first
        for comp in comps:
            if _top(module) == _top(_module_of(comp.obj)):
                kind = {"providers": "provider", "heads": "head", "strategies": "strategy",
                        "metrics": "metric", "datasets": "dataset",
                        "loggers": "logger"}.get(comp.kind, comp.kind)
                where = f" while {stage}" if stage else ""
                return PluginError(
                    f"plugin '{comp.plugin}' failed in its {kind} '{comp.name}'{where}: "
                    f"{one_line(exc)} — a bug in that plugin (rerun with --debug for the "
                    "traceback)")
    return None


def notify(catalog, hook: str, warn: Callable[[str], None], **kwargs: Any) -> None:
    """Call every plugin's ``hook`` implementation on its own; one that raises is reported
    with its plugin's name (through ``warn``) and the others still run."""
    pm = catalog.pm
    # pluggy calls implementations last-registered first; keep that order. Anything an
    # observer raises (sys.exit, its own KeyboardInterrupt) is a warning; a real signal
    # still interrupts (zoo.engine.isolation)
    for impl in reversed(pm.impls(hook)):
        call_isolated(lambda: pm.call_impl(impl, **kwargs),
                      f"plugin '{impl.plugin_name}': {hook}", warn)
