"""The job spec: layering, --set paths, presets, validation and did-you-mean."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from zoo.errors import ConfigError
from zoo.jobspec import JobSpec, Layer, job_from_tree, set_path
from zoo.layering import build_job
from zoo.registry import load_registry


def job(*layers):
    return build_job([Layer(f"layer{i}", t) for i, t in enumerate(layers)], load_registry())


def test_defaults_and_registry_strategy_defaults():
    j = job({"model": "resnet18"})
    assert j.strategy.name == "finetune"
    assert j.strategy.params == {"backbone_lr_mult": "auto"}
    assert j.data.image_size == 32  # demo's registry default
    lp = job({"strategy": {"name": "linear-probe"}})
    assert lp.data.augment == "none" and lp.train.lr == 0.01


def test_later_layers_win_and_set_paths():
    tree = {}
    set_path(tree, "train.lr=3e-4")
    set_path(tree, "metrics=[accuracy, nll]")
    set_path(tree, "strategy.params.backbone_lr_mult=0.5")
    j = job({"train": {"lr": 0.1, "epochs": 2}}, tree)
    assert j.train.lr == pytest.approx(3e-4) and j.train.epochs == 2
    assert j.metrics == ["accuracy", "nll"]
    assert j.strategy.params["backbone_lr_mult"] == 0.5


def test_preset_merging():
    reg = load_registry()
    j = build_job([Layer("preset", reg.preset("smoke")), Layer("flags", {"train": {"epochs": 3}})],
                  reg)
    assert j.train.epochs == 3 and j.train.batch_size == 32 and j.data.max_per_class == 20
    with pytest.raises(ConfigError, match="did you mean smoke"):
        reg.preset("smok")


@pytest.mark.parametrize("tree, match", [
    ({"trian": {}}, r"unknown key 'trian'.*did you mean train"),
    ({"train": {"lrr": 1}}, r"unknown key 'train.lrr'.*did you mean lr"),
    ({"train": {"epochs": -1}}, r"'train.epochs' must be at least 1"),
    ({"train": {"epochs": "five"}}, r"'train.epochs' must be an integer"),
    ({"train": {"lr": 0}}, r"'train.lr' must be a positive number"),
    ({"data": {"augment": "heavy"}}, r"'data.augment' is 'heavy'"),
    ({"strategy": {"bn": "freeze"}}, r"did you mean freeze-stats|freeze-all"),
    ({"data": {"val_split": 0.6, "test_split": 0.5}}, r"must leave some training data"),
    ({"device": "gpu"}, r"'device' is 'gpu'"),
    ({"train": "fast"}, r"'train' must be a mapping"),
])
def test_bad_values(tree, match):
    with pytest.raises(ConfigError, match=match):
        job(tree)


def test_error_names_file_and_line(tmp_path):
    from zoo.jobspec import load_job_file

    f = tmp_path / "job.yaml"
    f.write_text("model: resnet18\ntrain:\n  epochs: 2\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"job.yaml, line 4.*did you mean lr"):
        build_job([load_job_file(f)], load_registry())


def test_hostile_yaml_refused(tmp_path):
    from zoo.jobspec import load_job_file

    f = tmp_path / "evil.yaml"
    f.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_job_file(f)
    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expand to"):
        load_job_file(bomb)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError, match="refused"):
        load_job_file(big)


def test_round_trip_through_yaml():
    j = job({"train": {"epochs": 3}, "head": {"name": "mlp", "params": {"hidden": 64}}})
    import yaml

    again = job_from_tree(yaml.safe_load(j.to_yaml()))
    assert again == j


@settings(max_examples=150, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["model", "train", "epochs", "lr", "data", "augment", "x", "seed",
                         "head", "name", "params", "strategy", "bn"]), children, max_size=4),
    max_leaves=12))
def test_fuzz_parser_only_raises_config_errors(tree):
    """Whatever tree comes in, the parser returns a JobSpec or raises ConfigError."""
    try:
        result = job_from_tree(tree) if isinstance(tree, dict) else job_from_tree(tree)
        assert isinstance(result, JobSpec)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
