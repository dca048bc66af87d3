"""How many torch intra-op threads and DataLoader workers a run uses.

The rule, chosen by measurement (docs/benchmarks.md, "Threads and workers"):

- **The cores zoo may use** are the fewest of: ``os.cpu_count()``, the CPUs this process may
  run on (``os.sched_getaffinity``), the cgroup CPU quota (``/sys/fs/cgroup/cpu.max``, or
  cgroup v1's ``cpu.cfs_quota_us``), divided among the local ranks under torchrun. Torch's
  own default counts the machine's cores, so in a 2-CPU container on a 64-core host it
  starts 32+ threads that the quota then throttles.
- **Threads + workers never exceed those cores**: every DataLoader worker takes one core
  away from torch's intra-op threads. ``OMP_NUM_THREADS``, when set, is the user's choice
  of intra-op threads and is only lowered, never raised.
- **In-memory datasets** (decoded tensors; per-item work is a resize) load in the main
  process below 8 cores on CPU: on 2 cores a worker only competes with the compute (1.6×
  slower measured). **File datasets** (a decode per item) get one worker from 2 cores on,
  ``cores // 4`` from 8, at most 4 (CPU device): on 2 cores 1 thread + 1 worker beat
  2 threads + 0 workers; on CUDA the compute is on the GPU, so workers get every core but
  one, at most 8.
- An explicit ``data.num_workers`` is honoured; the threads then make room for it.
- **Other processes' load**: torch's OpenMP threads wait for each other at every op, so a
  thread that shares its core with another busy process stalls them all (3-7× slower
  measured on 2 cores with one busy process). :func:`sample_cpu` at the start of a run and
  again at the plan measures how many of our CPUs other processes kept busy meanwhile
  (``/proc/stat`` of the CPUs we may run on, minus this process's own CPU time); from half a
  core busy on, the run starts one thread fewer per busy core (never under one). Not when
  ``OMP_NUM_THREADS`` is set (the user's choice), nor when a cgroup quota, not the CPUs we
  run on, is the limit (other containers on the host do not shrink a quota). A window under
  0.5 s (a second run in the same process: torch and timm already imported) is too short to
  tell; then the window since the previous run's plan in this process (at most 10 minutes
  back) is used — it spans that run's training, whose own CPU time, its DataLoader workers'
  included, is subtracted.

Nothing here imports torch except :func:`apply` (the numbers are plain functions, tested
with mocked affinity, environment, cgroup and ``/proc/stat`` files).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
IN_MEMORY_WORKERS_FROM = 8   # cores from which in-memory datasets get a worker (CPU device)
FILE_WORKERS_FROM = 2        # cores from which file datasets get workers (CPU device)
MAX_CPU_WORKERS = 4
MAX_CUDA_WORKERS = 8
PROC_STAT = Path("/proc/stat")
BUSY_FROM = 0.5              # cores other processes keep busy from which threads are lowered
MIN_WINDOW = 0.5             # seconds between the samples for the measurement to count
MAX_WINDOW = 600.0           # the previous plan's sample is used when at most this old
_previous_plan: list = []    # the sample taken at this process's last plan (at most one)


@dataclass(frozen=True)
class CpuBudget:
    """The cores zoo may use, and what each source said (None: no limit from it)."""

    cores: int
    limits: dict = field(default_factory=dict)
    omp_threads: int | None = None   # OMP_NUM_THREADS, when set to a positive integer


@dataclass(frozen=True)
class ThreadPlan:
    """What a run uses: ``torch_threads`` intra-op threads and ``workers`` per DataLoader."""

    cores: int
    torch_threads: int
    workers: int
    reason: str
    limits: dict = field(default_factory=dict)

    others_busy: float | None = None  # cores other processes kept busy (None: not measured)

    def to_dict(self) -> dict:
        """For ``summary.json`` (key ``threads``) and ``--plan --json``."""
        return {"cores": self.cores, "torch_threads": self.torch_threads,
                "workers": self.workers, "reason": self.reason, "limits": dict(self.limits),
                "others_busy": self.others_busy}

    def describe(self) -> str:
        """One line for ``--plan`` and the run log."""
        limited = ", ".join(f"{k} {v}" for k, v in self.limits.items() if v is not None)
        return (f"threads: {self.torch_threads} torch + {self.workers} DataLoader worker(s) "
                f"on {self.cores} core(s) ({limited}); {self.reason}")


def cgroup_cpus(root: Path | str = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``2.5`` = 250 ms per 100 ms), or
    None when there is none (or no cgroup files to read)."""
    root = Path(root)
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return _ratio(quota, period or "100000")
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # cgroup v1
        try:
            quota = (root / sub / "cpu.cfs_quota_us").read_text().strip()
            period = (root / sub / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        try:
            return None if int(quota) <= 0 else _ratio(quota, period)
        except ValueError:
            return None
    return None


def _ratio(quota: str, period: str) -> float | None:
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None


def _positive_int(text) -> int | None:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def cpu_budget(*, cpu_count: int | None = None, affinity: set | None = None,
               environ: dict | None = None, cgroup_root: Path | str = CGROUP_ROOT) -> CpuBudget:
    """The cores zoo may use. Every argument defaults to this machine (tests pass values)."""
    env = os.environ if environ is None else environ
    count = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if affinity is None and hasattr(os, "sched_getaffinity"):  # not on macOS / Windows
        affinity = os.sched_getaffinity(0)
    quota = cgroup_cpus(cgroup_root)
    ranks = _positive_int(env.get("LOCAL_WORLD_SIZE")) or 1
    limits: dict = {"cpu_count": count,
                    "affinity": len(affinity) if affinity else None,
                    # a fractional quota rounds down: 2 threads on 1.5 CPUs get throttled
                    "cgroup": max(1, math.floor(quota)) if quota else None,
                    "local_ranks": ranks if ranks > 1 else None}
    cores = min(v for k, v in limits.items() if v is not None and k != "local_ranks")
    cores = max(1, cores // ranks)
    return CpuBudget(cores, limits, _positive_int(env.get("OMP_NUM_THREADS")))


@dataclass(frozen=True)
class CpuSample:
    """A moment's CPU counters: wall clock, busy and total jiffies of the CPUs this process
    may run on (None where ``/proc/stat`` is unreadable) and this process's CPU seconds."""

    wall: float
    busy: int | None
    total: int | None
    own: float
    cpus: int


def sample_cpu(stat: Path | str = PROC_STAT, cpus: set | None = None) -> CpuSample:
    """The counters now (``cpus``: the CPUs to count; default this process's affinity)."""
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    busy = total = None
    try:
        lines = Path(stat).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        try:  # user nice system idle iowait irq softirq steal (guest is inside user)
            f = [int(x) for x in rest.split()[:8]]
        except ValueError:
            continue
        if len(f) < 8:
            continue
        busy = (busy or 0) + f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
        total = (total or 0) + sum(f)
    t = os.times()  # children: DataLoader workers that ended (they show in /proc/stat too)
    own = t.user + t.system + t.children_user + t.children_system
    return CpuSample(time.monotonic(), busy, total, own, len(cpus))


def others_busy(start: CpuSample | None, end: CpuSample | None = None,
                hz: int | None = None) -> float | None:
    """Cores other processes kept busy between two samples (``end`` default: now); None
    when it cannot be told (no ``/proc/stat``, a window under ``MIN_WINDOW`` seconds)."""
    if start is None:
        return None
    end = end or sample_cpu()
    window = end.wall - start.wall
    if start.busy is None or end.busy is None or window < MIN_WINDOW:
        return None
    hz = hz or os.sysconf("SC_CLK_TCK")
    busy_seconds = (end.busy - start.busy) / hz
    others = (busy_seconds - (end.own - start.own)) / window
    return round(min(max(others, 0.0), float(end.cpus)), 2)


def choose(in_memory: bool, device_type: str = "cpu", workers: int | None = None,
           budget: CpuBudget | None = None, others: float | None = None) -> ThreadPlan:
    """Threads and workers for one run: see the module docstring for the rule."""
    budget = budget or cpu_budget()
    cores = budget.cores
    gpu = device_type == "cuda"
    if workers is not None:
        w, reason = max(0, int(workers)), "data.num_workers as set"
    elif gpu:
        if in_memory and cores < 4:
            w, reason = 0, "in-memory data, few cores: loaded in the main process"
        else:
            w, reason = min(MAX_CUDA_WORKERS, cores - 1), "CUDA: workers feed the GPU"
    elif in_memory:
        if cores < IN_MEMORY_WORKERS_FROM:
            w, reason = 0, f"in-memory data on < {IN_MEMORY_WORKERS_FROM} cores: no workers"
        else:
            w, reason = 1, "in-memory data, many cores: one worker for the transforms"
    elif cores < FILE_WORKERS_FROM:
        w, reason = 0, f"file data on < {FILE_WORKERS_FROM} cores: a worker would take a " \
                       "compute core"
    else:
        w, reason = min(MAX_CPU_WORKERS, max(1, cores // 4)), "file data: workers decode"
    threads = max(1, cores - w)  # a worker is a busy process: it takes a core from torch
    if budget.omp_threads is not None:
        if budget.omp_threads < threads:
            threads = budget.omp_threads
        reason += f"; OMP_NUM_THREADS={budget.omp_threads}"
    elif others is not None and others >= BUSY_FROM and _runs_on_counted_cores(budget):
        fewer = max(1, threads - math.ceil(others - BUSY_FROM))
        if fewer < threads:
            reason += (f"; other processes kept {others:.1f} of the {cores} cores busy: "
                       f"{fewer} torch thread(s) instead of {threads}")
            threads = fewer
    limits = dict(budget.limits, OMP_NUM_THREADS=budget.omp_threads)
    return ThreadPlan(cores, threads, w, reason, limits, others)


def _runs_on_counted_cores(budget: CpuBudget) -> bool:
    """The cores are the CPUs we run on (count / affinity), not a smaller cgroup quota."""
    cgroup = budget.limits.get("cgroup")
    cpus = [v for v in (budget.limits.get("cpu_count"), budget.limits.get("affinity"))
            if v is not None]
    return cgroup is None or not cpus or cgroup >= min(cpus)


def plan_for_run(dataset, device_type: str, workers: int | None = None,
                 budget: CpuBudget | None = None, since: CpuSample | None = None
                 ) -> ThreadPlan:
    """The plan for a run on ``dataset`` (its ``in_memory`` attribute decides), with the
    job's ``data.num_workers`` (None: chosen here); ``since``: the run's first
    :func:`sample_cpu`, to measure other processes' load. Call :func:`apply` before
    training."""
    others = None
    if device_type != "cuda" and since is not None:
        now = sample_cpu()
        others = others_busy(since, now)
        if others is None and _previous_plan and \
                now.wall - _previous_plan[0].wall <= MAX_WINDOW:
            others = others_busy(_previous_plan[0], now)
        _previous_plan[:] = [now]
    return choose(bool(getattr(dataset, "in_memory", False)), device_type, workers, budget,
                  others)


def apply(plan: ThreadPlan) -> int:
    """Set torch's intra-op threads to the plan's; returns the previous count."""
    import torch  # lazy: torch start-up cost (this module is imported by --plan paths)

    previous = torch.get_num_threads()
    if previous != plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
    return previous
