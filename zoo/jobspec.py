"""The job spec: one validated tree that says everything a run does.

Built from layers, later ones winning (see :func:`zoo.layering.build_job`)::

    built-in defaults ← component defaults ← registry defaults ← registry per-component
    ← preset ← --config ← flags ← --set

Component names left ``None`` (``model``, ``data.name``, ``head.name``, ``strategy.name``,
``metrics``, ``monitor.metric``) mean "the catalog's default", declared by the plugins and
filled in by :func:`zoo.layering.build_job`: this module names no built-in component.

Every key is a dataclass field below (``docs/jobs.md``); unknown keys and wrong types are
errors naming the key and the line (with a "did you mean").
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ConfigError, did_you_mean
from zoo.io.yamlio import deep_merge, dump_yaml, load_yaml, set_path  # noqa: F401 (public here too)


@dataclass
class DataSpec:
    name: str | None = None            # a registered dataset; null: the catalog's default
    path: str | None = None            # folder datasets: the ImageFolder root
    root: str | None = None            # downloadable datasets: where files are (or go)
    image_size: int | None = None      # null: the backbone's pretrained input size
    channels: int | None = None        # input channels; null: the data's own (3 for images)
    stem_init: str = "repeat"          # channels ≠ 3: repeat (timm's) | mean RGB filters
    val_split: float = 0.1
    test_split: float = 0.2
    augment: str = "light"             # none | light | strong
    max_per_class: int | None = None   # few-shot: keep at most this many train images/class
    num_workers: int | None = None     # null: chosen from the machine
    cache_images: bool | None = None   # decoded-image cache; null: on for small folders
    strict_scan: bool = False          # folders: read every file first; undecodable: error
    params: dict = field(default_factory=dict)  # dataset-specific options


@dataclass
class HeadSpec:
    name: str | None = None            # null: the catalog's default head
    params: dict = field(default_factory=dict)
    init: str = "random"               # random | text (class-name prompts: zoo.engine.text_head)
    templates: str | None = None       # head.init=text: imagenet80 (null), simple, or a file


@dataclass
class StrategySpec:
    name: str | None = None            # null: the catalog's default strategy
    bn: str | None = None              # train | freeze-stats | freeze-all; null: strategy's
    params: dict = field(default_factory=dict)


@dataclass
class TrainSpec:
    epochs: int = 5
    batch_size: int = 32
    lr: float | str = 3e-3            # a number, or auto: the LR range test's suggestion
    optimizer: str = "adamw"           # adamw | adam | sgd
    momentum: float = 0.9              # sgd only
    nesterov: bool = True              # sgd only: Nesterov momentum (off with momentum 0)
    weight_decay: float = 0.05
    scheduler: str = "cosine"          # cosine | constant
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    early_stop_patience: int | None = None
    class_weights: list[float] | str | None = None  # null | balanced | [w0, w1, ...]
    precision: str = "fp32"            # fp32 | bf16 | fp16 (fp16: CUDA only)
    channels_last: bool = False
    compile: bool = False
    on_nan: str = "stop"               # stop | skip
    feature_cache: str | bool = "auto"  # auto | off : frozen-backbone phases on cached features
    cache_budget_mb: int = 2048        # largest feature cache kept (memory or disk)
    sync_bn: bool = False              # torchrun: SyncBatchNorm across ranks (CUDA only)
    ema: float | None = None           # EMA of the weights with this decay (zoo.engine.ema)


@dataclass
class MonitorSpec:
    metric: str | None = None          # null: the first of the catalog's default metrics
    mode: str = "max"                  # max | min


@dataclass
class JobSpec:
    model: str | None = None           # [provider:]arch[.tag]; null: a provider's default
    weights: str = "auto"              # auto | pretrained | none | PATH | TAG
    data: DataSpec = field(default_factory=DataSpec)
    source_data: DataSpec | None = None  # the joint strategy's source task
    target_data: DataSpec | None = None  # unlabeled target images (UDA); null: data's train
    head: HeadSpec = field(default_factory=HeadSpec)
    strategy: StrategySpec = field(default_factory=StrategySpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    metrics: list[str] | None = None   # null: the catalog's default metrics
    monitor: MonitorSpec = field(default_factory=MonitorSpec)
    loggers: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | cuda:N | mps
    out: str = "runs"
    name: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


CHOICES = {
    ("data", "augment"): ("none", "light", "strong"),
    ("data", "stem_init"): ("repeat", "mean"),
    ("strategy", "bn"): (None, "train", "freeze-stats", "freeze-all"),
    ("head", "init"): ("random", "text"),
    ("train", "optimizer"): ("adamw", "adam", "sgd"),
    ("train", "scheduler"): ("cosine", "constant"),
    ("train", "precision"): ("fp32", "bf16", "fp16"),
    ("train", "on_nan"): ("stop", "skip"),
    ("train", "feature_cache"): ("auto", "off"),
    ("monitor", "mode"): ("max", "min"),
}

# Inclusive ranges of bounded numbers: `epochs: 1e29` or `seed: -5` never reach torch.
RANGES = {
    ("train", "epochs"): (1, 100_000),
    ("train", "batch_size"): (1, 1_000_000),
    ("train", "warmup_epochs"): (0, 100_000),
    ("train", "cache_budget_mb"): (0, 10_000_000),
    ("train", "early_stop_patience"): (1, 100_000),
    ("train", "momentum"): (0.0, 0.999999),
    ("train", "weight_decay"): (0.0, 100.0),
    ("train", "lr"): (1e-12, 1e3),
    ("train", "grad_clip"): (1e-12, 1e12),
    ("seed",): (0, 2**32 - 1),
}
# every DataSpec section (the task's data, the source task, unlabeled target images) alike
_DATA_RANGES = {"image_size": (8, 4096), "max_per_class": (1, 1_000_000_000),
                "num_workers": (0, 256), "channels": (1, 64)}
RANGES.update({(section, key): bounds for section in ("data", "source_data", "target_data")
               for key, bounds in _DATA_RANGES.items()})
DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?|mps")
MAX_INT = 2**63 - 1      # no integer field may exceed what C code downstream can hold
MAX_LIST = 10_000        # longest list field (class weights, metric names)


@dataclass
class Layer:
    """One source of job settings: its name (for messages), the tree and its line numbers."""

    source: str
    tree: dict
    lines: dict = field(default_factory=dict)


# -- building ------------------------------------------------------------------------------
def job_from_tree(tree: dict, lines: dict | None = None, source: str = "job") -> JobSpec:
    """Validate a plain tree into a :class:`JobSpec`."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a job must be a mapping of keys, got {type(tree).__name__}")
    job = _build(JobSpec, tree, (), lines or {}, source)
    _check_values(job)
    return job


def _where(path: tuple, lines: dict, source: str) -> str:
    line = lines.get(path)
    return f"{source}, line {line}" if line else source


def _build(cls: type, tree: dict, path: tuple, lines: dict, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in tree.items():
        sub = path + (key,)
        if key not in names:
            dotted = ".".join(map(str, sub))
            raise ConfigError(f"unknown key '{dotted}' ({_where(sub, lines, source)})"
                              f"{did_you_mean(str(key), names)}")
        kwargs[key] = _coerce(hints[key], value, sub, lines, source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: tuple, lines: dict, source: str) -> Any:
    dotted = ".".join(map(str, path))
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path, lines, source)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"'{dotted}' must be a mapping ({_where(path, lines, source)})")
        return _build(tp, value, path, lines, source)
    kind = origin or tp
    bad = ConfigError(f"'{dotted}' must be {_type_name(kind)}, got {value!r} "
                      f"({_where(path, lines, source)})")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if kind is int:
        return _coerce_int(value, bad, dotted, _where(path, lines, source))
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(number):
            raise ConfigError(f"'{dotted}' must be a finite number, got {value!r} "
                              f"({_where(path, lines, source)})")
        return number
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if kind is list:
        return _coerce_list(tp, value, bad, path, lines, source)
    if kind is dict:
        if not isinstance(value, dict):
            raise bad
        for key in value:
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigError(f"'{dotted}' has the key {key!r}; keys of '{dotted}' are "
                                  f"parameter names ({_where(path, lines, source)})")
        return value
    return value


def _coerce_int(value: Any, bad: ConfigError, dotted: str, where: str) -> int:
    """An int from an int, a whole float or a numeric string; ``bad`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    if isinstance(value, str):
        try:
            value = int(value.strip()) if re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value) \
                else float(value)
        except ValueError:
            raise bad from None
    if isinstance(value, float):
        # .inf, .nan and 1e29 are floats: only finite whole numbers are integers
        if not math.isfinite(value) or value != int(value):
            raise bad
        value = int(value)
    if abs(value) > MAX_INT:
        raise ConfigError(f"'{dotted}' is {value:.3g}, far too large ({where})")
    return value


def _coerce_list(tp: Any, value: Any, bad: ConfigError, path: tuple, lines: dict,
                 source: str) -> list:
    """A list (``"a,b"`` from the command line too), each entry coerced to the item type."""
    dotted = ".".join(map(str, path))
    if isinstance(value, str):  # "a,b" from the command line
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise bad
    if len(value) > MAX_LIST:
        raise ConfigError(f"'{dotted}' has {len(value)} entries; at most {MAX_LIST} "
                          f"({_where(path, lines, source)})")
    (item,) = typing.get_args(tp) or (None,)
    if item is None:
        return value
    out = []
    for i, v in enumerate(value):
        if item is str and not isinstance(v, str):  # names: never coerce 123 or {a: 1}
            raise ConfigError(f"'{dotted}' must be a list of names, but entry {i + 1} is "
                              f"{v!r} ({_where(path, lines, source)})")
        try:
            out.append(_coerce(item, v, path, lines, source))
        except ConfigError:
            plural = {float: "numbers", int: "integers"}.get(item, "values")
            raise ConfigError(f"'{dotted}' must be a list of {plural}, but entry {i + 1} "
                              f"is {v!r} ({_where(path, lines, source)})") from None
    return out


def _type_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(kind, getattr(kind, "__name__", str(kind)))


def _check_values(job: JobSpec) -> None:
    if isinstance(job.train.feature_cache, bool):  # YAML reads a bare off/on as a boolean
        job.train.feature_cache = "auto" if job.train.feature_cache else "off"
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(job, section), key)
        if value not in allowed:
            shown = ", ".join(str(a) for a in allowed if a is not None)
            raise ConfigError(f"'{section}.{key}' is {value!r}; choose one of {shown}"
                              f"{did_you_mean(str(value), [a for a in allowed if a])}")
    t = job.train
    cw = t.class_weights
    if isinstance(cw, str) and cw != "balanced":
        raise ConfigError(f"'train.class_weights' is {cw!r}; use balanced, null or a list of "
                          "numbers, one per class" + did_you_mean(cw, ["balanced"]))
    if isinstance(cw, list) and (not cw or any(w < 0 for w in cw) or not any(cw)):
        raise ConfigError("'train.class_weights' must be non-negative numbers, one per class, "
                          f"not all zero; got {cw!r}")
    checks = [
        (t.epochs >= 1, f"'train.epochs' must be at least 1, got {t.epochs}"),
        (t.batch_size >= 1, f"'train.batch_size' must be at least 1, got {t.batch_size}"),
        (t.lr == "auto" or (not isinstance(t.lr, str) and t.lr > 0),
         f"'train.lr' must be a positive number or auto, got {t.lr!r}"),
        (t.weight_decay >= 0, f"'train.weight_decay' must be >= 0, got {t.weight_decay}"),
        (t.warmup_epochs >= 0, f"'train.warmup_epochs' must be >= 0, got {t.warmup_epochs}"),
        (0 <= t.label_smoothing < 1, "'train.label_smoothing' must be in [0, 1)"),
        (t.grad_clip is None or t.grad_clip > 0, "'train.grad_clip' must be positive or null"),
        (t.ema is None or 0 < t.ema < 1,
         f"'train.ema' must be a decay in (0, 1) such as 0.999, or null; got {t.ema!r}"),
        (t.cache_budget_mb >= 0, "'train.cache_budget_mb' must be >= 0"),
        (t.early_stop_patience is None or t.early_stop_patience >= 1,
         "'train.early_stop_patience' must be at least 1 or null"),
        (0 <= job.data.val_split < 1, "'data.val_split' must be in [0, 1)"),
        (0 <= job.data.test_split < 1, "'data.test_split' must be in [0, 1)"),
        (job.data.val_split + job.data.test_split < 1,
         "'data.val_split' + 'data.test_split' must leave some training data (< 1)"),
        (job.data.image_size is None or 8 <= job.data.image_size <= 4096,
         "'data.image_size' must be between 8 and 4096, or null"),
        (job.data.max_per_class is None or job.data.max_per_class >= 1,
         "'data.max_per_class' must be at least 1 or null"),
        (job.data.num_workers is None or job.data.num_workers >= 0,
         "'data.num_workers' must be >= 0 or null"),
        (job.metrics is None or bool(job.metrics), "'metrics' must name at least one metric"),
        (bool(DEVICE.fullmatch(job.device)),
         f"'device' is {job.device!r}; use auto, cpu, cuda, cuda:N or mps"),
        (job.model is None or bool(str(job.model).strip()), "'model' must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_ranges(job)
    if any(not m.strip() for m in (job.metrics or []) + job.loggers):
        raise ConfigError("'metrics' and 'loggers' entries must be non-empty names")
    if job.name is not None and (not job.name.strip() or job.name in (".", "..")):
        raise ConfigError(f"'name' {job.name!r} is not a usable folder name")
    if "\0" in job.out or (job.name and "\0" in job.name):
        raise ConfigError("'out' and 'name' must not contain NUL characters")


def _check_ranges(job: JobSpec) -> None:
    for path, (low, high) in RANGES.items():
        node = job
        for part in path:
            node = getattr(node, part, None) if node is not None else None
        if node is None or node == "auto":  # train.lr auto: resolved before the run
            continue
        if not low <= node <= high:
            raise ConfigError(f"'{'.'.join(path)}' is {node:g}; it must be between {low:g} and "
                              f"{high:g}")


def check_against_data(job: JobSpec, num_classes: int) -> None:
    """What can only be checked once the data's classes are known (call it right after the
    splits are loaded, before building anything): one class weight per class — a list of
    the wrong length is an error, never padded or cut."""
    cw = job.train.class_weights
    if isinstance(cw, list) and len(cw) != num_classes:
        raise ConfigError(f"'train.class_weights' has {len(cw)} values but the data has "
                          f"{num_classes} classes — give one weight per class, or balanced")


def check_device(name: object, option: str = "--device") -> str:
    """``name`` when it is a device zoo knows (auto, cpu, cuda, cuda:N, mps); else a
    one-line :class:`ConfigError` (``--device nonsense`` must not reach torch)."""
    if not isinstance(name, str) or not DEVICE.fullmatch(name):
        raise ConfigError(f"{option} {name!r} is not a device; use auto, cpu, cuda, cuda:N or "
                          "mps")
    return name


def load_job_file(path: str | Path) -> Layer:
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job file must be a mapping of keys (model:, train:, ...)")
    return Layer(str(path), data, lines)
