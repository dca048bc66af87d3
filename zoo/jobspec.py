"""The job spec: one validated tree that says everything a run does.

Built from layers, later ones winning (see :func:`build_job`)::

    registry defaults ← strategy defaults ← dataset defaults ← preset ← --config ← flags ← --set

Every key is a dataclass field below; ``docs/jobs.md`` documents them.  Unknown keys are
errors with a "did you mean", wrong types are errors that name the key and the line.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import ConfigError, did_you_mean
from zoo.io.yamlio import deep_merge, dump_yaml, load_yaml, set_path  # noqa: F401 (public here too)


@dataclass
class DataSpec:
    name: str = "demo"                 # a registered dataset ("demo", "folder", "digits", ...)
    path: str | None = None            # folder datasets: the ImageFolder root
    root: str | None = None            # downloadable datasets: where files are (or go)
    image_size: int | None = None      # null: the backbone's pretrained input size
    val_split: float = 0.1
    test_split: float = 0.2
    augment: str = "light"             # none | light | strong
    max_per_class: int | None = None   # few-shot: keep at most this many train images/class
    num_workers: int | None = None     # null: chosen from the machine
    cache_images: bool | None = None   # decoded-image cache; null: on for small folders
    params: dict = field(default_factory=dict)  # dataset-specific options


@dataclass
class HeadSpec:
    name: str = "linear"
    params: dict = field(default_factory=dict)


@dataclass
class StrategySpec:
    name: str = "finetune"
    bn: str | None = None              # train | freeze-stats | freeze-all; null: strategy's
    params: dict = field(default_factory=dict)


@dataclass
class TrainSpec:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adamw"           # adamw | adam | sgd
    momentum: float = 0.9              # sgd only
    weight_decay: float = 0.05
    scheduler: str = "cosine"          # cosine | constant
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    early_stop_patience: int | None = None
    class_weights: list | str | None = None  # null | balanced | [w0, w1, ...]
    precision: str = "fp32"            # fp32 | bf16 | fp16 (fp16: CUDA only)
    channels_last: bool = False
    compile: bool = False
    on_nan: str = "stop"               # stop | skip
    feature_cache: str | bool = "auto"  # auto | off : frozen-backbone phases on cached features
    cache_budget_mb: int = 2048        # largest feature cache kept (memory or disk)
    sync_bn: bool = False              # torchrun: SyncBatchNorm across ranks (CUDA only)


@dataclass
class MonitorSpec:
    metric: str = "accuracy"
    mode: str = "max"                  # max | min


@dataclass
class JobSpec:
    model: str = "resnet18"            # [provider:]arch[.tag]
    weights: str = "auto"              # auto | pretrained | none | PATH | TAG
    data: DataSpec = field(default_factory=DataSpec)
    source_data: DataSpec | None = None  # the joint strategy's source task
    head: HeadSpec = field(default_factory=HeadSpec)
    strategy: StrategySpec = field(default_factory=StrategySpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    metrics: list = field(default_factory=lambda: ["accuracy", "top5", "f1"])
    monitor: MonitorSpec = field(default_factory=MonitorSpec)
    loggers: list = field(default_factory=list)
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
    ("strategy", "bn"): (None, "train", "freeze-stats", "freeze-all"),
    ("train", "optimizer"): ("adamw", "adam", "sgd"),
    ("train", "scheduler"): ("cosine", "constant"),
    ("train", "precision"): ("fp32", "bf16", "fp16"),
    ("train", "on_nan"): ("stop", "skip"),
    ("train", "feature_cache"): ("auto", "off"),
    ("monitor", "mode"): ("max", "min"),
}


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


def _build(cls, tree: dict, path: tuple, lines: dict, source: str):
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


def _coerce(tp, value, path, lines, source):
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
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            number = float(value)
        except ValueError:
            raise bad from None
        if number != int(number):
            raise bad
        return int(number)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            return float(value)
        except ValueError:
            raise bad from None
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if kind is list:
        if isinstance(value, str):  # "a,b" from the command line
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return value
        raise bad
    if kind is dict:
        if isinstance(value, dict):
            return value
        raise bad
    return value


def _type_name(kind) -> str:
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
    checks = [
        (t.epochs >= 1, f"'train.epochs' must be at least 1, got {t.epochs}"),
        (t.batch_size >= 1, f"'train.batch_size' must be at least 1, got {t.batch_size}"),
        (t.lr > 0, f"'train.lr' must be positive, got {t.lr}"),
        (t.weight_decay >= 0, f"'train.weight_decay' must be >= 0, got {t.weight_decay}"),
        (t.warmup_epochs >= 0, f"'train.warmup_epochs' must be >= 0, got {t.warmup_epochs}"),
        (0 <= t.label_smoothing < 1, "'train.label_smoothing' must be in [0, 1)"),
        (t.grad_clip is None or t.grad_clip > 0, "'train.grad_clip' must be positive or null"),
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
        (bool(job.metrics), "'metrics' must name at least one metric"),
        (bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", job.device)),
         f"'device' is {job.device!r}; use auto, cpu, cuda, cuda:N or mps"),
        (bool(str(job.model).strip()), "'model' must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if job.name is not None and (not job.name.strip() or job.name in (".", "..")):
        raise ConfigError(f"'name' {job.name!r} is not a usable folder name")


def load_job_file(path: str | Path) -> Layer:
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job file must be a mapping of keys (model:, train:, ...)")
    return Layer(str(path), data, lines)
