"""Weight files: where zoo keeps them, reading safetensors and foreign ``.pth`` safely, and
the :class:`ResolvedWeights` record that every source of weights returns.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from pickle import UnpicklingError

from zoo import settings
from zoo.errors import CheckpointError, WeightsError
from zoo.io.regular import not_regular


def zoo_home() -> Path:
    return settings.zoo_home()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ResolvedWeights:
    """Weights found for a backbone: a state dict in the provider's original naming."""

    source: str                         # "file:PATH" | "store" | "plugin:NAME" | "hub:PROVIDER"
    state: dict | None = None           # tensors (None when the provider loaded them itself)
    sha256: str | None = None
    path: str | None = None
    tag: str | None = None
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "tag": self.tag}


def read_safetensors(path: str | Path) -> tuple[dict, dict]:
    """``(tensors, metadata)`` of a ``.safetensors`` file; malformed files → one-line error."""
    from safetensors import SafetensorError  # lazy: safetensors
    from safetensors.torch import load_file  # lazy: safetensors

    path = Path(path)
    problem = not_regular(path)
    if problem is not None:  # a FIFO would block the open
        raise CheckpointError(f"{path} {problem} — give the path of a .safetensors file")
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            size = path.stat().st_size
            if header_len <= 0 or header_len > size - 8:
                raise CheckpointError(f"{path} is not a valid .safetensors file (header "
                                      "length out of range) — re-download or re-export it")
            header = json.loads(fh.read(header_len))
        if not isinstance(header, dict):
            raise CheckpointError(f"{path} is not a valid .safetensors file (its header is "
                                  f"a JSON {type(header).__name__}, not an object) — "
                                  "re-download or re-export it")
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path} is not a valid .safetensors file (its "
                                  "__metadata__ is not an object) — re-download or "
                                  "re-export it")
        tensors = load_file(str(path))
    except CheckpointError:
        raise
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid .safetensors file ({exc}) — "
                              "re-download or re-export it") from None
    return tensors, meta


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """Tensors + metadata of a ``.safetensors`` or foreign ``.pth``/``.pt`` file (no pickle code)."""
    path = Path(path)
    problem = not_regular(path)
    if problem is not None:
        raise WeightsError(f"weights file {path} {problem}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_torch_file(path), {}


def read_torch_file(path: Path) -> dict:
    # only the exception class: torch.load(weights_only=True) raises it for a pickle that
    # would need arbitrary code; nothing here unpickles with the plain pickle module

    import torch  # lazy: torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnpicklingError as exc:
        raise WeightsError(f"{path} needs arbitrary code to unpickle and was refused "
                           f"({str(exc).splitlines()[0][:120]}) — ask its author for a "
                           ".safetensors file, or a plain state dict") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise WeightsError(f"{path} could not be read as a PyTorch checkpoint: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
