"""Export a finished run's model (``zoo export``).

Formats (the exported model maps normalised images ``(N, channels, S, S)`` — 3 for RGB, or
the run's ``data.channels`` — to logits ``(N, num_classes)``; ``S`` is the run's image size,
the batch dimension is dynamic):

- ``safetensors``: the model's tensors plus the same ``zoo`` metadata as the run's
  ``model.safetensors`` (so :func:`zoo.runs.reuse.load_run`-style code can rebuild it).
- ``onnx``: ``torch.onnx.export`` (the dynamo exporter; needs the ``export`` extra: onnx +
  onnxscript).
- ``torch-export``: a ``torch.export`` program saved with ``torch.export.save`` (``.pt2``);
  load it with ``torch.export.load(path).module()``.

Next to ``onnx`` and ``torch-export`` files a ``<name>.json`` sidecar records what a caller
needs to feed the model: classes, image size, channels, mean/std, interpolation.

- ``hf``: a folder (default ``RUN/export/hf/``) in the layout the provider's ecosystem loads
  and publishes on the Hugging Face Hub (timm's, torchvision's, open_clip's): see
  :mod:`zoo.runs.hf_export`.
"""
from __future__ import annotations

import json
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from zoo import faults
from zoo.io import atomic
from zoo.io.runfolder import check_out_dir
from zoo.errors import MissingDependencyError, ZooError
from zoo.runs.reuse import load_run

FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx", "torch-export": ".pt2", "hf": ""}


def default_path(run_dir: Path, fmt: str) -> Path:
    if fmt == "hf":
        return Path(run_dir) / "export" / "hf"
    return Path(run_dir) / "export" / f"model{FORMATS[fmt]}"


def preprocessing(run) -> dict:
    cfg = run.model.backbone.pretrained_cfg
    return {"model": run.meta.get("model"), "classes": run.classes,
            "image_size": run.image_size, "channels": cfg.channels, "mean": list(cfg.mean),
            "std": list(cfg.std), "interpolation": cfg.interpolation,
            "input": (f"float32 (N, {cfg.channels}, S, S), "
                      + ("RGB scaled to [0, 1]" if cfg.channels == 3 else
                         "8-bit data scaled to [0, 1], other arrays as stored")
                      + " then normalised with mean/std"),
            "output": "logits (N, num_classes)"}


def check_export_deps() -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"ONNX export needs {' and '.join(missing)}: "
                                     "pip install 'zoo[export]'")


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, catalog=None,
               run=None) -> dict:
    """Write the run's model in ``fmt``; return ``{"format", "path", "sidecar"?, "bytes"}``."""
    if fmt not in FORMATS:
        raise ZooError(f"unknown export format '{fmt}' (choose {', '.join(FORMATS)})")
    if fmt == "onnx":
        check_export_deps()  # before loading anything: fail fast
    run = run or load_run(run_dir, catalog, "cpu")
    path = Path(out) if out else default_path(run.dir, fmt)
    if fmt == "hf":
        return _export_folder(run, path)
    if path.is_dir():
        path = path / f"model{FORMATS[fmt]}"
    check_out_dir(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot create {path.parent}: {exc.strerror or exc} — pass --out a "
                       "writable place") from None
    if fmt == "safetensors":
        meta = {"zoo": dict(run.meta, exported_from=str(run.dir))}
        atomic.save_safetensors(path, run.model.state_dict(), meta)
        return {"format": fmt, "path": str(path), "bytes": path.stat().st_size}
    _export_in_child(run.dir, fmt, path)
    sidecar = path.with_suffix(".json")
    atomic.write_json(sidecar, preprocessing(run))
    return {"format": fmt, "path": str(path), "sidecar": str(sidecar),
            "bytes": path.stat().st_size}


def _export_folder(run, path: Path) -> dict:
    """``--format hf``: ``path`` is a folder (created; files in it replaced one by one)."""
    from zoo.runs.hf_export import export_hf  # lazy: timm/torchvision/open_clip

    if path.exists() and not path.is_dir():
        raise ZooError(f"--out {path} is a file; --format hf writes a folder — pass a folder")
    check_out_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot create {path}: {exc.strerror or exc} — pass --out a "
                       "writable place") from None
    return export_hf(run, path)


def _export_in_child(run_dir: Path, fmt: str, path: Path) -> None:
    """Run the ONNX / torch.export step in a child process.

    Both trace the model through torch.export, which can abort inside C++ (SIGABRT) where
    no ``except`` reaches; in a child such a crash is one line here, and the temp file the
    child wrote into is removed.
    """
    tmp = _tmp_next_to(path)
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo.runs.export", "--child", fmt,
                               str(run_dir), str(tmp)], capture_output=True, text=True)
        if proc.returncode == 0 and tmp.is_file() and tmp.stat().st_size:
            _publish(tmp, path)
            return
    except BaseException:
        _unlink(tmp)
        raise
    _unlink(tmp)
    what = "ONNX export" if fmt == "onnx" else "torch.export"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        raise ZooError(f"{what} crashed inside PyTorch ({name}); nothing was written — "
                       "this model cannot be exported in this format, try --format "
                       "safetensors") from None
    lines = [x.strip() for x in proc.stderr.splitlines() if x.strip()]
    last = lines[-1] if lines else f"exit code {proc.returncode}"
    raise ZooError(last[len("error: "):] if last.startswith("error: ") else
                   f"{what} failed: {last[:200]}") from None


def _child_main(argv: list[str]) -> int:
    """``python -m zoo.runs.export --child FMT RUN_DIR TMP``: export into TMP."""
    fmt, run_dir, tmp = argv

    try:
        run = load_run(run_dir, None, "cpu")
        faults.in_export()  # test-only: ZOO_FAULT=abort_in_export
        example = example_input(run)
        if fmt == "onnx":
            _export_onnx(run.model, example, Path(tmp))
        else:
            _export_program(run.model, example, Path(tmp))
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def example_input(run, batch: int = 2, seed: int = 0):
    import torch  # lazy: torch

    g = torch.Generator().manual_seed(seed)
    channels = run.model.backbone.pretrained_cfg.channels
    return torch.randn(batch, channels, run.image_size, run.image_size, generator=g)


def _tmp_next_to(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _export_onnx(model, example, path: Path) -> None:
    import torch  # lazy: torch

    tmp = _tmp_next_to(path)
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model.eval(), (example,), dynamo=True,
                                        input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), verbose=False)
        program.save(str(tmp))
        _publish(tmp, path)
    except Exception as exc:
        _unlink(tmp)
        if isinstance(exc, ZooError):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ZooError(f"ONNX export failed: {type(exc).__name__}: {first}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _export_program(model, example, path: Path) -> None:
    import torch  # lazy: torch

    tmp = _tmp_next_to(path)
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp))
        _publish(tmp, path)
    except Exception as exc:
        _unlink(tmp)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ZooError(f"torch.export failed: {type(exc).__name__}: {first}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _publish(tmp: Path, path: Path) -> None:
    """Give the temp file ordinary permissions (mkstemp makes it 0600), then rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def run_onnx(path: str | Path, inputs):
    """Outputs of an exported ONNX file on ``inputs`` (a float32 tensor or array).

    Uses onnxruntime when installed, else onnx's reference evaluator (slow, exact).
    """
    import numpy as np  # lazy: numpy

    x = np.asarray(inputs.numpy() if hasattr(inputs, "numpy") else inputs, dtype=np.float32)
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort  # lazy: onnxruntime

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    check_export_deps()
    import onnx  # lazy: onnx
    from onnx.reference import ReferenceEvaluator  # lazy: onnx

    model = onnx.load(str(path))
    ev = ReferenceEvaluator(model)
    return ev.run(None, {model.graph.input[0].name: x})[0]


def read_sidecar(path: str | Path) -> dict:
    """The ``.json`` sidecar written next to an ``onnx`` or ``torch-export`` file."""
    return json.loads(Path(path).with_suffix(".json").read_text())


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(_child_main(sys.argv[2:]))
