"""Data in: Hugging Face imagefolder + metadata, ``datasets`` (save_to_disk, parquet, the
Hub cache), ``csv:PATH``, and datasets claiming ``--data PATH`` by the folder's layout —
end to end through ``zoo run`` with a tiny model."""
from __future__ import annotations

import csv
import importlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from plugin_fixtures import make_plugin
from zoo_cli_helpers import assert_one_line_error, cli, zoo

COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
RUN = ["timm:test_resnet", "--weights", "none", "--epochs", "1", "--batch-size", "16",
       "--json"]


def _png(path: Path, rgb, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), tuple(max(0, v - 7 * i) for v in rgb)).save(path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def imagefolder(root: Path, counts: dict, jsonl_for: tuple = ()) -> Path:
    """An HF imagefolder: ``counts`` {split folder: images per class}, metadata in each."""
    for split, n in counts.items():
        rows = []
        for colour, rgb in COLORS.items():
            for i in range(n):
                _png(root / split / "img" / f"{colour}{i}.png", rgb, i)
                rows.append({"file_name": f"img/{colour}{i}.png", "label": colour})
        if split in jsonl_for:
            (root / split / "metadata.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
        else:
            _write_csv(root / split / "metadata.csv", rows)
    return root


def run(capsys, tmp_path, data, *extra) -> tuple[dict, dict, str]:
    """``zoo run ... --data DATA``: (summary, split sizes, the job's data.name)."""
    code, out, err = cli(capsys, "run", *RUN, "--data", data, "--out", tmp_path / "runs",
                         "--name", "r", *extra)
    assert code == 0, err
    summary = json.loads(out)
    run_dir = Path(summary["run_dir"])
    splits = json.loads((run_dir / "splits.json").read_text())
    sizes = {k: len(splits[k]) for k in ("train", "val", "test")}
    job = (run_dir / "job.yaml").read_text()
    name = next(line.split(":", 1)[1].strip() for line in job.splitlines()
                if line.startswith("  name:"))
    return summary, sizes, name


def test_plain_data_path_reads_an_imagefolder_by_its_metadata_splits_as_given(
        capsys, tmp_path, fresh_dataset_memo):
    root = imagefolder(tmp_path / "hfimg", {"train": 6, "validation": 2, "test": 2},
                       jsonl_for=("validation",))
    summary, sizes, name = run(capsys, tmp_path, str(root))
    assert name == "imagefolder"
    assert summary["classes"] == ["blue", "green", "red"]  # labels, not train/validation/test
    assert sizes == {"train": 18, "val": 6, "test": 6}


def test_metadata_at_the_root_carves_val_and_test_stratified(capsys, tmp_path,
                                                             fresh_dataset_memo):
    root = tmp_path / "flat"
    rows = []
    for colour, rgb in COLORS.items():
        for i in range(10):
            _png(root / "images" / f"{colour}{i}.png", rgb, i)
            rows.append({"file_name": f"images/{colour}{i}.png", "kind": colour, "x": "1"})
    _write_csv(root / "metadata.csv", rows)
    code, _, err = cli(capsys, "run", *RUN, "--data", str(root), "--out", tmp_path / "runs")
    line = assert_one_line_error(err, code)
    assert "no label column" in line and "label_column" in line
    summary, sizes, _ = run(capsys, tmp_path, str(root), "--set",
                            "data.params.label_column=kind", "--set", "data.val_split=0.2",
                            "--set", "data.test_split=0.2")
    assert summary["classes"] == ["blue", "green", "red"]
    assert sizes == {"train": 18, "val": 6, "test": 6}


def test_csv_rows_with_splits_and_paths_relative_to_the_csv(capsys, tmp_path,
                                                            fresh_dataset_memo):
    folder = tmp_path / "tab"
    rows = []
    for colour, rgb in COLORS.items():
        for i in range(6):
            _png(folder / "pics" / f"{colour}{i}.png", rgb, i)
            rows.append({"path": f"pics/{colour}{i}.png", "label": colour,
                         "split": "train" if i < 4 else "validation"})
    _write_csv(folder / "labels.csv", rows)
    summary, sizes, name = run(capsys, tmp_path, f"csv:{folder / 'labels.csv'}",
                               "--set", "data.test_split=0.25")
    assert name.startswith("csv:") and summary["classes"] == ["blue", "green", "red"]
    assert sizes == {"train": 9, "val": 6, "test": 3}  # test carved from train


def test_csv_bad_split_value_is_one_line(capsys, tmp_path):
    _png(tmp_path / "a.png", (1, 2, 3), 0)
    _write_csv(tmp_path / "x.csv", [{"path": "a.png", "label": "a", "split": "holdout"}])
    code, _, err = cli(capsys, "run", *RUN, "--data", f"csv:{tmp_path / 'x.csv'}",
                       "--out", tmp_path / "runs")
    line = assert_one_line_error(err, code)
    assert "unknown split 'holdout'" in line and "line 2" in line


def _hf_dataset_dict():
    datasets = pytest.importorskip("datasets")

    def part(n):
        images, labels = [], []
        for c, rgb in enumerate(COLORS.values()):
            for i in range(n):
                images.append(Image.new("RGB", (32, 32), tuple(max(0, v - 7 * i) for v in rgb)))
                labels.append(c)
        features = datasets.Features({"image": datasets.Image(),
                                      "label": datasets.ClassLabel(names=["cat", "dog", "fox"])})
        return datasets.Dataset.from_dict({"image": images, "label": labels},
                                          features=features)
    return datasets.DatasetDict({"train": part(6), "validation": part(2)})


def test_save_to_disk_folder_plain_and_hf_prefix_classlabel_names(capsys, tmp_path,
                                                                  fresh_dataset_memo):
    saved = tmp_path / "saved"
    _hf_dataset_dict().save_to_disk(str(saved))
    summary, sizes, name = run(capsys, tmp_path, str(saved), "--set", "data.test_split=0.34")
    assert name == "hf"  # claimed by its layout
    assert summary["classes"] == ["cat", "dog", "fox"]  # from the ClassLabel feature
    assert sizes == {"train": 12, "val": 6, "test": 6}
    summary, _, name = run(capsys, tmp_path, f"hf:{saved}", "--set", "data.test_split=0.34")
    assert name == f"hf:{saved}" and summary["classes"] == ["cat", "dog", "fox"]


def test_parquet_with_an_image_column_and_cache_under_zoo_home(capsys, tmp_path,
                                                               fresh_dataset_memo):
    parts = _hf_dataset_dict()
    data = tmp_path / "pq" / "data"
    data.mkdir(parents=True)
    parts["train"].to_parquet(str(data / "train-00000-of-00001.parquet"))
    parts["validation"].to_parquet(str(data / "validation-00000-of-00001.parquet"))
    summary, sizes, _ = run(capsys, tmp_path, f"hf:{tmp_path / 'pq'}")
    assert summary["classes"] == ["cat", "dog", "fox"] and sizes["val"] == 6
    assert any((Path(os.environ["ZOO_HOME"]) / "datasets" / "hf").iterdir())


def test_hf_hub_name_offline_from_a_cached_snapshot(tmp_path):
    parts = _hf_dataset_dict()
    home = tmp_path / "hf-home"
    repo = home / "hub" / "datasets--acme--shapes"
    snapshot = repo / "snapshots" / ("a" * 40) / "data"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    parts["train"].to_parquet(str(snapshot / "train-00000-of-00001.parquet"))
    parts["validation"].to_parquet(str(snapshot / "validation-00000-of-00001.parquet"))
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "ZOO_OFFLINE": "1"}
    proc = zoo("run", *RUN, "--data", "hf:acme/shapes", "--out", tmp_path / "runs", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["classes"] == ["cat", "dog", "fox"]
    assert sorted(p.name for p in home.iterdir()) == ["hub"]  # datasets' cache: $ZOO_HOME
    proc = zoo("run", *RUN, "--data", "hf:acme/missing", "--out", tmp_path / "runs", env=env)
    line = assert_one_line_error(proc)
    assert "hf:acme/missing is not in the local Hugging Face cache" in line


RIVAL = """
from zoo.hookspecs import hookimpl

@hookimpl
def register_datasets(register):
    register("rival-images", lambda *a: None, claims_paths=lambda path: True)
"""


def test_two_datasets_claiming_a_folder_is_an_error_naming_both(capsys, tmp_path,
                                                                monkeypatch):
    root = imagefolder(tmp_path / "hfimg", {"train": 2})
    make_plugin(tmp_path / "site", "zoo-rival", "zoo_rival_mod", RIVAL, ep_name="rival")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    code, _, err = cli(capsys, "run", *RUN, "--data", str(root), "--out", tmp_path / "runs")
    line = assert_one_line_error(err, code)
    assert "'imagefolder' (plugin 'datasets')" in line
    assert "'rival-images' (plugin 'rival')" in line and "--set data.name=" in line
    # a plain ImageFolder is claimed by the rival only
    plain = tmp_path / "plain"
    _png(plain / "a" / "1.png", (1, 2, 3), 0)
    from zoo.catalog import get_catalog

    assert get_catalog(refresh=True).dataset_for_path(str(plain)) == "rival-images"


def test_plain_parquet_of_png_bytes_and_string_labels(capsys, tmp_path, fresh_dataset_memo):
    """A parquet file written without ``datasets`` (pyarrow: PNG bytes + string labels):
    the image column is cast to ``Image``, the class names are the sorted labels."""
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("datasets")
    images, labels = [], []
    for colour, rgb in COLORS.items():
        for i in range(8):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32), tuple(max(0, v - 7 * i) for v in rgb)).save(buf, "PNG")
            images.append(buf.getvalue())
            labels.append(colour)
    pq.write_table(pa.table({"image": images, "label": labels}), str(tmp_path / "d.parquet"))
    summary, sizes, _ = run(capsys, tmp_path, f"hf:{tmp_path / 'd.parquet'}",
                            "--set", "data.val_split=0.25", "--set", "data.test_split=0.25")
    assert summary["classes"] == ["blue", "green", "red"]
    assert sizes == {"train": 12, "val": 6, "test": 6}


def test_without_datasets_folders_and_csv_work_and_hf_is_one_line(capsys, tmp_path,
                                                                   monkeypatch,
                                                                   fresh_dataset_memo):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    root = imagefolder(tmp_path / "hfimg", {"train": 4, "test": 2})
    summary, sizes, name = run(capsys, tmp_path, str(root))
    assert name == "imagefolder" and summary["classes"] == ["blue", "green", "red"]
    code, _, err = cli(capsys, "run", *RUN, "--data", f"hf:{root}", "--out", tmp_path / "runs")
    assert "pip install 'zoo[hf]'" in assert_one_line_error(err, code)
