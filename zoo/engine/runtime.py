"""Where a run executes: device, precision, grad scaling, channels_last and DDP, in one object.

Modelled on Lightning Fabric's ``setup`` / ``backward`` / ``all_reduce``: :func:`zoo.engine.loop.fit`
asks the :class:`Runtime` to move a batch, open the autocast context, step the optimizer and
agree across ranks, so the loop itself reads as the transfer loop and nothing else.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from zoo.engine import distributed
from zoo.errors import ConfigError


def pick_device(name: str, flag: str = "device") -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU; a named device that is absent is a ConfigError
    (``flag`` names the setting in the message: ``device`` in a job, ``--device`` on eval)."""
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{flag} {name}: CUDA is not available here — use --device cpu "
                          "or auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"{flag} {name}: there are {torch.cuda.device_count()} CUDA "
                          "devices — use cuda:0 or cpu")
    if name == "mps" and not mps:
        raise ConfigError(f"{flag} mps: MPS is not available here — use --device cpu")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (fp32: none)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Runtime:
    """Device, precision, grad scaling and channels_last of one run; DDP through
    :mod:`zoo.engine.distributed` (a no-op in one process)."""

    def __init__(self, device: torch.device, precision: str = "fp32",
                 channels_last: bool = False, grad_clip: float | None = None):
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.grad_clip = grad_clip
        # fp16 needs loss scaling on CUDA; bf16 and fp32 do not
        self.scaler = (torch.amp.GradScaler("cuda")
                       if precision == "fp16" and device.type == "cuda" else None)

    @classmethod
    def for_job(cls, job, device: torch.device) -> "Runtime":
        t = job.train
        return cls(device, t.precision, t.channels_last, t.grad_clip)

    # -- setup -------------------------------------------------------------------------------
    def setup_model(self, model: nn.Module, job, warnings: list, log) -> nn.Module:
        """Model on the device, SyncBatchNorm under torchrun if asked, channels_last."""
        model.to(self.device)
        model = distributed.prepare_model(model, job, self.device, warnings, log)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def wrap_phase(self, model, phase, cached: bool, with_features: bool):
        """Under torchrun: the phase's trainable part in DDP (rebuilt every phase); else None."""
        return distributed.wrap_phase(model, phase, cached, with_features)

    # -- per step ------------------------------------------------------------------------------
    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.to(memory_format=torch.channels_last)
        return x

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.device, non_blocking=True)

    def autocast(self):
        return autocast_for(self.device, self.precision)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``backward``, optional gradient clipping, ``step`` (with loss scaling for fp16),
        then the gradients freed.

        Freed right after the step, as timm's ``train.py`` and Lightning do, not before the
        next backward: otherwise the last step's gradients (one copy of the trainable
        weights) stay alive through the next forward, at the step's peak (measured in
        docs/benchmarks.md). Also cleared before the backward, so that gradients other code
        left on the model (a third-party loss term, a tool's own loop) are never accumulated."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(_params(optimizer), self.grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(_params(optimizer), self.grad_clip)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # -- across ranks --------------------------------------------------------------------------
    def all_reduce_sums(self, *values: float) -> list[float]:
        return distributed.all_reduce_sums(*values)

    def any_rank(self, flag: bool) -> bool:
        return distributed.any_rank(flag)

    def end_epoch(self, model: nn.Module, epoch: int) -> None:
        """Rank 0's BatchNorm statistics everywhere, then check the replicas agree."""
        distributed.sync_buffers(model)
        distributed.check_in_sync(model, f"after epoch {epoch}")

    @property
    def rank(self) -> int:
        return distributed.rank()


def _params(optimizer) -> list:
    return [p for g in optimizer.param_groups for p in g["params"]]


def compile_backbone(model, dataset, device, warnings: list, log) -> bool:
    """``torch.compile`` the backbone in place (state-dict keys unchanged); on any failure
    fall back to eager mode with a warning instead of failing the run."""
    body = model.backbone.body
    try:
        body.compile()
        sample = dataset[0][0].unsqueeze(0).to(device)
        with torch.no_grad():
            body.eval()
            body(sample)
        return True
    except Exception as exc:  # compilers missing, unsupported ops, old torch
        body._compiled_call_impl = None
        message = (f"torch.compile failed ({type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); running eagerly")
        warnings.append(message)
        log(message, style="yellow")
        return False
