"""Transfer at another input size for fixed-size ViTs: position embeddings resampled through
the library (timm set_input_size, torchvision interpolate_embeddings), the size recorded in
model.safetensors and used again by eval/predict/export."""
from __future__ import annotations

import pytest
import torch

from zoo.catalog import Catalog
from zoo.engine.resolution import fit_input_size
from zoo.errors import ConfigError
from zoo.kit.testing import make_catalog, run_tiny


def test_timm_fixed_size_vit_is_resampled_and_dynamic_or_cnn_untouched():
    cat = Catalog()
    bb = cat.provider("timm").create("test_vit3")  # dynamic_img_size False: 160 px only
    with pytest.raises(Exception):
        bb(torch.zeros(1, 3, 64, 64))
    tokens = bb.body.pos_embed.shape[1]
    assert fit_input_size(bb, 160) is None
    note = fit_input_size(bb, 64)
    assert "160 px to 64 px" in note
    assert bb.body.pos_embed.shape[1] < tokens and bb.body.patch_embed.img_size == (64, 64)
    assert bb(torch.zeros(2, 3, 64, 64)).shape == (2, bb.feature_dim)
    assert fit_input_size(cat.provider("timm").create("test_vit"), 64) is None  # dynamic
    assert fit_input_size(cat.provider("timm").create("test_resnet"), 64) is None


def test_torchvision_vit_is_resampled():
    from torchvision.models import VisionTransformer

    from zoo.backbones import Backbone

    body = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                             hidden_dim=16, mlp_dim=32)
    body.heads = torch.nn.Identity()
    bb = Backbone(body, 16, name="tiny_vit", provider="torchvision")
    assert "32 px to 64 px" in fit_input_size(bb, 64)
    assert body.encoder.pos_embedding.shape[1] == 1 + (64 // 8) ** 2
    assert bb(torch.zeros(1, 3, 64, 64)).shape == (1, 16)
    with pytest.raises(ConfigError, match="cannot run at 60 px"):
        fit_input_size(bb, 60)


def test_a_vit_run_at_another_size_reloads_at_that_size(tmp_path):
    from PIL import Image

    from zoo.runs.export import example_input, export_run
    from zoo.runs.predict import predict
    from zoo.runs.reuse import evaluate_run, load_run

    cat = make_catalog()
    summary = run_tiny(cat, tmp_path, model="timm:test_vit3", data={"image_size": 32},
                       train={"epochs": 1})
    assert summary["status"] == "completed"
    assert any("160 px to 32 px" in w for w in summary["warnings"])
    run = load_run(summary["run_dir"], cat)
    assert run.image_size == 32 and run.model.backbone.body.patch_embed.img_size == (32, 32)
    again = evaluate_run(summary["run_dir"], catalog=cat)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    Image.new("RGB", (50, 40), (20, 20, 200)).save(tmp_path / "x.png")
    assert predict(summary["run_dir"], [tmp_path / "x.png"], catalog=cat)[0]["top"]
    x = example_input(run)
    assert x.shape[-1] == 32
    out = export_run(summary["run_dir"], "torch-export", catalog=cat)
    program = torch.export.load(out["path"]).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), run.model(x), atol=1e-4, rtol=1e-4)
