"""``zoo rank``: which backbone will transfer best to this data, before any training?

:func:`rank` scores every candidate backbone, frozen, on the target task's training split:

1. builds the backbone with the weights ``--weights`` would give it (a candidate written
   ``MODEL@WEIGHTS`` gets its own, e.g. ``efficientnet_lite0@none`` for random init); a
   candidate whose weights cannot be had (``--weights pretrained`` offline, a bad file) is
   listed with the reason and the others go on;
2. extracts the features of the training split once (:func:`zoo.engine.features.extract_features`,
   deterministic preprocessing: resize + center crop at the job's image size, the weights'
   mean/std) and of the held-out validation split;
3. scores them (:mod:`zoo.tools.transferability`): ``logme`` (features), ``leep`` and ``nce`` (the
   kept source classifier's softmax, where the backbone has one), ``knn`` and ``probe``
   (held-out accuracy of a k-NN and of a closed-form ridge probe: sanity columns);
4. ranks by ``metric`` (higher is better for every score; 1 = best);
5. with ``validate=N``, trains the top N for real (``zoo.engine.pipeline.run``, strategy
   ``linear-probe`` by default) and records the test accuracy each reached.

The folder ``OUT/NAME`` (:func:`zoo.io.runfolder.new_run_dir`) gets ``rank.json`` (rewritten
after every candidate), ``rank.csv`` and, with validation, ``rank.png`` (score vs accuracy).
"""
from __future__ import annotations

import csv
import io
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from zoo.engine.budget import bounded_int
from zoo.catalog import get_catalog
from zoo.engine.data import load_splits, make_loader
from zoo.io import atomic
from zoo.io import runfolder as rundir
from zoo.errors import ConfigError, RunInterrupted, ZooError, did_you_mean
from zoo.io.plots import _figure, _save
from zoo.jobspec import deep_merge
from zoo.layering import load_job
from zoo.weights.resolve import resolve_and_load

SCHEMA = 1
METRICS = ("logme", "leep", "nce", "knn", "probe")
SCORE_DOC = {
    "logme": "LogME (You et al. 2021): log evidence per sample of a Bayesian linear model",
    "leep": "LEEP (Nguyen et al. 2020): log-likelihood of the expected empirical predictor",
    "nce": "NCE (Tran et al. 2019): negative conditional entropy -H(Y|Z_source)",
    "knn": "held-out accuracy of a k-NN (cosine, k=5) on the features",
    "probe": "held-out accuracy of a closed-form ridge linear probe on the features",
}


def parse_candidates(models: str | list[str]) -> list[tuple[str, str | None]]:
    """``"a,b@none,c@FILE"`` → ``[("a", None), ("b", "none"), ("c", "FILE")]``."""
    items = models.split(",") if isinstance(models, str) else list(models)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, weights = item.partition("@")
        if sep and not weights.strip():
            raise ConfigError(f"candidate '{item}': nothing after '@' (write MODEL@WEIGHTS, "
                              "e.g. resnet18@none)")
        out.append((name.strip(), weights.strip() or None))
    if not out:
        raise ConfigError("rank needs at least one model (--models a,b,c)")
    return out


MAX_KNN_K = 10_000  # neighbours that vote in the kNN score


def rank(models, *, metric: str = "logme", flags: dict | None = None,
         sets: list[str] | None = None, config=None, preset: str | None = None,
         validate: int = 0, validate_strategy: str = "linear-probe", knn_k: int = 5,
         catalog=None, log: Callable | None = None) -> dict:
    """Score and rank ``models`` on the job's data; write and return ``rank.json``'s content.

    :param models: ``"a,b,c"`` or a list; ``MODEL@WEIGHTS`` overrides the weights of one.
    :param flags: a job-tree fragment (``{"data": {...}, "weights": "auto", "out": ...}``).
    :param validate: train the top N for real and record the accuracy they reach.
    """
    log = log or (lambda msg: None)
    if metric not in METRICS:
        raise ConfigError(f"unknown rank metric '{metric}'{did_you_mean(metric, METRICS)} "
                          f"(choose from {', '.join(METRICS)})")
    if validate < 0:
        raise ConfigError(f"--validate must be >= 0, got {validate}")
    bounded_int(knn_k, "--knn-k", 1, MAX_KNN_K, "the k nearest neighbours that vote")
    catalog = catalog or get_catalog()
    candidates = parse_candidates(models)
    for name, _ in candidates:  # a typo fails now, not after the other models' extraction
        catalog.resolve_model(name)
    flags = dict(flags or {})
    base = load_job(candidates[0][0], config=config, preset=preset, flags=flags,
                    sets=list(sets or []), registry=catalog.registry, catalog=catalog)
    folder = rundir.new_run_dir(base.out, base.name or
                                f"rank-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}",
                                "rank", "rank")
    result = {
        "schema": SCHEMA, "kind": "rank", "status": "running", "dir": str(folder),
        "metric": metric, "higher_is_better": True, "scores": SCORE_DOC,
        "data": base.data.path or base.data.name, "weights_arg": base.weights,
        "seed": base.seed, "image_size": base.data.image_size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_classes": None, "classes": None, "n_train": None, "n_heldout": None,
        "heldout": None, "models": [], "validation": None,
    }
    started = time.perf_counter()
    splits: dict = {}  # (data spec, seed) → raw splits, shared by the candidates
    try:
        for i, (name, weights) in enumerate(candidates, 1):
            row = _score_one(name, weights, base, flags, sets, config, preset, catalog,
                             knn_k, result, splits)
            result["models"].append(row)
            _assign_ranks(result["models"], metric)
            short = (row["error"] or "").split(";")[0].split(" — ")[0]
            shown = (f"{metric} {row[metric]:.4f}" if _finite(row.get(metric))
                     else f"{metric} n/a" if not row["error"] else f"FAILED: {short}")
            log(f"[{i}/{len(candidates)}] {row['candidate']} ({row['weights'] or '-'}): "
                f"{shown} ({row['seconds']:.1f}s)")
            _write(folder, result)
        if validate:
            _validate(result, validate, validate_strategy, base, flags, sets, config, preset,
                      catalog, folder, log)
    except (KeyboardInterrupt, RunInterrupted):
        result["status"] = "interrupted"  # what was scored so far stays in rank.json
        result["seconds"] = round(time.perf_counter() - started, 3)
        _write(folder, result)
        raise
    result["status"] = "completed"
    result["seconds"] = round(time.perf_counter() - started, 3)
    _write(folder, result)
    return result


# -- one candidate --------------------------------------------------------------------------
def _score_one(name, weights, base, flags, sets, config, preset, catalog, knn_k,
               result, splits: dict | None = None) -> dict:
    import torch  # lazy: torch

    from zoo.engine.features import extract_features  # lazy: imports torch
    from zoo.engine.runtime import pick_device  # lazy: imports torch
    from zoo.engine.prepare import eval_view  # lazy: torch
    from zoo.tools import transferability as tr  # lazy: imports numpy

    row: dict = {"candidate": name + (f"@{weights}" if weights else ""), "model": name,
                 "weights_arg": weights or base.weights, "weights": None,
                 "weights_sha256": None, "feature_dim": None, "image_size": None,
                 "source_classes": None, "seconds": 0.0, "extract_seconds": None,
                 **{m: None for m in METRICS}, "rank": None, "error": None, "notes": [],
                 "validation": None}
    start = time.perf_counter()
    try:
        over = {"weights": weights} if weights else {}
        from zoo.jobspec import deep_merge  # lazy: optional dependency (zoo)

        job = load_job(name, config=config, preset=preset, flags=deep_merge(flags, over),
                       sets=list(sets or []), registry=catalog.registry, catalog=catalog)
        ref = catalog.resolve_model(job.model)
        row["model"] = ref.full
        warnings: list[str] = []
        torch.manual_seed(job.seed)  # random init (--weights none) is reproducible
        backbone, summary = resolve_and_load(catalog, ref, job.weights, warnings)
        row["weights"] = summary.get("source")
        row["weights_sha256"] = summary.get("sha256")
        row["notes"].extend(warnings)
        row["feature_dim"] = backbone.feature_dim
        size = int(job.data.image_size or backbone.pretrained_cfg.input_size)
        row["image_size"] = size
        # the splits are loaded once for every candidate; each sees them through its transform
        raw = _splits_once(catalog, job, splits)
        bundle = eval_view(raw, backbone.pretrained_cfg, size)
        device = pick_device(job.device)
        backbone.to(device).eval()
        bs = job.train.batch_size
        t0 = time.perf_counter()
        train_x, train_y = extract_features(
            backbone, make_loader(bundle.train, bs, False, job.seed, job.data.num_workers,
                                  device.type), device, job.train.precision,
            job.train.channels_last)
        held_x = held_y = None
        if len(bundle.val):
            held_x, held_y = extract_features(
                backbone, make_loader(bundle.val, bs, False, job.seed, job.data.num_workers,
                                      device.type), device, job.train.precision,
                job.train.channels_last)
        row["extract_seconds"] = round(time.perf_counter() - t0, 3)
        if result["num_classes"] is None:
            result.update(num_classes=len(bundle.classes), classes=list(bundle.classes),
                          n_train=len(bundle.train), n_heldout=len(bundle.val),
                          heldout="val split" if len(bundle.val) else
                          "leave-one-out on the train split")
        if not torch.isfinite(train_x).all():
            raise ZooError(f"{ref.full} gave NaN/inf features")
        row["logme"] = tr.logme(train_x, train_y)
        _source_scores(row, backbone, train_x, train_y, device)
        row["knn"] = tr.knn_accuracy(train_x, train_y, held_x, held_y, k=knn_k)
        row["probe"] = tr.probe_accuracy(train_x, train_y, held_x, held_y)
    except RunInterrupted:
        raise
    except ZooError as exc:
        row["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # a model that cannot run must not lose the other candidates
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        row["error"] = f"{type(exc).__name__}: {first}".rstrip(": ")
    row["seconds"] = round(time.perf_counter() - start, 3)
    for m in METRICS:
        if row[m] is not None and not _finite(row[m]):
            row[m] = None
    return row


def _splits_once(catalog, job, splits: dict | None):
    """The job's raw splits, loaded once per (data, seed) for every candidate."""
    key = (repr(job.data), job.seed)
    if splits is not None and key in splits:
        return splits[key]
    raw = load_splits(catalog, job.data, job.seed)
    if splits is not None:
        splits[key] = raw
    return raw


def _source_scores(row: dict, backbone, train_x, train_y, device) -> None:
    """LEEP and NCE from the backbone's source classifier (a note when it has none)."""
    import torch  # lazy: torch

    from zoo.tools import transferability as tr  # lazy: imports numpy

    if backbone.source_classifier is None:
        why = getattr(backbone, "no_source_reason", None)  # e.g. a CLIP model's
        row["notes"].append("no source classifier: leep/nce not applicable"
                            + (f" ({why})" if why else ""))
        return
    with torch.no_grad():
        logits = backbone.source_logits(train_x.to(device)).float().cpu()
    probs = tr.softmax(logits)
    row["source_classes"] = int(probs.shape[1])
    row["leep"] = tr.leep(probs, train_y)
    row["nce"] = tr.nce(probs, train_y)
    if row["weights"] in ("none", "random-init"):
        row["notes"].append("leep/nce from a randomly initialised source classifier")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _assign_ranks(rows: list[dict], metric: str) -> None:
    """1 = best ``metric``; rows without that score (failed, not applicable) get None."""
    scored = [r for r in rows if _finite(r.get(metric))]
    order = sorted(range(len(scored)), key=lambda i: -scored[i][metric])  # stable on ties
    for r in rows:
        r["rank"] = None
    for place, i in enumerate(order, 1):
        scored[i]["rank"] = place


def ranked(rows: list[dict]) -> list[dict]:
    """Rows in rank order, unranked ones (failures) last in their input order."""
    return sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0))


# -- validation -----------------------------------------------------------------------------
def _validate(result, n, strategy, base, flags, sets, config, preset, catalog, folder, log):
    from zoo.engine.pipeline import run  # lazy: imports torch

    top = [r for r in ranked(result["models"]) if r["rank"] is not None][:n]
    for r in top:
        name = rundir.sanitise(f"validate-{r['rank']}-{r['candidate']}")
        over = {"weights": r["weights_arg"], "strategy": {"name": strategy},
                "out": str(folder), "name": name}
        start = time.perf_counter()
        try:
            job = load_job(r["model"], config=config, preset=preset,
                           flags=deep_merge(flags, over), sets=list(sets or []),
                           registry=catalog.registry, catalog=catalog)
            summary = run(job, catalog, quiet=True)
            r["validation"] = {"strategy": strategy, "run_dir": summary["run_dir"],
                               "accuracy": summary["test"].get("accuracy"),
                               "epochs": summary.get("epochs"),
                               "seconds": round(time.perf_counter() - start, 3)}
            log(f"validated {r['candidate']}: {strategy} test accuracy "
                f"{r['validation']['accuracy']:.4f}")
        except RunInterrupted:
            raise
        except Exception as exc:  # one failed validation must not lose the others
            text = str(exc).splitlines()[0] if str(exc) else ""
            if not isinstance(exc, ZooError):
                text = f"{type(exc).__name__}: {text}".rstrip(": ")
            r["validation"] = {"strategy": strategy, "error": text,
                               "seconds": round(time.perf_counter() - start, 3)}
            log(f"validation of {r['candidate']} FAILED: {r['validation']['error']}")
        _write(folder, result)
    done = [r for r in top if (r["validation"] or {}).get("accuracy") is not None]
    result["validation"] = {
        "strategy": strategy, "requested": n, "validated": len(done),
        "kendall_tau": kendall_tau([r[result["metric"]] for r in done],
                                   [r["validation"]["accuracy"] for r in done]),
        "plot": None,
    }
    if done:
        try:
            plot_rank(result, folder / "rank.png")
            result["validation"]["plot"] = str(folder / "rank.png")
        except Exception as exc:  # a plot must never lose the ranking
            result["validation"]["plot_error"] = f"{type(exc).__name__}: {exc}"


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    """Kendall's τ-b between two score lists (None with fewer than two pairs)."""
    n = len(a)
    if n < 2:
        return None
    conc = disc = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da * db > 0:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return (conc - disc) / denom if denom else None


# -- outputs --------------------------------------------------------------------------------
CSV_COLUMNS = ["rank", "candidate", "model", "weights", "feature_dim", "image_size", "seconds",
               *METRICS, "validated_accuracy", "error"]


def to_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in ranked(result["models"]):
        acc = (r.get("validation") or {}).get("accuracy")
        w.writerow([r["rank"] if r["rank"] is not None else "", r["candidate"], r["model"],
                    r["weights"] or "", r["feature_dim"] or "", r["image_size"] or "",
                    f"{r['seconds']:.3f}",
                    *["" if r[m] is None else f"{r[m]:.6f}" for m in METRICS],
                    "" if acc is None else f"{acc:.6f}", r["error"] or ""])
    return buf.getvalue()


def _write(folder: Path, result: dict) -> None:
    atomic.write_json(folder / "rank.json", result)
    atomic.write_text(folder / "rank.csv", to_csv(result))


def plot_rank(result: dict, path: Path) -> None:
    """Scatter of the ranking score vs the accuracy validation reached, one labelled dot each."""
    plt = _figure()
    metric = result["metric"]
    rows = [r for r in result["models"] if (r.get("validation") or {}).get("accuracy")
            is not None and _finite(r.get(metric))]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [r[metric] for r in rows]
    ys = [r["validation"]["accuracy"] for r in rows]
    ax.scatter(xs, ys, s=40, color="tab:blue", zorder=3)
    for r, x, y in zip(rows, xs, ys):
        ax.annotate(f"#{r['rank']} {r['candidate']}", (x, y), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    tau = (result.get("validation") or {}).get("kendall_tau")
    strategy = (result.get("validation") or {}).get("strategy", "")
    ax.set_xlabel(f"{metric} (before training)")
    ax.set_ylabel(f"test accuracy after {strategy}")
    ax.set_title(f"zoo rank: {metric} vs accuracy reached"
                 + (f" (Kendall τ = {tau:.2f})" if tau is not None else ""))
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
