"""``zoo explain``: what does a trained model look at?

Attribution maps for the predicted (or a chosen) class of a finished run's model, computed
with captum (the field's library — no hand-rolled Grad-CAM):

- ``gradcam``: :class:`captum.attr.LayerGradCam` (Selvaraju et al. 2017) on the output of the
  *last spatial layer group* of the backbone.  The layer comes from the provider's layer groups
  (:func:`zoo.backbones.build_layer_groups`), so it works for every provider's CNNs: walking
  the groups from the head backwards, pooled (2-D) outputs are skipped, the first 4-D output
  ``(N, C, H, W)`` is the target; a 3-D output (tokens, as in a ViT) means the model has no
  spatial feature maps and Grad-CAM does not apply (:class:`MethodNotApplicable`).
- ``integrated-gradients``: :class:`captum.attr.IntegratedGradients` (Sundararajan et al.
  2017) from a black image; the map is max(0, Σ_channels attribution): the evidence *for*
  the class (captum's ``sign="positive"`` view).
- ``occlusion``: :class:`captum.attr.Occlusion` (Zeiler & Fergus 2014): a square patch (1/8
  of the side, stride 1/16) of the source weights' mean colour slides over the image; the map
  is how much the class score drops where it is covered (≥ 0).

Maps are upsampled to the model's input size (the resized, center-cropped view the model
sees) and placed back onto the original image, so :attr:`Explanation.map` has the image's
size (zero outside the crop).  ``top_losses`` is fastai's ``plot_top_losses`` for any backbone:
the run's test images with the highest loss, each with its map, in one PNG.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from zoo.io import atomic
from zoo.errors import (CheckpointError, ConfigError, DataError, MissingDependencyError,
                     ZooError, did_you_mean)

METHODS = ("gradcam", "integrated-gradients", "occlusion")


class MethodNotApplicable(ZooError):
    """An attribution method that does not apply to this model (e.g. Grad-CAM on a model
    whose features are tokens, not spatial feature maps)."""


def require_captum():
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        raise MissingDependencyError("zoo explain needs captum: pip install 'zoo[explain]'"
                                     ) from None
    import captum.attr

    return captum.attr


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method '{method}'"
                          f"{did_you_mean(method, METHODS)} (choose from {', '.join(METHODS)})")
    return method


@dataclass
class Explanation:
    """One image's attribution for one class."""

    image: str                      # path, or the sample id for top-losses
    method: str
    target: int
    target_class: str
    target_probability: float
    predicted: int
    predicted_class: str
    probability: float              # of the predicted class
    map: object                     # numpy (H, W) float32, the original image's size
    input_map: object               # numpy (S, S) float32, the model input's size
    display: object                 # numpy (H, W, 3) uint8: what ``map`` is drawn on
    label: int | None = None
    label_class: str | None = None
    loss: float | None = None
    files: list = field(default_factory=list)

    def record(self) -> dict:
        out = {k: getattr(self, k) for k in ("image", "method", "target", "target_class",
                                              "target_probability", "predicted",
                                              "predicted_class", "probability", "label",
                                              "label_class", "loss", "files")}
        out["map_shape"] = list(self.map.shape)
        return out


# -- the Grad-CAM layer from the provider's layer groups -------------------------------------
@dataclass
class TargetLayer:
    group: str
    module_name: str
    module: object
    shape: tuple
    channels_last: bool = False     # (N, H, W, C) stage outputs (Swin, MambaOut, ...)


def _group_roots(model, group) -> list[str]:
    """The largest modules wholly inside ``group`` (e.g. ``blocks.6``, ``conv_head``, ``bn2``)."""
    modules = dict(model.named_modules())
    own = set(group.params)
    roots = []
    for name in group.modules:
        if name not in modules or name in ("backbone", "backbone.body"):
            continue
        cur = name
        while "." in cur:
            parent = cur.rsplit(".", 1)[0]
            if parent in ("backbone", "backbone.body"):
                break
            inside = {f"{parent}.{p}" for p, _ in modules[parent].named_parameters()}
            if not inside <= own:
                break
            cur = parent
        roots.append(cur)
    roots = list(dict.fromkeys(roots))
    return [r for r in roots if not any(r.startswith(o + ".") for o in roots if o != r)]


def gradcam_layer(model, provider, image_size: int, model_name: str = "the model",
                  device=None) -> TargetLayer:
    """The last layer group before the head whose output is a 4-D feature map.

    One forward pass of a blank image with hooks on every group's modules gives each group's
    output (its last-finishing module's output).  Walking from the head backwards: 2-D outputs
    (pooled vectors, pre-logits) are skipped; 4-D is the answer; anything else (3-D tokens)
    raises :class:`MethodNotApplicable`, as does a 1×1 map (Grad-CAM would be constant).
    """
    import torch

    from zoo.backbones import build_layer_groups

    groups = [g for g in build_layer_groups(model, provider) if g.name != "head"]
    modules = dict(model.named_modules())
    roots = {g.name: _group_roots(model, g) for g in groups}
    seen: dict[str, tuple[int, tuple]] = {}
    counter = [0]
    handles = []

    def hook_for(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(out, torch.Tensor):
                counter[0] += 1
                seen[name] = (counter[0], tuple(out.shape))
        return hook

    for names in roots.values():
        for name in names:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
    try:
        param = next(model.parameters())
        x = torch.zeros(1, 3, image_size, image_size, device=device or param.device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for g in reversed(groups):
        outs = [(seen[n][0], n, seen[n][1]) for n in roots[g.name] if n in seen]
        if not outs:
            continue
        _, name, shape = max(outs)
        if len(shape) == 2:
            continue  # pooled features / pre-logits: look further back
        if len(shape) == 4:
            # (N, H, W, C) when the two middle sizes are the spatial ones (inputs are square)
            nhwc = shape[1] == shape[2] and shape[3] != shape[2]
            h, w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
            if h * w <= 1:
                raise MethodNotApplicable(
                    f"Grad-CAM does not apply to {model_name} at {image_size}px: its last "
                    f"spatial feature map ('{g.name}', {name}) is 1×1, so the map would be "
                    "constant — use --method integrated-gradients or occlusion, or a run with "
                    "a larger --image-size")
            return TargetLayer(g.name, name, modules[name], shape, nhwc)
        raise MethodNotApplicable(
            f"Grad-CAM does not apply to {model_name}: it has no spatial feature maps (its "
            f"last layer group '{g.name}' outputs {len(shape)}-D tokens {list(shape)}, not "
            "(N, C, H, W)) — use --method integrated-gradients or occlusion")
    raise MethodNotApplicable(f"Grad-CAM does not apply to {model_name}: no layer group "
                              "outputs a spatial feature map — use --method "
                              "integrated-gradients or occlusion")


# -- attributions ---------------------------------------------------------------------------
def _no_inplace(model) -> None:
    """In-place activations after the hooked layer would corrupt the saved output/gradient."""
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False


def attribute(model, x, target: int, method: str, *, layer: TargetLayer | None = None,
              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    """Attribution map ``(S, S)`` (float32 tensor, ≥ 0) of class ``target`` for one
    preprocessed image ``x`` ``(1, 3, S, S)``."""
    import torch

    attr = require_captum()
    check_method(method)
    size = x.shape[-2:]
    x = x.detach().clone()
    if method == "gradcam":
        if layer is None:
            raise ValueError("gradcam needs the target layer (see gradcam_layer)")
        target_module, handle = layer.module, None
        if layer.channels_last:  # captum averages gradients over dims 2, 3: route NCHW
            target_module = torch.nn.Identity()  # through a probe module it can hook

            def to_nchw(module, inputs, output):
                return target_module(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

            handle = layer.module.register_forward_hook(to_nchw)
        try:
            cam = attr.LayerGradCam(model, target_module)
            a = cam.attribute(x, target=int(target), relu_attributions=True)
        finally:
            if handle is not None:
                handle.remove()
        a = attr.LayerAttribution.interpolate(a, tuple(size), "bilinear")
        out = a[0].sum(0)
    elif method == "integrated-gradients":
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        black = (torch.zeros_like(x) - m) / s
        ig = attr.IntegratedGradients(model)
        a = ig.attribute(x, baselines=black, target=int(target), n_steps=32,
                         internal_batch_size=16)
        out = a[0].sum(0).clamp(min=0)  # the evidence *for* the class
    else:
        side = int(size[-1])
        win = max(2, side // 8)
        stride = max(1, win // 2)
        occ = attr.Occlusion(model)
        a = occ.attribute(x, sliding_window_shapes=(3, win, win), strides=(3, stride, stride),
                          baselines=0.0, target=int(target),  # 0 = the mean colour
                          perturbations_per_eval=16)
        out = a[0].mean(0).clamp(min=0)
    out = out.detach().float().cpu()
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def to_original(input_map, height: int, width: int):
    """Place a map of the center-cropped model input back onto the original image.

    The run's preprocessing resizes the shorter side to S and crops the central S × S
    square, i.e. the central min(H, W) square of the original: the map is resized to that
    square and the rest of the image (never seen by the model) gets 0.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    side = min(height, width)
    t = torch.as_tensor(np.asarray(input_map, dtype=np.float32))[None, None]
    square = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    canvas = np.zeros((height, width), dtype=np.float32)
    top = int(round((height - side) / 2.0))
    left = int(round((width - side) / 2.0))
    canvas[top:top + side, left:left + side] = square.numpy()
    return canvas


def _unnormalise(x, mean, std):
    import numpy as np

    arr = x[0].detach().float().cpu().numpy().transpose(1, 2, 0)
    arr = arr * np.asarray(std)[None, None] + np.asarray(mean)[None, None]
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype("uint8")


class Explainer:
    """A loaded run plus what every attribution needs (transform, target layer, classes)."""

    def __init__(self, run_dir, method: str = "gradcam", catalog=None, device: str = "cpu"):
        import torch

        from zoo.catalog import get_catalog
        from zoo.runs.reuse import load_run
        from zoo.engine.transforms import build_transform

        check_method(method)
        require_captum()
        self.catalog = catalog or get_catalog()
        self.run = load_run(run_dir, self.catalog, device)
        self.method = method
        self.model = self.run.model
        self.device = torch.device(device)
        _no_inplace(self.model)
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
        import torch

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
            display = image_uint8.permute(1, 2, 0).cpu().numpy()
        else:
            full = input_map
            display = _unnormalise(x, self.cfg.mean, self.cfg.std)
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
    from zoo.runs.predict import decode_image

    if not images:
        raise ConfigError("zoo explain needs at least one IMAGE (or --top-losses N)")
    decoded = [(str(p), decode_image(p)) for p in images]  # a bad file fails before any work
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
            _save_png(path, plot_single(e))
            e.files.append(str(path))
        grid = folder / f"grid-{method}.png"
        _save_png(grid, plot_grid(results, f"zoo explain · {ex.run.meta['model']} · {method}"))
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
    import torch

    from zoo.engine.data import load_splits

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
    try:
        saved = json.loads((ex.run.dir / "splits.json").read_text()).get("test")
    except (OSError, ValueError):
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
        _save_png(path, plot_grid(results, title, losses=True))
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
    from zoo.io.runfolder import sanitise

    base = sanitise(stem) or "image"
    name, i = base, 1
    while name in used:
        i += 1
        name = f"{base}-{i}"
    used.add(name)
    return name


# -- pictures -------------------------------------------------------------------------------
def _normalised(m):
    import numpy as np

    m = np.asarray(m, dtype=np.float32)
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else m


def _overlay(ax, e: Explanation) -> None:
    ax.imshow(e.display)
    ax.imshow(_normalised(e.map), cmap="jet", alpha=0.45, vmin=0, vmax=1,
              interpolation="bilinear")
    ax.set_axis_off()


def plot_single(e: Explanation):
    from zoo.io.plots import _figure

    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(e.display)
    axes[0].set_axis_off()
    axes[0].set_title(Path(e.image).name, fontsize=9)
    _overlay(axes[1], e)
    title = f"{e.method}: {e.target_class} ({e.target_probability:.2f})"
    if e.target != e.predicted:
        title += f"\npredicted {e.predicted_class} ({e.probability:.2f})"
    axes[1].set_title(title, fontsize=9)
    return fig


def plot_grid(results: list[Explanation], title: str, losses: bool = False):
    from zoo.io.plots import _figure

    plt = _figure()
    n = max(1, len(results))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, e in zip(axes.flat, results):
        _overlay(ax, e)
        if losses:
            ax.set_title(f"{e.predicted_class} / {e.label_class}\n{e.loss:.2f} / "
                         f"{math.exp(-e.loss):.2f}", fontsize=8)
        else:
            ax.set_title(f"{Path(e.image).name}\n{e.target_class} "
                         f"({e.target_probability:.2f})", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def _save_png(path: Path, fig) -> None:
    from zoo.io.plots import _figure

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buf.getvalue())
    _figure().close(fig)
