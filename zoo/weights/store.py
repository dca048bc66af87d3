"""zoo's weight store: ``$ZOO_HOME/weights`` (default ``~/.cache/zoo/weights``).

Layout (``docs/weights.md``)::

    $ZOO_HOME/weights/
      manifest.json                          every stored file: model, tag, sha256, size, ...
      .lock                                  fcntl.flock'ed by every writer
      timm__resnet18/weights.safetensors     provider:arch  → provider__arch
      timm__resnet18.a1_in1k/weights.safetensors   with a tag

Every file holds the backbone's tensors in the *provider's original naming* (what
``Backbone.source_state_dict()`` returns: ``conv1.weight``, ``fc.weight``, ...), so the
store is a plain cache of source weights, readable by anything that reads safetensors.

Concurrency: writers take an exclusive ``flock`` on ``.lock`` for the whole
read-modify-write of a file plus the manifest, and every file is written to a temp file and
renamed into place (:mod:`zoo.io.atomic`), so two ``zoo weights pull`` running at once never
leave a half-written file or lose each other's manifest entries.  Readers take no lock:
they only ever see complete files.

Containment: tags and model names are validated (:func:`check_name`: no ``..``, no ``/``),
and every path the store reads, writes or deletes goes through :func:`inside`, which
resolves it and refuses anything outside the store root.  ``manifest.json`` is data, never
trusted to name a path: an entry whose ``file`` is not the file its key maps to is refused.

:class:`WeightStore` is the object the resolver and plugins see; the ``zoo weights``
operations that also need providers (``pull``, ``import``) are :mod:`zoo.weights.manage`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from zoo.io import atomic
from zoo.io.regular import not_regular
from zoo.io.yamlio import read_bounded
from zoo.errors import ConfigError, WeightsError
from zoo.weights.formats import ResolvedWeights, read_safetensors, sha256_file, zoo_home

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20  # thousands of entries are a few MB
LOCK = ".lock"
SCHEMA = 1
FILE_NAME = "weights.safetensors"


_PART = re.compile(r"[A-Za-z0-9][\w.+\-]{0,199}")


def check_name(model: str, tag: str | None) -> None:
    """Refuse a tag or model that could name a path outside the store: ``--tag ../x``, ``/``
    in a tag, ``..``, NUL, leading dots, control characters.  Model names may hold ``/``
    (hub-style names): :func:`folder_name` maps it, so only the folder name is checked."""
    if tag is not None and (not isinstance(tag, str) or not _PART.fullmatch(tag)
                            or ".." in tag):
        raise WeightsError(f"tag name {tag!r} cannot name a weight store entry: use letters, "
                           "digits and _ . + - (no '/', no '..', not starting with a dot)")
    folder = folder_name(model, tag) if isinstance(model, str) else ""
    if (not folder or folder.startswith(".") or "\\" in folder or ".." in folder
            or any(ord(c) < 32 for c in folder)):
        raise WeightsError(f"model name {model!r} cannot name a weight store entry (no '..', "
                           "no control characters, not starting with a dot)")


def inside(root: Path, rel: str | Path) -> Path:
    """``root / rel`` when it lies inside ``root`` once resolved (``..`` and symlinks
    followed); a :class:`WeightsError` otherwise."""
    base = Path(root).resolve()
    path = (base / rel).resolve()
    if path == base or not path.is_relative_to(base):
        raise WeightsError(f"refusing {str(rel)!r}: it is outside the weight store {base} (a "
                           "hand-edited manifest.json, a symlink or a bad tag?)")
    return Path(root) / rel


def entry_file(root: Path, key: str, e: dict) -> Path:
    """The stored file of manifest entry ``e``: inside the store, and the file its model and
    tag map to — a manifest naming any other path is refused, never followed."""
    model, tag = e.get("model"), e.get("tag")
    if not isinstance(model, str) or not (tag is None or isinstance(tag, str)):
        raise WeightsError(f"manifest.json entry {key!r} is damaged (model/tag) — delete "
                           f"{Path(root) / MANIFEST} and pull/import again")
    check_name(model, tag)
    expected = f"{folder_name(model, tag)}/{FILE_NAME}"
    if e.get("file") != expected:
        raise WeightsError(f"manifest.json entry {key!r} names the file {e.get('file')!r}, not "
                           f"{expected!r}: refusing to touch it (the manifest was edited) — "
                           f"fix or delete {Path(root) / MANIFEST}")
    return inside(root, expected)


def entry_key(model: str, tag: str | None) -> str:
    """The manifest key of ``model`` (``provider:arch``) with ``tag``."""
    return f"{model}.{tag}" if tag else model


def folder_name(model: str, tag: str | None) -> str:
    safe = model.replace(":", "__").replace("/", "_")
    return f"{safe}.{tag}" if tag else safe


# -- locking and the manifest --------------------------------------------------------------
@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Exclusive lock on ``root/.lock`` (POSIX ``flock``): a second writer is told it waits,
    then blocks until the first is done, so two writes of one entry never interleave."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(root / LOCK, "a+")
    except OSError as exc:  # a read-only $ZOO_HOME: one line, not a traceback
        raise WeightsError(f"cannot write the weight store {root}: {atomic.why(exc)}"
                           ) from None
    try:
        import fcntl  # lazy: optional dependency (fcntl)
    except ImportError:  # pragma: no cover - non-POSIX: temp+rename still keeps files whole
        fh.close()
        yield
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # another zoo process is writing the store: say so, then wait our turn (its
            # write is short; the entry it writes is whole when we read it)
            print(f"waiting for another zoo process writing the weight store {root} ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_manifest(root: Path) -> dict:
    """``{"schema": 1, "weights": {key: entry}}``; an absent manifest is an empty one."""
    path = root / MANIFEST
    problem = not_regular(path)
    if problem == "does not exist":
        return {"schema": SCHEMA, "weights": {}}
    if problem is not None:  # a FIFO would hang the read
        raise WeightsError(f"the weight store manifest {path} {problem} — delete it and "
                           "`zoo weights pull`/`import` again")
    try:
        text = read_bounded(path, MAX_MANIFEST_BYTES, "weight store manifest").decode("utf-8")
    except (ConfigError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read the weight store manifest {path}: "
                           f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
            raise ValueError("no 'weights' mapping")
        if not all(isinstance(e, dict) for e in data["weights"].values()):
            raise ValueError("an entry is not a mapping")
    except (ValueError, RecursionError) as exc:
        raise WeightsError(f"the weight store manifest {path} is unreadable ({exc}) — delete "
                           "it and `zoo weights pull`/`import` again") from None
    return data


def write_manifest(root: Path, manifest: dict) -> None:
    manifest = {"schema": SCHEMA, "weights": dict(sorted(manifest["weights"].items()))}
    atomic.write_json(root / MANIFEST, manifest)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# -- operations on a store root --------------------------------------------------------------
def put(root: Path, model: str, tag: str | None, tensors: dict, source: str,
        metadata: dict | None = None, extra: dict | None = None) -> dict:
    """Store ``tensors`` for ``model``/``tag`` (replacing any previous file); return its entry."""
    from safetensors.torch import save  # lazy: safetensors

    clean, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.data_ptr() in seen and v.numel():  # tied weights: safetensors wants copies
            v = v.clone()
        seen.add(v.data_ptr())
        clean[k] = v
    meta = {"zoo_store": json.dumps({"model": model, "tag": tag, "source": source})}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, default=atomic._jsonable)
    check_name(model, tag)
    data = save(clean, metadata=meta)
    rel = f"{folder_name(model, tag)}/{FILE_NAME}"
    target = inside(root, rel)
    entry = {"model": model, "tag": tag, "file": rel,
             "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
             "tensors": len(clean), "source": source, "created": now(), **(extra or {})}
    with locked(root):
        manifest = read_manifest(root)
        atomic.write_bytes(target, data)
        manifest["weights"][entry_key(model, tag)] = entry
        write_manifest(root, manifest)
    return entry


def entries(root: Path) -> list[dict]:
    return [dict(e, key=k) for k, e in sorted(read_manifest(root)["weights"].items())]


def entry(root: Path, model: str, tag: str | None) -> dict | None:
    found = read_manifest(root)["weights"].get(entry_key(model, tag))
    return dict(found, key=entry_key(model, tag)) if found else None


def remove(root: Path, model: str, tag: str | None) -> dict:
    """Delete the file and the manifest entry of ``model``/``tag``; return the entry."""
    key = entry_key(model, tag)
    check_name(model, tag)
    with locked(root):
        manifest = read_manifest(root)
        found = manifest["weights"].get(key)
        path = (entry_file(root, key, found) if isinstance(found, dict) else
                inside(root, f"{folder_name(model, tag)}/{FILE_NAME}"))
        manifest["weights"].pop(key, None)
        if found is None and not path.is_file():
            raise WeightsError(f"{key} is not in the weight store ({root}) — `zoo weights "
                               "list` shows what is")
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and not path.is_symlink():
                path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        write_manifest(root, manifest)
    return found or {"model": model, "tag": tag, "file": str(path.relative_to(root))}


def verify(root: Path) -> list[dict]:
    """Re-hash every stored file against the manifest.

    One row per manifest entry (``status``: ``ok``, ``missing``, ``size mismatch``,
    ``sha256 mismatch``) plus one per ``weights.safetensors`` the manifest does not know
    (``untracked``).
    """

    manifest = read_manifest(root)
    rows = []
    known = set()
    for key, e in sorted(manifest["weights"].items()):
        row = {"key": key, "model": e.get("model") if isinstance(e, dict) else None,
               "tag": e.get("tag") if isinstance(e, dict) else None,
               "file": str(e.get("file")) if isinstance(e, dict) else None,
               "expected_sha256": e.get("sha256") if isinstance(e, dict) else None}
        try:
            path = entry_file(root, key, e if isinstance(e, dict) else {})
        except WeightsError as exc:  # never hash (read) a file the manifest points outside
            row.update(status="bad entry", sha256=None, problem=str(exc))
            rows.append(row)
            continue
        known.add(path.resolve())
        row["file"] = str(path)
        if not path.is_file():
            row.update(status="missing", sha256=None)
        elif path.stat().st_size != e.get("size"):
            row.update(status="size mismatch", sha256=sha256_file(path),
                       size=path.stat().st_size, expected_size=e.get("size"))
        else:
            digest = sha256_file(path)
            row.update(status="ok" if digest == e.get("sha256") else "sha256 mismatch",
                       sha256=digest)
        rows.append(row)
    if root.is_dir():
        for path in sorted(root.glob(f"*/{FILE_NAME}")):
            if path.resolve() not in known:
                rows.append({"key": path.parent.name, "model": None, "tag": None,
                             "file": str(path), "status": "untracked",
                             "sha256": sha256_file(path), "expected_sha256": None})
    return rows


class WeightStore:
    """zoo's own weight store: ``$ZOO_HOME/weights`` (the layout, manifest and lock
    above; ``zoo weights`` manages it through :mod:`zoo.weights.manage`).

    ``model`` is ``provider:arch`` throughout; ``tag`` the provider's weights tag or None.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else zoo_home() / "weights"

    def path_for(self, model: str, tag: str | None = None) -> Path:
        check_name(model, tag)
        return inside(self.root, f"{folder_name(model, tag)}/{FILE_NAME}")

    def get(self, model: str, tag: str | None = None) -> ResolvedWeights | None:
        """The stored weights (checked against the manifest's sha256), or None."""
        path = self.path_for(model, tag)
        if not path.is_file():
            return None
        digest = sha256_file(path)
        entry = self.entry(model, tag)
        if entry and entry.get("sha256") and entry["sha256"] != digest:
            key = entry_key(model, tag)
            raise WeightsError(f"stored weights {path} do not match their sha256 in the "
                               f"manifest (corrupt file) — `zoo weights rm {key}` then `zoo "
                               f"weights pull {key}` (or import them again)")
        tensors, meta = read_safetensors(path)
        info = dict(meta)
        if entry:
            info["store_entry"] = entry
        return ResolvedWeights("store", tensors, digest, str(path), tag, info)

    # -- management (zoo.weights.store does the work: lock + manifest + atomic files) -------------
    def put(self, model: str, tag: str | None, tensors: dict, source: str,
            metadata: dict | None = None, extra: dict | None = None) -> dict:
        """Store ``tensors`` (source naming) for ``model``/``tag``; return the manifest entry."""
        return put(self.root, model, tag, tensors, source, metadata, extra)

    def entry(self, model: str, tag: str | None = None) -> dict | None:
        return entry(self.root, model, tag)

    def entries(self) -> list[dict]:
        return entries(self.root)

    def remove(self, model: str, tag: str | None = None) -> dict:
        return remove(self.root, model, tag)

    def verify(self) -> list[dict]:
        return verify(self.root)
