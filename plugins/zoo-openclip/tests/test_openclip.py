"""Tests of the zoo-openclip plugin, on a tiny randomly initialised open_clip configuration
(``add_model_config``: builds in milliseconds, tokenizes offline) and a pretrained tag of it
served from a patched ``hf_hub_download`` or a pre-filled Hugging Face cache.

Real CLIP weights are not downloaded here: zero-shot *accuracy* cannot be measured offline,
these tests check the mechanics (docs/zero_shot.md).
"""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch
import torch.nn.functional as F

import zoo_openclip
from zoo.errors import ConfigError, WeightsError
from zoo.weights import network

ARCH = "zoo-tiny-clip"
TAG = "zootest"
REPO = "zoo-test/tiny-clip"
CONFIG = {"embed_dim": 16,
          "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                         "patch_size": 8},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 1}}


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """Offline, a fresh ZOO_HOME and HF cache, the tiny config and its tag registered."""
    import huggingface_hub.constants as hfc
    import open_clip
    from open_clip import pretrained

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ZOO_ASSUME_ONLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    path = tmp_path / f"{ARCH}.json"
    path.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(str(path))
    monkeypatch.setitem(pretrained._PRETRAINED, ARCH,
                        {TAG: pretrained._pcfg(hf_hub=f"{REPO}/", quick_gelu=False)})
    network.reset_cache()
    import zoo.catalog

    zoo.catalog._CATALOG = None
    yield tmp_path
    zoo.catalog._CATALOG = None
    network.reset_cache()


def _reference_state(seed: int = 3) -> dict:
    """A "pretrained" tiny CLIP: the state dict the hub would serve."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.create_model(ARCH).state_dict()


def _fill_hf_cache(root, state) -> None:
    from safetensors.torch import save_file

    revision = hashlib.sha1(b"zoo-openclip-test").hexdigest()
    repo = root / "hf" / "hub" / f"models--{REPO.replace('/', '--')}"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file({k: v.contiguous() for k, v in state.items()},
              str(repo / "snapshots" / revision / "open_clip_model.safetensors"))


def _provider():
    return zoo_openclip.OpenClipProvider()


# -- listing, info, the backbone contract ------------------------------------------------------
def test_lists_models_tags_and_info():
    p = _provider()
    assert ARCH in p.list_models() and "ViT-B-32" in p.list_models()
    assert f"{ARCH}.{TAG}" in p.list_models(pretrained=True)
    info = p.info(ARCH)
    assert info["feature_dim"] == 16 and info["pretrained_tags"] == [TAG]
    assert info["pretrained_cfg"]["input_size"] == 32 and info["text_tower"] is True
    with pytest.raises(Exception, match="did you mean"):
        p.info("ViT-B-3")


def test_image_tower_is_an_ordinary_backbone():
    from zoo.testing import check_backbone_provider

    backbone = check_backbone_provider(_provider(), ARCH)
    assert backbone.feature_dim == 16  # the projected image embedding: the text tower's space
    names = [n for n, _ in _provider().layer_groups(backbone)]
    assert names == ["embed", "blocks.0", "blocks.1", "post"]
    # the text tower is beside the backbone, not in it (nor in a run's model.safetensors)
    assert not any("token_embedding" in k for k in backbone.state_dict())
    assert any(k == "token_embedding.weight" for k in backbone.source_state_dict())
    assert backbone.source_classifier is None and "contrastively" in backbone.no_source_reason


def test_text_tower_is_reachable_and_matches_open_clip():
    import open_clip

    backbone = _provider().create(ARCH)
    text = ["a photo of a cat.", "a photo of a dog."]
    got = backbone.encode_text(text)
    clip = open_clip.create_model(ARCH)
    clip.load_state_dict(backbone.source_state_dict())
    expected = clip.encode_text(open_clip.get_tokenizer(ARCH)(text))
    assert got.shape == (2, 16) and torch.allclose(got, expected, atol=1e-5)
    assert backbone.logit_scale == pytest.approx(float(clip.logit_scale.detach().exp()))
    image = torch.randn(2, 3, 32, 32)
    assert torch.allclose(backbone(image), clip.encode_image(image), atol=1e-5)


# -- weights -----------------------------------------------------------------------------------
def test_offline_without_a_cached_copy_fails_fast_and_says_what_to_run():
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        _provider().create(ARCH, TAG, pretrained=True)
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert "ZOO_OFFLINE" in message and f"hf download {REPO} open_clip_model.safetensors" in message
    assert f"zoo weights pull openclip:{ARCH}.{TAG}" in message


def test_weights_from_a_prefilled_hf_cache_load_both_towers(env):
    state = _reference_state()
    _fill_hf_cache(env, state)
    backbone = _provider().create(ARCH, TAG, pretrained=True)
    loaded = backbone.source_state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_weights_through_open_clips_download_path(env, monkeypatch):
    """Online: open_clip's own download path (hf_hub_download), after zoo's network check."""
    from open_clip import pretrained
    from safetensors.torch import save_file

    import huggingface_hub.constants as hfc

    state = _reference_state(5)
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **kw):
        calls.append((repo_id, filename))
        path = env / "dl" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return str(path)

    monkeypatch.setattr(pretrained, "hf_hub_download", fake_download)
    monkeypatch.delenv("ZOO_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("ZOO_ASSUME_ONLINE", "1")  # no TCP probe of huggingface.co
    backbone = _provider().create(ARCH, TAG, pretrained=True)
    assert calls and calls[0] == (REPO, "open_clip_model.safetensors")
    loaded = backbone.source_state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


# -- zero-shot and text-initialised heads ------------------------------------------------------
def _tiny_run(env, strategy: str, **over):
    from zoo.testing import make_catalog, run_tiny

    _fill_hf_cache(env, _reference_state())
    catalog = make_catalog(zoo_openclip)
    head = over.pop("head", {"name": "linear", "params": {"normalize": True}})
    summary = run_tiny(catalog, env / "runs", model=f"openclip:{ARCH}.{TAG}",
                       weights="pretrained", strategy={"name": strategy,
                                                       "params": over.pop("params", {})},
                       head=head, data={"params": {"classes": 3, "per_class": 8}}, **over)
    return catalog, summary


def _expected_rows(classes, templates) -> torch.Tensor:
    backbone = _provider().create(ARCH, TAG, pretrained=True)
    rows = []
    for c in classes:
        emb = F.normalize(backbone.encode_text([t.format(c) for t in templates]), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=0))
    return torch.stack(rows), backbone.logit_scale


def test_zero_shot_run_builds_the_text_head_and_reloads(env):
    from zoo.engine.prompts import IMAGENET_TEMPLATES
    from zoo.runs.reuse import evaluate_run, load_run

    catalog, summary = _tiny_run(env, "zero-shot")
    assert summary["status"] == "completed"
    run = load_run(summary["run_dir"], catalog)
    assert run.classes == ["colour0", "colour1", "colour2"]  # the dataset's order
    rows, scale = _expected_rows(run.classes, IMAGENET_TEMPLATES)
    weight = run.model.head.linear.weight
    assert torch.allclose(weight / scale, rows, atol=1e-5)  # row i = class i's prompts
    assert torch.equal(run.model.head.linear.bias, torch.zeros(3))
    again = evaluate_run(summary["run_dir"], catalog=catalog)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    for phase in summary.get("phases", []):
        assert phase["optimizer_steps"] == 0


def test_zero_shot_with_a_template_file_and_plan_errors(env, tmp_path):
    from zoo.testing import tiny_transfer_model
    import zoo_heads
    import zoo_strategies

    strategy = zoo_strategies.strategy_classes()["zero-shot"]()
    backbone = _provider().create(ARCH)
    model, groups = tiny_transfer_model(backbone=backbone,
                                        head=zoo_heads.mlp_head(16, 3))
    from zoo.testing import tiny_job

    with pytest.raises(ConfigError, match="head 'mlp' cannot be initialised from text"):
        strategy.plan(model, groups, tiny_job(head={"name": "mlp"}))
    model.head = zoo_heads.linear_head(16, 3, normalize=True)
    f = tmp_path / "templates.txt"
    f.write_text("a {} square.\nitap of a {}.\n")
    job = tiny_job(strategy={"name": "zero-shot", "params": {"templates": str(f)}})
    (phase,) = strategy.plan(model, groups, job).phases
    assert phase.steps == "none"
    from zoo.strategy import PhaseContext

    phase.fit(PhaseContext(model=model, job=job, device=torch.device("cpu"),
                           classes=["red", "green_thing", "blue"], features=None,
                           loader=None, log=lambda *a: None))
    expected = []
    for c in ["red", "green thing", "blue"]:
        emb = F.normalize(backbone.encode_text([f"a {c} square.", f"itap of a {c}."]), dim=-1)
        expected.append(F.normalize(emb.mean(0), dim=0))
    assert torch.allclose(model.head.linear.weight / backbone.logit_scale,
                          torch.stack(expected), atol=1e-5)


def test_source_classifier_strategies_say_a_clip_model_has_none():
    import zoo_strategies
    from zoo.testing import tiny_job, tiny_transfer_model

    model, groups = tiny_transfer_model(backbone=_provider().create(ARCH))
    with pytest.raises(ConfigError, match="contrastively"):
        zoo_strategies.strategy_classes()["lwf"]().plan(model, groups,
                                                        tiny_job(strategy={"name": "lwf"}))


def test_head_init_text_on_an_openclip_model(env):
    from zoo.engine.prompts import load_templates
    from zoo.engine.text_head import apply_head_init
    from zoo.testing import tiny_job, tiny_transfer_model
    import zoo_heads

    _fill_hf_cache(env, _reference_state())
    backbone = _provider().create(ARCH, TAG, pretrained=True)
    model, _ = tiny_transfer_model(backbone=backbone, head=zoo_heads.linear_head(16, 2))
    job = tiny_job(head={"name": "linear", "init": "text", "templates": "simple"})
    info = apply_head_init(model, ["cat", "dog"], job)
    assert info["templates"] == 1
    rows, scale = _expected_rows(["cat", "dog"], load_templates("simple"))
    assert torch.allclose(model.head.linear.weight, rows * scale, atol=1e-4)


def test_zoo_run_plan_for_zero_shot_on_the_cli(env, capsys):
    from zoo.cli import main

    _fill_hf_cache(env, _reference_state())
    try:
        main(["run", f"openclip:{ARCH}.{TAG}", "-s", "zero-shot", "--data", "demo",
              "--set", "data.params.per_class=4", "--weights", "pretrained", "--plan",
              "--json"])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = json.loads(out)
    assert plan["strategy"] == "zero-shot" and plan["phases"][0]["name"] == "zero-shot"


def test_builtin_templates_are_open_clips_imagenet_templates():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from zoo.engine.prompts import IMAGENET_TEMPLATES

    assert list(IMAGENET_TEMPLATES) == [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wise_ft_ends_at_the_zero_shot_or_the_fine_tuned_weights(env, alpha):
    """alpha 0: the zero-shot model exactly (pretrained towers + text head); alpha 1: the
    fine-tuned one (it moved away from zero-shot)."""
    from zoo.engine.prompts import load_templates
    from zoo.runs.reuse import load_run

    catalog, summary = _tiny_run(env, "wise-ft", params={"alpha": alpha, "templates": "simple"},
                                 train={"epochs": 1, "batch_size": 8, "lr": 1e-2})
    assert summary["status"] == "completed"
    assert [p["optimizer_steps"] > 0 for p in summary["phases"]] == [False, True, False]
    run = load_run(summary["run_dir"], catalog)
    rows, scale = _expected_rows(run.classes, load_templates("simple"))
    head_is_zero_shot = torch.allclose(run.model.head.linear.weight / scale, rows, atol=1e-5)
    reference = _reference_state()
    body = run.model.backbone.body.state_dict()
    body_is_pretrained = all(torch.equal(body[k[len("visual."):]], v)
                             for k, v in reference.items() if k.startswith("visual."))
    assert head_is_zero_shot == body_is_pretrained == (alpha == 0.0)


def test_wise_ft_resumed_after_its_zero_shot_phase_rebuilds_the_zero_shot_weights(
        env, monkeypatch):
    """Interrupted in its fine-tune phase, then resumed: θ₀ is no longer in memory and is
    rebuilt from the source weights — alpha 0 still ends exactly at the zero-shot model."""
    from zoo.engine.pipeline import run
    from zoo.engine.prompts import load_templates
    from zoo.errors import RunInterrupted
    from zoo.kit.testing.components import complete_job, tiny_job
    from zoo.runs.reuse import load_run
    from zoo.testing import make_catalog

    _fill_hf_cache(env, _reference_state())
    catalog = make_catalog(zoo_openclip)
    job = complete_job(tiny_job(
        out=str(env / "runs"), name="wise", model=f"openclip:{ARCH}.{TAG}",
        weights="pretrained", head={"name": "linear", "params": {"normalize": True}},
        strategy={"name": "wise-ft", "params": {"alpha": 0.0, "templates": "simple"}},
        data={"params": {"classes": 3, "per_class": 8}},
        train={"epochs": 2, "batch_size": 8, "lr": 1e-2}), catalog)
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:2")  # zero-shot + 1 fine-tune
    with pytest.raises(RunInterrupted):
        run(job, catalog, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    run_dir = env / "runs" / "wise"
    summary = run(job, catalog, quiet=True, resume=str(run_dir))
    assert summary["status"] == "completed"
    loaded = load_run(summary["run_dir"], catalog)
    rows, scale = _expected_rows(loaded.classes, load_templates("simple"))
    assert torch.allclose(loaded.model.head.linear.weight / scale, rows, atol=1e-5)
    body = loaded.model.backbone.body.state_dict()
    assert all(torch.equal(body[k[len("visual."):]], v)
               for k, v in _reference_state().items() if k.startswith("visual."))


def test_lp_ft_from_the_text_head_runs_end_to_end(env):
    """--set head.init=text: lp-ft starts from the zero-shot head (WiSE-FT's init).  At
    learning rate 0 nothing moves, so the saved head is exactly the text head."""
    from zoo.engine.prompts import load_templates
    from zoo.runs.reuse import load_run

    catalog, summary = _tiny_run(env, "lp-ft", head={"name": "linear", "init": "text",
                                                     "templates": "simple",
                                                     "params": {"normalize": True}},
                                 params={"probe_lr_mult": 0.0, "ft_lr_mult": 0.0},
                                 train={"epochs": 2, "batch_size": 8})
    assert summary["status"] == "completed"
    run = load_run(summary["run_dir"], catalog)
    rows, scale = _expected_rows(run.classes, load_templates("simple"))
    assert torch.allclose(run.model.head.linear.weight / scale, rows, atol=1e-5)
    assert "init: text" in (run.dir / "job.yaml").read_text()


def test_head_init_text_on_a_backbone_without_text_tower_fails_before_training(env):
    from zoo.testing import make_catalog, run_tiny

    with pytest.raises(ConfigError, match="text tower"):
        run_tiny(make_catalog(), env / "runs", head={"name": "linear", "init": "text"})
