"""``zoo rank``: real ImageNet weights beat random init on real photos; outputs; failures listed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from zoo.tools.rank import _assign_ranks, kendall_tau, parse_candidates
from zoo_cli_helpers import assert_one_line_error, cli

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def make_photo_task(root: Path, per_class: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Random square crops (35–60% of the short side) of scikit-image's photos, one class
    per photo, written as an ImageFolder."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(min(h, w) * rng.uniform(0.35, 0.6))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray(img[y:y + side, x:x + side]).resize((size, size),
                                                                       Image.BILINEAR)
            crop.save(root / name / f"{i:02d}.png")
    return root


def test_logme_ranks_imagenet_weights_above_random_init_on_real_photos(tmp_path):
    """Same architecture, real ImageNet weights (the efficientnet-lite plugin) vs random
    init: LogME — computed without any training — must put the pretrained one first."""
    from zoo.api import get_catalog
    from zoo.tools.rank import rank

    data = make_photo_task(tmp_path / "photos")
    flags = {"data": {"name": "folder", "path": str(data), "image_size": 96,
                      "val_split": 0.25, "test_split": 0.0},
             "out": str(tmp_path / "out"), "name": "photos", "weights": "auto"}
    result = rank("timm:efficientnet_lite0,timm:efficientnet_lite0@none", flags=flags,
                  catalog=get_catalog())
    pre, rand = result["models"]
    assert pre["weights"] == "plugin:efficientnet-lite" and rand["weights"] == "none"
    assert pre["error"] is None and rand["error"] is None
    assert result["n_train"] == 36 and result["num_classes"] == 4
    assert pre["logme"] > rand["logme"] + 0.1, (pre["logme"], rand["logme"])
    assert (pre["rank"], rand["rank"]) == (1, 2)
    # LEEP/NCE through the kept ImageNet classifier agree, and the sanity columns are sane
    assert pre["leep"] > rand["leep"] and pre["nce"] > rand["nce"]
    assert pre["source_classes"] == 1000
    assert pre["knn"] >= 0.75 and pre["probe"] >= 0.75
    saved = json.loads((tmp_path / "out" / "photos" / "rank.json").read_text())
    assert [m["rank"] for m in saved["models"]] == [1, 2]


def test_rank_cli_writes_json_csv_lists_missing_weights_and_validates(tmp_path, capsys):
    out = tmp_path / "runs"
    code, stdout, err = cli(
        capsys, "rank", "--models",
        "timm:test_resnet@none,timm:test_efficientnet@none,timm:test_efficientnet@pretrained",
        "--weights", "none", "--set", "data.params.per_class=12", "--image-size", "32",
        "--batch-size", "16", "--epochs", "1", "--validate", "2",
        "--out", out, "--name", "cands", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    folder = out / "cands"
    assert Path(result["dir"]) == folder
    saved = json.loads((folder / "rank.json").read_text())
    assert saved["status"] == "completed" and saved["metric"] == "logme"
    rows = {m["candidate"]: m for m in saved["models"]}
    assert len(rows) == 3
    for key in ("model", "weights", "logme", "leep", "nce", "knn", "probe", "rank",
                "feature_dim", "seconds"):
        assert all(key in r for r in rows.values())
    ok = [rows["timm:test_resnet@none"], rows["timm:test_efficientnet@none"]]
    assert sorted(r["rank"] for r in ok) == [1, 2]
    assert all(r["weights"] == "none" and r["logme"] is not None for r in ok)
    missing = rows["timm:test_efficientnet@pretrained"]
    assert missing["rank"] is None and missing["logme"] is None
    assert "no pretrained weights for timm:test_efficientnet" in missing["error"]
    # --validate 2: both scored models trained for real, then a scatter plot
    assert saved["validation"]["validated"] == 2
    for r in ok:
        acc = r["validation"]["accuracy"]
        assert 0.0 <= acc <= 1.0
        assert (Path(r["validation"]["run_dir"]) / "summary.json").is_file()
    assert (folder / "rank.png").stat().st_size > 1000
    with open(folder / "rank.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["rank"] for t in table] == ["1", "2", ""]  # rank order, failures last
    assert table[2]["candidate"] == "timm:test_efficientnet@pretrained"
    assert "no pretrained weights" in table[2]["error"]
    assert table[0]["validated_accuracy"] != ""


def test_rank_cli_table_names_the_reason(tmp_path, capsys):
    code, stdout, err = cli(capsys, "rank", "--models",
                            "timm:test_resnet,timm:test_efficientnet", "--weights",
                            "pretrained", "--set", "data.params.per_class=4",
                            "--image-size", "32", "--out", tmp_path, "--name", "r")
    assert code == 0, err
    text = " ".join(stdout.split())  # rich wraps at the terminal width
    assert "timm:test_resnet: FAILED — no pretrained weights for timm:test_resnet" in text
    assert ("timm:test_efficientnet: FAILED — no pretrained weights for "
            "timm:test_efficientnet") in text
    saved = json.loads((tmp_path / "r" / "rank.json").read_text())
    assert all(m["rank"] is None and m["error"] for m in saved["models"])


def test_rank_usage_errors(tmp_path, capsys):
    code, _, err = cli(capsys, "rank", "--models", "timm:test_resnet", "--metric", "bogus")
    assert_one_line_error(err, code)
    code, _, err = cli(capsys, "rank", "--models", "timm:test_resnet@", "--out", tmp_path)
    assert "nothing after '@'" in assert_one_line_error(err, code)
    code, _, err = cli(capsys, "rank", "--models", "timm:no_such_net", "--out", tmp_path)
    assert_one_line_error(err, code)


def test_parse_candidates_and_ranking_helpers():
    assert parse_candidates("a, b@none ,c@w.safetensors,") == [
        ("a", None), ("b", "none"), ("c", "w.safetensors")]
    rows = [{"m": 0.1}, {"m": None}, {"m": 0.5}, {"m": float("nan")}, {"m": 0.1}]
    _assign_ranks(rows, "m")
    assert [r["rank"] for r in rows] == [2, None, 1, None, 3]  # ties keep input order
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1], [1]) is None
