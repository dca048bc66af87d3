"""``zoo adapt``: TENT and AdaBN at test time on unlabeled target images (zoo.engine.tta),
written as an adapted run folder that reloads like any run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zoo.engine import tta
from zoo_cli_helpers import assert_one_line_error, cli, tiny_run

SHIFT = ["--target-data", "shift:demo", "--target-param", "transform=color",
         "--target-param", "severity=4"]
LABELLED = ["--data", "shift:demo", "--data-param", "transform=color",
            "--data-param", "severity=4"]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                         nn.Linear(4, 3))


def test_tent_trains_only_norm_affine_and_lowers_entropy():
    model, images = _net(), torch.randn(16, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = tta.tent(model, [images], steps=20, lr=0.05, device="cpu")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"1.weight", "1.bias"} <= changed
    assert not changed & {"0.weight", "0.bias", "6.weight", "6.bias"}  # only norm affine
    assert info["entropy_last"] < info["entropy_first"]
    assert info["params"] == 8 and info["steps"] == 20 and info["images"] == 320
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert all(p.grad is None for p in model.parameters())  # freed before evaluation


def test_adabn_statistics_are_the_target_statistics():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(3, 2))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    images = torch.randn(32, 3, 4, 4) * 3 + 2
    info = tta.reestimate_bn(model, [images], "cpu")
    bn = model[0]
    assert info == {"layers": 1, "images": 32}
    assert torch.allclose(bn.running_mean, images.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, images.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert bn.momentum == 0.1 and not model.training


def test_episodic_tent_resets_to_the_source_for_every_batch():
    model = _net()
    source = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    logits, targets = tta.tent_episodic(model, batches, steps=3, lr=0.05, device="cpu")
    assert logits.shape == (24, 3) and targets.shape == (24,)
    assert all(torch.equal(source[k], v) for k, v in model.state_dict().items())
    # each batch's prediction is that of a model adapted on it alone
    one = _net()
    tta.tent(one, [batches[1][0]], 3, 0.05, "cpu")
    tta._tent_mode(one)
    with torch.no_grad():
        assert torch.allclose(one(batches[1][0]), logits[8:16], atol=1e-5)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt")
    tiny_run(out, "src", "--epochs", "2", "--set", "data.num_workers=0")
    return out / "src"


def test_tent_run_folder_reloads_and_reports_before_and_after(source_run, tmp_path, capsys):
    code, out, err = cli(capsys, "adapt", source_run, *SHIFT, *LABELLED, "--steps", "5",
                         "--out", tmp_path, "--name", "tent", "--json")
    assert code == 0, err
    summary = json.loads(out)
    record = summary["adapt"]
    assert record["method"] == "tent" and record["tent"]["steps"] == 5
    assert record["bn"]["layers"] > 0 and set(record["before"]) == set(summary["test"])
    folder = Path(summary["run_dir"])
    assert (folder / "adapt.png").is_file() and (folder / "splits.json").is_file()
    # zoo eval of the adapted folder: the labelled target's test split, the recorded numbers
    code, out, err = cli(capsys, "eval", folder, "--json")
    assert code == 0, err
    for key, value in summary["test"].items():
        assert json.loads(out)["metrics"][key] == pytest.approx(value, abs=1e-5), key
    src, new = load_file(str(source_run / "model.safetensors")), load_file(
        str(folder / "model.safetensors"))
    changed = {k for k in src if not torch.equal(src[k], new[k])}
    from zoo.runs.reuse import load_run

    model = load_run(source_run).model
    norm = {f"{name}.{t}" for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert changed and changed <= norm  # only normalisation layers changed
    assert any(k.endswith(".weight") for k in changed)  # TENT moved an affine parameter


def test_adabn_changes_statistics_only_and_reads_a_plain_folder(source_run, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "target"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            images / ("nested" if i % 2 else "") / f"{i}.png")
    code, out, err = cli(capsys, "adapt", source_run, "--target-data", images, "--method",
                         "adabn", "--out", tmp_path, "--name", "adabn", "-q")
    assert code == 0, err
    folder = Path(out.strip())
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["adapt"]["target_images"] == 12 and summary["adapt"]["bn"]["images"] == 12
    assert summary["adapt"]["labelled_target"] is None
    src, new = load_file(str(source_run / "model.safetensors")), load_file(
        str(folder / "model.safetensors"))
    changed = {k for k in src if not torch.equal(src[k], new[k])}
    assert changed and all("running_" in k or "num_batches" in k for k in changed)


def test_episodic_reports_online_metrics(source_run, tmp_path, capsys):
    code, out, err = cli(capsys, "adapt", source_run, *SHIFT, *LABELLED, "--episodic",
                         "--steps", "1", "--out", tmp_path, "--json")
    assert code == 0, err
    record = json.loads(out)["adapt"]
    assert record["episodic"] and 0.0 <= record["online"]["accuracy"] <= 1.0
    assert "tent" not in record  # the saved model: source weights, target BN statistics


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "--steps must be"),
    (["--episodic"], "--episodic"),
    (["--data", "digits"], "run's classes"),
    (["--target-param", "nonsense"], "KEY=VALUE"),
])
def test_bad_input_is_one_line(source_run, capsys, args, words):
    code, _, err = cli(capsys, "adapt", source_run, *SHIFT, *args)
    assert words in assert_one_line_error(err, code)


def test_benchmark_table_reports_gains_over_source_only():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tta.py"
    spec = importlib.util.spec_from_file_location("bench_tta", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"pair": "digits→noise4", "method": m, "seed": s, "accuracy": a}
            for m, accs in (("source-only", (0.10, 0.12)), ("adabn", (0.30, 0.32)),
                            ("tent@10", (0.10, 0.11)))
            for s, a in enumerate(accs)]
    text = bench.table(rows, 2, ["source-only", "adabn", "tent@10"])
    line = next(x for x in text.splitlines() if x.startswith("| digits→noise4"))
    assert "11.0 ± 1.4" in line and "(+20.0, win)" in line and "(-0.5, loss)" in line
