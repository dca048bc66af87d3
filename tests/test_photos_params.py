"""The ``photos`` dataset's parameters: ``images`` (photo names and named sets), ``crop``
and ``gray`` — the tasks of the auto bar (issue 26) built without a download."""
from __future__ import annotations

import hashlib

import pytest
import torch

import zoo_datasets
from zoo.errors import DataError
from zoo.jobspec import DataSpec
from zoo_datasets import photos

from cli_inprocess import assert_clean, invoke

pytestmark = pytest.mark.usefixtures("fresh_dataset_memo")
SPLITS = ("train", "val", "test")


def splits(**params):
    spec = DataSpec(name="photos", params=params)
    return {s: zoo_datasets.photos_dataset(spec, s, None, 0) for s in SPLITS}


def digest(**params) -> str:
    images, labels = photos.generate(*photos.options(params))
    return hashlib.sha256(images.numpy().tobytes() + bytes(labels)).hexdigest()[:16]


def test_defaults_are_unchanged_byte_for_byte():
    # the six colour photos, crops of 35-60 %: the digests of the code before the params
    images, labels = photos.generate(32, 10, 3)
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16] == "00b667963e708a76"
    assert digest(size=32, per_class=10, data_seed=3) == digest(
        size=32, per_class=10, data_seed=3, images=list(photos.PHOTOS), crop=[0.35, 0.6],
        gray=False)


def test_named_sets_grayscale_photos_and_the_class_order():
    data = splits(size=16, per_class=3, images="textures, camera")
    assert data["train"].classes == ["brick", "grass", "gravel", "camera"]
    assert sum(len(d) for d in data.values()) == 12
    image = data["train"][0][0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey photo
    assert len(photos.SETS["all"]) == 18 and len(set(photos.SETS["all"])) == 18
    every = photos.generate(8, 1, 0, photos.SETS["all"])[0]  # every photo loads offline
    assert every.shape == (18, 3, 8, 8)


def test_gray_and_crop_change_the_images_and_crops_depend_on_data_seed_only():
    colour = photos.generate(16, 4, 0, ("astronaut", "coffee"))[0]
    grey = photos.generate(16, 4, 0, ("astronaut", "coffee"), gray=True)[0]
    assert not torch.equal(colour[:, 0], colour[:, 1])
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    # grayscale of the same crops: ITU-R 601 luminance of the colour crops, within rounding
    lum = (colour.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert (lum - grey[:, 0].float()).abs().max() <= 1.0
    small = digest(size=16, per_class=4, images="astronaut,coffee", crop=[0.1, 0.1])
    assert small != digest(size=16, per_class=4, images="astronaut,coffee")
    assert small == digest(size=16, per_class=4, images=["astronaut", "coffee"], crop=[0.1, 0.1])
    assert small != digest(size=16, per_class=4, images="astronaut,coffee", crop=[0.1, 0.1],
                           data_seed=1)


@pytest.mark.parametrize("params, message", [
    ({"images": "astronot,camera"}, "unknown photo 'astronot' — did you mean astronaut"),
    ({"images": "colour,astronaut"}, "each once"),
    ({"images": ["camera"]}, "at least 2 different photos"),
    ({"images": 3}, "list or comma string"),
    ({"crop": [0.5, 0.2]}, "0 < low <= high <= 1"),
    ({"crop": [0, 0.5]}, "0 < low <= high <= 1"),
    ({"crop": 0.5}, "'crop' must be"),
    ({"gray": "yes"}, "'gray' must be true or false"),
])
def test_bad_values_are_one_line_data_errors(params, message):
    with pytest.raises(DataError, match=message):
        photos.options(params)


def test_bad_value_through_the_cli_exits_2_in_one_line(tmp_path):
    code, out, err = invoke("run", "timm:test_resnet", "--weights", "none", "--data", "photos",
                            "--set", "data.params.crop=[0.5,2]", "--epochs", "1",
                            "--out", tmp_path, "-q")
    assert_clean(code, out, err)
    assert code == 2 and "photos 'crop'" in err
