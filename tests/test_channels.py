"""Any number of input channels: .npy/.tif folders with 1, 4 and 13 channels run end to end
(the stem adapted, per-channel mean/std from the training split), and eval/predict/export
rebuild the run from what model.safetensors records."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from zoo.backbones import Backbone
from zoo.catalog import Catalog
from zoo.engine.arrays import decode_array
from zoo.engine.channels import MatchChannels, adapt_stem, channel_stats
from zoo.errors import ConfigError, DataError
from zoo.kit.testing import make_catalog, run_tiny

tifffile = pytest.importorskip("tifffile")


def _array_folder(root, channels: int, fmt: str = "npy", per_class: int = 8, size: int = 16,
                  last: bool = False):
    """Two classes told apart by channel ``channels - 1``'s level (uint16 values)."""
    rng = np.random.default_rng(channels)
    for label, name in enumerate(("low", "high")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 1000, size=(channels, size, size)).astype(np.uint16)
            a[-1] += np.uint16(3000 * label)
            if last:
                a = np.moveaxis(a, 0, 2)
            if channels == 1:
                a = a[0] if not last else a[..., 0]
            path = root / name / f"{i}.{fmt}"
            np.save(path, a) if fmt == "npy" else tifffile.imwrite(path, a)
    return root


@pytest.mark.parametrize("channels,fmt,last", [(1, "npy", False), (4, "tif", True),
                                               (13, "npy", True)])
def test_run_on_array_folders_then_eval_predict_export(channels, fmt, last, tmp_path):
    from zoo.runs.export import example_input, export_run, preprocessing, read_sidecar
    from zoo.runs.predict import predict
    from zoo.runs.reuse import evaluate_run, load_run

    data = _array_folder(tmp_path / "data", channels, fmt, last=last)
    cat = make_catalog()
    summary = run_tiny(cat, tmp_path / "runs", model="timm:test_resnet",
                       data={"name": "folder", "path": str(data), "image_size": 32,
                             "val_split": 0.25, "test_split": 0.25},
                       train={"epochs": 2, "batch_size": 8})
    assert summary["status"] == "completed"
    run_dir = summary["run_dir"]
    run = load_run(run_dir, cat)
    cfg = run.model.backbone.pretrained_cfg
    assert cfg.channels == channels and len(cfg.mean) == len(cfg.std) == channels
    # the last channel carries the class: its statistics are those of the raw uint16 data
    assert cfg.mean[-1] > 1000 and cfg.std[-1] > 1000
    assert channels == 1 or cfg.mean[0] < 1000
    assert run.model.backbone.body.conv1[0].in_channels == channels  # timm's first_conv
    meta = json.loads(__import__("safetensors").safe_open(
        f"{run_dir}/model.safetensors", "pt").metadata()["zoo"])
    assert meta["pretrained_cfg"]["channels"] == channels
    again = evaluate_run(run_dir, catalog=cat)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    files = sorted((data / "high").iterdir())[:2]
    preds = predict(run_dir, files, top_k=1, catalog=cat)
    assert [p["image"] for p in preds] == [str(f) for f in files]
    out = export_run(run_dir, "safetensors", catalog=cat)
    exported = json.loads(__import__("safetensors").safe_open(out["path"], "pt").metadata()["zoo"])
    assert exported["pretrained_cfg"]["channels"] == channels
    assert preprocessing(run)["channels"] == channels
    assert example_input(run).shape[1] == channels
    if channels == 4:  # explain draws a 4-channel array as grey, maps on its grid
        from zoo.tools.explain import explain

        res = explain(run_dir, [files[0]], method="occlusion", out=tmp_path / "ex",
                      catalog=cat)
        e = res["explanations"][0]
        assert e.display.shape == (16, 16, 3) and e.map.shape == (16, 16)
        assert (tmp_path / "ex" / "grid-occlusion.png").is_file()
    if channels == 4:  # one compiled export: the program takes 4-channel input
        out = export_run(run_dir, "torch-export", catalog=cat)
        assert read_sidecar(out["path"])["channels"] == 4
        program = torch.export.load(out["path"]).module()
        x = example_input(run)
        with torch.no_grad():
            torch.testing.assert_close(program(x), run.model(x), atol=1e-4, rtol=1e-4)


def test_stem_adaptation_follows_timm_and_finds_the_stem_on_every_provider():
    cat = Catalog()
    for provider, arch, stem in (("timm", "test_resnet", "conv1.0"),
                                 ("timm", "test_vit", "patch_embed.proj"),
                                 ("torchvision", "mobilenet_v3_small", "features.0.0")):
        bb = cat.provider(provider).create(arch)
        rgb = bb.body.get_submodule(stem).weight.detach().clone()
        assert adapt_stem(bb, 4, 32) == stem
        w = bb.body.get_submodule(stem).weight
        assert w.shape[1] == 4
        torch.testing.assert_close(w[:, :3], rgb * 3 / 4)  # repeat and rescale by 3/C
        torch.testing.assert_close(w[:, 3], rgb[:, 0] * 3 / 4)
        assert bb(torch.zeros(2, 4, 32, 32)).shape == (2, bb.feature_dim)
    bb = cat.provider("timm").create("test_resnet")
    rgb = bb.body.conv1[0].weight.detach().clone()
    adapt_stem(bb, 1, 32)
    torch.testing.assert_close(bb.body.conv1[0].weight, rgb.sum(1, keepdim=True))  # 1: the sum


def test_mean_stem_init_gives_every_channel_the_mean_filter():
    bb = Catalog().provider("timm").create("test_resnet")
    rgb = bb.body.conv1[0].weight.detach().clone()
    adapt_stem(bb, 5, 32, init="mean")
    w = bb.body.conv1[0].weight
    for c in range(5):
        torch.testing.assert_close(w[:, c], rgb.mean(1) * 3 / 5)


def test_a_model_without_a_findable_stem_is_a_one_line_error():
    class NoConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 4)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ConfigError, match="cannot find the 3-channel input conv of testing:noconv"):
        adapt_stem(Backbone(NoConv(), 4, name="noconv", provider="testing"), 4, 8)


def test_match_channels_and_statistics():
    rgb = torch.tensor([[[255]], [[0]], [[0]]], dtype=torch.uint8)
    assert MatchChannels(1)(rgb).tolist() == [[[76]]]  # 0.299 × 255, PIL's "L"
    assert MatchChannels(3)(torch.ones(1, 2, 2)).shape == (3, 2, 2)
    with pytest.raises(DataError, match="has 4 channels but this run takes 13"):
        MatchChannels(13)(torch.zeros(4, 2, 2))
    split = [(torch.tensor([[[0.0, 2.0]], [[5.0, 5.0]]]), 0)]
    mean, std = channel_stats(split, 2)
    assert mean == (1.0, 5.0) and std == (1.0, 1.0)  # a constant channel is left unscaled


def test_arrays_channels_first_or_last(tmp_path):
    a = np.arange(2 * 5 * 6, dtype=np.float32).reshape(5, 6, 2)  # channels-last
    np.save(tmp_path / "a.npy", a)
    t = decode_array(tmp_path / "a.npy")
    assert t.shape == (2, 5, 6) and torch.equal(t[1], torch.from_numpy(a[..., 1]))
    np.save(tmp_path / "b.npy", np.full((3, 3, 3), 255, np.uint8))
    assert decode_array(tmp_path / "b.npy").max() == 1.0  # 8-bit scaled as images are
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2, 2)))
    with pytest.raises(DataError, match="cannot read array image"):
        decode_array(tmp_path / "c.npy")


def test_data_channels_turns_rgb_images_into_one_channel(tmp_path):
    from PIL import Image

    for k, colour in enumerate(((200, 30, 30), (20, 20, 200))):
        (tmp_path / "d" / f"c{k}").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (16, 16), colour).save(tmp_path / "d" / f"c{k}" / f"{i}.png")
    summary = run_tiny(make_catalog(), tmp_path / "runs",
                       data={"name": "folder", "path": str(tmp_path / "d"), "channels": 1,
                             "image_size": 16, "val_split": 0.2, "test_split": 0.2},
                       train={"epochs": 1, "batch_size": 4})
    assert summary["status"] == "completed"
    from zoo.runs.reuse import load_run

    assert load_run(summary["run_dir"], make_catalog()).model.backbone.pretrained_cfg.channels == 1


def test_cli_run_predict_export_on_a_13_band_folder(tmp_path, capsys):
    from zoo_cli_helpers import assert_one_line_error, cli

    data = _array_folder(tmp_path / "bands", 13, "npy", last=True)
    code, out, err = cli(capsys, "run", "timm:test_resnet", "--data", data, "--weights", "none",
                         "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                         "--set", "data.stem_init=mean", "--out", tmp_path / "runs", "--json",
                         "-q")
    assert code == 0, err
    run_dir = json.loads(out)["run_dir"]
    assert any("13-channel input" in w and "mean RGB filter" in w
               for w in json.loads(out)["warnings"])
    code, out, err = cli(capsys, "predict", run_dir, data / "high" / "0.npy", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["class"] in ("low", "high")
    code, out, err = cli(capsys, "export", run_dir, "--json")
    assert code == 0, err
    exported = json.loads(out)["path"]
    meta = json.loads(__import__("safetensors").safe_open(exported, "pt").metadata()["zoo"])
    assert meta["pretrained_cfg"]["channels"] == 13
    # the 13-channel run as a new run's source weights: one line saying why not
    code, out, err = cli(capsys, "run", "timm:test_resnet", "--data", data, "--weights",
                         run_dir, "--epochs", "1", "--out", tmp_path / "r3")
    assert_one_line_error(err, code)
    assert "13-channel input" in err
    # 13-band data into a 4-channel run: one line naming data.channels
    code, out, err = cli(capsys, "run", "timm:test_resnet", "--data", data, "--weights", "none",
                         "--epochs", "1", "--set", "data.channels=4", "--out", tmp_path / "r2")
    assert_one_line_error(err, code)
    assert "data.channels" in err


def test_open_clip_tower_stem_is_found_too():
    pytest.importorskip("open_clip")
    from open_clip.transformer import VisionTransformer

    body = VisionTransformer(image_size=32, patch_size=8, width=32, layers=1, heads=2,
                             mlp_ratio=2.0, output_dim=16)
    bb = Backbone(body, 16, name="tiny_clip", provider="openclip")
    assert adapt_stem(bb, 13, 32) == "conv1" and body.conv1.weight.shape[1] == 13
    assert bb(torch.zeros(1, 13, 32, 32)).shape == (1, 16)
