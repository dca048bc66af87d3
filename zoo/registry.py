"""``registry.yaml``: how installed components combine into jobs (never where code lives).

Keys: ``requires`` (plugin distributions that must be installed), ``providers`` (order in
which bare model names resolve), ``aliases`` (short model names), ``defaults`` (job-tree
defaults), ``strategies`` / ``datasets`` (a user's per-component overrides, over the
components' own ``job_defaults``; empty in the built-in registry) and ``presets`` (named
partial jobs for ``--preset``) and ``choose`` (which plugin answers a name two plugins
register: ``choose: {strategies: {bitfit: acme}}``, see :mod:`zoo.names`).  A user registry (``--registry FILE`` or ``ZOO_REGISTRY``)
is merged over the built-in one.  The components' own defaults, and which one is a kind's
default, come from their plugins, not from here (:mod:`zoo.layering`).
"""
from __future__ import annotations

import functools
import importlib.metadata as md
import re
from dataclasses import dataclass, field
from pathlib import Path

from zoo import settings
from zoo.errors import ConfigError, PluginError, did_you_mean
from zoo.jobspec import JobSpec, deep_merge, job_from_tree
from zoo.io.yamlio import load_yaml

BUILTIN_REGISTRY = Path(__file__).with_name("registry.yaml")
KEYS = ("requires", "providers", "aliases", "defaults", "strategies", "datasets", "presets",
        "choose")
CHOOSE_KINDS = ("providers", "heads", "strategies", "metrics", "datasets", "loggers")


@dataclass
class Registry:
    requires: list = field(default_factory=list)
    providers: list = field(default_factory=list)
    aliases: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    strategies: dict = field(default_factory=dict)
    datasets: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    choose: dict = field(default_factory=dict)   # {kind: {name: plugin}}: a clash's winner
    sources: list = field(default_factory=list)

    def preset(self, name: str) -> dict:
        if name not in self.presets:
            raise ConfigError(f"unknown preset '{name}'{did_you_mean(name, self.presets)}"
                              f" (presets: {', '.join(sorted(self.presets)) or 'none'})")
        return self.presets[name]

    def check_requires(self) -> None:
        """Raise if a distribution named in ``requires`` is missing or too old."""
        for requirement in self.requires:
            check_requirement(requirement)


def _parse(path: Path) -> dict:
    data, lines = load_yaml(path)
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a registry must be a mapping with keys {', '.join(KEYS)}")
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}, line {lines.get((key,), '?')}: unknown registry key "
                              f"'{key}'{did_you_mean(str(key), KEYS)}")
        expected = list if key in ("requires", "providers") else dict
        if value is None:
            data[key] = expected()
        elif not isinstance(value, expected):
            raise ConfigError(f"{path}, line {lines.get((key,), '?')}: '{key}' must be a "
                              f"{'list' if expected is list else 'mapping'}")
    for key in ("requires", "providers"):
        for i, item in enumerate(data.get(key) or []):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(f"{path}, line {lines.get((key,), '?')}: '{key}' must be a "
                                  f"list of names; entry {i + 1} is {item!r}")
    for alias, target in (data.get("aliases") or {}).items():
        if not isinstance(alias, str) or not isinstance(target, str) or not target.strip():
            raise ConfigError(f"{path}, line {lines.get(('aliases', alias), '?')}: alias "
                              f"{alias!r} must map a name to a model name, got {target!r}")
    for kind, picks in (data.get("choose") or {}).items():
        if kind not in CHOOSE_KINDS or not isinstance(picks, dict) or not all(
                isinstance(n, str) and isinstance(p, str) for n, p in picks.items()):
            raise ConfigError(f"{path}, line {lines.get(('choose', kind), '?')}: 'choose' maps "
                              f"a kind ({', '.join(CHOOSE_KINDS)}) to {{NAME: PLUGIN}}, e.g. "
                              f"choose: {{strategies: {{bitfit: acme}}}}")
    for key in ("strategies", "datasets", "presets"):
        for name, tree in (data.get(key) or {}).items():
            if not isinstance(name, str) or not isinstance(tree, dict):
                raise ConfigError(f"{path}, line {lines.get((key, name), '?')}: "
                                  f"'{key}.{name}' must be a mapping")
    # defaults, per-strategy/-dataset defaults and presets are job fragments: each must
    # validate on its own over the built-in defaults, so a bad one (`defaults: {data: 5}`)
    # is an error naming this file, not a crash in the first job that uses it.
    fragments = [("defaults", data.get("defaults") or {}, ("defaults",))]
    for key in ("strategies", "presets"):
        fragments += [(f"{key}.{n}", t, (key, n)) for n, t in (data.get(key) or {}).items()]
    fragments += [(f"datasets.{n}", {"data": t}, ("datasets", n))
                  for n, t in (data.get("datasets") or {}).items()]
    base = JobSpec().to_dict()
    for where, tree, at in fragments:
        try:
            job_from_tree(deep_merge(base, tree), {}, "registry")
        except ConfigError as exc:
            line = lines.get(at, "?")
            raise ConfigError(f"{path}, line {line}: registry '{where}' is not a valid job "
                              f"fragment: {exc}") from None
    return data


@functools.lru_cache(maxsize=8)
def _load(paths: tuple[str, ...]) -> Registry:
    merged: dict = {}
    for p in paths:
        data = _parse(Path(p))
        for key in ("requires", "providers"):
            if key in data:  # a user's list adds to (providers: goes before) the built-in one
                merged[key] = list(dict.fromkeys(data[key] + merged.get(key, [])))
        rest = {k: v for k, v in data.items() if k not in ("requires", "providers")}
        merged = deep_merge(merged, rest)
    return Registry(**merged, sources=list(paths))


def load_registry(user: str | Path | None = None) -> Registry:
    """The built-in registry, extended by ``user`` or ``$ZOO_REGISTRY`` when given."""
    paths = [str(BUILTIN_REGISTRY)]
    extra = user or settings.text("ZOO_REGISTRY")
    if extra:
        if not Path(extra).exists():  # a FIFO or device: load_yaml says what it is
            raise ConfigError(f"registry file {extra} does not exist (from --registry or "
                              "ZOO_REGISTRY)")
        paths.append(str(Path(extra).resolve()))
    return _load(tuple(paths))


_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:(>=|==|>|<=|<|~=)\s*([0-9][0-9A-Za-z.\-+]*))?\s*$")


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in re.findall(r"\d+|[a-z]+", v.lower())[:4])


def check_requirement(requirement: str) -> None:
    match = _REQ.match(requirement)
    if not match:
        raise ConfigError(f"registry 'requires' entry {requirement!r} is not NAME[>=VERSION]")
    name, op, wanted = match.groups()
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        raise PluginError(f"the registry requires plugin '{name}', which is not installed — "
                          f"pip install '{requirement.strip()}'") from None
    if op:
        a, b = _version_tuple(have), _version_tuple(wanted)
        ok = {">=": a >= b, "==": a == b, ">": a > b, "<=": a <= b, "<": a < b,
              "~=": a >= b}[op]
        if not ok:
            raise PluginError(f"the registry requires '{requirement.strip()}' but {name} {have} "
                              f"is installed — pip install -U '{requirement.strip()}'")
