"""Distributed runs: torchrun + DDP on CPU with gloo, 2 processes, one thread each.

The ``slow`` tests start real torchrun jobs (``python -m torch.distributed.run`` on a free
port from ``bind(0)``) on timm's ``test_resnet`` and 20 demo images per class; the others
check the pieces (sampler sharding, the ``--nproc`` re-launch) in this process.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

TINY = ["timm:test_resnet", "--weights", "none", "--set", "data.params.per_class=20",
        "--set", "data.augment=none"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env(**extra) -> dict:
    env = dict(os.environ, **{"OMP_NUM_THREADS": "1", "ZOO_DIST_TIMEOUT": "30",
                              "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **extra})
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if "ZOO_FAULT" not in extra:
        env.pop("ZOO_FAULT", None)
    return env


def torchrun(args: list, env: dict, nproc: int = 2, timeout: int = 180):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "zoo", "run",
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def epochs(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- in-process pieces -----------------------------------------------------------------------
def test_rank_batches_together_are_the_single_process_batch():
    """Per-rank batch B/W from ShardSampler: the ranks' k-th batches form the k-th batch a
    single process draws with batch B (same generator seeding), every epoch."""
    import torch
    from torch.utils.data import DataLoader

    from zoo.engine.distributed import ShardSampler
    from zoo.engine.loop import _seed_epoch

    data = list(range(112))
    gen = torch.Generator().manual_seed(3)
    single = DataLoader(data, batch_size=16, shuffle=True, generator=gen)
    ranks = []
    for r in range(2):
        g = torch.Generator().manual_seed(3)
        ranks.append(DataLoader(data, batch_size=8, generator=g,
                                sampler=ShardSampler(data, True, g, num_replicas=2, rank=r)))
    for epoch in (1, 2):
        for loader in (single, *ranks):
            _seed_epoch(loader, 0, epoch)
        want = [sorted(b.tolist()) for b in single]
        got = [sorted(a.tolist() + b.tolist()) for a, b in zip(*ranks)]
        assert got == want
    assert len(ranks[0]) == len(single)


def test_evaluation_shards_count_every_sample_once():
    from zoo.engine.distributed import ShardSampler

    data = list(range(33))  # odd: ranks get 17 and 16, no padding
    shards = [list(ShardSampler(data, False, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(s) for s in shards] == [17, 16]
    assert sorted(shards[0] + shards[1]) == data
    padded = [list(ShardSampler(data, True, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(s) for s in padded] == [17, 17]  # training pads: equal steps on every rank


def test_nproc_relaunches_the_same_command_under_torchrun():
    from zoo.cli.run_cmd import _relaunch_args, run_cmd
    from zoo.engine.distributed import torchrun_command

    ctx = run_cmd.make_context("run", ["timm:test_resnet", "-s", "finetune", "--nproc", "2",
                                       "--epochs", "2", "--set", "a.b=1", "--set", "c=2",
                                       "-q", "--seed", "0"])
    args = _relaunch_args(ctx)
    assert args[:2] == ["run", "timm:test_resnet"]
    assert "--nproc" not in args and "--quiet" in args
    joined = " ".join(args)
    for part in ("--strategy finetune", "--epochs 2", "--set a.b=1", "--set c=2", "--seed 0"):
        assert part in joined
    cmd = torchrun_command(2, args)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=2" in cmd and cmd[cmd.index("-m", 2):][:2] == ["-m", "zoo"]


# -- real torchrun jobs ----------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_linear_probe_matches_one_process(tmp_path):
    """A 2-process linear probe gives the metrics of a 1-process run with the same global batch.

    Global batch 16 both ways: ``--batch-size 8`` per rank × 2 ranks against
    ``--batch-size 16`` in one process (per-rank batch = global batch / world size).  The
    ranks' sampler draws the single process's permutation and splits it ``perm[r::2]``, so
    step k sees the same 16 images; 112 training images divide evenly, so the sampler adds
    no padding (with an odd count it would repeat one image in the last batch).  The linear
    probe keeps every BatchNorm in eval mode (no per-rank statistics) and trains on cached
    features: each rank extracts its shard, the shards are gathered back in dataset order.
    DDP averages two half-batch mean gradients, which equals the full-batch mean up to
    float summation order.

    Tolerance: losses (test, per-epoch train and val) within 1e-4, head weights within 1e-5,
    accuracy/top5/f1 within one of the 32 test images (a near-tie could flip).
    """
    from safetensors.torch import load_file

    from zoo.api import load_job, run

    common = ["-s", "linear-probe", "--epochs", "2", "--lr", "0.05", "--seed", "3"]
    proc = torchrun([*TINY, *common, "--batch-size", "8", "--out", tmp_path / "ddp",
                     "--json"], dist_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads(proc.stdout)  # only rank 0 printed: stdout is one JSON document
    run_dirs = list((tmp_path / "ddp").iterdir())
    assert len(run_dirs) == 1 and str(run_dirs[0]) == two["run_dir"]
    d2 = run_dirs[0]
    for name in ("job.yaml", "splits.json", "metrics.jsonl", "model.safetensors",
                 "summary.json", "checkpoint"):
        assert (d2 / name).exists(), name
    assert two["status"] == "completed" and two["world_size"] == 2
    assert json.loads((d2 / "summary.json").read_text())["test"] == two["test"]
    assert all(e["cached_features"] for e in epochs(d2))

    job = load_job("timm:test_resnet", flags={
        "weights": "none", "strategy": {"name": "linear-probe"}, "seed": 3,
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        "data": {"name": "demo", "augment": "none", "params": {"per_class": 20}},
        "out": str(tmp_path / "one"), "name": "one"})
    one = run(job, quiet=True)
    d1 = tmp_path / "one" / "one"
    assert one["world_size"] == 1

    assert two["test"]["loss"] == pytest.approx(one["test"]["loss"], abs=1e-4)
    for key in ("accuracy", "top5", "f1"):
        assert abs(two["test"][key] - one["test"][key]) <= 1 / 32 + 1e-9, key
    for e1, e2 in zip(epochs(d1), epochs(d2), strict=True):
        assert e2["train"]["loss"] == pytest.approx(e1["train"]["loss"], abs=1e-4)
        assert e2["val"]["loss"] == pytest.approx(e1["val"]["loss"], abs=1e-4)
    w1, w2 = load_file(d1 / "model.safetensors"), load_file(d2 / "model.safetensors")
    for key in (k for k in w1 if k.startswith("head.")):
        assert (w1[key] - w2[key]).abs().max().item() < 1e-5, key


@pytest.mark.slow
def test_crash_of_one_rank_ends_the_job_with_a_clear_message(tmp_path):
    """``ZOO_FAULT=crash_rank:1`` kills rank 1 (SIGKILL, like the OOM killer) after its first
    step; rank 0, waiting in DDP's all-reduce, fails instead of hanging, and torchrun ends
    the job naming rank 1 as the root cause."""
    started = time.monotonic()
    proc = torchrun([*TINY, "-s", "finetune", "--epochs", "2", "--batch-size", "8",
                     "--out", tmp_path, "--name", "crash", "-q"],
                    dist_env(ZOO_FAULT="crash_rank:1", ZOO_DIST_TIMEOUT="20"), timeout=240)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 150, f"took {elapsed:.0f}s: a hang ended by a timeout?"
    assert re.search(r"Root Cause[\s\S]*rank\s*:\s*1\b", proc.stderr), proc.stderr[-3000:]
    assert "SIGKILL" in proc.stderr
    summary = json.loads((tmp_path / "crash" / "summary.json").read_text())
    assert summary["status"] in ("failed", "interrupted")
    if summary["status"] == "failed":  # rank 0 saw the broken connection before SIGTERM
        assert "lost contact with the other ranks" in summary["error"]


@pytest.mark.slow
def test_interrupted_distributed_run_resumes_on_every_rank(tmp_path):
    """gradual-unfreeze (2-epoch head phase on cached features, then +1 group) interrupted
    after epoch 1 of 2 ranks — rank 0 wrote the checkpoint — then ``zoo run --resume DIR
    --nproc 2``: both ranks load it (optimizer state included: the resume is mid-phase) and
    DDP is rebuilt for the next phase.  A rank that missed the optimizer state would
    drift apart from rank 0, which the per-epoch parameter check turns into an error."""
    out = tmp_path / "runs"
    args = [*TINY, "-s", "gradual-unfreeze", "--set", "strategy.params.epochs_per_stage=2",
            "--epochs", "3", "--batch-size", "8", "--out", out, "--name", "gu", "-q"]
    first = torchrun(args, dist_env(ZOO_FAULT="interrupt_after_epoch:1"))
    assert first.returncode != 0
    run_dir = out / "gu"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoint" / "last.safetensors").is_file()
    assert "resume with `zoo run --resume" in first.stderr

    again = subprocess.run([sys.executable, "-m", "zoo", "run", "--resume", str(run_dir),
                            "--nproc", "2", "-q"], capture_output=True, text=True,
                           timeout=180, env=dist_env())
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stdout.count("run folder:") == 1  # rank 0 only
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    history = epochs(run_dir)
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert [e["phase"] for e in history][:2] == ["head", "head"]
    assert history[2]["phase"].startswith("+") and not history[2]["cached_features"]
    assert list(out.iterdir()) == [run_dir]
