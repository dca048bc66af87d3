"""Property-based fuzz of validation (docs/reliability.md, "Validation corpus and fuzz").

Hypothesis generates job trees (written as YAML for ``--config``) and command-line flag sets
— non-finite and huge numbers, wrong types, strings where lists go, non-strings in name
lists, deep nesting, unknown keys — and runs each in-process (click's ``CliRunner``) with
``zoo run ... --plan``, which validates and plans but trains nothing.  Every case must exit
0 or 2, print no traceback and never reach the "zoo bug" path (exit 1), and an error is one
line.  Derandomized: CI sees the same cases on every run.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_inprocess import assert_clean, invoke

MODEL = "timm:test_resnet"
FIXED = ["--weights", "none", "--set", "data.params.per_class=3", "--plan"]
SETTINGS = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _schema() -> dict[str, list]:
    """Every dotted key of the job spec (``train.lr``, ``seed``, ...) with plausible values
    (so that some generated jobs are valid and reach the plan)."""
    from zoo.jobspec import CHOICES, JobSpec

    keys: dict[str, list] = {}

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                keys[f"{prefix}{f.name}"] = [value]
    walk(JobSpec(), "")
    for (section, key), allowed in CHOICES.items():
        keys[f"{section}.{key}"] = [a for a in allowed if a is not None]
    keys["strategy.name"] = ["finetune", "linear-probe", "lp-ft", "partial", "layer-decay",
                             "gradual-unfreeze", "l2-sp", "lwf", "finetun"]
    keys["head.name"] = ["linear", "mlp", "linaer"]
    keys["data.name"] = ["demo", "demo", "nope"]
    keys["metrics"] = [["accuracy"], ["accuracy", "f1"], "accuracy,top5"]
    keys["head.params"] = [{}, {"hidden": 8}, {"dropout": 0.5}, {"hidden": -1},
                           {"dropout": 7}, {"layers": 2, "hidden": 4}]
    keys["strategy.params"] = [{}, {"probe_epochs": 1}, {"probe_epochs": 50}, {"k": 1},
                               {"decay": 0.5}]
    keys["data.image_size"] = [16, 32, None, 4096, 4097]
    for k in ("data.path", "data.root", "source_data", "out", "name", "weights", "model",
              "train.compile"):
        keys.pop(k, None)  # files, networks, compilers and folders are other tests' business
    return keys


KEYS = _schema()

NUMBERS = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 1e29, -1e29, 1e308, 2**63, 2**64 + 1,
                     -(2**63) - 1, 0, -1, 1, 0.5, 1e-320]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(),
                    st.text(max_size=6),
                    st.sampled_from(["balancd", "balanced", ".inf", "nan", "1e999", "-0",
                                     "1,2", "many", "auto", "", " ", "null", "~", "0x10"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers(-3, 3)), inner, max_size=3)),
    max_leaves=8)


@st.composite
def nested(draw):
    """A value wrapped in 1..200 lists or mappings: deep nesting."""
    depth = draw(st.integers(1, 200))
    value = draw(SCALARS)
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


@st.composite
def job_trees(draw):
    tree: dict = {}
    chosen = draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=6, unique=True))
    for dotted in chosen:
        kind = draw(st.integers(0, 9))
        if kind < 4:
            value = draw(st.sampled_from(KEYS[dotted]))
        elif kind < 8:
            value = draw(VALUES)
        elif kind == 8:
            value = draw(nested())
        else:
            value = draw(st.lists(VALUES, max_size=3))
        node = tree
        *parents, last = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    # (hypothesis favours the ends of a range: a middle value keeps these rare)
    if draw(st.integers(0, 9)) == 5:  # a misspelt or unknown key
        tree[draw(st.sampled_from(["trian", "Train", "x", "model_name"]))] = draw(SCALARS)
    if draw(st.integers(0, 14)) == 7:  # a whole section of the wrong shape
        tree[draw(st.sampled_from(["train", "data", "head", "strategy", "monitor"]))] = \
            draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=2)))
    return tree


def _flag_text(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip() \
        if not isinstance(value, str) else value


FLAGS = ["--epochs", "--batch-size", "--lr", "--seed", "--image-size", "--device",
         "--metrics", "--head", "--strategy", "--precision", "--data"]


@st.composite
def flag_sets(draw):
    args: list[str] = []
    for flag in draw(st.lists(st.sampled_from(FLAGS), max_size=4, unique=True)):
        if flag == "--data":
            value = draw(st.sampled_from(["demo", "nope", "", "./does-not-exist"]))
        else:
            value = draw(st.one_of(SCALARS, st.sampled_from(["1", "2", "0.01", "cpu", "cuda:x",
                                                             "linear", "finetune"])))
        args += [flag, _flag_text(value)]
    for dotted in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=3)):
        value = draw(st.one_of(VALUES, st.sampled_from(KEYS[dotted])))
        args += ["--set", f"{dotted}={_flag_text(value)}"]
    if draw(st.integers(0, 9)) == 5:
        args += ["--set", draw(st.sampled_from(["nonsense", "=1", "train.=1", "a..b=2",
                                                "train.lr", ".=."]))]
    return args


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(tree=job_trees())
def test_generated_job_files(workdir, tree):
    path = workdir / "job.yaml"
    try:
        text = yaml.safe_dump(tree, allow_unicode=True)
    except (yaml.YAMLError, RecursionError):  # pragma: no cover - not representable
        return
    path.write_text(text, encoding="utf-8")
    code, out, err = invoke("run", MODEL, "--config", path, "--out", workdir / "runs", *FIXED)
    assert_clean(code, out, err)
    assert not (workdir / "runs").exists()  # --plan writes nothing


@SETTINGS
@given(args=flag_sets())
def test_generated_flag_sets(workdir, args):
    code, out, err = invoke("run", MODEL, *args, "--out", workdir / "runs", *FIXED)
    assert_clean(code, out, err)
    assert not (workdir / "runs").exists()
