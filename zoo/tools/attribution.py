"""Attribution maps of one preprocessed image, computed with captum (the field's library —
no hand-rolled Grad-CAM); :mod:`zoo.tools.explain` runs them on a finished run's model.

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

:func:`to_original` places a map of the model's input (the resized, center-cropped view the
model sees) back onto the original image.  Only functions import torch/numpy/captum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from zoo.errors import ConfigError, MethodNotApplicable, MissingDependencyError, did_you_mean

METHODS = ("gradcam", "integrated-gradients", "occlusion")


def require_captum():
    try:
        import captum.attr  # noqa: F401  # lazy: optional dependency (captum)
    except ImportError:
        raise MissingDependencyError("zoo explain needs captum: pip install 'zoo[explain]'"
                                     ) from None
    import captum.attr  # lazy: captum

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
    import torch  # lazy: torch

    from zoo.backbones import build_layer_groups  # lazy: imports torch

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
        cfg = getattr(getattr(model, "backbone", None), "pretrained_cfg", None)
        channels = int(getattr(cfg, "channels", 3) or 3)  # data.channels runs
        x = torch.zeros(1, channels, image_size, image_size, device=device or param.device)
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
def no_inplace(model) -> None:
    """In-place activations after the hooked layer would corrupt the saved output/gradient."""
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False


def attribute(model, x, target: int, method: str, *, layer: TargetLayer | None = None,
              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    """Attribution map ``(S, S)`` (float32 tensor, ≥ 0) of class ``target`` for one
    preprocessed image ``x`` ``(1, 3, S, S)``."""
    import torch  # lazy: torch

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
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
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
        c = int(x.shape[1])  # every channel at once (3 for RGB)
        a = occ.attribute(x, sliding_window_shapes=(c, win, win), strides=(c, stride, stride),
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
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch
    import torch.nn.functional as F  # lazy: torch

    side = min(height, width)
    t = torch.as_tensor(np.asarray(input_map, dtype=np.float32))[None, None]
    square = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    canvas = np.zeros((height, width), dtype=np.float32)
    top = int(round((height - side) / 2.0))
    left = int(round((width - side) / 2.0))
    canvas[top:top + side, left:left + side] = square.numpy()
    return canvas


def unnormalise(x, mean, std):
    import numpy as np  # lazy: numpy

    arr = x[0].detach().float().cpu().numpy().transpose(1, 2, 0)
    arr = arr * np.asarray(std)[None, None] + np.asarray(mean)[None, None]
    if arr.shape[2] != 3:  # another channel count: shown as grey (display_image)
        return display_image(arr.transpose(2, 0, 1))
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype("uint8")


def display_image(image):
    """An image ``(C, H, W)`` (tensor or array) → ``(H, W, 3)`` uint8 to draw: 8-bit RGB as
    it is; any other channel count or a float array as grey (the channel mean, stretched to
    0..255 per image)."""
    import numpy as np  # lazy: numpy

    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.shape[0] == 3 and arr.dtype == np.uint8:
        return arr.transpose(1, 2, 0)
    grey = arr.astype(np.float32).mean(0)
    lo, hi = float(grey.min()), float(grey.max())
    grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
    return np.repeat((grey * 255 + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)
