"""Multi-process training on ``torch.distributed``: what a run does differently under torchrun.

zoo never starts worker processes itself: ``torchrun`` (or ``zoo run --nproc N``, which
re-launches the same command under torchrun) starts one process per device and sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``.  Every rank runs the
same job; the pieces here are the only places where ranks differ or talk to each other
(docs/distributed.md):

- :func:`session` initialises the process group (NCCL on CUDA, gloo on CPU) with a timeout
  of ``ZOO_DIST_TIMEOUT`` seconds (default 300) and destroys it afterwards;
- :func:`sampler` shards a dataset: shuffled (training) loaders pad so every rank takes the
  same number of steps and draw their permutation from the loader's generator, which the loop
  reseeds each epoch; unshuffled (evaluation) loaders split without padding so every sample
  counts exactly once;
- :func:`wrap_phase` wraps what trains in a phase in ``DistributedDataParallel`` (the head
  alone when the backbone is frozen) and is called again for every phase;
- :func:`all_reduce_sums`, :func:`any_rank`, :func:`sync_buffers`, :func:`gather_rows`,
  :func:`broadcast_object` are the collectives the loop, the feature cache and the runner use.

Outside torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op.

Size: over 400 lines on purpose — every place where ranks differ or talk to each other is in
this one module, so distributed behaviour can be audited (and reviewed for deadlocks) in
one file.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import re
import signal
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from zoo import settings
from zoo.errors import ConfigError, TrainingError, ZooError

TIMEOUT_ENV = "ZOO_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
FIND_UNUSED_ENV = "ZOO_DDP_FIND_UNUSED"

_live: list = []  # the DDP wrapper of the phase in progress (unhooked when the next is built)


# -- where am I ----------------------------------------------------------------------------
def launched() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    return settings.integer("WORLD_SIZE", 1) > 1


def env_rank() -> int:
    """This process's rank from the environment (0 outside torchrun); needs no process group."""
    return settings.integer("RANK", 0)


def active() -> bool:
    """True while a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, which writes the run folder, logs and progress bars (or a single process)."""
    return rank() == 0


def timeout_seconds() -> float:
    return settings.seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)


def local_device(device: torch.device) -> torch.device:
    """Under torchrun a CUDA device means ``cuda:LOCAL_RANK`` (one GPU per rank)."""
    if device.type != "cuda" or not launched():
        return device
    index = settings.integer("LOCAL_RANK", 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {index} but this node has {torch.cuda.device_count()} "
                          "CUDA device(s): start at most one process per GPU "
                          "(--nproc-per-node)")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextlib.contextmanager
def session(device: torch.device):
    """Run the body inside a process group when launched by torchrun; yield the rank's device.

    Re-entrant: inside an existing process group (several runs in one torchrun job) it
    neither initialises nor destroys anything.  A :class:`~zoo.errors.ZooError` raised on
    one rank gets a ``rank R of W:`` prefix so the user sees which rank said what.
    """
    if not launched() or dist.is_initialized():
        yield local_device(device)
        return
    device = local_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()), **kwargs)
    try:
        yield device
    except ZooError as exc:
        exc.args = (f"rank {dist.get_rank()} of {dist.get_world_size()}: {exc}",)
        raise
    finally:
        close()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


# -- data ----------------------------------------------------------------------------------
class ShardSampler(torch.utils.data.DistributedSampler):
    """This rank's share of a dataset.

    Shuffled: the permutation comes from ``generator`` (the DataLoader's own generator, which
    :func:`zoo.engine.loop._seed_epoch` reseeds every epoch, exactly as it does for a single
    process's ``RandomSampler``), padded by repeating its first indices to a multiple of the
    world size; rank ``r`` takes ``perm[r::W]``.  With a per-rank batch of ``B / W`` the ranks'
    k-th batches together are the single-process k-th batch of size ``B`` (padding aside).
    Without a generator it falls back to ``DistributedSampler``'s ``seed + epoch``.

    Not shuffled (evaluation): ``range(n)[r::W]`` with no padding — no sample counts twice.
    """

    def __init__(self, dataset, shuffle: bool, generator=None, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None):
        here = (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)
        super().__init__(dataset, num_replicas=num_replicas or here[1],
                         rank=here[0] if rank is None else rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.generator = generator
        self.pad = shuffle
        if not self.pad:
            n = len(dataset)
            self.total_size = n
            self.num_samples = len(range(self.rank, n, self.num_replicas))

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            gen = self.generator
            if gen is None:
                gen = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=gen).tolist()
        else:
            indices = list(range(n))
        if self.pad and n and len(indices) < self.total_size:
            extra = self.total_size - n
            indices += (indices * math.ceil(extra / n))[:extra]
        yield from indices[self.rank:self.total_size:self.num_replicas]


def sampler(dataset, shuffle: bool, generator=None):
    """A :class:`ShardSampler` under an active process group, else ``None``."""
    return ShardSampler(dataset, shuffle, generator) if active() else None


def worker_init(worker_id: int) -> None:
    """DataLoader workers of different ranks draw different augmentations."""
    offset = 1_000_003 * env_rank()
    seed = torch.initial_seed() + offset
    torch.manual_seed(seed)
    random.seed(seed)


# -- collectives ---------------------------------------------------------------------------
def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(*values: float) -> list[float]:
    """Sums over ranks of ``values``, each keeping its type (as given outside a group)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return [type(v)(r) for v, r in zip(values, t.tolist())]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a non-finite loss: all skip)."""
    if not active():
        return flag
    t = torch.tensor([int(bool(flag))], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. the run folder rank 0 created)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_max_(x: torch.Tensor) -> torch.Tensor:
    """``x`` (a CPU tensor, e.g. a dataset's unreadable-file flags) maxed over ranks, in place."""
    if active():
        moved = x.to(_comm_device())
        dist.all_reduce(moved, op=dist.ReduceOp.MAX)
        x.copy_(moved.to(x.device))
    return x


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank.

    DDP broadcasts buffers at the start of each forward, so after an epoch's last step each
    rank still holds its own update; this makes validation, the best-epoch copy and the
    saved model the same on every rank.
    """
    if not active():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


@torch.no_grad()
def check_in_sync(module: nn.Module, where: str) -> None:
    """Fail loudly if the ranks' parameters differ (a desynchronised DDP would go unnoticed)."""
    if not active():
        return
    total = torch.zeros((), dtype=torch.float64, device=_comm_device())
    for p in module.parameters():
        total += p.detach().double().sum().to(total.device)
    both = torch.stack([total, -total])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    high, low = both[0].item(), -both[1].item()
    if abs(high - low) > 1e-6 * max(1.0, abs(high)):
        raise TrainingError(f"ranks disagree on the model's parameters {where} (sums {low:.6g}"
                            f" .. {high:.6g}) — a zoo bug; please report it with the job.yaml")


def gather_rows(x: torch.Tensor, n_total: int) -> torch.Tensor:
    """Every rank's rows of an unpadded :class:`ShardSampler` shard, back in dataset order.

    Rank ``r`` holds the rows of indices ``r, r+W, r+2W, ...``; the result (on every rank,
    on ``x``'s device) holds all ``n_total`` rows, row ``i`` being sample ``i``.
    """
    if not active():
        return x
    w = world_size()
    per = math.ceil(n_total / w)
    dev = _comm_device()
    padded = torch.zeros((per, *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[:len(x)] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    out = torch.empty((n_total, *x.shape[1:]), dtype=x.dtype, device=x.device)
    for r, part in enumerate(parts):
        n_r = len(range(r, n_total, w))
        out[r::w] = part[:n_r].to(x.device)
    return out


# -- the model -----------------------------------------------------------------------------
def prepare_model(model: nn.Module, job, device: torch.device, warnings: list,
                  log=print) -> nn.Module:
    """``train.sync_bn``: BatchNorm → SyncBatchNorm (statistics over the global batch).

    Parameter objects and state-dict keys stay the same, so plans, optimizers, checkpoints
    and the saved model are unaffected.  A no-op in a single process.
    """
    if not getattr(job.train, "sync_bn", False) or not active():
        return model
    if device.type != "cuda":
        message = ("train.sync_bn ignored: SyncBatchNorm needs CUDA (NCCL); each CPU rank "
                   "normalises with its own batch statistics")
        warnings.append(message)
        log(message, style="yellow")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class _PhaseModule(nn.Module):
    """What trains in one phase, as one module for DDP: ``inputs -> (features|None, logits)``.

    ``part`` is ``full`` (backbone + head), ``frozen`` (backbone run without gradients, head
    wrapped) or ``head`` (inputs are cached features).  Loss terms with parameters of their
    own (the joint strategy's source head) are registered too, so DDP averages their
    gradients although they are used outside this forward.
    """

    def __init__(self, model, part: str, with_features: bool, terms):
        super().__init__()
        self.part, self.with_features = part, with_features
        if part == "full":
            self.model = model
        else:
            self.head = model.head
            self.__dict__["_backbone"] = model.backbone  # frozen: not DDP's business
        self.terms = nn.ModuleList([t for t in terms
                                    if any(p.requires_grad for p in t.parameters())])

    def forward(self, x):
        if self.part == "head":
            return None, self.head(x)
        if self.part == "frozen":
            with torch.no_grad():
                features = self._backbone(x)
            logits = self.head(features)
        else:
            features = self.model.backbone(x)
            logits = self.model.head(features)
        return (features if self.with_features else None), logits


def wrap_phase(model, phase, cached: bool, with_features: bool):
    """The DDP-wrapped trainable part of ``phase`` (``None`` outside a process group).

    Called once per phase: a phase that changes which parameters train (lp-ft,
    gradual-unfreeze) gets a fresh DDP whose buckets hold exactly its trainable parameters;
    the previous wrapper's autograd hooks are removed first.  ``find_unused_parameters`` is
    off unless the phase asks for it (attribute ``find_unused_parameters``) or
    ``ZOO_DDP_FIND_UNUSED=1``: frozen parameters are simply not registered with DDP.
    """
    if not active():
        return None
    close()
    part = "head" if cached else ("frozen" if phase.backbone_frozen() else "full")
    module = _PhaseModule(model, part, with_features, phase.loss_terms)
    if not any(p.requires_grad for p in module.parameters()):
        return module  # nothing to average (a phase of parameter-free loss terms)
    device = next(model.parameters()).device
    find_unused = (bool(getattr(phase, "find_unused_parameters", False))
                   or settings.flag(FIND_UNUSED_ENV))
    ddp = nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused)
    _live.append(ddp)
    return ddp


def close() -> None:
    """Unhook the DDP wrapper of the previous phase (its reducer's autograd hooks)."""
    while _live:
        ddp = _live.pop()
        remove = getattr(ddp, "_remove_autograd_hooks", None)
        if remove is not None:
            remove()


# -- failures ------------------------------------------------------------------------------
_PEER_HINTS = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout",
               "nccl", "gloo", "socket", "peer")


@contextlib.contextmanager
def peer_errors():
    """Turn a collective that failed because another rank died or stalled into a clear error."""
    try:
        yield
    except RuntimeError as exc:
        if not active():
            raise
        text = str(exc)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        first = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", first)  # C++ source tag
        first = first if len(first) <= 160 else first[:157] + "..."
        lowered = text.lower()
        if "find_unused_parameters" in lowered or "finished reduction" in lowered:
            raise TrainingError("some trainable parameters got no gradient "
                                f"under DistributedDataParallel ({first}); set "
                                f"{FIND_UNUSED_ENV}=1 to let DDP look for them") from exc
        dist_errors = tuple(getattr(dist, n) for n in ("DistError", "DistBackendError",
                                                       "DistNetworkError") if hasattr(dist, n))
        if isinstance(exc, dist_errors) or any(h in lowered for h in _PEER_HINTS):
            raise TrainingError(
                f"lost contact with the other ranks ({first}) — another rank "
                f"crashed, was killed or stalled longer than {timeout_seconds():g} s "
                f"({TIMEOUT_ENV}); its own error, if any, is printed above") from exc
        raise


def crash_now() -> None:
    """Test-only fault (``ZOO_FAULT=crash_rank:R``): die like an OOM kill, no clean-up."""
    sig = getattr(signal, "SIGKILL", None)
    if sig is not None:
        os.kill(os.getpid(), sig)
    os._exit(137)


# -- launching -----------------------------------------------------------------------------
def torchrun_command(nproc: int, zoo_args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m zoo ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "zoo", *zoo_args]


def launch(nproc: int, zoo_args: list[str]) -> int:
    """Run ``zoo ARGS`` on ``nproc`` local processes under torchrun; its exit status.

    Ctrl-C reaches torchrun and its workers directly (same process group); SIGTERM to this
    process is passed on, so a scheduler stopping the launcher stops the ranks too.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # torchrun through zoo.engine.launcher: a failing rank is its own one line, no
    # ChildFailedError traceback from the launcher on top
    cmd = torchrun_command(nproc, zoo_args)
    cmd[1:3] = ["-m", "zoo.engine.launcher"]
    proc = subprocess.Popen(cmd, env=env)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the ranks got the same SIGINT: let them save and exit
            try:
                return proc.wait(timeout=60)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):
                proc.terminate()
                return proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
