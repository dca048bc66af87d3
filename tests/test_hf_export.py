"""``zoo export RUN --format hf``: folders timm, transformers, torchvision and peft load as
they are, giving zoo's own predictions (docs/ecosystem.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.api import load_job, run
from zoo_cli_helpers import assert_one_line_error, cli

TINY = {"model": "timm:test_resnet", "weights": "none", "seed": 0,
        "train": {"epochs": 1, "batch_size": 32},
        "data": {"name": "demo", "params": {"per_class": 20}}}


def tiny(out, name, **over) -> dict:
    from zoo.jobspec import deep_merge

    tree = deep_merge(TINY, {"out": str(out), "name": name})
    return run(load_job(flags=deep_merge(tree, over)), quiet=True)


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return tiny(out, "a", strategy={"name": "finetune"}, metrics=["accuracy", "confusion"])


def _png(tmp_path: Path, size: int = 32) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_timm_layout_gives_zoo_predict_probabilities(timm_run, capsys, tmp_path):
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    run_dir = Path(timm_run["run_dir"])
    code, out, err = cli(capsys, "export", run_dir, "--format", "hf", "--json")
    assert code == 0, err
    res = json.loads(out)
    folder = run_dir / "export" / "hf"
    assert res["path"] == str(folder) and res["layout"] == "timm"
    assert {"config.json", "model.safetensors", "README.md", "curves.png",
            "confusion.png"} <= set(res["files"])
    config = json.loads((folder / "config.json").read_text())
    classes = timm_run["classes"]
    assert config["architecture"] == "test_resnet" and config["num_classes"] == len(classes)
    assert config["label_names"] == classes
    assert "num_classes" not in config.get("model_args", {})
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 1.0

    image = _png(tmp_path)
    code, out, err = cli(capsys, "predict", run_dir, image, "--top-k", "50", "--json")
    assert code == 0, err
    zoo_probs = {t["index"]: t["probability"] for t in json.loads(out)[0]["top"]}
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = create_transform(**resolve_data_config(model=model))
    with torch.no_grad():
        probs = model(transform(Image.open(image).convert("RGB"))[None]).softmax(-1)[0]
    assert len(zoo_probs) == len(classes)
    for i, p in zoo_probs.items():
        assert float(probs[i]) == pytest.approx(p, abs=1e-5)

    from transformers import AutoModelForImageClassification

    hf = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    assert [hf.config.id2label[i] for i in range(len(classes))] == classes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-5, rtol=1e-5)

    card = (folder / "README.md").read_text()
    assert "library_name: timm" in card and "![confusion](confusion.png)" in card
    assert f"| accuracy | {timm_run['test']['accuracy']:.4f} |" in card
    assert "random initialisation" in card and "local-dir:" in card


def test_hf_export_to_a_named_folder_quietly(timm_run, capsys, tmp_path):
    code, out, err = cli(capsys, "export", timm_run["run_dir"], "--format", "hf", "--out",
                         tmp_path / "mine", "-q")
    assert code == 0 and out == "" and err == ""
    assert (tmp_path / "mine" / "model.safetensors").is_file()
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "export", timm_run["run_dir"], "--format", "hf", "--out",
                       tmp_path / "file")
    assert "is a file" in assert_one_line_error(err, code)


def test_a_head_that_is_not_linear_is_refused_in_one_line(tmp_path, capsys):
    res = tiny(tmp_path, "mlp", strategy={"name": "linear-probe"},
               head={"name": "mlp", "params": {"hidden": 8}})
    code, _, err = cli(capsys, "export", res["run_dir"], "--format", "hf")
    line = assert_one_line_error(err, code)
    assert "not one linear layer" in line and "--format safetensors" in line
    assert not (Path(res["run_dir"]) / "export" / "hf" / "model.safetensors").exists()


def test_torchvision_layout_loads_with_torchvision(tmp_path, capsys):
    import torchvision
    from safetensors.torch import load_file

    from zoo.runs.reuse import load_run

    res = tiny(tmp_path, "tv", model="torchvision:mobilenet_v3_small",
               strategy={"name": "linear-probe"})
    code, out, err = cli(capsys, "export", res["run_dir"], "--format", "hf", "--json")
    assert code == 0, err
    folder = Path(json.loads(out)["path"])
    config = json.loads((folder / "config.json").read_text())
    assert config["library"] == "torchvision" and config["label_names"] == res["classes"]
    model = torchvision.models.get_model(config["architecture"],
                                         num_classes=config["num_classes"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), load_run(res["run_dir"]).model(x),
                                   atol=1e-5, rtol=1e-5)
    assert "torchvision.models.get_model" in (folder / "README.md").read_text()
    # the folder is the source of a new run, its classifier the new run's source classifier
    b = tiny(tmp_path, "tv-b", model="torchvision:mobilenet_v3_small",
             strategy={"name": "linear-probe"}, weights=f"local-dir:{folder}")
    state = load_file(str(Path(b["run_dir"]) / "model.safetensors"))
    torch.testing.assert_close(state["backbone.source_classifier.weight"],
                               load_file(str(folder / "model.safetensors"))["classifier.3.weight"])


def test_peft_run_exports_merged_model_and_its_adapter(tmp_path, capsys):
    import peft
    import timm

    res = tiny(tmp_path, "lora", strategy={"name": "lora"})
    code, out, err = cli(capsys, "export", res["run_dir"], "--format", "hf", "--json")
    assert code == 0, err
    folder = Path(json.loads(out)["path"])
    run_adapter = Path(res["run_dir"]) / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / "adapter" / name).read_bytes() == (run_adapter / name).read_bytes()
    base = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    adapted = peft.PeftModel.from_pretrained(base, str(folder / "adapter"))
    assert any("lora_A" in n for n, _ in adapted.named_parameters())
    assert "peft's own format" in (folder / "README.md").read_text()


def test_openclip_layout_loads_with_open_clip(tmp_path, capsys):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import load_file

    from zoo.runs.reuse import load_run

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                              "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                           "heads": 2, "layers": 1}}
    (tmp_path / "zoo-export-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(tmp_path / "zoo-export-clip.json"))
    res = tiny(tmp_path, "clip", model="openclip:zoo-export-clip",
               strategy={"name": "linear-probe"})
    code, out, err = cli(capsys, "export", res["run_dir"], "--format", "hf", "--json")
    assert code == 0, err
    folder = Path(json.loads(out)["path"])
    model, _ = open_clip.create_model_from_pretrained(f"local-dir:{folder}")
    head = load_file(str(folder / "classifier.safetensors"))
    assert json.loads((folder / "config.json").read_text())["label_names"] == res["classes"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model.eval().encode_image(x) @ head["weight"].T + head["bias"]
        torch.testing.assert_close(logits, load_run(res["run_dir"]).model(x), atol=1e-5,
                                   rtol=1e-5)
