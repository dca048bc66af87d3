"""The threads/workers policy (zoo.engine.threads) with mocked affinity, env and cgroups."""
from __future__ import annotations

import pytest

from zoo.engine import threads
from zoo.engine.threads import CpuBudget, choose, cpu_budget, cgroup_cpus


def cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


def budget(tmp_path, *, count=16, affinity=None, env=None, **cg):
    affinity = set(range(count)) if affinity is None else affinity  # not this machine's
    return cpu_budget(cpu_count=count, affinity=affinity, environ=env or {},
                      cgroup_root=cgroup(tmp_path, **cg))


def test_cgroup_v2_quota_and_no_limit(tmp_path):
    assert cgroup_cpus(cgroup(tmp_path, v2="250000 100000")) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path) is None
    assert cgroup_cpus(tmp_path / "missing") is None


def test_cgroup_v1_quota(tmp_path):
    assert cgroup_cpus(cgroup(tmp_path, v1=("300000", "100000"))) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert cgroup_cpus(tmp_path) is None


def test_budget_is_the_smallest_limit(tmp_path):
    assert budget(tmp_path).cores == 16
    assert budget(tmp_path, affinity={0, 1, 2}).cores == 3
    b = budget(tmp_path, affinity=set(range(8)), v2="150000 100000")
    assert b.cores == 1  # 1.5 CPUs round down: 2 threads would be throttled
    assert b.limits == {"cpu_count": 16, "affinity": 8, "cgroup": 1, "local_ranks": None}
    assert budget(tmp_path, count=4, affinity=set()).limits["affinity"] is None


def test_local_ranks_share_the_cores(tmp_path):
    b = budget(tmp_path, count=8, env={"LOCAL_WORLD_SIZE": "2"})
    assert b.cores == 4 and b.limits["local_ranks"] == 2
    assert budget(tmp_path, count=2, env={"LOCAL_WORLD_SIZE": "4"}).cores == 1


def test_in_memory_data_gets_no_workers_on_small_machines():
    for cores in (1, 2, 4, 7):
        plan = choose(True, "cpu", budget=CpuBudget(cores))
        assert (plan.workers, plan.torch_threads) == (0, cores)
    assert choose(True, "cpu", budget=CpuBudget(16)).workers == 1


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("cores", [1, 2, 3, 4, 6, 8, 16, 64])
def test_threads_plus_workers_never_oversubscribe(in_memory, device, cores):
    plan = choose(in_memory, device, budget=CpuBudget(cores))
    assert plan.torch_threads >= 1 and plan.workers >= 0
    assert plan.torch_threads + plan.workers <= cores


def test_file_data_workers():
    assert choose(False, "cpu", budget=CpuBudget(1)).workers == 0
    plan = choose(False, "cpu", budget=CpuBudget(2))  # measured: 1 + 1 beats 2 + 0
    assert (plan.workers, plan.torch_threads) == (1, 1)
    assert choose(False, "cpu", budget=CpuBudget(6)).workers == 1
    plan = choose(False, "cpu", budget=CpuBudget(16))
    assert (plan.workers, plan.torch_threads) == (4, 12)
    assert choose(False, "cuda", budget=CpuBudget(16)).workers == 8
    assert choose(False, "cuda", budget=CpuBudget(4)).workers == 3


def test_explicit_workers_are_honoured_and_threads_make_room():
    plan = choose(True, "cpu", workers=3, budget=CpuBudget(4))
    assert (plan.workers, plan.torch_threads) == (3, 1)
    assert "as set" in plan.reason


def test_omp_num_threads_lowers_never_raises(tmp_path):
    low = budget(tmp_path, count=8, env={"OMP_NUM_THREADS": "2"})
    assert choose(True, "cpu", budget=low).torch_threads == 2
    high = budget(tmp_path, count=4, env={"OMP_NUM_THREADS": "32"})
    plan = choose(True, "cpu", budget=high)
    assert plan.torch_threads == 4 and plan.limits["OMP_NUM_THREADS"] == 32
    assert budget(tmp_path, env={"OMP_NUM_THREADS": "x"}).omp_threads is None


def test_plan_is_printable_and_recordable(tmp_path):
    plan = threads.plan_for_run(type("D", (), {"in_memory": True})(), "cpu",
                                budget=budget(tmp_path, count=4, affinity={0, 1}))
    d = plan.to_dict()
    assert d["cores"] == 2 and d["torch_threads"] == 2 and d["workers"] == 0
    assert d["limits"]["affinity"] == 2
    line = plan.describe()
    assert line.startswith("threads: 2 torch + 0 DataLoader worker(s) on 2 core(s)")
    assert "affinity 2" in line


def test_apply_sets_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        previous = threads.apply(threads.ThreadPlan(1, 1, 0, "test"))
        assert previous == before and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_this_machine_budget_is_sane():
    b = cpu_budget()
    assert 1 <= b.cores <= (threads.os.cpu_count() or 1)


# -- other processes' load (/proc/stat) -------------------------------------------------------
def stat_file(tmp_path, name, per_cpu: dict):
    """A /proc/stat with ``cpuN user nice system idle iowait irq softirq steal`` lines."""
    lines = ["cpu  1 1 1 1 1 1 1 1 0 0"]
    lines += [f"cpu{n} {busy} 0 0 {idle} 0 0 0 0 0 0" for n, (busy, idle) in per_cpu.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n")
    return path


def test_sample_counts_only_the_cpus_we_may_run_on(tmp_path):
    stat = stat_file(tmp_path, "stat", {0: (100, 50), 1: (30, 20), 2: (999, 1)})
    s = threads.sample_cpu(stat, cpus={0, 1})
    assert (s.busy, s.total, s.cpus) == (130, 200, 2)
    assert threads.sample_cpu(tmp_path / "missing", cpus={0}).busy is None


def test_others_busy_subtracts_this_process_and_needs_a_window(tmp_path):
    a = threads.CpuSample(wall=0.0, busy=0, total=0, own=0.0, cpus=2)
    # 2 s, 300 jiffies (hz 100) busy = 3 core-seconds, 1 s of it ours: others kept 1 core
    b = threads.CpuSample(wall=2.0, busy=300, total=400, own=1.0, cpus=2)
    assert threads.others_busy(a, b, hz=100) == 1.0
    short = threads.CpuSample(wall=0.2, busy=30, total=40, own=0.1, cpus=2)
    assert threads.others_busy(a, short, hz=100) is None
    blind = threads.CpuSample(wall=2.0, busy=None, total=None, own=1.0, cpus=2)
    assert threads.others_busy(a, blind, hz=100) is None
    assert threads.others_busy(None) is None


def test_a_busy_machine_gets_fewer_threads_never_under_one(tmp_path):
    b = budget(tmp_path, count=2)
    assert choose(True, budget=b, others=0.2).torch_threads == 2   # idle enough
    plan = choose(True, budget=b, others=1.0)
    assert plan.torch_threads == 1 and "other processes kept 1.0" in plan.reason
    assert plan.to_dict()["others_busy"] == 1.0
    assert choose(True, budget=b, others=2.0).torch_threads == 1
    b8 = budget(tmp_path, count=8)
    assert choose(True, budget=b8, others=2.0).torch_threads == 5  # 7 (a worker) - 2 busy


def test_load_is_ignored_with_omp_num_threads_or_a_cgroup_quota(tmp_path):
    omp = budget(tmp_path, count=2, env={"OMP_NUM_THREADS": "2"})
    assert choose(True, budget=omp, others=1.5).torch_threads == 2
    (tmp_path / "q").mkdir()
    quota = budget(tmp_path / "q", count=16, v2="200000 100000")
    assert quota.cores == 2 and choose(True, budget=quota, others=8.0).torch_threads == 2


def test_a_short_window_falls_back_to_the_previous_plan_in_this_process(monkeypatch):
    now = threads.CpuSample(wall=110.0, busy=1500, total=2000, own=5.0, cpus=2)
    monkeypatch.setattr(threads, "sample_cpu", lambda *a, **k: now)
    monkeypatch.setattr(threads, "_previous_plan",
                        [threads.CpuSample(wall=100.0, busy=0, total=0, own=0.0, cpus=2)])
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)

    class Data:
        in_memory = True

    budget = threads.CpuBudget(2, {"cpu_count": 2, "affinity": 2, "cgroup": None,
                                   "local_ranks": None})
    # the run's own window (0.2 s) is too short; the 10 s since the last plan: 15 core-s
    # busy, 5 of them ours -> others kept 1 core busy
    start = threads.CpuSample(wall=109.8, busy=1490, total=1990, own=5.0, cpus=2)
    plan = threads.plan_for_run(Data(), "cpu", budget=budget, since=start)
    assert plan.others_busy == 1.0 and plan.torch_threads == 1
    assert threads._previous_plan == [now]
    # too old a previous plan: not used
    monkeypatch.setattr(threads, "_previous_plan",
                        [threads.CpuSample(wall=-1000.0, busy=0, total=0, own=0.0, cpus=2)])
    assert threads.plan_for_run(Data(), "cpu", budget=budget, since=start).others_busy is None
