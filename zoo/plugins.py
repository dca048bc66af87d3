"""Loading plugins: every built-in and third-party plugin comes through entry-point group ``zoo``.

Each entry point is imported and registered inside its own ``try``: a plugin that raises on
import, or whose hook implementations do not fit the specs, is recorded as a
:class:`PluginRecord` with its error and left out; the rest of zoo keeps working
(simonw/llm #256 is the cautionary tale).

Environment:
- ``ZOO_STRICT_PLUGINS=1``: a plugin failure raises :class:`zoo.errors.PluginError`.
- ``ZOO_LOAD_PLUGINS=a,b``: load only these entry-point names (empty: load none).
- ``ZOO_TRACE_PLUGINS=1``: log each hook call with its plugin and duration to stderr.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pluggy

from zoo import hookspecs
from zoo import settings
from zoo.errors import PluginError

ENTRY_POINT_GROUP = "zoo"
BUILTIN_DISTRIBUTION = "zoo"


@dataclass
class PluginRecord:
    """What zoo knows about one plugin: where it came from and whether it loaded."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    status: str = "loaded"  # loaded | failed
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def strict_plugins() -> bool:
    return settings.flag("ZOO_STRICT_PLUGINS")


class ZooPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers a :class:`PluginRecord` per plugin."""

    def __init__(self) -> None:
        super().__init__("zoo")
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        if settings.flag("ZOO_TRACE_PLUGINS"):
            self._enable_tracing()

    # -- loading -------------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        only = settings.names("ZOO_LOAD_PLUGINS")
        seen: set[str] = set()
        # built-ins first, so they win name clashes and third-party order stays stable
        eps = sorted(md.entry_points(group=group),
                     key=lambda ep: (getattr(getattr(ep, "dist", None), "name", None)
                                     != BUILTIN_DISTRIBUTION))
        for ep in eps:
            if ep.name in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(ep.name)
            if only is not None and ep.name not in only:
                continue
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
                module=ep.value,
                builtin=bool(dist and dist.name == BUILTIN_DISTRIBUTION),
            )
            if dist is not None:
                record.requires = list(dist.requires or [])
            try:
                # a plugin that prints at import must not corrupt `--json` stdout
                with contextlib.redirect_stdout(sys.stderr):
                    plugin = ep.load()
            except PluginError:
                raise  # ZOO_STRICT_PLUGINS from a nested load
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                # a broken plugin must not break zoo — not even one that calls sys.exit()
                # or raises KeyboardInterrupt at import
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add_plugin(plugin, record)

    def add_plugin(self, plugin: Any, record: PluginRecord | str) -> bool:
        """Register one plugin object (a module or class) and validate it against the specs."""
        if isinstance(record, str):
            record = PluginRecord(name=record, module=getattr(plugin, "__name__", None))
        try:
            self.register(plugin, name=record.name)
        except Exception as exc:  # pluggy's validation: unknown arguments, bad markers
            self._fail(record, f"invalid hook implementation: {exc}")
            return False
        unknown = [
            impl.function.__name__
            for caller in self.get_hookcallers(plugin) or []
            for impl in caller.get_hookimpls()
            if impl.plugin is plugin and not caller.has_spec() and not impl.optionalhook
        ]
        if unknown:
            self.unregister(plugin)
            self._fail(record, f"unknown hook {', '.join(sorted(set(unknown)))} "
                               "(not in zoo.hookspecs; mark it optionalhook=True if intended)")
            return False
        record.hooks = sorted(
            caller.name for caller in self.get_hookcallers(plugin) or [] if caller.has_spec()
        )
        self.records[record.name] = record
        return True

    def _fail(self, record: PluginRecord, error: str) -> None:
        error = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        record.status = "failed"
        record.error = error
        self.records[record.name] = record
        if strict_plugins():
            raise PluginError(f"plugin {record.name!r} failed: {error}")

    def fail_plugin(self, name: str, error: str) -> None:
        """Mark an already registered plugin as failed (e.g. its ``register`` hook raised)."""
        record = self.records.get(name) or PluginRecord(name=name)
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self._fail(record, error)

    def failures(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status == "failed"]

    # -- calling registration hooks one plugin at a time ---------------------------------
    def impls(self, hook_name: str) -> list:
        """The implementations of ``hook_name`` in plugin load order."""
        # get_hookimpls() is in registration order (pluggy *calls* them in reverse)
        return list(getattr(self.hook, hook_name).get_hookimpls())

    def call_impl(self, impl, **kwargs: Any) -> Any:
        """Call one implementation with the subset of ``kwargs`` it accepts (traced if asked)."""
        args = [kwargs[name] for name in impl.argnames]
        if not settings.flag("ZOO_TRACE_PLUGINS"):
            return impl.function(*args)
        start = time.perf_counter()
        try:
            return impl.function(*args)
        finally:
            ms = (time.perf_counter() - start) * 1000
            print(f"[zoo trace] {impl.plugin_name}.{impl.function.__name__} {ms:.1f} ms",
                  file=sys.stderr)

    def _enable_tracing(self) -> None:
        def before(hook_name, hook_impls, kwargs):
            self._trace_start = time.perf_counter()

        def after(outcome, hook_name, hook_impls, kwargs):
            ms = (time.perf_counter() - self._trace_start) * 1000
            names = ",".join(i.plugin_name for i in hook_impls)
            print(f"[zoo trace] {hook_name} [{names}] {ms:.1f} ms", file=sys.stderr)

        self.add_hookcall_monitoring(before, after)


def load_plugin_manager() -> ZooPluginManager:
    """A plugin manager with every installed ``zoo`` entry point loaded (or recorded failed)."""
    pm = ZooPluginManager()
    pm.load_entry_points()
    return pm
