"""The catalog: every component the loaded plugins registered, and name resolution.

Plugins register through ``register(...)`` callbacks (see :mod:`zoo.hookspecs`).  The catalog
calls each plugin's registration hook on its own, so every component is attributed to its
plugin; two plugins registering one name both stay addressable as ``PLUGIN:NAME``, the
first in load order (or ``registry.yaml``'s ``choose:``) answering the bare name
(:mod:`zoo.names`), and one plugin's exception stays its own.  Building the catalog imports no torch: providers list their models
only when asked (:meth:`Catalog.list_models`).
"""
from __future__ import annotations

import contextlib
import fnmatch
import re
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo import names
from zoo.claims import claimed_by
from zoo.errors import (AmbiguousNameError, DuplicateComponentError, PluginError,
                        UnknownComponentError, did_you_mean)
from zoo.contracts import job_defaults_overreach
from zoo.jobspec import job_from_tree
from zoo.modelcache import cached_model_list
from zoo.plugins import ZooPluginManager, load_plugin_manager, strict_plugins
from zoo.registry import load_registry

if TYPE_CHECKING:  # annotations only: zoo.backbones imports torch
    from zoo.backbones import BackboneProvider
    from zoo.registry import Registry

KINDS = {
    "providers": "register_backbone_providers",
    "heads": "register_heads",
    "strategies": "register_strategies",
    "metrics": "register_metrics",
    "datasets": "register_datasets",
    "loggers": "register_loggers",
}
SINGULAR = {"providers": "provider", "heads": "head", "strategies": "strategy",
            "metrics": "metric", "datasets": "dataset", "loggers": "logger"}
#: which job key names the chosen component of each single-choice kind (``metrics`` and
#: ``loggers`` are lists; providers are chosen through ``model``)
JOB_KEY = {"heads": ("head", "name"), "strategies": ("strategy", "name"),
           "datasets": ("data", "name")}


@dataclass
class Component:
    """One registered thing: its kind, name, the object and the plugin that gave it."""

    kind: str
    name: str
    obj: Any
    plugin: str
    description: str = ""
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name: ``provider:arch[.tag]``."""

    provider: str
    arch: str
    tag: str | None = None

    @property
    def full(self) -> str:
        return f"{self.provider}:{self.arch}" + (f".{self.tag}" if self.tag else "")

    def __str__(self) -> str:
        return self.full


def natural_key(name: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class Catalog:
    """Components by kind, collected from a :class:`ZooPluginManager`."""

    def __init__(self, pm: ZooPluginManager | None = None,
                 registry: Registry | None = None) -> None:
        self.pm = pm if pm is not None else load_plugin_manager()
        self.registry = registry if registry is not None else load_registry()
        self.components: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        # a name a later plugin registered again: kept, addressable as PLUGIN:NAME (zoo.names)
        self.shadowed: dict[str, dict[str, list[Component]]] = {k: {} for k in KINDS}
        self._model_lists: dict[tuple, list[str]] = {}
        for kind, hook in KINDS.items():
            self._collect(kind, hook)
        names.apply_choices(self, getattr(self.registry, "choose", None))

    # -- collection ------------------------------------------------------------------------
    def _collect(self, kind: str, hook: str) -> None:
        for impl in self.pm.impls(hook):
            plugin = impl.plugin_name
            added: list[Component] = []

            def register(name: str, obj: Any, description: str = "", _plugin: str = plugin,
                         _added: list[Component] = added, **options: Any) -> None:
                if not isinstance(name, str) or not name:
                    raise TypeError(f"{SINGULAR[kind]} name must be a non-empty string")
                if options.get("job_defaults") is not None:
                    _check_job_defaults(kind, name, options["job_defaults"])
                if options.get("claims_paths") is not None and not callable(
                        options["claims_paths"]):
                    raise TypeError(f"{SINGULAR[kind]} '{name}': claims_paths must be a "
                                    f"function path -> bool")
                _added.append(Component(kind, name, obj, _plugin, description, options))

            try:
                with contextlib.redirect_stdout(sys.stderr):  # keep `--json` stdout clean
                    self.pm.call_impl(impl, register=register)
            except (Exception, SystemExit) as exc:
                self.pm.fail_plugin(plugin, f"{hook} raised {type(exc).__name__}: {exc}")
                self._drop_plugin(plugin)  # never half a plugin: its earlier kinds go too
                continue
            for comp in added:
                table = self.components[kind]
                if comp.name in table:
                    other = table[comp.name].plugin
                    message = (f"{SINGULAR[kind]} '{comp.name}' is registered by both "
                               f"'{other}' and '{plugin}'; '{other}' answers the bare name, "
                               f"{plugin}:{comp.name} names the other (registry.yaml's "
                               f"choose: picks the winner)")
                    if strict_plugins():
                        raise DuplicateComponentError(message)
                    self.duplicates.append(message)
                    self.shadowed[kind].setdefault(comp.name, []).append(comp)
                else:
                    table[comp.name] = comp
                record = self.pm.records.get(plugin)
                if record is not None:
                    record.components.setdefault(kind, []).append(comp.name)

    def _drop_plugin(self, plugin: str) -> None:
        """Remove every component ``plugin`` registered (its registration failed)."""
        for table in self.components.values():
            for name in [n for n, c in table.items() if c.plugin == plugin]:
                del table[name]
        for table in self.shadowed.values():
            for name in list(table):
                table[name] = [c for c in table[name] if c.plugin != plugin]
        record = self.pm.records.get(plugin)
        if record is not None:
            record.components = {}

    @property
    def duplicates(self) -> list[str]:
        if not hasattr(self, "_duplicates"):
            self._duplicates: list[str] = []
        return self._duplicates

    # -- lookups ---------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind], key=natural_key)

    def get(self, kind: str, name: str) -> Component:
        table = self.components[kind]
        if name in table:
            return table[name]
        comp = names.qualified(self, kind, name)  # PLUGIN:NAME
        if comp is not None:
            return comp
        # prefix datasets ("torchvision:CIFAR10" served by "torchvision")
        if ":" in name and kind == "datasets":
            prefix = name.split(":", 1)[0]
            comp = table.get(prefix)
            if comp is not None and comp.options.get("prefix"):
                return comp
        what = SINGULAR[kind]
        available = ", ".join(self.names(kind)) or "none installed"
        hint = did_you_mean(name, table)
        raise UnknownComponentError(f"unknown {what} '{name}'{hint}" +
                                    ("" if hint else f" (available: {available})"))

    # -- what plugins declare (default=True, job_defaults=..., serves_paths=True ...) -------
    def declared(self, kind: str, option: str) -> list[Component]:
        """The components of ``kind`` that registered ``option`` truthy, in plugin load
        order (built-ins first, then third-party plugins in entry-point order)."""
        return [c for c in self.components[kind].values() if c.options.get(option)]

    def default_name(self, kind: str) -> str | None:
        """The default component of a single-choice kind (``register(..., default=True)``).

        Several claimants: the first in plugin load order wins (built-ins load first), so
        a third-party plugin cannot silently replace a built-in default; the user picks
        another one with ``registry.yaml``'s ``defaults:`` or the job itself.
        """
        claimed = self.declared(kind, "default")
        return claimed[0].name if claimed else None

    def default_metrics(self) -> list[str]:
        """The metrics a job computes when it names none: every metric registered with
        ``default=True`` by the first plugin (load order) that declares any."""
        claimed = self.declared("metrics", "default")
        if not claimed:
            return []
        return [c.name for c in claimed if c.plugin == claimed[0].plugin]

    def always_metrics(self) -> list[str]:
        """Metrics computed on the test split of every run (``always=True``)."""
        return [c.name for c in self.declared("metrics", "always")]

    def default_model(self) -> str | None:
        """``provider:arch`` of the first provider in :meth:`provider_order` that declares a
        ``default_model``; ``None`` when none does."""
        for name in self.provider_order():
            arch = self.components["providers"][name].options.get("default_model")
            if arch:
                return f"{name}:{arch}"
        return None

    def path_dataset(self) -> str | None:
        """The dataset that serves plain paths (``register(..., serves_paths=True)``); the
        first in plugin load order when several do."""
        claimed = self.declared("datasets", "serves_paths")
        return claimed[0].name if claimed else None

    def dataset_for_path(self, path: str) -> str | None:
        """The dataset that reads ``path``: the one whose ``claims_paths(path)`` test says
        the folder's layout is its own (:mod:`zoo.claims`), else the one serving
        plain paths.  Two claimants: an error naming both."""

        return claimed_by(self, path) or self.path_dataset()

    def unlabeled_path_dataset(self) -> str | None:
        """The dataset that serves paths of unlabeled images (``target_data: {path: ...}``,
        ``--target-data PATH``): the one declaring ``serves_unlabeled_paths=True``, else the
        one that serves plain paths."""
        claimed = self.declared("datasets", "serves_unlabeled_paths")
        return claimed[0].name if claimed else self.path_dataset()

    def job_defaults(self, kind: str, name: str | None) -> dict:
        """The job-tree fragment ``register(..., job_defaults=...)`` gave component
        ``name`` of ``kind`` (``{}`` when unknown or none)."""
        if not name or not self.has(kind, name):
            return {}
        return dict(self.get(kind, name).options.get("job_defaults") or {})

    def has(self, kind: str, name: str) -> bool:
        try:
            self.get(kind, name)
            return True
        except UnknownComponentError:
            return False

    def provider_order(self) -> list[str]:
        installed = list(self.components["providers"])
        ordered = [p for p in self.registry.providers if p in installed]
        return ordered + sorted(p for p in installed if p not in ordered)

    def provider(self, name: str) -> BackboneProvider:
        return self.get("providers", name).obj

    def list_models(self, pattern: str | None = None, pretrained: bool = False,
                    providers: list[str] | None = None) -> list[ModelRef]:
        """Every model of every provider matching ``pattern`` (fnmatch, ``prov:`` prefix ok)."""
        if pattern and ":" in pattern:
            prov, pattern = pattern.split(":", 1)
            providers = [prov]
            self.get("providers", prov)
            self._check_provider_listed(prov)
        refs = []
        for prov in providers or self.provider_order():
            for arch in self._models_of(prov, pretrained):
                if not pattern or fnmatch.fnmatch(arch, pattern):
                    base, _, tag = arch.partition(".")
                    refs.append(ModelRef(prov, base, tag or None))
        return refs

    def _models_of(self, provider: str, pretrained: bool) -> list[str]:
        """The provider's model names; a provider whose listing raises offers none.

        The failure is reported against the plugin that registered the provider (its
        record's ``error``, shown by ``zoo plugins``; one warning line on stderr), so one
        broken provider never breaks ``zoo list`` or name resolution for the others.
        ``ZOO_STRICT_PLUGINS=1`` raises :class:`~zoo.errors.PluginError` instead.
        """
        key = (provider, pretrained)
        if key not in self._model_lists:
            try:
                self._model_lists[key] = cached_model_list(self, provider, pretrained)
            except Exception as exc:  # a broken provider must not break listing
                self._provider_failed(provider, exc)
                self._model_lists[key] = []
        return self._model_lists[key]

    def _provider_failed(self, provider: str, exc: Exception) -> None:
        plugin = self.components["providers"][provider].plugin
        detail = " ".join(str(exc).split())[:300]
        message = (f"provider '{provider}' (plugin '{plugin}') could not list its models: "
                   f"{type(exc).__name__}: {detail}")
        first = provider not in self.provider_errors
        self.provider_errors[provider] = message
        record = self.pm.records.get(plugin)
        if record is not None:
            record.error = message
        if strict_plugins():
            raise PluginError(message) from exc
        if first:
            print(f"warning: {message}; skipped", file=sys.stderr)

    @property
    def provider_errors(self) -> dict[str, str]:
        """Provider name → why listing its models failed (see :meth:`_models_of`)."""
        if not hasattr(self, "_provider_errors"):
            self._provider_errors: dict[str, str] = {}
        return self._provider_errors

    def _check_provider_listed(self, provider: str) -> None:
        """An explicitly named provider whose listing failed: say so instead of 'unknown'."""
        self._models_of(provider, False)
        if provider in self.provider_errors:
            raise PluginError(self.provider_errors[provider])

    def resolve_model(self, name: str) -> ModelRef:
        """``[provider:]arch[.tag]`` (or an alias) → :class:`ModelRef`; did-you-mean on errors."""
        raw = name.strip()
        raw = self.registry.aliases.get(raw, raw)
        provider = None
        if ":" in raw:
            provider, raw = raw.split(":", 1)
            self.get("providers", provider)
            self._check_provider_listed(provider)
        arch, _, tag = raw.partition(".")
        candidates = [provider] if provider else self.provider_order()
        found = [p for p in candidates if arch in set(self._models_of(p, False))]
        if not found:
            every = {a for p in candidates for a in self._models_of(p, False)}
            hint = did_you_mean(arch, every)
            where = f"provider '{provider}'" if provider else "any installed provider"
            raise UnknownComponentError(f"unknown model '{name}' in {where}{hint}")
        if not provider and len(found) > 1 and not any(p in self.registry.providers
                                                          for p in found):
            raise AmbiguousNameError(
                f"model '{arch}' is offered by {', '.join(found)}; write one of "
                + ", ".join(f"{p}:{arch}" for p in found))
        return ModelRef(found[0], arch, tag or None)

    def resolve_dataset_arg(self, value: str, unlabeled: bool = False) -> dict:
        """``--data X``: a registered dataset name, else a path (``./X`` forces a path),
        served by the dataset that declared ``serves_paths=True`` (``unlabeled``: the one
        serving unlabeled images, :meth:`unlabeled_path_dataset`)."""
        if not value.startswith(("./", "/", "../", "~")) and self.has("datasets", value):
            return {"name": value, "path": None}
        name = self.unlabeled_path_dataset() if unlabeled else self.dataset_for_path(value)
        if name is None:
            raise UnknownComponentError(
                f"'{value}' is not a registered dataset and no installed dataset serves paths "
                f"(available: {', '.join(self.names('datasets')) or 'none installed'})")
        return {"name": name, "path": value}


def _check_job_defaults(kind: str, name: str, tree: Any) -> None:
    """A component's ``job_defaults`` must be a valid job-tree fragment (keys checked now,
    so a plugin's typo fails its registration, not someone's run)."""
    if not isinstance(tree, dict):
        raise TypeError(f"{SINGULAR[kind]} '{name}': job_defaults must be a mapping "
                        f"(a job-tree fragment such as {{'train': {{'lr': 0.01}}}})")
    job_from_tree(tree, source=f"{SINGULAR[kind]} '{name}' job_defaults")
    # the components are chosen before their defaults apply, so a default cannot re-choose
    # them; the one exception: a strategy may choose the head it fits (ncm, knn)
    sections = ("data", "strategy", "source_data") + (() if kind == "strategies" else ("head",))
    chosen = ["model"] * ("model" in tree) + [
        f"{section}.name" for section in sections
        if isinstance(tree.get(section), dict) and "name" in tree[section]]
    if chosen:
        raise TypeError(f"{SINGULAR[kind]} '{name}': job_defaults may not choose components "
                        f"({', '.join(chosen)}); use default=True or registry.yaml's defaults:")
    overreach = job_defaults_overreach(kind, tree)
    if overreach:  # `out:` from a plugin would send the run folder where nobody asked
        raise TypeError(f"{SINGULAR[kind]} '{name}': job_defaults may not set "
                        f"{', '.join(overreach)} — where a run goes, its paths and other "
                        "components' parameters are the user's (flags, config, registry)")


_CATALOG = None


def get_catalog(refresh: bool = False, registry: str | Path | None = None) -> Catalog:
    """The process-wide :class:`zoo.catalog.Catalog` (plugins loaded once)."""
    global _CATALOG
    if _CATALOG is None or refresh or registry is not None:
        _CATALOG = Catalog(registry=load_registry(registry))
    return _CATALOG
