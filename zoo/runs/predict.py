"""Predictions of a finished run's model on image files (``zoo predict``).

The images are decoded to RGB (EXIF orientation applied, transparency composited onto
white; ``.npy``/``.tif`` arrays keep their channels, :mod:`zoo.engine.arrays`), preprocessed exactly like the run's test split (resize, center crop, the source
weights' mean/std at the run's image size) and classified in batches.
"""
from __future__ import annotations

from pathlib import Path

from zoo.engine.arrays import decode_array, is_array_file
from zoo.errors import DataError, ZooError
from zoo.io.regular import not_regular
from zoo.runs.reuse import load_run, torch_device


def decode_image(path: str | Path):
    """``path`` → uint8 tensor ``(3, H, W)``; a one-line :class:`DataError` when it cannot."""
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch
    from PIL import Image, ImageOps  # lazy: PIL

    path = Path(path)
    problem = not_regular(path)  # a FIFO would hang PIL's open
    if problem is not None:
        raise DataError(f"image {path} {problem}")
    try:
        with Image.open(path) as im:
            im.load()
            img = ImageOps.exif_transpose(im) or im
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            if img.mode in ("LA", "PA") or (img.mode in ("L", "RGB")
                                             and "transparency" in img.info):
                img = img.convert("RGBA")
            if img.mode == "RGBA":
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img)
            if img.mode.startswith("I;16"):
                arr = (np.asarray(img).astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
                img = Image.fromarray(arr)
            array = np.array(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on bad data
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise DataError(f"cannot decode image {path}: {type(exc).__name__}: {first}"
                        ) from None
    if array.size == 0:
        raise DataError(f"cannot decode image {path}: it has no pixels")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def predict(run_dir: str | Path, images: list[str | Path], top_k: int = 5,
            catalog=None, device: str = "cpu", batch_size: int = 32, run=None) -> list[dict]:
    """Top-``k`` classes and probabilities of every image, in the order given.

    Every image is decoded before any is classified, so a bad file fails the call at once.
    Returns ``[{"image", "top": [{"class", "index", "probability"}, ...]}, ...]``.
    """
    import torch  # lazy: torch

    from zoo.engine.transforms import build_transform  # lazy: imports torch

    if not images:
        raise ZooError("no images given")
    if top_k < 1:
        raise ZooError(f"--top-k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise ZooError(f"batch size must be at least 1, got {batch_size}")
    device = torch_device(device)
    run = run or load_run(run_dir, catalog, device)
    tf = build_transform(run.model.backbone.pretrained_cfg, run.image_size, "none", False)
    tf_channels = run.model.backbone.pretrained_cfg.channels
    decoded = [tf(decode_array(p, tf_channels) if is_array_file(p) else decode_image(p))
               for p in images]
    k = min(top_k, len(run.classes))
    results: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(decoded), batch_size):
            batch = torch.stack(decoded[start:start + batch_size]).to(device)
            probs = run.model(batch).float().softmax(dim=1).cpu()
            values, indices = probs.topk(k, dim=1)
            for j in range(len(batch)):
                results.append({
                    "image": str(images[start + j]),
                    "top": [{"class": run.classes[int(i)], "index": int(i),
                             "probability": float(v)}
                            for v, i in zip(values[j], indices[j])]})
    return results
