"""``zoo push RUN REPO_ID``: upload a run's ``--format hf`` folder to the Hugging Face Hub.

The folder is ``RUN/export/hf`` (exported first when it is not there yet); the upload is
huggingface_hub's own ``create_repo`` + ``upload_folder`` against ``HF_ENDPOINT`` (default
https://huggingface.co), with the token huggingface_hub finds (``HF_TOKEN``, ``hf auth
login``) unless one is given.  Offline, or with the endpoint unreachable, it is one line
before anything is sent.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from zoo import settings
from zoo.errors import MissingDependencyError, ZooError, one_line
from zoo.io import runfolder
from zoo.runs.export import default_path, export_run
from zoo.weights.network import offline_reason, url_reachable

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False,
             token: str | None = None, message: str | None = None,
             endpoint: str | None = None) -> dict:
    """Upload ``run_dir``'s hf export to ``repo_id``; return what was pushed where."""
    run_dir = runfolder.require_run_dir(run_dir)
    if not REPO_ID.match(str(repo_id)):
        raise ZooError(f"'{repo_id}' is not a Hub repo id — use ORG/NAME (e.g. "
                       "your-name/resnet50-flowers)")
    try:
        from huggingface_hub import HfApi  # lazy: optional (the hf extra)
    except ImportError:
        raise MissingDependencyError("zoo push needs huggingface_hub: pip install "
                                     "'zoo[hf]'") from None
    endpoint = (endpoint or settings.text("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    reason = offline_reason()
    if reason or not url_reachable(endpoint):
        why = f"{reason} is set" if reason else f"{endpoint} is unreachable"
        raise ZooError(f"cannot push to {endpoint}: {why} — run `zoo push {run_dir} {repo_id}`"
                       " where there is network (`zoo export --format hf` writes the folder "
                       "offline)")
    folder = default_path(run_dir, "hf")
    exported = not (folder / "config.json").is_file()
    if exported:
        export_run(run_dir, "hf")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                   commit_message=message or f"zoo push {run_dir.name}")
    except Exception as exc:  # HTTP (auth, permissions, not found) or network errors
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = (" — set HF_TOKEN or run `hf auth login` with a token that can write there"
                if status in (401, 403) else "")
        raise ZooError(f"could not push to {repo_id} on {endpoint}: {one_line(exc)}"
                       f"{hint}") from None
    return {"repo_id": repo_id, "url": str(getattr(repo, "url", "") or ""),
            "commit": getattr(commit, "oid", None), "endpoint": endpoint,
            "folder": str(folder), "exported": exported, "files": files}
