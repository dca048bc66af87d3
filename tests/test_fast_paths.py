"""Opt-in fast paths: bf16 autocast, channels_last, torch.compile's eager fallback, and
eval running under inference_mode."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.api import load_job, run

TINY = ["train.epochs=1", "data.params.per_class=12", "metrics=[accuracy]"]


def tiny(tmp_path, *extra):
    return load_job("timm:test_resnet", weights="none", out=str(tmp_path), sets=TINY + list(extra))


@pytest.mark.parametrize("extra", [["train.precision=bf16"], ["train.channels_last=true"]])
def test_fast_path_runs_and_gives_finite_metrics(tmp_path, extra):
    s = run(tiny(tmp_path, *extra))
    assert s["status"] == "completed"
    assert math.isfinite(s["test"]["loss"]) and 0 <= s["test"]["accuracy"] <= 1


def test_fp16_on_cpu_is_refused_or_works(tmp_path):
    # fp16 autocast is a CUDA feature; on CPU zoo must not crash with a traceback
    from zoo.errors import ZooError

    try:
        s = run(tiny(tmp_path, "train.precision=fp16"))
        assert math.isfinite(s["test"]["loss"])
    except ZooError as exc:
        assert "fp16" in str(exc)


def test_compile_failure_falls_back_with_warning(tmp_path, monkeypatch):
    def broken_compile(self, *args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch.nn.Module, "compile", broken_compile)
    s = run(tiny(tmp_path, "train.compile=true"))
    assert s["status"] == "completed"
    assert any("torch.compile failed" in w for w in s["warnings"])


def test_evaluate_runs_in_inference_mode():
    from zoo.engine.loop import evaluate

    seen = []

    def forward(x):
        seen.append(torch.is_inference_mode_enabled())
        return torch.zeros(len(x), 3)

    loader = [(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))]
    evaluate(forward, loader, {}, torch.device("cpu"))
    assert seen == [True]
