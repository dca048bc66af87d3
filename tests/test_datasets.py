"""The built-in dataset plugin: demo, folder, digits and torchvision:NAME.

Everything runs offline: folders are built in ``tmp_path`` with PIL, and torchvision
datasets are faked on disk in torchvision's own file format.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

import zoo_datasets
from zoo.errors import DataError, MissingDependencyError
from zoo.jobspec import DataSpec
from zoo_datasets import memo
from zoo.engine.splits import few_shot, stratified_split

SPLITS = ("train", "val", "test")


pytestmark = pytest.mark.usefixtures("fresh_dataset_memo")


def load(factory, seed=0, transform=None, **spec):
    data = DataSpec(**spec)
    return {s: factory(spec=data, split=s, transform=transform, seed=seed) for s in SPLITS}


def check_contract(splits, n_classes=None, size=None):
    """The attributes and item format every dataset promises."""
    classes = splits["train"].classes
    assert all(ds.classes == classes for ds in splits.values())
    if n_classes is not None:
        assert len(classes) == n_classes
    seen = set()
    for name, ds in splits.items():
        assert ds.split == name
        assert len(ds) == len(ds.targets) == len(ds.sample_ids)
        assert isinstance(ds.warnings, list)
        assert all(isinstance(t, int) and 0 <= t < len(classes) for t in ds.targets)
        ids = set(ds.sample_ids)
        assert len(ids) == len(ds), "sample ids repeat within a split"
        assert not ids & seen, "splits overlap"
        seen |= ids
        for i in (0, len(ds) - 1) if len(ds) else ():
            image, label = ds[i]
            assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8
            assert image.dim() == 3 and image.shape[0] == 3
            if size is not None:
                assert tuple(image.shape[1:]) == size
            assert label == ds.targets[i]


# -- registration ---------------------------------------------------------------------------
def test_registers_four_datasets_without_heavy_imports():
    code = ("import sys, zoo_datasets\n"
            "names = []\n"
            "zoo_datasets.register_datasets(register=lambda n, f, **kw: names.append((n, kw)))\n"
            "heavy = [m for m in ('torch', 'torchvision', 'PIL', 'sklearn') if m in sys.modules]\n"
            "print(names); assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "'demo'" in out.stdout and "'folder'" in out.stdout and "'digits'" in out.stdout
    assert "('torchvision', {'prefix': True" in out.stdout


def test_unknown_split_is_an_error():
    with pytest.raises(DataError, match="unknown split"):
        zoo_datasets.demo_dataset(DataSpec(), "training", None, 0)


# -- split rules ----------------------------------------------------------------------------
def test_stratified_split_keeps_small_classes_in_train():
    labels = [0] * 1 + [1] * 2 + [2] * 3 + [3] * 20
    parts, warnings = stratified_split(labels, 0.1, 0.2, seed=0, classes=list("abcd"))
    assert sorted(sum(parts.values(), [])) == list(range(len(labels)))
    per = {s: Counter(labels[i] for i in v) for s, v in parts.items()}
    assert per["train"][0] == 1 and per["train"][1] >= 1
    assert per["val"][2] == 1 and per["test"][2] == 1 and per["train"][2] == 1
    assert per["test"][3] == 4 and per["val"][3] == 2
    assert len(warnings) == 1 and "'a' with 1" in warnings[0]


def test_few_shot_subsets_are_nested_and_seeded():
    labels = [i % 4 for i in range(200)]
    five = few_shot(range(200), labels, 5, seed=3)
    ten = few_shot(range(200), labels, 10, seed=3)
    assert set(five) < set(ten)
    assert Counter(labels[i] for i in five) == {c: 5 for c in range(4)}
    assert few_shot(range(200), labels, 5, seed=4) != five
    assert few_shot(range(10), labels, None, seed=0) == list(range(10))


# -- demo -----------------------------------------------------------------------------------
def test_demo_contract_sizes_and_stratification():
    splits = load(zoo_datasets.demo_dataset)
    check_contract(splits, n_classes=8, size=(32, 32))
    assert splits["train"].classes[:3] == ["circle", "ring", "square"]
    assert sum(len(ds) for ds in splits.values()) == 2400
    for name, share in (("val", 0.1), ("test", 0.2)):
        assert Counter(splits[name].targets) == {c: round(300 * share) for c in range(8)}
    assert all(ds.in_memory and not ds.warnings for ds in splits.values())


def test_demo_is_deterministic_and_seed_only_moves_the_split():
    first = load(zoo_datasets.demo_dataset, seed=1)
    memo.clear()  # regenerate: the pixels must come out the same
    again = load(zoo_datasets.demo_dataset, seed=1)
    other = load(zoo_datasets.demo_dataset, seed=2)
    for s in SPLITS:
        assert first[s].sample_ids == again[s].sample_ids
        assert torch.equal(torch.stack([first[s][i][0] for i in range(20)]),
                           torch.stack([again[s][i][0] for i in range(20)]))
    assert first["test"].sample_ids != other["test"].sample_ids
    # the same sample id is the same image under every seed
    some_id = other["train"].sample_ids[5]
    where = {sid: (s, i) for s in SPLITS for i, sid in enumerate(first[s].sample_ids)}[some_id]
    assert torch.equal(first[where[0]][where[1]][0], other["train"][5][0])


def test_demo_generation_is_fast_and_balanced():
    from zoo_datasets.demo import CLASSES, generate

    start = time.perf_counter()
    images, labels = generate(32, CLASSES, 300, 0)
    assert time.perf_counter() - start < 2.0
    assert images.shape == (2400, 3, 32, 32) and images.dtype == torch.uint8
    assert Counter(labels) == {c: 300 for c in range(8)}
    # not a constant picture: colours and noise vary within and across images
    assert images.float().std() > 30


def test_demo_params_and_their_errors():
    splits = load(zoo_datasets.demo_dataset, params={"size": 20, "classes": 3, "per_class": 10})
    check_contract(splits, n_classes=3, size=(20, 20))
    named = load(zoo_datasets.demo_dataset, params={"classes": ["ring", "checkerboard"],
                                                    "per_class": 10})
    assert named["train"].classes == ["ring", "checkerboard"]
    with pytest.raises(DataError, match="did you mean size"):
        load(zoo_datasets.demo_dataset, params={"sizes": 20})
    with pytest.raises(DataError, match="did you mean circle"):
        load(zoo_datasets.demo_dataset, params={"classes": ["circel", "ring"]})
    with pytest.raises(DataError, match="at least 2"):
        load(zoo_datasets.demo_dataset, params={"classes": ["ring"]})


def test_transform_is_applied_to_uint8_chw():
    seen = []

    def transform(image):
        seen.append((image.dtype, tuple(image.shape)))
        return image.float() / 255

    ds = zoo_datasets.demo_dataset(DataSpec(), "val", transform, 0)
    image, label = ds[0]
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert seen == [(torch.uint8, (3, 32, 32))] and isinstance(label, int)


def test_max_per_class_limits_train_only():
    full = load(zoo_datasets.demo_dataset)
    few = load(zoo_datasets.demo_dataset, max_per_class=4)
    assert Counter(few["train"].targets) == {c: 4 for c in range(8)}
    assert set(few["train"].sample_ids) <= set(full["train"].sample_ids)
    assert few["test"].sample_ids == full["test"].sample_ids
    assert few["val"].sample_ids == full["val"].sample_ids


# -- digits ---------------------------------------------------------------------------------
def test_digits():
    splits = load(zoo_datasets.digits_dataset)
    check_contract(splits, n_classes=10, size=(32, 32))
    assert sum(len(ds) for ds in splits.values()) == 1797
    image = splits["train"][0][0]
    assert torch.equal(image[0], image[1]) and image.max() > 150  # gray, full range
    small = zoo_datasets.digits_dataset(DataSpec(params={"size": 16}), "test", None, 0)
    assert small[0][0].shape == (3, 16, 16)


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'zoo\[datasets\]'"):
        zoo_datasets.digits_dataset(DataSpec(), "train", None, 0)


# -- folder ---------------------------------------------------------------------------------
def save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)
    return path


def colour_image(i, size=(12, 10)):
    return Image.new("RGB", size, ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256))


def make_folder(root, counts, ext="png"):
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            save(os.path.join(root, name, f"{i:03d}.{ext}"), colour_image(10 * c + i))
    return str(root)


def test_folder_split_is_stratified_deterministic_and_decodes(tmp_path):
    path = make_folder(tmp_path / "data", {"cat": 20, "dog": 20, "eel": 10})
    splits = load(zoo_datasets.folder_dataset, seed=5, name="folder", path=path)
    check_contract(splits, n_classes=3, size=(10, 12))
    assert splits["train"].classes == ["cat", "dog", "eel"]
    assert Counter(splits["test"].targets) == {0: 4, 1: 4, 2: 2}
    assert Counter(splits["val"].targets) == {0: 2, 1: 2, 2: 1}
    ds = splits["train"]
    sid = ds.sample_ids[0]
    assert sid.startswith("cat/") and sid.endswith(".png")
    expected = np.array(Image.open(os.path.join(path, sid)).convert("RGB"))
    assert torch.equal(ds[0][0], torch.from_numpy(expected).permute(2, 0, 1))
    again = load(zoo_datasets.folder_dataset, seed=5, name="folder", path=path)
    other = load(zoo_datasets.folder_dataset, seed=6, name="folder", path=path)
    assert all(again[s].sample_ids == splits[s].sample_ids for s in SPLITS)
    assert other["test"].sample_ids != splits["test"].sample_ids
    few = load(zoo_datasets.folder_dataset, seed=5, name="folder", path=path, max_per_class=3)
    assert Counter(few["train"].targets) == {0: 3, 1: 3, 2: 3}


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def make_awkward_folder(root):
    """Every kind of file a real folder holds; returns (path, number of good images)."""
    root = str(root)
    cat, dog, uni = (os.path.join(root, n) for n in ("cat", "dog", "chat_é_猫"))
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    good = [
        save(f"{cat}/rgb.png", colour_image(1)),
        save(f"{cat}/photo.jpg", noisy, quality=90),
        save(f"{cat}/cmyk.jpg", Image.new("CMYK", (12, 10), (0, 255, 255, 0))),
        save(f"{cat}/deep/gray16.png",
             Image.fromarray(np.tile(np.linspace(0, 65535, 12, dtype=np.uint16), (10, 1)))),
        save(f"{dog}/rgba.png", Image.new("RGBA", (12, 10), (255, 0, 0, 0))),
        save(f"{dog}/gray.png", Image.new("L", (12, 10), 90)),
        save(f"{dog}/one_bit.png", Image.new("1", (12, 10), 1)),
        save(f"{uni}/1.png", colour_image(3)),
        save(f"{uni}/2.gif", colour_image(4).convert("P")),
    ]
    palette = Image.new("P", (12, 10), 0)
    palette.putpalette([0, 0, 255] * 256)
    good.append(save(f"{dog}/palette.png", palette, transparency=0))
    # the bad ones: each must be skipped and counted
    open(f"{cat}/empty.png", "wb").close()
    with open(f"{cat}/garbage.jpg", "wb") as f:
        f.write(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    with open(f"{cat}/notes.txt", "w") as f:
        f.write("not an image\n")
    whole = open(f"{cat}/photo.jpg", "rb").read()
    with open(f"{dog}/truncated.jpg", "wb") as f:
        f.write(whole[: len(whole) // 2])
    png = bytearray(open(f"{cat}/rgb.png", "rb").read())
    png[-20] ^= 0xFF  # flip a byte near the end: the checksum no longer matches
    with open(f"{dog}/bad_crc.png", "wb") as f:
        f.write(png)
    with open(f"{dog}/bomb.png", "wb") as f:  # 50000×50000 pixels declared in a tiny file
        f.write(b"\x89PNG\r\n\x1a\n"
                + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
                + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                + _png_chunk(b"IEND", b""))
    os.symlink(os.path.join(root, "nowhere.png"), f"{dog}/broken_link.png")
    # ignored silently: hidden files and folders; a symlink loop is walked once
    save(f"{cat}/.hidden/x.png", colour_image(9))
    with open(f"{cat}/.DS_Store", "wb") as f:
        f.write(b"\x00junk")
    os.symlink(cat, f"{cat}/loop")
    return root, len(good)


@pytest.mark.parametrize("cache", [True, False])
def test_folder_skips_and_counts_bad_files_and_converts_modes(tmp_path, cache):
    path, n_good = make_awkward_folder(tmp_path / "data")
    splits = load(zoo_datasets.folder_dataset, name="folder", path=path, cache_images=cache,
                  val_split=0.0, test_split=0.0)
    train = splits["train"]
    assert train.in_memory is cache
    assert train.classes == ["cat", "chat_é_猫", "dog"]
    assert len(train) == n_good  # nothing twice through the loop, no hidden files
    assert not any("loop/" in sid or ".hidden" in sid for sid in train.sample_ids)
    skipped = [w for w in train.warnings if w.startswith("skipped")]
    assert len(skipped) == 1, train.warnings
    message = skipped[0]
    assert message.startswith("skipped 7 unreadable file(s)")
    for part in ("1 empty", "2 not an image", "2 corrupt or truncated", "1 too large",
                 "1 missing"):
        assert part in message, message
    images = {sid: train[i][0] for i, sid in enumerate(train.sample_ids)}
    for sid, image in images.items():
        assert image.dtype == torch.uint8 and image.shape[0] == 3, sid
    gray16 = images["cat/deep/gray16.png"][0, 0]
    assert gray16[0] == 0 and gray16[-1] == 255 and 100 < int(gray16[6]) < 160  # scaled
    assert bool((images["dog/rgba.png"] == 255).all())  # transparent → white
    assert bool((images["dog/palette.png"] == 255).all())  # transparent palette index
    assert images["dog/gray.png"].unique().tolist() == [90]
    red = images["cat/cmyk.jpg"].float().mean(dim=(1, 2))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_folder_errors(tmp_path):
    def build(path, **kw):
        return zoo_datasets.folder_dataset(DataSpec(name="folder", path=path, **kw), "train",
                                           None, 0)

    with pytest.raises(DataError, match=r"does not exist — pass --data PATH"):
        build(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="pass --data PATH"):
        build(None)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        build(str(tmp_path / "file.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found under"):
        build(str(tmp_path / "empty"))
    (tmp_path / "texts" / "a").mkdir(parents=True)
    (tmp_path / "texts" / "a" / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="no images found under"):
        build(str(tmp_path / "texts"))
    one = make_folder(tmp_path / "one", {"only": 5})
    with pytest.raises(DataError, match="at least 2 classes"):
        build(one)


def test_folder_tiny_classes_and_empty_class_folder(tmp_path):
    path = make_folder(tmp_path / "data", {"a": 1, "b": 2, "c": 12})
    (tmp_path / "data" / "empty_class").mkdir()
    splits = load(zoo_datasets.folder_dataset, name="folder", path=path)
    assert splits["train"].classes == ["a", "b", "c"]
    assert {0, 1} <= set(splits["train"].targets)
    text = " | ".join(splits["train"].warnings)
    assert "too few images" in text and "'a' with 1" in text
    assert "without readable images: empty_class" in text


def test_folder_with_split_folders(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", {"x": 10, "y": 10})
    make_folder(root / "val", {"x": 2, "y": 2})
    make_folder(root / "test", {"x": 3, "y": 3})
    splits = load(zoo_datasets.folder_dataset, name="folder", path=str(root))
    check_contract(splits, n_classes=2)
    for s in SPLITS:
        assert all(sid.startswith(f"{s}/") for sid in splits[s].sample_ids)
    assert [len(splits[s]) for s in SPLITS] == [20, 4, 6]

    # train/ and test/ only: val is carved from train, stratified
    only = tmp_path / "two"
    make_folder(only / "train", {"x": 10, "y": 10})
    make_folder(only / "test", {"x": 3, "y": 3})
    splits = load(zoo_datasets.folder_dataset, name="folder", path=str(only), val_split=0.2)
    assert Counter(splits["val"].targets) == {0: 2, 1: 2}
    assert all(sid.startswith("train/") for sid in splits["val"].sample_ids)
    assert len(splits["train"]) == 16 and len(splits["test"]) == 6


def test_folder_class_named_train_is_not_a_split_layout(tmp_path):
    path = make_folder(tmp_path / "vehicles", {"bus": 4, "train": 4, "car": 4})
    ds = zoo_datasets.folder_dataset(DataSpec(path=path), "train", None, 0)
    assert ds.classes == ["bus", "car", "train"]


def test_folder_uncached_file_broken_after_scan_is_replaced_or_named_when_strict(tmp_path):
    path = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    spec = dict(path=path, cache_images=False, val_split=0, test_split=0)
    ds = zoo_datasets.folder_dataset(DataSpec(**spec), "train", None, 0)
    strict = zoo_datasets.folder_dataset(DataSpec(**spec, strict_scan=True), "train", None, 0)
    assert ds[0][0].shape == (3, 10, 12) and ds.unreadable_files() == []
    victim = os.path.join(path, ds.sample_ids[0])
    with open(victim, "wb") as f:
        f.write(b"now garbage")
    # lazy verification: the next readable image of the same class stands in, flagged
    image, label = ds[0]
    assert label == ds.targets[0] and torch.equal(image, ds[1][0])
    assert ds.unreadable_files() == [ds.sample_ids[0]] == ["a/000.png"]
    with pytest.raises(DataError, match="cannot read .*000.png"):
        strict[0]


def test_folder_rescans_when_files_change(tmp_path):
    path = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    spec = DataSpec(path=path, val_split=0, test_split=0)
    assert len(zoo_datasets.folder_dataset(spec, "train", None, 0)) == 8
    save(os.path.join(path, "b", "new.png"), colour_image(50))
    assert len(zoo_datasets.folder_dataset(spec, "train", None, 0)) == 9


# -- torchvision ----------------------------------------------------------------------------
def write_fake_mnist(root, n_train=40, n_test=20):
    """MNIST's raw idx files (uncompressed), as torchvision reads them."""
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    rng = np.random.default_rng(0)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with open(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with open(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
        data[prefix] = images
    return data


def test_torchvision_mnist_from_local_files(tmp_path):
    pixels = write_fake_mnist(tmp_path)
    splits = load(zoo_datasets.torchvision_dataset, name="torchvision:MNIST",
                  root=str(tmp_path), val_split=0.25)
    check_contract(splits, n_classes=10, size=(28, 28))
    assert splits["train"].classes[0] == "0 - zero"
    assert [len(splits[s]) for s in SPLITS] == [30, 10, 20]
    assert Counter(splits["val"].targets) == {c: 1 for c in range(10)}
    assert splits["test"].sample_ids[:2] == ["test:0", "test:1"]
    role, index = splits["train"].sample_ids[0].split(":")
    image = splits["train"][0][0]
    assert role == "train" and splits["train"].in_memory
    assert torch.equal(image[2], torch.from_numpy(pixels["train"][int(index)]))
    few = zoo_datasets.torchvision_dataset(
        DataSpec(name="torchvision:MNIST", root=str(tmp_path), max_per_class=2), "train", None, 0)
    assert Counter(few.targets) == {c: 2 for c in range(10)}


def test_torchvision_image_folder_dataset_through_pil(tmp_path):
    # EuroSAT is an ImageFolder under eurosat/2750 with no official split
    make_folder(tmp_path / "eurosat" / "2750", {"Forest": 10, "River": 10}, ext="jpg")
    splits = load(zoo_datasets.torchvision_dataset, name="torchvision:EuroSAT",
                  root=str(tmp_path))
    check_contract(splits, n_classes=2, size=(10, 12))
    assert splits["train"].classes == ["Forest", "River"] and not splits["train"].in_memory
    assert Counter(splits["test"].targets) == {0: 2, 1: 2}


def test_torchvision_missing_files_name_the_folder(tmp_path, monkeypatch):
    spec = DataSpec(name="torchvision:MNIST", root=str(tmp_path), params={"download": False})
    with pytest.raises(DataError) as err:
        zoo_datasets.torchvision_dataset(spec, "train", None, 0)
    assert "torchvision:MNIST" in str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    assert "\n" not in str(err.value)

    # ZOO_HOME decides the default root; ZOO_OFFLINE turns downloads off
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(DataError, match="ZOO_OFFLINE") as err:
        zoo_datasets.torchvision_dataset(DataSpec(name="torchvision:CIFAR10"), "test", None, 0)
    assert str(tmp_path / "home" / "datasets" / "cifar-10-batches-py") in str(err.value)


def test_torchvision_failed_download_says_network(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    # a closed local port: the download fails at once, as it does without network
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    spec = DataSpec(name="torchvision:MNIST", root=str(tmp_path))
    with pytest.raises(DataError, match="download failed .*needs network") as err:
        zoo_datasets.torchvision_dataset(spec, "train", None, 0)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)


def test_torchvision_unknown_name_suggests():
    with pytest.raises(DataError, match="did you mean CIFAR10"):
        zoo_datasets.torchvision_dataset(DataSpec(name="torchvision:CIFAR11"), "train", None, 0)
    with pytest.raises(DataError, match="case-sensitive.*torchvision:CIFAR10"):
        zoo_datasets.torchvision_dataset(DataSpec(name="torchvision:cifar10"), "train", None, 0)
