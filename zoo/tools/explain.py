"""``zoo explain``: what does a trained model look at?

Attribution maps (:mod:`zoo.tools.attribution`: ``gradcam``, ``integrated-gradients``,
``occlusion``, through captum) for the predicted (or a chosen) class of a finished run's
model.  Maps are upsampled to the model's input size (the resized, center-cropped view the
model sees) and placed back onto the original image, so :attr:`Explanation.map` has the
image's size (zero outside the crop).  ``top_losses`` is fastai's ``plot_top_losses`` for any
backbone: the run's test images with the highest loss, each with its map, in one PNG
(pictures: :mod:`zoo.tools.explain_plots`).
"""
from __future__ import annotations

from pathlib import Path

from zoo.catalog import get_catalog
from zoo.engine.arrays import decode_array, is_array_file
from zoo.engine.data import load_splits
from zoo.errors import (CheckpointError, ConfigError, DataError,  # noqa: F401
                        MethodNotApplicable, did_you_mean)
from zoo.io import atomic
from zoo.io.runfolder import read_splits, sanitise
from zoo.runs.predict import decode_image
from zoo.runs.reuse import load_run
from zoo.tools.attribution import (METHODS, Explanation, TargetLayer,  # noqa: F401 (public here)
                                   attribute, check_method, display_image, gradcam_layer,
                                   no_inplace, require_captum, to_original, unnormalise)
from zoo.tools.explain_plots import plot_grid, plot_single, save_png

__all__ = ["METHODS", "Explainer", "Explanation", "MethodNotApplicable", "TargetLayer",
           "attribute", "check_method", "explain", "gradcam_layer", "plot_grid", "plot_single",
           "require_captum", "to_original", "top_losses"]


class Explainer:
    """A loaded run plus what every attribution needs (transform, target layer, classes)."""

    def __init__(self, run_dir, method: str = "gradcam", catalog=None, device: str = "cpu"):
        import torch  # lazy: torch

        from zoo.engine.transforms import build_transform  # lazy: imports torch

        check_method(method)
        require_captum()
        self.catalog = catalog or get_catalog()
        self.run = load_run(run_dir, self.catalog, device)
        self.method = method
        self.model = self.run.model
        self.device = torch.device(device)
        no_inplace(self.model)
        self.cfg = self.model.backbone.pretrained_cfg
        self.size = self.run.image_size
        self.transform = build_transform(self.cfg, self.size, "none", False)
        self.classes = list(self.run.classes)
        self.layer = None
        if method == "gradcam":
            provider = self.catalog.provider(self.run.meta.get("provider")
                                             or self.run.meta["model"].split(":")[0])
            self.layer = gradcam_layer(self.model, provider, self.size, self.run.meta["model"],
                                       self.device)

    def class_index(self, target) -> int | None:
        """``--target``: a class name of the run, or its index."""
        if target is None:
            return None
        if isinstance(target, str) and target in self.classes:
            return self.classes.index(target)
        if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
            idx = int(target)
            if not 0 <= idx < len(self.classes):
                raise ConfigError(f"--target {idx} is out of range: the run has "
                                  f"{len(self.classes)} classes (0..{len(self.classes) - 1})")
            return idx
        raise ConfigError(f"--target '{target}' is not a class of this run"
                          f"{did_you_mean(str(target), self.classes)} (classes: "
                          f"{', '.join(map(str, self.classes[:10]))}"
                          f"{', ...' if len(self.classes) > 10 else ''})")

    def explain_tensor(self, image_uint8, name: str, target=None, label: int | None = None,
                       on_original: bool = True) -> Explanation:
        """One uint8 ``(3, H, W)`` image → :class:`Explanation`."""
        import torch  # lazy: torch

        x = self.transform(image_uint8).unsqueeze(0).to(self.device)
        with torch.no_grad():
            logits = self.model(x).float()
            probs = torch.softmax(logits, dim=1)[0].cpu()
        pred = int(probs.argmax())
        tgt = pred if target is None else int(target)
        input_map = attribute(self.model, x, tgt, self.method, layer=self.layer,
                              mean=self.cfg.mean, std=self.cfg.std).numpy()
        if on_original:
            h, w = int(image_uint8.shape[1]), int(image_uint8.shape[2])
            full = to_original(input_map, h, w)
            display = display_image(image_uint8)  # RGB as is; other channels as grey
        else:
            full = input_map
            display = unnormalise(x, self.cfg.mean, self.cfg.std)
        loss = None
        if label is not None:
            loss = float(-torch.log(probs[label].clamp_min(1e-12)))
        return Explanation(
            image=name, method=self.method, target=tgt, target_class=str(self.classes[tgt]),
            target_probability=float(probs[tgt]), predicted=pred,
            predicted_class=str(self.classes[pred]), probability=float(probs[pred]),
            map=full, input_map=input_map, display=display, label=label,
            label_class=None if label is None else str(self.classes[label]), loss=loss)


# -- the two commands -------------------------------------------------------------------------
def explain(run_dir, images: list, *, method: str = "gradcam", target=None, out=None,
            catalog=None, device: str = "cpu", write: bool = True) -> dict:
    """Attribution maps for ``images`` (paths); PNGs per image + ``grid-METHOD.png``.

    Returns ``{"dir", "method", "layer", "images": [Explanation.record()...],
    "grid", "explanations": [Explanation...]}`` (the last is not written to JSON).
    """
    if not images:
        raise ConfigError("zoo explain needs at least one IMAGE (or --top-losses N)")
    decoded = [(str(p), decode_array(p) if is_array_file(p) else decode_image(p))
               for p in images]  # a bad file fails before any work
    ex = Explainer(run_dir, method, catalog, device)
    tgt = ex.class_index(target)
    results = [ex.explain_tensor(img, name, tgt) for name, img in decoded]
    folder = Path(out) if out else ex.run.dir / "explain"
    record = {"run_dir": str(ex.run.dir), "dir": str(folder), "method": method,
              "layer": _layer_record(ex.layer), "images": [], "grid": None}
    if write:
        used: set[str] = set()
        for i, e in enumerate(results):
            stem = _safe_stem(Path(e.image).stem, used)
            path = folder / f"{stem}-{method}.png"
            save_png(path, plot_single(e))
            e.files.append(str(path))
        grid = folder / f"grid-{method}.png"
        save_png(grid, plot_grid(results, f"zoo explain · {ex.run.meta['model']} · {method}"))
        record["grid"] = str(grid)
    record["images"] = [e.record() for e in results]
    if write:
        atomic.write_json(folder / "explain.json", record)
    record["explanations"] = results
    return record


def top_losses(run_dir, n: int = 16, *, method: str = "gradcam", target=None, out=None,
               catalog=None, device: str = "cpu", batch_size: int = 64,
               write: bool = True) -> dict:
    """The ``n`` test images with the highest loss, with their maps, in one PNG.

    The test split is the run's own: the dataset is loaded again with the run's job (same
    data, seed, split fractions) and checked against ``splits.json``.  Maps are for the
    predicted class (what the model looked at to decide), or ``target``.
    """
    import torch  # lazy: torch

    if n < 1:
        raise ConfigError(f"--top-losses must be at least 1, got {n}")
    ex = Explainer(run_dir, method, catalog, device)
    tgt = ex.class_index(target)
    job = ex.run.job
    bundle = load_splits(ex.catalog, job.data, job.seed, {})  # uint8 images
    if list(bundle.classes) != ex.classes:
        raise CheckpointError(f"{ex.run.dir}: the data's classes differ from the run's "
                              f"({len(bundle.classes)} vs {len(ex.classes)}) — did the dataset "
                              "change?")
    test = bundle.test
    ids = list(getattr(test, "sample_ids", []) or [])
    try:  # bounded, regular files only (a FIFO never hangs the read)
        saved = read_splits(ex.run.dir).get("test")
    except CheckpointError:
        saved = None
    if saved and ids and list(saved) != ids:
        raise CheckpointError(f"{ex.run.dir}: the data no longer matches the run's test split "
                              "(splits.json) — did the files change?")
    if len(test) == 0:
        raise DataError(f"{ex.run.dir}: the run's test split is empty — nothing to rank")
    losses = []
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            items = [test[i] for i in range(start, min(len(test), start + batch_size))]
            x = torch.stack([ex.transform(img) for img, _ in items]).to(ex.device)
            y = torch.tensor([int(lbl) for _, lbl in items], device=ex.device)
            logits = ex.model(x).float()
            losses += torch.nn.functional.cross_entropy(logits, y, reduction="none"
                                                        ).cpu().tolist()
    order = sorted(range(len(losses)), key=lambda i: -losses[i])[:n]
    results = []
    for i in order:
        img, lbl = test[i]
        name = ids[i] if ids else f"test:{i}"
        results.append(ex.explain_tensor(img, name, tgt, label=int(lbl), on_original=False))
    folder = Path(out) if out else ex.run.dir / "explain"
    record = {"run_dir": str(ex.run.dir), "dir": str(folder), "method": method,
              "layer": _layer_record(ex.layer), "n_test": len(test), "images": [],
              "plot": None}
    if write:
        path = folder / f"top_losses-{method}.png"
        title = (f"top losses · {ex.run.meta['model']} · {method}\n"
                 "prediction / actual, loss / probability of actual")
        save_png(path, plot_grid(results, title, losses=True))
        record["plot"] = str(path)
        for e in results:
            e.files.append(str(path))
    record["images"] = [e.record() for e in results]
    if write:
        atomic.write_json(folder / "top_losses.json", record)
    record["explanations"] = results
    return record


def _layer_record(layer: TargetLayer | None):
    if layer is None:
        return None
    return {"group": layer.group, "module": layer.module_name, "output_shape": list(layer.shape),
            "layout": "NHWC" if layer.channels_last else "NCHW"}


def _safe_stem(stem: str, used: set) -> str:
    base = sanitise(stem) or "image"
    name, i = base, 1
    while name in used:
        i += 1
        name = f"{base}-{i}"
    used.add(name)
    return name
