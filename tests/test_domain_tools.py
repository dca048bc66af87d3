"""``zoo shift`` (domain gap scores) and ``zoo lr-find`` (the LR range test), on tiny models."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from zoo.kit.testing import make_catalog
from zoo.tools.lr_find import lr_find, suggest
from zoo.tools.shift import measure_shift, mmd2_rbf, proxy_a_distance, verdict
from zoo_cli_helpers import assert_one_line_error, cli

FLAGS = {"weights": "none", "device": "cpu", "data": {"num_workers": 0}}


def test_scores_are_zero_for_one_domain_and_high_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(80, 6)), rng.normal(size=(80, 6))
    pad_same, acc_same = proxy_a_distance(a, b)
    pad_far, acc_far = proxy_a_distance(a, b + 3.0)
    assert pad_same < 0.5 and acc_same < 0.65
    assert pad_far == pytest.approx(2.0) and acc_far == 1.0
    assert abs(mmd2_rbf(a, b)) < 0.05 < mmd2_rbf(a, b + 3.0)
    assert verdict(1.8).startswith("large shift") and "fine-tuning" in verdict(1.8)
    assert verdict(0.1).startswith("small shift")


def test_shift_score_grows_with_severity(tmp_path):
    catalog = make_catalog()
    pooled, results = [], []
    for severity in (1, 3, 5):
        r = measure_shift("testing:tiny_cnn", source={"name": "digits"},
                          target={"name": "shift:digits",
                                  "params": {"transform": "noise", "severity": severity}},
                          flags={**FLAGS, "out": str(tmp_path)}, max_images=120,
                          catalog=catalog)
        pooled.append(r["pooled"])
        results.append(r)
    pads = [p["pad"] for p in pooled]
    mmds = [p["mmd2"] for p in pooled]
    assert pads[0] < pads[1] <= pads[2] and pads[0] < 1.5, pads
    assert mmds[0] < mmds[1] < mmds[2], mmds
    last = results[-1]
    assert [g["group"] for g in last["layers"]] == ["stem", "stage1.0", "stage1.1"]
    assert all(0 <= g["pad"] <= 2 for g in last["layers"])
    assert last["verdict"].startswith("large shift")
    folder = Path(last["dir"])
    assert (folder / "shift.png").stat().st_size > 1000
    assert json.loads((folder / "shift.json").read_text())["pooled"] == last["pooled"]


def test_shift_cli_bad_input_is_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "shift", "-m", "testing:tiny_cnn", "--source", "digits",
                       "--target", "shift:digits", "--target-param", "transform", "--out",
                       tmp_path)
    assert "KEY=VALUE" in assert_one_line_error(err, code)


def test_lr_suggestion_is_min_over_ten_and_steepest_before_the_minimum():
    lrs = list(np.logspace(-5, 0, 50))
    loss = [2.0 - math.tanh(4 * (math.log10(lr) + 3)) for lr in lrs[:40]]
    loss += [loss[-1] + k * 0.5 for k in range(1, 11)]  # diverges after lr[39]
    found = suggest(lrs, loss)
    assert found["min_lr"] == pytest.approx(lrs[39])
    assert found["suggested_lr"] == pytest.approx(lrs[39] / 10)
    assert found["steepest_lr"] == pytest.approx(1e-3, rel=0.3)


@pytest.mark.parametrize("strategy", ["finetune", "linear-probe"])
def test_lr_find_on_a_tiny_model(tmp_path, strategy, monkeypatch):
    import zoo.engine.lr_range as tool

    grads_left = []
    real = tool.range_test

    def watched(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        grads_left.append(sum(p.grad is not None for p in model.parameters()))
        return out

    monkeypatch.setattr(tool, "range_test", watched)
    catalog = make_catalog()
    r = lr_find("testing:tiny_cnn", flags={**FLAGS, "out": str(tmp_path), "head": {"name": "linear"},
                                          "strategy": {"name": strategy},
                                          "data": {"name": "tiny", "num_workers": 0}},
                steps=30, start_lr=1e-5, end_lr=10.0, catalog=catalog)
    assert math.isfinite(r["suggested_lr"]) and 1e-5 <= r["suggested_lr"] <= 10.0
    assert 3 <= r["steps"] <= 30 and len(r["lrs"]) == len(r["smoothed_loss"]) == r["steps"]
    assert r["lrs"] == sorted(r["lrs"])
    assert r["cached_features"] is (strategy == "linear-probe")
    assert (Path(r["dir"]) / "lr_find.png").stat().st_size > 1000
    assert json.loads((Path(r["dir"]) / "lr_find.json").read_text())["suggested_lr"] == \
        r["suggested_lr"]
    assert grads_left == [0]  # the last step's gradients are freed, not left on the model


def test_lr_find_cli_bad_range_is_one_line(capsys):
    code, _, err = cli(capsys, "lr-find", "testing:tiny_cnn", "--start-lr", "1",
                       "--end-lr", "0.1")
    assert "--start-lr" in assert_one_line_error(err, code)


@pytest.mark.parametrize("target, params, needles", [
    ("shift:digits", [], ["--target shift:digits:", "(e.g. --target-param transform=invert)"]),
    ("no-such-folder", [], ["--target no-such-folder:", "--target PATH"]),
])
def test_shift_data_errors_name_the_domain_and_this_commands_flags(capsys, tmp_path, target,
                                                                  params, needles):
    code, _, err = cli(capsys, "shift", "-m", "timm:test_resnet", "--weights", "none",
                       "--source", "digits", "--target", target, *params, "--out", tmp_path)
    line = assert_one_line_error(err, code)
    assert all(n in line for n in needles), line
    assert "--set data.params" not in line and "--data PATH" not in line
