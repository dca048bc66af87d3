"""``zoo shift``: how far is my target data from the source, as the backbone sees it?

:func:`measure_shift` embeds images of two datasets with one frozen backbone
(deterministic preprocessing: resize + centre crop at the job's image size, the weights'
mean/std; :func:`zoo.engine.features.extract_features`) and scores the gap between them:

* **proxy A-distance** (PAD, Ben-David et al. 2007; as used by Ganin et al. 2016):
  ``2·(1 − 2ε)`` with ε the 5-fold cross-validated error of a logistic-regression domain
  classifier on the standardised features — 0: the domains are indistinguishable,
  2: perfectly separable.  It is the headline score: bounded, comparable across backbones
  and feature widths, and it is the quantity domain-adaptation theory bounds target error
  with (the H-divergence).
* **MMD²** (Gretton et al. 2012): unbiased squared maximum mean discrepancy with an RBF
  kernel, bandwidth by the median heuristic (median pairwise distance of the pooled
  sample).  Graded where PAD saturates (deep features make most real shifts separable).

The Fréchet feature distance (FID-style) is not used: it needs covariance square roots
that are unstable with fewer images than feature dimensions (1,280 for EfficientNet-Lite),
the usual case for a quick check.

Scores are given for the pooled features (the baseline) and, where the provider's layer
groups map to modules, per layer group (globally average-pooled outputs, via forward
hooks: one pass gives all of them).  A domain gap that is large early and small late is
low-level (colour, noise, blur); one that grows with depth is semantic.

The folder ``OUT/NAME`` gets ``shift.json`` and ``shift.png`` (a 2-D PCA of both domains'
pooled features, coloured by domain).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from zoo.catalog import get_catalog
from zoo.errors import ConfigError, DataError
from zoo.io import atomic
from zoo.io import runfolder as rundir
from zoo.io.yamlio import parse_scalar
from zoo.jobspec import DataSpec, deep_merge
from zoo.layering import load_job

SCHEMA = 1
# PAD thresholds of the plain-language verdict (a heuristic: Ganin et al. report PAD 1.3–1.9
# for Office/Amazon-review pairs that domain adaptation measurably helps)
SMALL, LARGE = 0.6, 1.5
SCORE_DOC = {
    "pad": "proxy A-distance 2(1-2·err) of a cross-validated logistic-regression domain "
           "classifier: 0 = same domain, 2 = perfectly separable",
    "mmd2": "unbiased squared MMD, RBF kernel, median-heuristic bandwidth (0 = same "
            "distribution)",
    "domain_accuracy": "cross-validated accuracy of the domain classifier (0.5 = chance)",
}


def verdict(pad: float) -> str:
    """The plain-language line for a pooled-feature PAD."""
    if pad < SMALL:
        return (f"small shift (PAD {pad:.2f}): the source features fit the target; a linear "
                "probe should transfer about as well as fine-tuning")
    if pad < LARGE:
        return (f"moderate shift (PAD {pad:.2f}): fine-tuning (or lp-ft) will likely beat a "
                "linear probe")
    return (f"large shift (PAD {pad:.2f}): expect fine-tuning to beat a linear probe; "
            "without target labels try adabn, dann or mcc")


def domain_arg(catalog, value: str, params: list[str] | tuple = ()) -> dict:
    """``--source``/``--target`` and their ``KEY=VALUE`` params → a data-spec fragment."""
    spec = dict(catalog.resolve_dataset_arg(value))
    out = {}
    for item in params:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"'{item}': write KEY=VALUE, e.g. transform=invert")
        out[key.strip()] = parse_scalar(raw.strip())
    spec["params"] = out
    return spec


# -- the scores ------------------------------------------------------------------------------
def proxy_a_distance(source, target, folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """``(PAD, domain-classifier CV accuracy)`` of two feature arrays (rows = images)."""
    import numpy as np  # lazy: numpy and scikit-learn only when scoring
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn is heavy
    from sklearn.model_selection import StratifiedKFold, cross_val_score  # lazy: ditto
    from sklearn.pipeline import make_pipeline  # lazy: ditto
    from sklearn.preprocessing import StandardScaler  # lazy: ditto

    x = np.concatenate([source, target]).astype(np.float64)
    y = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    folds = max(2, min(folds, len(source), len(target)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    acc = float(cross_val_score(clf, x, y, cv=cv, scoring="accuracy").mean())
    err = 1.0 - acc
    return float(min(2.0, max(0.0, 2.0 * (1.0 - 2.0 * err)))), acc


def mmd2_rbf(source, target) -> float:
    """Unbiased MMD² with an RBF kernel of median-heuristic bandwidth."""
    import torch  # lazy: torch

    xs = torch.as_tensor(source, dtype=torch.float64)
    xt = torch.as_tensor(target, dtype=torch.float64)
    z = torch.cat([xs, xt])
    d2 = torch.cdist(z, z).pow(2)
    off = d2[~torch.eye(len(z), dtype=torch.bool)]
    sigma2 = float(off.median()) if off.numel() else 1.0
    if not sigma2 > 0:
        return 0.0
    k = torch.exp(-d2 / (2.0 * sigma2))
    n, m = len(xs), len(xt)
    kss, ktt, kst = k[:n, :n], k[n:, n:], k[:n, n:]
    value = ((kss.sum() - kss.diagonal().sum()) / (n * (n - 1))
             + (ktt.sum() - ktt.diagonal().sum()) / (m * (m - 1)) - 2.0 * kst.mean())
    return float(value)


def score(source, target, seed: int = 0) -> dict:
    pad, acc = proxy_a_distance(source, target, seed=seed)
    return {"pad": pad, "domain_accuracy": acc, "mmd2": mmd2_rbf(source, target)}


# -- embedding ---------------------------------------------------------------------------------
def _group_modules(backbone, provider) -> list[tuple[str, str]]:
    """``(group name, module path in body)`` for each layer group that is one module."""
    out = []
    try:
        raw = provider.layer_groups(backbone)
    except Exception:  # a provider without usable groups: pooled features only
        return out
    for gname, names in raw:
        parts = [n.split(".")[:-1] for n in names]  # owning module of each parameter
        if not parts:
            continue
        common = parts[0]
        for p in parts[1:]:
            k = 0
            while k < min(len(common), len(p)) and common[k] == p[k]:
                k += 1
            common = common[:k]
        if common:
            out.append((str(gname), ".".join(common)))
    return out


def _embed(backbone, dataset, groups, device, batch_size: int, job):
    """Pooled features and per-group pooled activations of every image of ``dataset``."""
    import torch  # lazy: torch

    from zoo.engine.data import make_loader  # lazy: imports torch
    from zoo.engine.features import extract_features  # lazy: imports torch

    captured: dict[str, list] = {g: [] for g, _ in groups}
    handles = []

    def hook_for(gname):
        def hook(module, args, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not torch.is_tensor(out):
                return
            if out.dim() == 4:
                out = out.float().mean(dim=(2, 3))
            elif out.dim() == 3:
                out = out.float().mean(dim=1)
            captured[gname].append(out.float().flatten(1).cpu())
        return hook

    for gname, path in groups:
        handles.append(backbone.body.get_submodule(path).register_forward_hook(hook_for(gname)))
    try:
        loader = make_loader(dataset, batch_size, False, job.seed, job.data.num_workers,
                             device.type)
        feats, _ = extract_features(backbone, loader, device, job.train.precision,
                                    job.train.channels_last)
    finally:
        for h in handles:
            h.remove()
    per_group = {g: torch.cat(v).numpy() for g, v in captured.items() if v}
    return feats.numpy(), per_group


def _subset(dataset, n: int, seed: int):
    """At most ``n`` images of ``dataset``, a seeded random choice (all when fewer)."""
    import numpy as np  # lazy: numpy only when measuring
    from torch.utils.data import Subset  # lazy: torch

    if n <= 0 or len(dataset) <= n:
        return dataset
    keep = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:n])
    return Subset(dataset, [int(i) for i in keep])


def _plot(src, tgt, labels: tuple[str, str], path, title: str) -> None:
    import numpy as np  # lazy: numpy only when drawing

    from zoo.io.plots import _figure, _save  # lazy: matplotlib

    z = np.concatenate([src, tgt]).astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-8)
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    xy = z @ vt[:2].T
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 5))
    n = len(src)
    ax.scatter(xy[:n, 0], xy[:n, 1], s=10, alpha=0.6, label=f"source: {labels[0]}",
               color="tab:blue")
    ax.scatter(xy[n:, 0], xy[n:, 1], s=10, alpha=0.6, label=f"target: {labels[1]}",
               color="tab:orange")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


# -- the tool ------------------------------------------------------------------------------------
def _load_domain(catalog, spec, seed, transforms, flag: str):
    """One domain's splits; a data error names the domain and this command's flags.

    Dataset errors are written for ``zoo run`` (``--data PATH``, ``--set data.params.X=V``);
    here the data are ``--source``/``--target`` and their params ``--source-param``/
    ``--target-param`` (``--set data.params`` reaches the source only)."""
    from zoo.engine.data import load_splits  # lazy: imports torch

    try:
        return load_splits(catalog, spec, seed, transforms)
    except DataError as exc:
        message = (str(exc).replace("--data PATH", f"{flag} PATH")
                   .replace("--set data.params.", f"{flag}-param "))
        raise DataError(f"{flag} {spec.path or spec.name}: {message}") from None


def measure_shift(model: str, *, source: dict, target: dict, flags: dict | None = None,
                  sets: list[str] | None = None, config=None, preset: str | None = None,
                  split: str = "train", max_images: int = 400, layers: bool = True,
                  catalog=None, log: Callable | None = None) -> dict:
    """Embed ``source`` and ``target`` (data specs: ``{"name", "path", "params"}``) with
    ``model``'s backbone and score the domain gap; write and return ``shift.json``'s content.

    :param split: which split of each dataset to embed (``train`` by default).
    :param max_images: at most this many images per domain (a seeded random choice).
    :param layers: also score each layer group's pooled activations.
    """
    import torch  # lazy: torch

    from zoo.engine.runtime import pick_device  # lazy: imports torch
    from zoo.engine.transforms import build_transform  # lazy: imports torch
    from zoo.weights.resolve import resolve_and_load  # lazy: imports torch

    log = log or (lambda msg: None)
    _check_args(split, max_images)
    catalog = catalog or get_catalog()
    job = load_job(model, config=config, preset=preset,
                   flags=deep_merge(dict(flags or {}), {"data": dict(source)}),
                   sets=list(sets or []), registry=catalog.registry, catalog=catalog)
    target_spec = DataSpec(**{**{k: v for k, v in vars(job.data).items()
                                 if k not in ("name", "path", "params")},
                              "name": target["name"], "path": target.get("path"),
                              "params": dict(target.get("params") or {})})
    ref = catalog.resolve_model(job.model)
    started = time.perf_counter()
    warnings: list[str] = []
    torch.manual_seed(job.seed)
    backbone, weights = resolve_and_load(catalog, ref, job.weights, warnings)
    for w in warnings:
        log(w)
    size = int(job.data.image_size or backbone.pretrained_cfg.input_size)
    tf = build_transform(backbone.pretrained_cfg, size, "none", False)
    transforms = {"train": tf, "val": tf, "test": tf}
    src_bundle = _load_domain(catalog, job.data, job.seed, transforms, "--source")
    tgt_bundle = _load_domain(catalog, target_spec, job.seed, transforms, "--target")
    device = pick_device(job.device)
    backbone.to(device).eval()
    provider = catalog.get("providers", ref.provider).obj
    groups = _group_modules(backbone, provider) if layers else []
    src_ds = _subset(getattr(src_bundle, split), max_images, job.seed)
    tgt_ds = _subset(getattr(tgt_bundle, split), max_images, job.seed + 1)
    if min(len(src_ds), len(tgt_ds)) < 5:
        raise ConfigError(f"the {split} splits have {len(src_ds)} source and {len(tgt_ds)} "
                          "target images; the domain classifier needs at least 5 of each")
    bs = job.train.batch_size
    src_x, src_layers = _embed(backbone, src_ds, groups, device, bs, job)
    tgt_x, tgt_layers = _embed(backbone, tgt_ds, groups, device, bs, job)
    pooled = score(src_x, tgt_x, job.seed)
    per_layer = _layer_scores(groups, src_layers, tgt_layers, job.seed)
    names = (_describe(job.data), _describe(target_spec))
    folder = rundir.new_run_dir(job.out, job.name or
                                f"shift-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}",
                                "shift", "shift")
    result = {
        "schema": SCHEMA, "kind": "shift", "dir": str(folder), "model": ref.full,
        "weights": weights.get("source"), "image_size": size, "split": split,
        "source": names[0], "target": names[1],
        "n_source": len(src_ds), "n_target": len(tgt_ds), "feature_dim": int(src_x.shape[1]),
        "pooled": pooled, "layers": per_layer, "verdict": verdict(pooled["pad"]),
        "scores": SCORE_DOC, "warnings": warnings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": None, "plot": None,
    }
    try:
        _plot(src_x, tgt_x, names, folder / "shift.png",
              f"{ref.full}: PAD {pooled['pad']:.2f}, MMD² {pooled['mmd2']:.3f}")
        result["plot"] = str(folder / "shift.png")
    except Exception as exc:  # a plot must never lose the numbers
        result["warnings"].append(f"could not draw shift.png: {exc}")
    result["seconds"] = round(time.perf_counter() - started, 3)
    atomic.write_json(folder / "shift.json", result)
    return result


def _check_args(split: str, max_images: int) -> None:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split {split!r}: use train, val or test")
    if max_images < 10:
        raise ConfigError(f"--max-images must be at least 10 (the domain classifier is "
                          f"cross-validated), got {max_images}")


def _layer_scores(groups, src_layers: dict, tgt_layers: dict, seed: int) -> list[dict]:
    """The gap scores of each layer group's pooled activations (both domains have it)."""
    return [{"group": gname, "dim": int(src_layers[gname].shape[1]),
             **score(src_layers[gname], tgt_layers[gname], seed)}
            for gname, _ in groups if gname in src_layers and gname in tgt_layers]


def _describe(spec) -> str:
    text = spec.path or spec.name
    params = ", ".join(f"{k}={v}" for k, v in sorted((spec.params or {}).items()))
    return f"{text} ({params})" if params else text
