"""Streaming: ``zoo data shard`` writes WebDataset shards, the ``webdataset`` dataset streams
them (shuffle buffer, sharding over ranks and workers), and an interrupted streamed run
resumes to exactly the uninterrupted run's history."""
from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

import zoo_datasets
from zoo.errors import DataError
from zoo.jobspec import DataSpec
from zoo_cli_helpers import assert_one_line_error, cli, zoo

pytestmark = pytest.mark.usefixtures("fresh_dataset_memo")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "demo"
    proc = zoo("data", "shard", "demo", out, "--param", "per_class=12", "--shard-size", "16",
               "--seed", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def stream(path, split="train", seed=3, **params):
    return zoo_datasets.webdataset_dataset(DataSpec(name="webdataset", path=str(path),
                                                    params=params), split, None, seed)


def ids_of(ds, workers=0, epoch=0):
    """Labels and image checksums in stream order, through a DataLoader."""
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [(int(y), int(x.long().sum())) for x, y in loader]


def test_shards_hold_zoo_splits_with_labels_and_ids(shards):
    out, manifest = shards
    demo = {s: zoo_datasets.demo_dataset(DataSpec(params={"per_class": 12}), s, None, 3)
            for s in ("train", "val", "test")}
    for split, ds in demo.items():
        assert manifest["splits"][split]["count"] == len(ds)
    assert [s["count"] for s in manifest["splits"]["train"]["shards"]] == [16] * 4 + [
        len(demo["train"]) - 64]
    assert manifest["classes"] == demo["train"].classes
    val = stream(out, "val")
    got = sorted(ids_of(val))
    want = sorted((int(y), int(x.long().sum())) for x, y in demo["val"])
    assert got == want  # every pixel and label round-trips (PNG is lossless)


def test_order_depends_on_seed_and_epoch_only_and_each_sample_once(shards):
    out, manifest = shards
    train = stream(out, shuffle_buffer=8)
    first = ids_of(train, epoch=0)
    assert len(first) == manifest["splits"]["train"]["count"]
    assert ids_of(stream(out, shuffle_buffer=8), epoch=0) == first  # reproducible
    second = ids_of(train, epoch=1)
    assert second != first and sorted(second) == sorted(first)  # reshuffled, same samples
    two_workers = ids_of(stream(out, shuffle_buffer=8), workers=2, epoch=0)
    assert sorted(two_workers) == sorted(first)  # split between workers: each once
    assert ids_of(stream(out, "test")) == ids_of(stream(out, "test"))


def test_ranks_get_disjoint_equal_shares(shards, monkeypatch):
    from zoo.engine import distributed

    out, manifest = shards
    n = manifest["splits"]["train"]["count"]
    everything = set(ids_of(stream(out)))
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        ds = stream(out)
        assert len(ds) == n // 2
        seen.append(ids_of(ds))
    assert len(seen[0]) == len(seen[1]) == n // 2  # the same number of steps per rank
    assert seen[0] != seen[1]
    # under torchrun the stream is split by sample: together the ranks see every sample
    assert set(seen[0]) | set(seen[1]) == everything


def test_bad_shard_folders_are_one_line_errors(tmp_path, capsys, shards):
    with pytest.raises(DataError, match="no zoo-shards.json .*zoo data shard"):
        stream(tmp_path)
    (tmp_path / "zoo-shards.json").write_text(json.dumps({
        "format": "zoo-shards", "classes": ["a"], "splits": {"train": {
            "count": 1, "shards": [{"file": "../../etc/passwd", "count": 1}]}}}))
    with pytest.raises(DataError, match="not a valid shard manifest"):
        stream(tmp_path)
    code, _, err = cli(capsys, "data", "shard", "demo", shards[0])
    assert "already holds shards" in assert_one_line_error(err, code)
    code, _, err = cli(capsys, "data", "shard", "no_such_dataset", tmp_path / "o")
    assert code == 2


def test_a_folder_keeps_its_jpeg_bytes(tmp_path):
    root = tmp_path / "photos"
    for c in ("a", "b"):
        os.makedirs(root / c)
        for i in range(6):
            Image.new("RGB", (16, 12), (40 * i, 90, 20)).save(root / c / f"{i}.jpg")
    from zoo.tools.shard import write_shards

    manifest = write_shards(str(root), tmp_path / "out", shard_size=100, val_split=0.2,
                            test_split=0.2)
    import webdataset as wds

    sample = next(iter(wds.WebDataset([str(tmp_path / "out" / "train-000000.tar")],
                                      shardshuffle=False, empty_check=False)))
    source = sample["id"].decode()
    assert sample["jpg"] == (root / source).read_bytes()
    assert manifest["classes"] == ["a", "b"]


def test_streamed_run_resumes_to_the_uninterrupted_history(shards, tmp_path):
    out_dir, _ = shards
    args = ["timm:test_resnet", "--data", out_dir, "--set", "data.name=webdataset",
            "--set", "data.params.shuffle_buffer=16", "--set", "data.num_workers=2",
            "--set", "data.augment=light", "--weights", "none", "--epochs", "3",
            "--batch-size", "8", "--seed", "3", "-q", "--out", tmp_path]
    full = zoo("run", *args, "--name", "full")
    assert full.returncode == 0, full.stderr
    part = zoo("run", *args, "--name", "part", env={"ZOO_FAULT": "interrupt_after_epoch:1"})
    assert part.returncode == 130, part.stderr
    resumed = zoo("run", "--resume", tmp_path / "part", "--json")
    assert resumed.returncode == 0, resumed.stderr

    def history(name):
        return [json.loads(line) for line in
                (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    a, b = history("full"), history("part")
    assert [r["train"]["loss"] for r in a] == [r["train"]["loss"] for r in b]
    assert [r["val"] for r in a] == [r["val"] for r in b] and len(a) == 3
    assert json.loads(resumed.stdout)["test"] == json.loads(
        (tmp_path / "full" / "summary.json").read_text())["test"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A local parquet dataset (train/validation/test) that ``datasets`` streams offline."""
    import datasets

    root = tmp_path_factory.mktemp("hf") / "ds"
    root.mkdir()
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["dark", "light"])})
    for split, n in (("train", 24), ("validation", 6), ("test", 8)):
        images = [Image.new("RGB", (16, 16), (10 * i, 200 * (i % 2), 30)) for i in range(n)]
        ds = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)]},
                                        features=features)
        ds.to_parquet(str(root / f"{split}-00000-of-00001.parquet"))
    return root


def test_hf_streaming_order_workers_and_resume(hf_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    spec = DataSpec(name="hf-stream", path=str(hf_folder), params={"shuffle_buffer": 8})
    train = zoo_datasets.hf_stream_dataset(spec, "train", None, 3)
    assert len(train) == 24 and train.classes == ["dark", "light"]
    first = ids_of(train, epoch=0)
    assert len(first) == 24 and ids_of(train, epoch=0) == first
    assert ids_of(train, epoch=1) != first and sorted(ids_of(train, epoch=1)) == sorted(first)
    assert len(zoo_datasets.hf_stream_dataset(spec, "val", None, 3)) == 6
    args = ["timm:test_resnet", "--data", hf_folder, "--set", "data.name=hf-stream",
            "--set", "data.params.shuffle_buffer=8", "--set", "data.num_workers=0",
            "--weights", "none", "--epochs", "2", "--batch-size", "8", "--seed", "3", "-q",
            "--out", tmp_path]
    env = {"HF_HOME": str(tmp_path / "hf-home")}
    full = zoo("run", *args, "--name", "full", env=env)
    assert full.returncode == 0, full.stderr
    part = zoo("run", *args, "--name", "part",
               env=dict(env, ZOO_FAULT="interrupt_after_epoch:1"))
    assert part.returncode == 130, part.stderr
    assert zoo("run", "--resume", tmp_path / "part", "-q", env=env).returncode == 0

    def losses(name):
        return [json.loads(line)["train"]["loss"] for line in
                (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert losses("full") == losses("part") and len(losses("full")) == 2
