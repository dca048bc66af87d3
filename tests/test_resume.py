"""``zoo run --resume``: an interrupted run continues from its last complete epoch and ends
exactly where an uninterrupted run with the same seed ends (metrics and per-epoch losses).

The interruption is the documented test-only switch ``ZOO_FAULT=interrupt_after_epoch:N``
(a KeyboardInterrupt after epoch N's checkpoint is written).  ``augment: light`` makes the
check meaningful: random crops and flips must replay identically after the resume.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.errors import RunInterrupted
from zoo_cli_helpers import zoo

ARGS = ["timm:test_resnet", "--weights", "none", "--epochs", "3", "--batch-size", "16",
        "--set", "data.params.per_class=20", "--set", "data.augment=light", "--seed", "3", "-q"]


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same_history(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    assert [r["phase"] for r in a] == [r["phase"] for r in b]
    assert [r["train"]["loss"] for r in a] == [r["train"]["loss"] for r in b]
    assert [r["val"] for r in a] == [r["val"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "runs"
    full = zoo("run", *ARGS, "-s", "finetune", "--out", out, "--name", "full")
    assert full.returncode == 0, full.stderr

    part = zoo("run", *ARGS, "-s", "finetune", "--out", out, "--name", "part",
               env={"ZOO_FAULT": "interrupt_after_epoch:1"})
    assert part.returncode == 130, part.stderr
    err = [line for line in part.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "zoo run --resume" in err[0]
    run_dir = out / "part"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert len(_history(run_dir)) == 1 and not (run_dir / "model.safetensors").exists()
    # the checkpoint: ONE safetensors file, the JSON state in its metadata, no pickle
    ckpt = run_dir / "checkpoint"
    # (and best.safetensors: the best epoch's generation, here epoch 1's, hard-linked so
    # that its weights need no copy in memory; zoo.engine.best_weights)
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "last.safetensors"]
    assert (ckpt / "best.safetensors").samefile(ckpt / "last.safetensors")
    from zoo.weights import read_safetensors

    tensors, meta = read_safetensors(ckpt / "last.safetensors")
    info = json.loads(meta["zoo_checkpoint"])
    assert info["epoch"] == 1 and info["optimizer"]["param_groups"]
    assert any(k.startswith("opt.") for k in tensors)
    assert not [p for p in run_dir.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin")]

    resumed = zoo("run", "--resume", run_dir, "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    expected = json.loads((out / "full" / "summary.json").read_text())
    assert result["status"] == "completed" and result["run_dir"] == str(run_dir)
    assert result["test"] == expected["test"]
    assert result["best_epoch"] == expected["best_epoch"]
    _same_history(_history(run_dir), _history(out / "full"))


def test_resume_across_a_phase_boundary(tmp_path):
    """lp-ft: probe (2 epochs) then fine-tune; interrupted right at the phase change."""
    from zoo.api import load_job, run

    def job(name):
        return load_job(flags={
            "model": "timm:test_resnet", "weights": "none", "seed": 1, "out": str(tmp_path),
            "name": name, "strategy": {"name": "lp-ft", "params": {"probe_epochs": 2}},
            "train": {"epochs": 4, "batch_size": 16},
            "data": {"name": "demo", "augment": "light", "params": {"per_class": 20}}})

    full = run(job("full"), quiet=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_FAULT", "interrupt_after_epoch:2")
        with pytest.raises(RunInterrupted):
            run(job("part"), quiet=True)
    from zoo.engine.checkpoint import read_info

    assert read_info(tmp_path / "part")["epoch"] == 2
    resumed = run(job("part"), quiet=True, resume=str(tmp_path / "part"))
    assert resumed["test"] == full["test"]
    hist = _history(tmp_path / "part")
    assert [r["phase"] for r in hist] == ["probe", "probe", "finetune", "finetune"]
    _same_history(hist, _history(tmp_path / "full"))
