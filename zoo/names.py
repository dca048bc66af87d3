"""Component names across plugins: ``PLUGIN:NAME``, shadowing, and who supplied what.

Two plugins may register the same name (a third-party ``bitfit`` written before zoo shipped
its own).  The catalog keeps both: the first in plugin load order (built-ins load first)
answers the bare name, unless ``registry.yaml``'s ``choose:`` names another plugin::

    choose:
      strategies: {bitfit: acme}      # bare `bitfit` is acme's

and every registration stays addressable as ``PLUGIN:NAME`` (``-s acme:bitfit``,
``--set strategy.name=strategies:bitfit``), PLUGIN being the entry-point name ``zoo plugins``
shows.  A run that uses a bare name another plugin also registers warns, naming both
(:func:`shadow_warnings`); ``summary.json``'s ``components`` records the plugin and version
behind every component the run used (:func:`components_used`).  Models keep their own
``PROVIDER:ARCH`` form.
"""
from __future__ import annotations

import sys
from typing import Any

SINGULAR = {"providers": "provider", "heads": "head", "strategies": "strategy",
            "metrics": "metric", "datasets": "dataset", "loggers": "logger"}


def qualified(catalog: Any, kind: str, name: str) -> Any | None:
    """The component ``PLUGIN:NAME`` names (winner or shadowed), or None when ``name`` is
    not of that form or PLUGIN registered no ``NAME`` of ``kind``."""
    plugin, sep, rest = name.partition(":")
    if not sep or not rest:
        return None
    for comp in every(catalog, kind, rest):
        if comp.plugin == plugin:
            return comp
    return None


def every(catalog: Any, kind: str, name: str) -> list:
    """Every registration of ``name`` in ``kind``: the winner first, then the shadowed."""
    winner = catalog.components[kind].get(name)
    return ([winner] if winner else []) + list(catalog.shadowed[kind].get(name, []))


def apply_choices(catalog: Any, choices: dict) -> None:
    """``registry.yaml``'s ``choose: {KIND: {NAME: PLUGIN}}``: PLUGIN's NAME answers the
    bare name.  A choice no installed plugin can satisfy is a warning, not a failure of
    every command."""
    for kind, picks in (choices or {}).items():
        if kind not in catalog.components:
            print(f"warning: registry choose: unknown kind '{kind}' (kinds: "
                  f"{', '.join(catalog.components)})", file=sys.stderr)
            continue
        for name, plugin in (picks or {}).items():
            regs = every(catalog, kind, str(name))
            chosen = next((c for c in regs if c.plugin == plugin), None)
            if chosen is None:
                by = ", ".join(f"'{c.plugin}'" for c in regs) or "no plugin"
                print(f"warning: registry choose: plugin '{plugin}' registers no "
                      f"{SINGULAR[kind]} '{name}' (registered by {by}); ignored",
                      file=sys.stderr)
                continue
            catalog.components[kind][name] = chosen
            catalog.shadowed[kind][name] = [c for c in regs if c is not chosen]


def prefer_plugins(catalog: Any, plugins: list[str]) -> None:
    """Let ``plugins`` answer the bare names they share with others (the testing kit: a
    plugin's tests exercise its own ``bitfit``, not zoo's built-in one of the same name)."""
    wanted = set(plugins)
    choices = {kind: {name: next(c.plugin for c in comps if c.plugin in wanted)
                      for name, comps in table.items()
                      if any(c.plugin in wanted for c in comps)}
               for kind, table in catalog.shadowed.items()}
    apply_choices(catalog, {k: v for k, v in choices.items() if v})


def shadow_warnings(catalog: Any, uses: list[tuple[str, str]]) -> list[str]:
    """One line per bare name in ``uses`` ((kind, name) pairs) that another plugin also
    registers: which plugin's component the run uses, and how to pick the other."""
    out = []
    for kind, name in dict.fromkeys(uses):
        if not isinstance(name, str) or name not in catalog.components[kind]:
            continue  # qualified (PLUGIN:NAME) or a prefix name: nothing shadowed
        others = catalog.shadowed[kind].get(name) or []
        if not others:
            continue
        used = catalog.components[kind][name].plugin
        alts = ", ".join(f"{c.plugin}:{name}" for c in others)
        out.append(f"{SINGULAR[kind]} '{name}' is registered by plugins "
                   f"{', '.join(repr(p) for p in [used] + [c.plugin for c in others])}; "
                   f"this run uses '{used}'s — write {alts} for the other, or choose in "
                   f"registry.yaml (choose: {{{kind}: {{{name}: PLUGIN}}}})")
    return out


def job_uses(job: Any, provider: str | None, catalog: Any = None) -> list[tuple[str, str]]:
    """(kind, name) of every component ``job`` uses (with ``catalog``: also the metrics
    every run computes, ``always=True``)."""
    uses = [("providers", provider)] if provider else []
    uses += [("heads", job.head.name), ("strategies", job.strategy.name),
             ("datasets", job.data.name)]
    for extra in (getattr(job, "source_data", None), getattr(job, "target_data", None)):
        if extra is not None and extra.name:
            uses.append(("datasets", extra.name))
    uses += [("metrics", str(m)) for m in job.metrics]
    if catalog is not None:
        uses += [("metrics", m) for m in catalog.always_metrics()]
    uses += [("loggers", str(n)) for n in job.loggers]
    return [(k, n) for k, n in uses if n]


def components_used(catalog: Any, uses: list[tuple[str, str]]) -> dict:
    """``summary.json``'s ``components``: for each kind, the names used with the plugin,
    its distribution and version."""
    out: dict[str, list] = {}
    for kind, name in dict.fromkeys(uses):
        try:
            comp = catalog.get(kind, name)
        except Exception:  # noqa: BLE001 - a name the run skipped (an unknown logger)
            continue
        record = catalog.pm.records.get(comp.plugin)
        out.setdefault(kind, []).append({
            "name": name, "registered_as": comp.name, "plugin": comp.plugin,
            "distribution": getattr(record, "distribution", None),
            "version": getattr(record, "version", None)})
    return out
