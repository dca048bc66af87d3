"""Reliability round 3, class C (issue 24): every value that sizes memory or work is bounded
where it is read, and the memory an adapter needs is estimated before it is allocated."""
from __future__ import annotations

import time

import pytest

from zoo.engine.budget import bounded_int, check_memory
from zoo.errors import ConfigError
from zoo.kit.testing import make_catalog, tiny_transfer_model
from zoo_cli_helpers import assert_one_line_error, cli


def _lora_plan(r, strategy="lora"):
    from zoo.kit.testing import tiny_job

    cat = make_catalog()
    model, groups = tiny_transfer_model()
    job = tiny_job(strategy={"name": strategy, "params": {"r": r}})
    return cat.get("strategies", strategy).obj.plan(model, groups, job)


@pytest.mark.parametrize("strategy", ["lora", "dora"])
@pytest.mark.parametrize("r", [100_000_000, 10**12, 17])
def test_a_lora_rank_beyond_the_modules_is_refused_at_plan_time(strategy, r):
    """tiny_cnn's widest module has min(fan_in, fan_out) = 16: r=17 adds nothing."""
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        _lora_plan(r, strategy)
    msg = str(info.value)
    assert f"strategy '{strategy}': parameter 'r' must be from 1 to 16" in msg
    assert time.perf_counter() - start < 5  # refused before anything is allocated


def test_a_lora_rank_within_the_modules_plans():
    plan = _lora_plan(16)
    assert plan.model_changes[0].r == 16


def test_adapter_memory_is_estimated_against_what_is_available(monkeypatch):
    from zoo.engine import budget

    monkeypatch.setattr(budget, "available_memory", lambda: 10_000)  # 10 KB "free"
    with pytest.raises(ConfigError, match=r"r=8 adapters on .* would need about .* lower "
                                          r"strategy.params.r"):
        _lora_plan(8)


def test_check_memory_and_bounded_int():
    check_memory(100, "x", "fix", available=1000)
    with pytest.raises(ConfigError, match="would need about 1.0 KB.*fix it"):
        check_memory(1024, "a sweep", "fix it", available=1000)
    for bad in (0, -1, 10**9, True, 2.5, "3"):
        with pytest.raises(ConfigError, match="--n must be"):
            bounded_int(bad, "--n", 1, 1000)
    assert bounded_int(7, "--n", 1, 1000) == 7


def test_lora_rank_from_the_cli_with_plan_is_one_line(capsys):
    code, _, err = cli(capsys, "run", "timm:test_resnet", "--strategy", "lora", "--weights",
                       "none", "--set", "strategy.params.r=100000000", "--plan")
    assert "parameter 'r' must be from 1 to" in assert_one_line_error(err, code)


@pytest.mark.parametrize("seeds", ["1000000000", "1001", "0"])
def test_compare_seeds_are_bounded(capsys, tmp_path, seeds):
    start = time.perf_counter()
    code, _, err = cli(capsys, "compare", "timm:test_resnet", "--strategies",
                       "linear-probe,finetune", "--seeds", seeds, "--weights", "none",
                       "--out", tmp_path)
    assert "--seeds must be from 1 to 1000" in assert_one_line_error(err, code)
    assert time.perf_counter() - start < 60
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("k", ["0", "-3", "100000"])
def test_rank_knn_k_is_bounded(capsys, tmp_path, k):
    code, _, err = cli(capsys, "rank", "-m", "timm:test_resnet", "--metric", "knn", "--knn-k", k,
                       "--weights", "none", "--out", tmp_path)
    assert "--knn-k must be from 1 to 10000" in assert_one_line_error(err, code)
