"""``zoo explain``: maps of the image's size, finite, and on the place that decides the class.

The model is trained here, honestly: timm's ``test_resnet`` from random init learns
"bright square somewhere" vs "plain noise" (64×64, 40 images per class, 8 epochs).  The
only difference between the classes is the square, so a faithful attribution for "bright"
must sit on it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo_cli_helpers import assert_one_line_error, cli

SIZE, SQUARE = 64, 14


def _image(rng, box=None, size=(SIZE, SIZE)):
    img = rng.normal(0.3, 0.08, size=(*size, 3)).clip(0, 1)
    if box is not None:
        y, x = box
        img[y:y + SQUARE, x:x + SQUARE] = rng.uniform(0.9, 1.0)
    return (img * 255).astype(np.uint8)


def _save(array, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_bright_task(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(per_class):
        box = tuple(int(v) for v in rng.integers(0, SIZE - SQUARE, 2))
        _save(_image(rng, box), root / "bright" / f"{i:03d}.png")
        _save(_image(rng), root / "plain" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def bright_run(tmp_path_factory):
    from zoo.api import load_job, run

    root = tmp_path_factory.mktemp("explain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(root / "zoo-home"))
        data = make_bright_task(root / "data")
        job = load_job(flags={
            "model": "timm:test_resnet", "weights": "none", "strategy": {"name": "finetune"},
            "train": {"epochs": 8, "lr": 0.03, "batch_size": 16},
            "data": {"name": "folder", "path": str(data), "augment": "none", "image_size": SIZE},
            "out": str(root), "name": "bright", "device": "cpu"})
        summary = run(job)
    assert summary["test"]["accuracy"] >= 0.9, summary["test"]
    return Path(summary["run_dir"])


# The bars: the mask is ~12% of the image, so 0.6 (integrated gradients) is 5× what a map
# spread evenly would give and 0.85 (occlusion) 7×.  Integrated gradients from a black
# baseline also credits the brighter-than-black background near the border; across seeds
# its share on this task is 0.57–0.76 per probe (the earlier per-probe bar of 0.75 held
# for seed 0 of one data order only, and failed for seed 1 on the same code).
# squares well inside one quadrant each: Grad-CAM's 2×2 map (stride 32 at 64 px) can only
# say which quadrant; integrated gradients and occlusion are pixel-level
PROBES = [(4, 5), (5, 45), (45, 3), (46, 46)]


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    rng = np.random.default_rng(123)
    return [(_save(_image(rng, box), root / f"probe{i}.png"), box)
            for i, box in enumerate(PROBES)]


def _box_mask(box, pad, shape=(SIZE, SIZE)):
    mask = np.zeros(shape, dtype=bool)
    y, x = box
    mask[max(0, y - pad):y + SQUARE + pad, max(0, x - pad):x + SQUARE + pad] = True
    return mask


@pytest.mark.parametrize("method,min_fraction", [("integrated-gradients", 0.6),
                                                 ("occlusion", 0.85)])
def test_pixel_maps_concentrate_on_the_deciding_region(bright_run, probes, tmp_path, method,
                                                       min_fraction):
    from zoo.tools.explain import explain

    result = explain(bright_run, [p for p, _ in probes], method=method, out=tmp_path)
    fractions = []
    for e, (_, box) in zip(result["explanations"], probes):
        assert e.predicted_class == "bright" and e.probability > 0.9
        m = e.map
        assert m.shape == (SIZE, SIZE) and np.isfinite(m).all() and (m >= 0).all()
        mask = _box_mask(box, pad=4)  # the square plus 4 px: ~10% of the image
        fraction = m[mask].sum() / m.sum()
        fractions.append(fraction)
        # every map puts most of its mass on ~10% of the image, and its peak on the square
        assert fraction >= min_fraction - 0.15, (method, box, fraction, mask.mean())
        assert mask[np.unravel_index(np.argmax(m), m.shape)]
    # over the four probes, the required share: a single corner probe of one trained model
    # can sit lower (integrated gradients from a black baseline also credits the bright
    # background next to the image border), which made a per-probe bar depend on the seed
    assert np.mean(fractions) >= min_fraction, (method, fractions)


def test_gradcam_picks_the_last_spatial_group_and_the_square_quadrant(bright_run, probes,
                                                                      tmp_path):
    from zoo.tools.explain import explain

    result = explain(bright_run, [p for p, _ in probes], method="gradcam", out=tmp_path)
    layer = result["layer"]
    assert layer["module"] == "backbone.body.layer4" and len(layer["output_shape"]) == 4
    half = SIZE // 2
    for e, (_, box) in zip(result["explanations"], probes):
        m = e.map
        assert m.shape == (SIZE, SIZE) and np.isfinite(m).all() and m.max() > 0
        quads = {(qy, qx): m[qy * half:(qy + 1) * half, qx * half:(qx + 1) * half].sum()
                 for qy in (0, 1) for qx in (0, 1)}
        own = (int(box[0] >= half), int(box[1] >= half))
        assert max(quads, key=quads.get) == own, (box, quads)
        assert quads[own] / m.sum() > 0.5  # chance: 0.25 (measured: ~0.7)
    # files: one PNG per image, the grid, explain.json
    assert len(list(tmp_path.glob("probe*-gradcam.png"))) == len(probes)
    assert (tmp_path / "grid-gradcam.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "explain.json").read_text())
    assert saved["method"] == "gradcam" and len(saved["images"]) == len(probes)
    assert saved["images"][0]["map_shape"] == [SIZE, SIZE]


def test_map_has_the_original_image_size_outside_the_crop_is_zero(bright_run, tmp_path):
    """A 64×96 photo: the model sees its central 64×64 square; the map covers the photo."""
    from zoo.tools.explain import explain

    rng = np.random.default_rng(9)
    wide = _image(rng, (25, 40), size=(64, 96))
    path = _save(wide, tmp_path / "wide.png")
    for method in ("gradcam", "integrated-gradients"):
        e = explain(bright_run, [path], method=method, out=tmp_path)["explanations"][0]
        assert e.map.shape == (64, 96) and e.input_map.shape == (64, 64)
        assert np.isfinite(e.map).all()
        assert not e.map[:, :16].any() and not e.map[:, 80:].any()  # never seen: zero
        assert e.map[:, 16:80].max() > 0


def test_explain_cli_target_class_and_top_losses(bright_run, probes, tmp_path, capsys):
    image = probes[0][0]
    code, out, err = cli(capsys, "explain", bright_run, image, "--target", "plain",
                         "--out", tmp_path / "t", "--json")
    assert code == 0, err
    rec = json.loads(out)["images"][0]
    assert rec["target_class"] == "plain" and rec["predicted_class"] == "bright"
    code, out, err = cli(capsys, "explain", bright_run, image, "--target", "plian")
    assert "did you mean plain" in assert_one_line_error(err, code)

    code, out, err = cli(capsys, "explain", bright_run, "--top-losses", "5", "--out",
                         tmp_path / "tl", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (tmp_path / "tl" / "top_losses-gradcam.png").stat().st_size > 1000
    losses = [r["loss"] for r in result["images"]]
    assert len(losses) == 5 and losses == sorted(losses, reverse=True)
    test_ids = json.loads((bright_run / "splits.json").read_text())["test"]
    assert result["n_test"] == len(test_ids)
    assert all(r["image"] in test_ids and r["map_shape"] == [SIZE, SIZE]
               for r in result["images"])
    for r in result["images"]:  # the loss is the cross-entropy of the shown prediction
        p_actual = r["target_probability"] if r["target"] == r["label"] else None
        if p_actual is not None:
            assert r["loss"] == pytest.approx(-np.log(max(p_actual, 1e-12)), rel=1e-4)
    code, _, err = cli(capsys, "explain", bright_run)
    assert "--top-losses" in assert_one_line_error(err, code)


def test_gradcam_on_a_vit_is_a_one_line_error(tmp_path, capsys, probes):
    """timm's test_vit: its features are tokens (N, L, C) — Grad-CAM does not apply, and
    says so; integrated gradients still work on it."""
    from zoo.api import load_job, run

    job = load_job(flags={
        "model": "timm:test_vit", "weights": "none", "strategy": {"name": "linear-probe"},
        "train": {"epochs": 1, "batch_size": 32},
        "data": {"name": "demo", "params": {"per_class": 4, "classes": 2}, "image_size": 160},
        "out": str(tmp_path), "name": "vit", "device": "cpu"})
    run_dir = run(job)["run_dir"]
    image = probes[0][0]
    code, _, err = cli(capsys, "explain", run_dir, image, "--method", "gradcam")
    line = assert_one_line_error(err, code)
    assert "Grad-CAM does not apply to timm:test_vit" in line and "tokens" in line
    assert "integrated-gradients" in line
    from zoo.tools.explain import MethodNotApplicable, explain
    from zoo.errors import ZooError

    assert issubclass(MethodNotApplicable, ZooError)
    e = explain(run_dir, [image], method="integrated-gradients", out=tmp_path / "ig")
    m = e["explanations"][0].map
    assert m.shape == (SIZE, SIZE) and np.isfinite(m).all()


def test_missing_captum_names_the_extra(bright_run, probes, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    from zoo.errors import MissingDependencyError
    from zoo.tools.explain import explain

    with pytest.raises(MissingDependencyError, match=r"pip install 'zoo\[explain\]'"):
        explain(bright_run, [probes[0][0]])
    code, _, err = cli(capsys, "explain", bright_run, probes[0][0])
    assert "pip install 'zoo[explain]'" in assert_one_line_error(err, code)
