"""The folder listing kept under $ZOO_HOME, lazy verification, and links out of the root.

Folders are a few 12×10 PNGs; directory times are set an hour back so the listing is not
"racily clean" (a folder modified in the last second is walked again, never stored).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
import torch
from PIL import Image

import zoo_datasets
from zoo.errors import DataError
from zoo.jobspec import DataSpec
from zoo_datasets import folder, folder_store, folder_walk, memo

pytestmark = pytest.mark.usefixtures("fresh_dataset_memo")


def make(root, counts, ext="png"):
    for c, (name, n) in enumerate(counts.items()):
        os.makedirs(root / name, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (12, 10), (40 * c, 7 * i, 90)).save(root / name / f"{i:03d}.{ext}")
    age(root)
    return root


def age(root, seconds=3600):
    """Every directory under ``root`` modified ``seconds`` ago."""
    past = time.time() - seconds
    for here, dirs, _ in os.walk(root):
        os.utime(here, (past, past))


def index(path, **spec):
    memo.clear()  # the in-process memo would hide the on-disk listing
    return folder.scan(str(path), spec.get("cache_images"), spec.get("strict", False))


def test_listing_is_stored_reused_and_redone_when_a_folder_changes(tmp_path):
    root = make(tmp_path / "data", {"a": 3, "b": 3})
    first = index(root)
    assert first.listing == "walked" and folder_store.listing_path(str(root)).is_file()
    second = index(root)
    assert second.listing == "reused" and second.files == first.files
    Image.new("RGB", (12, 10)).save(root / "b" / "new.png")  # b's mtime moves
    third = index(root)
    assert third.listing == "walked (not stored: the folder changed in the last second)"
    assert "b/new.png" in third.files and len(third.files) == 7
    age(root)
    assert index(root).listing == "walked" and index(root).listing == "reused"
    os.makedirs(root / "a" / "deep")  # a new nested folder changes a's mtime
    age(root)
    assert index(root).listing == "walked"
    Image.new("RGB", (12, 10)).save(root / "a" / "deep" / "x.png")  # only a/deep's moves
    age(root, 7200)
    assert "a/deep/x.png" in index(root).files


def test_a_damaged_or_planted_listing_is_never_used(tmp_path):
    root = make(tmp_path / "data", {"a": 2, "b": 2})
    good = index(root).files
    stored = folder_store.listing_path(str(root))
    original = stored.read_bytes()
    head, body = original.split(b"\n", 1)

    def plant(payload: dict) -> None:
        raw = json.dumps(payload).encode()
        stored.write_bytes(json.dumps({"format": folder_store.FORMAT, "sha256":
                                       hashlib.sha256(raw).hexdigest()}).encode() + b"\n" + raw)

    payload = json.loads(body)
    damaged = [
        lambda: stored.write_bytes(original[:-10]),                      # truncated
        lambda: stored.write_bytes(head + b"\n" + body.replace(b"000", b"001")),  # bad sum
        lambda: plant({**payload, "groups": [{"origin": None, "class": "a", "files": [
            ["../../etc", ["passwd"]]]}] + payload["groups"]}),          # leaves the root
        lambda: plant({**payload, "groups": [{"origin": None, "class": "a", "files": [
            ["a", ["../x.png"]]]}]}),                                    # name with a path
        lambda: plant({**payload, "root": "/elsewhere"}),                # another folder's
        lambda: plant({**payload, "dirs": "nope"}),                      # wrong type
    ]
    for damage in damaged:
        damage()
        again = index(root)
        assert again.listing == "walked" and again.files == good
        assert stored.read_bytes() != b"" and folder_store.read(str(root)) is not None
    # not a regular file: a link to a planted listing, or a folder in its place
    planted = tmp_path / "planted.idx"
    planted.write_bytes(stored.read_bytes())
    stored.unlink()
    stored.symlink_to(planted)
    assert folder_store.read(str(root)) is None
    stored.unlink()
    stored.mkdir()
    assert index(root).listing.startswith("walked (not stored")  # cannot replace a folder
    assert index(root).files == good


def test_links_leaving_the_root_are_skipped_and_counted(tmp_path):
    root = make(tmp_path / "data", {"a": 3, "b": 3})
    outside = make(tmp_path / "outside", {"c": 2})
    os.symlink(outside / "c", root / "a" / "linked_dir")
    os.symlink(outside / "c" / "000.png", root / "b" / "linked.png")
    os.symlink(outside / "c", root / "c")          # a whole class outside the root
    os.symlink(root / "b" / "000.png", root / "a" / "inside.png")  # inside: kept
    age(root)
    found = index(root)
    assert found.classes == ["a", "b"]
    assert "a/inside.png" in found.files
    assert not any("linked" in f for f in found.files)
    text = " | ".join(found.warnings)
    assert "skipped 3 symlink(s) leading outside" in text, text


def test_npy_and_tif_are_listed_and_other_extensions_are_not(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "PROBE_MAX_FILES", 0)  # a "big" folder: lazy verification
    root = make(tmp_path / "data", {"a": 2, "b": 2})
    for name in ("x.npy", "y.tif", "z.TIFF", "notes.txt", "w.jpeg"):
        (root / "a" / name).write_bytes(b"0")
    age(root)
    found = index(root)
    assert {"a/x.npy", "a/y.tif", "a/z.TIFF", "a/w.jpeg"} <= set(found.files)
    assert "a/notes.txt" not in found.files and not found.verified
    assert any("1 not an image" in w and "a/notes.txt" in w for w in found.warnings)


def test_lazy_verification_replaces_counts_and_shares_across_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "PROBE_MAX_FILES", 0)
    root = make(tmp_path / "data", {"a": 4, "b": 4})
    (root / "a" / "001.png").write_bytes(b"\x89PNG broken")
    (root / "b" / "002.png").write_bytes(b"")
    age(root)
    spec = DataSpec(path=str(root), val_split=0, test_split=0)
    train = zoo_datasets.folder_dataset(spec, "train", None, 0)
    assert len(train) == 8 and not train.in_memory  # listed: not read yet
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2)
    labels = torch.cat([y for _, y in loader]).tolist()
    assert labels == train.targets  # each stand-in is of the same class
    assert sorted(train.unreadable_files()) == ["a/001.png", "b/002.png"]
    strict = zoo_datasets.folder_dataset(DataSpec(path=str(root), val_split=0, test_split=0,
                                                  strict_scan=True), "train", None, 0)
    assert len(strict) == 6  # the strict scan read every file and skipped the two
    assert any(w.startswith("skipped 2 unreadable") for w in strict.warnings)


def test_a_split_with_nothing_decodable_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "PROBE_MAX_FILES", 0)
    root = tmp_path / "data"
    for c in ("a", "b"):
        os.makedirs(root / c)
        (root / c / "1.png").write_bytes(b"junk")
    age(root)
    ds = zoo_datasets.folder_dataset(DataSpec(path=str(root), val_split=0, test_split=0),
                                     "train", None, 0)
    with pytest.raises(DataError, match="no image of the train split .* can be decoded"):
        ds[0]


def test_one_process_walks_while_the_others_wait_and_read(tmp_path):
    root = make(tmp_path / "data", {"a": 2, "b": 2})
    walks = []

    def slow_walk(path):
        walks.append(1)
        time.sleep(0.3)
        return folder_walk.walk_listing(path)

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        folder_store.cached_listing(str(root), slow_walk)[1])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(walks) == 1 and sorted(results) == ["reused"] * 3 + ["walked"]


def test_a_run_names_undecodable_files_in_its_summary_and_plan_reuses_the_listing(
        tmp_path, monkeypatch):
    from zoo.api import load_job, plan, run

    monkeypatch.setattr(folder, "PROBE_MAX_FILES", 0)
    root = make(tmp_path / "data", {"a": 12, "b": 12})
    (root / "a" / "003.png").write_bytes(b"garbage")
    age(root)
    flags = {"model": "timm:test_resnet", "weights": "none", "out": str(tmp_path / "runs"),
             "data": {"path": str(root), "image_size": 32, "num_workers": 0,
                      "val_split": 0.2, "test_split": 0.2},
             "train": {"epochs": 1, "batch_size": 8}}
    memo.clear()
    plan(load_job(flags=flags))
    assert folder_store.read(str(root)) is not None  # --plan stored the listing
    monkeypatch.setattr(folder, "walk_listing", lambda path: pytest.fail("walked again"))
    memo.clear()
    plan(load_job(flags=flags))  # reuses it
    summary = run(load_job(flags=flags), quiet=True)
    assert summary["status"] == "completed"
    assert summary["unreadable"] == {"count": 1, "files": ["a/003.png"]}
    assert any("failed to decode during the run" in w for w in summary["warnings"])


def test_the_automatic_cache_is_for_small_images_within_available_memory(tmp_path):
    from zoo_datasets import cache_policy as cp

    small, big = [(32, 32)] * 100, [(320, 240)] * 100
    assert cp.should_cache(small, available=1 << 30)
    assert not cp.should_cache(big, available=1 << 30)  # measured: no time saved
    assert not cp.should_cache(small, available=4 * 3 * 32 * 32 * 100 - 1)  # > 1/4 of free
    assert not cp.should_cache([(32, 32)] * cp.MAX_IMAGES, available=1 << 40)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1000000\n")
    (v2 / "memory.current").write_text("400000\n")
    assert cp.cgroup_memory_left(v2) == 600000
    (v2 / "memory.max").write_text("max\n")
    assert cp.cgroup_memory_left(v2) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(1 << 62))  # v1's "no limit"
    (v1 / "memory.usage_in_bytes").write_text("5")
    assert cp.cgroup_memory_left(tmp_path / "v1") is None
    (v1 / "memory.limit_in_bytes").write_text("2000")
    assert cp.cgroup_memory_left(tmp_path / "v1") == 1995
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:  64 kB\n")
    assert cp.meminfo_available(tmp_path / "meminfo") == 64 * 1024
