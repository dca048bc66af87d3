"""Training-free transfer: the ``ncm``/``knn`` heads against brute-force references, their
strategies' plans and fits (a PhaseContext built here), prompts and ``classes.yaml``, the
text-built head on a stand-in text tower, and tiny end-to-end runs (0 optimizer steps; the
run folder reloads and predicts the same)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import zoo_heads
import zoo_strategies
from zoo.engine import prompts
from zoo.engine.text_head import apply_head_init, init_head_from_text, text_classifier
from zoo.errors import ConfigError
from zoo.strategy import AutoCandidate, PhaseContext
from zoo.testing import make_catalog, run_tiny, tiny_job, tiny_transfer_model

CLASSES = zoo_strategies.strategy_classes()


def _blobs(n_per: int = 10, classes: int = 3, dim: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 3
    x = torch.cat([centres[c] + torch.randn(n_per, dim, generator=gen) for c in range(classes)])
    y = torch.arange(classes).repeat_interleave(n_per)
    return x, y


# -- heads -------------------------------------------------------------------------------------
def test_ncm_head_is_simpleshot_cl2n():
    x, y = _blobs()
    head = zoo_heads.ncm_head(6, 3, scale=2.0)
    head.fit_features(x, y)
    mean = x.mean(0)
    z = F.normalize(x - mean, dim=1)
    centroids = torch.stack([z[y == c].mean(0) for c in range(3)])
    assert torch.allclose(head.mean, mean) and torch.allclose(head.centroids, centroids, atol=1e-6)
    q = torch.randn(5, 6)
    zq = F.normalize(q - mean, dim=1)
    expected = -2.0 * torch.cdist(zq, centroids) ** 2
    assert torch.allclose(head(q), expected, atol=1e-5)
    assert (head(x).argmax(1) == y).float().mean() > 0.9


def test_knn_head_votes_and_state_dict_resizes():
    x, y = _blobs()
    head = zoo_heads.knn_head(6, 3, k=4, temperature=0.5)
    assert torch.equal(head(x[:2]), torch.zeros(2, 3))  # not fitted: uniform
    head.fit_features(x, y)
    q = torch.randn(3, 6)
    sim = F.normalize(q, dim=1) @ F.normalize(x, dim=1).t()
    top, idx = sim.topk(4, dim=1)
    votes = torch.zeros(3, 3).scatter_add_(1, y[idx], torch.exp(top / 0.5))
    share = votes / votes.sum(1, keepdim=True)
    assert torch.allclose(head(q).softmax(1), share, atol=1e-5)
    fresh = zoo_heads.knn_head(6, 3, k=4, temperature=0.5)
    fresh.load_state_dict(head.state_dict())  # the memory's size comes with the state dict
    assert fresh.bank.shape == (30, 6) and torch.equal(fresh(q), head(q))


def test_head_params_are_validated():
    with pytest.raises(ConfigError, match="'k' must be"):
        zoo_heads.knn_head(4, 2, k=0)
    with pytest.raises(ConfigError, match="temperature"):
        zoo_heads.knn_head(4, 2, temperature=-1)
    with pytest.raises(ConfigError, match="normalize"):
        zoo_heads.linear_head(4, 2, normalize="yes")


def test_linear_head_keeps_its_state_dict_keys_and_takes_text():
    plain = zoo_heads.linear_head(4, 3)
    assert list(plain.state_dict()) == ["0.weight", "0.bias"]
    assert list(zoo_heads.linear_head(4, 3, dropout=0.1).state_dict()) == ["1.weight", "1.bias"]
    head = zoo_heads.linear_head(4, 3, normalize=True)
    rows = F.normalize(torch.randn(3, 4), dim=1)
    head.init_from_text(rows, 50.0)
    x = torch.randn(2, 4)
    assert torch.allclose(head(x), 50.0 * F.normalize(x, dim=1) @ rows.t(), atol=1e-5)


# -- strategies: plans and fits ----------------------------------------------------------------
def _ctx(model, features: dict, classes):
    return PhaseContext(model=model, job=tiny_job(), device=torch.device("cpu"),
                        classes=classes, features=lambda split: features[split],
                        loader=lambda name: None, log=lambda *a, **k: None)


@pytest.mark.parametrize("name", ["ncm", "knn"])
def test_fitted_strategy_plans_one_gradient_free_phase_and_fits_the_head(name):
    factory = zoo_heads.ncm_head if name == "ncm" else zoo_heads.knn_head
    model, groups = tiny_transfer_model(head=factory(16, 3))
    strategy = CLASSES[name]()
    assert strategy.auto == AutoCandidate(cost="free")
    plan = strategy.plan(model, groups, tiny_job(head={"name": name},
                                                 strategy={"name": name}))
    (phase,) = plan.phases
    assert phase.steps == "none" and phase.fit is not None and phase.bn == "freeze-all"
    assert phase.backbone_frozen() and phase.trainable_groups() == ["head"]
    x, y = _blobs(dim=16)
    phase.fit(_ctx(model, {"train": (x, y)}, ["a", "b", "c"]))
    reference = factory(16, 3)
    reference.fit_features(x, y)
    q = torch.randn(4, 16)
    assert torch.equal(model.head(q), reference(q))


def test_fitted_strategy_names_the_head_it_needs():
    model, groups = tiny_transfer_model()  # a linear head
    with pytest.raises(ConfigError, match="--head ncm"):
        CLASSES["ncm"]().plan(model, groups, tiny_job(strategy={"name": "ncm"}))


def test_job_defaults_choose_the_fitted_heads():
    defaults = zoo_strategies.JOB_DEFAULTS
    assert defaults["ncm"]["head"] == {"name": "ncm"}
    assert defaults["knn"]["head"] == {"name": "knn"}
    assert defaults["zero-shot"]["head"] == {"name": "linear", "params": {"normalize": True}}
    from zoo.api import load_job

    job = load_job("testing:tiny_cnn", strategy={"name": "knn"}, data={"name": "tiny"})
    assert job.head.name == "knn" and job.data.augment == "none"


def test_zero_shot_needs_a_text_tower():
    model, groups = tiny_transfer_model()
    with pytest.raises(ConfigError, match="text tower"):
        CLASSES["zero-shot"]().plan(model, groups, tiny_job(strategy={"name": "zero-shot"}))


# -- prompts and classes.yaml ------------------------------------------------------------------
def test_templates_builtin_file_and_errors(tmp_path):
    assert len(prompts.load_templates()) == 80 and prompts.load_templates("simple") == [
        "a photo of a {}."]
    f = tmp_path / "t.txt"
    f.write_text("# mine\na photo of a {}.\n\nan origami {}.\n")
    assert prompts.load_templates(str(f)) == ["a photo of a {}.", "an origami {}."]
    f.write_text("no placeholder\n")
    with pytest.raises(ConfigError, match="exactly one"):
        prompts.load_templates(str(f))
    with pytest.raises(ConfigError, match="no such file"):
        prompts.load_templates(str(tmp_path / "missing.txt"))


def test_class_descriptions_from_classes_yaml(tmp_path):
    (tmp_path / "classes.yaml").write_text("golden_retriever: a golden retriever dog\n"
                                           "tabby: [a tabby cat, a striped cat]\n")
    got = prompts.class_descriptions(["tabby", "golden_retriever", "sea-lion"], tmp_path)
    assert got == [["a tabby cat", "a striped cat"], ["a golden retriever dog"], ["sea lion"]]
    assert prompts.class_prompts(["tabby", "golden_retriever"], ["x {}.", "y {}."],
                                 tmp_path)[0] == ["x a tabby cat.", "y a tabby cat.",
                                                  "x a striped cat.", "y a striped cat."]
    (tmp_path / "classes.yaml").write_text("tabbby: a cat\n")
    with pytest.raises(ConfigError, match="did you mean"):
        prompts.class_descriptions(["tabby"], tmp_path)


# -- the text-built head on a stand-in text tower ----------------------------------------------
class _FakeText:
    """A deterministic "text tower": a fixed random embedding per distinct string."""

    def __init__(self, dim: int):
        self.dim, self.seen = dim, []

    def __call__(self, texts):
        self.seen += list(texts)
        out = []
        for t in texts:
            gen = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(t)))
            out.append(torch.randn(self.dim, generator=gen) * 3)
        return torch.stack(out)


def test_text_head_rows_are_normalised_means_of_normalised_prompts():
    model, _ = tiny_transfer_model(head=zoo_heads.linear_head(16, 3, normalize=True))
    model.backbone.encode_text = _FakeText(16)
    model.backbone.logit_scale = 42.0
    classes = ["cat", "dog", "golden_retriever"]
    job = tiny_job(head={"name": "linear", "init": "text", "templates": "simple"})
    info = apply_head_init(model, classes, job)
    assert info["templates"] == 1 and info["classes"] == 3
    templates = prompts.load_templates()
    init_head_from_text(model, classes, job, templates=templates)
    fake = model.backbone.encode_text
    expected = []
    for c in ["cat", "dog", "golden retriever"]:  # the dataset's order, names made readable
        e = F.normalize(fake([t.format(c) for t in templates]), dim=1)
        expected.append(F.normalize(e.mean(0), dim=0))
    weight = model.head.linear.weight / 42.0
    assert torch.allclose(weight, torch.stack(expected), atol=1e-6)
    assert torch.equal(model.head.linear.bias, torch.zeros(3))
    assert torch.allclose(text_classifier(model.backbone, [["a", "b"]]).norm(dim=1),
                          torch.ones(1))


def test_text_init_refuses_heads_and_backbones_that_cannot_take_it():
    model, _ = tiny_transfer_model(head=zoo_heads.mlp_head(16, 3))
    job = tiny_job(head={"name": "mlp", "init": "text"})
    with pytest.raises(ConfigError, match="text tower"):
        apply_head_init(model, ["a", "b", "c"], job)
    model.backbone.encode_text = _FakeText(16)
    with pytest.raises(ConfigError, match="head 'mlp' cannot be initialised from text"):
        apply_head_init(model, ["a", "b", "c"], job)
    assert apply_head_init(model, ["a"], tiny_job()) is None  # head.init: random


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ncm", "knn"])
def test_tiny_run_without_gradient_steps_reloads_and_predicts_the_same(name, tmp_path):
    from zoo.runs.reuse import evaluate_run, load_run

    catalog = make_catalog()
    summary = run_tiny(catalog, tmp_path, strategy={"name": name}, head={"name": name},
                       data={"params": {"classes": 3, "per_class": 12}})
    assert summary["status"] == "completed"
    assert summary["test"]["accuracy"] > 1 / 3  # coloured squares: far above chance
    (phase,) = summary["phases"]
    assert phase["steps"] == "none" and phase["optimizer_steps"] == 0
    splits = json.loads((Path(summary["run_dir"]) / "splits.json").read_text())
    # one backbone pass per split: each image of train and val through it once
    assert phase["backbone_passes"] == {"train": len(splits["train"]), "val": len(splits["val"])}
    run = load_run(summary["run_dir"], catalog)
    assert type(run.model.head).__name__ == ("NCMHead" if name == "ncm" else "KNNHead")
    again = evaluate_run(summary["run_dir"], catalog=catalog)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["strategy"] == name and saved["phases"][0]["optimizer_steps"] == 0


def test_fitted_heads_export_to_onnx(tmp_path):
    pytest.importorskip("onnxscript")
    from zoo.runs.export import _export_onnx, run_onnx

    x, y = _blobs(n_per=8, dim=16)
    model, _ = tiny_transfer_model(head=zoo_heads.knn_head(16, 3, k=5))
    model.eval()
    model.head.fit_features(x, y)
    example = torch.randn(2, 3, 32, 32)
    _export_onnx(model, example, tmp_path / "knn.onnx")
    out = torch.as_tensor(run_onnx(tmp_path / "knn.onnx", example.numpy()))
    assert torch.allclose(out, model(example).detach(), atol=1e-4)


def test_compare_takes_the_training_free_strategies(tmp_path):
    from zoo.tools.compare import compare

    result = compare("testing:tiny_cnn", ["ncm", "knn"], catalog=make_catalog(),
                     flags={"weights": "none", "device": "cpu", "metrics": ["accuracy"],
                            "data": {"name": "tiny", "num_workers": 0},
                            "train": {"batch_size": 16}},
                     out=str(tmp_path), name="free")
    rows = {r["strategy"]: r for r in result["leaderboard"]}
    assert set(rows) == {"ncm", "knn"} and result["splits_identical"]
    assert all(r["error"] is None and r["trainable_params"] == 0 for r in rows.values()), rows


def test_auto_choosing_ncm_writes_a_run_folder_with_the_ncm_head(tmp_path):
    """Issue #15: auto plans the winner's own head as a model change; the run folder records
    the head the model carries (not job.head), so it reloads and evaluates the same."""
    from zoo.io.yamlio import load_yaml
    from zoo.runs.reuse import evaluate_run, load_run

    catalog = make_catalog()
    data = {"params": {"classes": 3, "per_class": 12}}
    source = run_tiny(catalog, tmp_path, strategy={"name": "finetune"}, data=data, name="src")
    summary = run_tiny(catalog, tmp_path, data=data, train={"epochs": 2}, name="auto",
                       weights=source["run_dir"],  # source weights: auto runs its trials
                       strategy={"name": "auto", "params": {"candidates": "ncm,linear-probe",
                                                            "budget": 0.05}})
    assert summary["status"] == "completed"
    assert {t["strategy"] for t in summary["auto"]["trials"]} == {"ncm", "linear-probe"}
    assert summary["auto"]["chosen"] == "ncm"  # trials ran; the summary says what won
    assert [p["name"] for p in summary["phases"]] == ["ncm"]  # ncm won
    assert summary["model_changes"] == [{"name": "head", "head": "ncm", "params": {},
                                         "replaces": "linear"}]
    run_dir = Path(summary["run_dir"])
    assert load_yaml(run_dir / "job.yaml")[0]["head"]["name"] == "linear"  # the job's head
    run = load_run(run_dir, catalog)
    assert run.meta["head"] == {"name": "ncm", "params": {}}  # ... but the model's is ncm
    assert type(run.model.head).__name__ == "NCMHead"
    again = evaluate_run(run_dir, catalog=catalog)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert again["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-4)
