"""``--weights hf-hub:ORG/NAME`` and ``--weights local-dir:PATH`` (timm's forms).

``local-dir:PATH`` is a model folder on disk: timm's / transformers' Hub layout, open_clip's,
or what ``zoo export RUN --format hf`` wrote.  ``hf-hub:ORG/NAME[@REVISION]`` is the same folder
on the Hugging Face Hub, taken from the local HF cache when it is there (offline too: the
cache is asked with ``local_files_only``), else downloaded with ``huggingface_hub`` when the
hub is reachable, else one line saying what to do.  The cache is the one ``HF_HUB_CACHE`` /
``HF_HOME`` name *now* (read per call, not at import as huggingface_hub does).

The folder's weights then load like a file's (:func:`zoo.weights.local.load_local_weights`):
its classifier becomes the backbone's source classifier, its ``pretrained_cfg`` the
preprocessing, so an exported run is the source of the next (A → B → C).
"""
from __future__ import annotations

import os
from pathlib import Path

from zoo import settings
from zoo.errors import MissingDependencyError, WeightsError, one_line
from zoo.weights.network import offline_reason, url_reachable

PREFIXES = ("hf-hub:", "local-dir:")
#: what a snapshot download fetches: configs and weights, no READMEs/plots/other formats
ALLOW = ["*.json", "*.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]


def is_hub_source(arg: str) -> bool:
    return str(arg).startswith(PREFIXES)


def hf_cache_dir() -> str:
    """The HF hub cache as the environment names it now."""
    if settings.text("HF_HUB_CACHE"):
        return settings.text("HF_HUB_CACHE")
    home = settings.text("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def source_folder(arg: str) -> Path:
    """The local folder ``arg`` (``local-dir:PATH`` or ``hf-hub:ORG/NAME``) stands for."""
    kind, _, rest = str(arg).partition(":")
    if not rest:
        raise WeightsError(f"--weights {arg} names nothing after '{kind}:' — e.g. "
                           f"{kind}:{'ORG/NAME' if kind == 'hf-hub' else 'PATH'}")
    if kind == "local-dir":
        folder = Path(os.path.expanduser(rest))
        if not folder.is_dir():
            raise WeightsError(f"--weights {arg}: {folder} is not a folder — pass a model "
                               "folder (e.g. from `zoo export RUN --format hf`)")
        return folder
    return snapshot(rest)


def snapshot(repo: str) -> Path:
    """The cached snapshot of Hub repo ``repo`` (``ORG/NAME[@REVISION]``), downloaded if need be."""
    try:
        from huggingface_hub import snapshot_download  # lazy: optional (the hf extra)
    except ImportError:
        raise MissingDependencyError("--weights hf-hub: needs huggingface_hub: pip install "
                                     "'zoo[hf]'") from None
    repo_id, _, revision = repo.partition("@")
    cache = hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache,
                                      local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a bad repo id: ask the hub
        pass
    endpoint = settings.text("HF_ENDPOINT") or "https://huggingface.co"
    reason = offline_reason()
    if reason or not url_reachable(endpoint):
        why = f"{reason} is set" if reason else f"{endpoint} is unreachable"
        raise WeightsError(f"hf-hub:{repo} is not in the local Hugging Face cache ({cache}) "
                           f"and {why} — where there is network run `hf download {repo_id}` "
                           "and bring that cache here (HF_HOME), or use --weights "
                           "local-dir:PATH")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache,
                                      allow_patterns=ALLOW))
    except Exception as exc:  # not found, gated, network: all mean "no weights"
        raise WeightsError(f"could not download hf-hub:{repo}: {one_line(exc)} — check the "
                           "repo id (and HF_TOKEN for a private repo)") from None


def offline_models(store, limit: int = 8) -> str:
    """The models that have weights here without network, as one phrase for an error line:
    zoo's store, then the Hub repos in the local HF cache (``timm/*`` as ``timm:NAME``,
    others as ``--weights hf-hub:ORG/NAME``)."""
    from zoo.weights.local import WEIGHT_FILES  # lazy: only an error message needs it

    names = []
    try:
        for e in store.entries():
            names.append(f"{e['model']}" + (f".{e['tag']}" if e.get("tag") else "")
                         + " (zoo store)")
    except Exception:  # an unreadable manifest: the message still names the rest
        pass
    try:
        from huggingface_hub import scan_cache_dir  # lazy: optional (the hf extra)

        for repo in sorted(scan_cache_dir(hf_cache_dir()).repos, key=lambda r: r.repo_id):
            files = {f.file_name for rev in repo.revisions for f in rev.files}
            if repo.repo_type != "model" or not files & set(WEIGHT_FILES):
                continue
            org, _, name = repo.repo_id.partition("/")
            names.append(f"timm:{name} (HF cache)" if org == "timm"
                         else f"--weights hf-hub:{repo.repo_id} (HF cache)")
    except Exception:  # no cache folder (CacheNotFound), or no huggingface_hub
        pass
    if not names:
        return "no model has weights here offline"
    more = f" and {len(names) - limit} more (`zoo weights list`)" if len(names) > limit else ""
    return "models with weights offline: " + ", ".join(names[:limit]) + more
