"""``zoo compare``: strategies × seeds on identical splits, a leaderboard (mean ± std),
compare.json/.csv/.png written atomically, failures recorded per row, interrupts kept."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from zoo.tools.compare import compare, split_sets
from zoo.errors import ConfigError, RunInterrupted, UnknownComponentError

TINY = {"weights": "none", "device": "cpu", "metrics": ["accuracy"],
        "train": {"epochs": 1, "batch_size": 32},
        "data": {"name": "demo", "params": {"per_class": 20}, "num_workers": 0}}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """One real comparison: two working strategies, one failing at its plan, two seeds."""
    import zoo.api

    zoo.catalog._CATALOG = None
    out = tmp_path_factory.mktemp("cmp")
    messages: list[str] = []
    result = compare("timm:test_resnet", ["linear-probe", "finetune", "joint"],
                     seeds=2, flags=TINY, out=str(out), name="cmp", log=messages.append)
    zoo.catalog._CATALOG = None
    return result, out / "cmp", messages


def test_writes_its_files_and_one_run_folder_per_strategy_and_seed(real):
    result, folder, messages = real
    assert result["status"] == "completed" and Path(result["dir"]) == folder
    for name in ("compare.json", "compare.csv", "compare.png"):
        assert (folder / name).is_file(), name
    assert (folder / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temp files
    assert json.loads((folder / "compare.json").read_text()) == json.loads(
        json.dumps(result, default=str))
    for strategy in ("linear-probe", "finetune"):
        for seed in (0, 1):
            run_dir = folder / f"{strategy}-seed{seed}"
            assert (run_dir / "summary.json").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert result["seeds"] == [0, 1] and len(result["runs"]) == 6
    assert result["splits_identical"] is True
    assert len(messages) == 6 and messages[0].startswith("[1/6] linear-probe seed 0")


def test_failing_strategies_are_recorded_and_the_rest_finish(real):
    result, _, _ = real
    rows = {(r["strategy"], r["seed"]): r for r in result["runs"]}
    for seed in (0, 1):
        assert rows[("linear-probe", seed)]["status"] == "completed"
        assert rows[("finetune", seed)]["status"] == "completed"
        assert "--source-data" in rows[("joint", seed)]["error"]
    board = {e["strategy"]: e for e in result["leaderboard"]}
    assert board["joint"]["runs"] == 0 and board["joint"]["failed"] == 2
    assert board["joint"]["rank"] is None and "--source-data" in board["joint"]["error"]
    assert "failed: joint" in result["verdict"]


def test_an_unknown_strategy_is_refused_before_anything_trains(tmp_path, monkeypatch):
    calls = _fake_runner(monkeypatch, {"linear-probe": {0: 0.5}}, check=True)
    with pytest.raises(UnknownComponentError, match="nosuch"):
        compare("timm:test_resnet", ["linear-probe", "nosuch"], flags=TINY, out=str(tmp_path),
                name="x")
    assert calls == [] and not (tmp_path / "x").exists()


def test_leaderboard_is_mean_and_std_over_seeds(real):
    result, folder, _ = real
    board = {e["strategy"]: e for e in result["leaderboard"]}
    for strategy in ("linear-probe", "finetune"):
        accs = [r["test"]["accuracy"] for r in result["runs"]
                if r["strategy"] == strategy and r["status"] == "completed"]
        entry = board[strategy]["metrics"]["accuracy"]
        assert entry["mean"] == pytest.approx(statistics.fmean(accs))
        assert entry["std"] == pytest.approx(statistics.stdev(accs))
        assert board[strategy]["wall_seconds"]["mean"] > 0
        assert board[strategy]["cpu_seconds"]["mean"] > 0
    assert board["linear-probe"]["trainable_params"] < board["finetune"]["trainable_params"]
    ranked = [e for e in result["leaderboard"] if e["runs"]]
    assert [e["rank"] for e in ranked] == [1, 2]
    assert ranked[0]["metrics"]["accuracy"]["mean"] >= ranked[1]["metrics"]["accuracy"]["mean"]
    win = result["winner"]
    assert win["strategy"] == ranked[0]["strategy"] and win["runner_up"] == ranked[1]["strategy"]
    assert win["margin"] == pytest.approx(ranked[0]["metrics"]["accuracy"]["mean"]
                                          - ranked[1]["metrics"]["accuracy"]["mean"])
    assert result["verdict"].startswith(f"{win['strategy']} won on test accuracy")
    rows = list(csv.DictReader(io.StringIO((folder / "compare.csv").read_text())))
    assert [r["strategy"] for r in rows] == [e["strategy"] for e in result["leaderboard"]]
    assert float(rows[0]["accuracy_mean"]) == pytest.approx(
        ranked[0]["metrics"]["accuracy"]["mean"], rel=1e-5)
    assert rows[-1]["rank"] == "" and rows[-1]["error"]


# -- without real training: a fake runner ------------------------------------------------------
def _fake_runner(monkeypatch, accuracy, fail=(), interrupt_at=None, crash=(), check=False):
    """Replace zoo.engine.pipeline.run: summaries with ``accuracy[strategy][seed]``; no training.
    The fake strategies are not in the catalog: their up-front name check is skipped unless
    ``check``."""
    import zoo.engine.pipeline
    import zoo.tools.compare

    if not check:
        monkeypatch.setattr(zoo.tools.compare, "check_strategies", lambda *a, **k: None)

    calls = []

    def fake(job, catalog=None, *, quiet=False, on_plan=None, plan_only=False, **_):
        if plan_only:
            return {"phases": [], "notes": []}
        calls.append((job.strategy.name, job.seed))
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise RunInterrupted("interrupted")
        if job.strategy.name in crash:
            raise RuntimeError("a bug in the strategy")
        if job.strategy.name in fail:
            raise ConfigError(f"strategy '{job.strategy.name}' is broken")
        if on_plan:
            notes = ["auto chose 'lp-ft': best val accuracy"] if job.strategy.name == "auto" \
                else []
            on_plan({"phases": [{"name": "p", "epochs": 1, "trainable_params": 10}],
                     "notes": notes})
        run_dir = Path(job.out) / job.name
        run_dir.mkdir(parents=True)
        (run_dir / "splits.json").write_text('{"train": [1, 2]}')
        (run_dir / "metrics.jsonl").write_text(json.dumps(
            {"epoch": 1, "phase": "p", "val": {"accuracy": 0.5}}) + "\n")
        if job.strategy.name == "auto":  # the run folder says what auto chose
            (run_dir / "summary.json").write_text(json.dumps(
                {"auto": {"chosen": "lp-ft", "lr": 0.01, "trials": []}}))
        return {"test": {"accuracy": accuracy[job.strategy.name][job.seed], "loss": 1.0},
                "best_epoch": 1, "seconds": 0.1, "params": {"total": 100}}

    monkeypatch.setattr(zoo.engine.pipeline, "run", fake)
    return calls


def test_margin_within_one_std_is_not_a_clear_win(tmp_path, monkeypatch):
    acc = {"a": {0: 0.80, 1: 0.90, 2: 0.70}, "b": {0: 0.78, 1: 0.79, 2: 0.80},
           "auto": {0: 0.1, 1: 0.1, 2: 0.1}}
    _fake_runner(monkeypatch, acc)
    result = compare("timm:test_resnet", ["a", "b", "auto"], seeds=3, flags=TINY,
                     out=str(tmp_path), name="x")
    assert result["winner"]["strategy"] == "a" and result["winner"]["clear"] is False
    assert "not a clear win" in result["verdict"] and "by 1.00 points" in result["verdict"]
    board = {e["strategy"]: e for e in result["leaderboard"]}
    assert board["auto"]["chosen"] == {"lp-ft": 3}
    assert all(r["chosen"] == "lp-ft" for r in result["runs"] if r["strategy"] == "auto")


def test_a_crashing_strategy_is_recorded_too(tmp_path, monkeypatch):
    acc = {"good": {0: 0.5}}
    _fake_runner(monkeypatch, acc, crash=("buggy",))
    result = compare("timm:test_resnet", ["buggy", "good"], flags=TINY, out=str(tmp_path),
                     name="x")
    rows = {r["strategy"]: r for r in result["runs"]}
    assert rows["buggy"]["error"] == "RuntimeError: a bug in the strategy"
    assert rows["good"]["status"] == "completed" and result["winner"]["strategy"] == "good"


def test_interrupt_keeps_finished_runs_in_compare_json(tmp_path, monkeypatch):
    acc = {"a": {0: 0.5, 1: 0.6}, "b": {0: 0.4, 1: 0.3}}
    calls = _fake_runner(monkeypatch, acc, interrupt_at=3)
    with pytest.raises(RunInterrupted):
        compare("timm:test_resnet", ["a", "b"], seeds=2, flags=TINY, out=str(tmp_path),
                name="x")
    saved = json.loads((tmp_path / "x" / "compare.json").read_text())
    assert saved["status"] == "interrupted" and len(saved["runs"]) == 2 and len(calls) == 3


def test_seeds_and_per_strategy_sets(tmp_path, monkeypatch):
    acc = {"a": {5: 0.5, 6: 0.5}, "b": {5: 0.4, 6: 0.4}}
    calls = _fake_runner(monkeypatch, acc)
    compare("timm:test_resnet", ["a", "b"], seeds=2, flags={**TINY, "seed": 5},
            out=str(tmp_path), name="x")
    assert calls == [("a", 5), ("b", 5), ("a", 6), ("b", 6)]
    sets = split_sets(["train.lr=0.1", "b:strategy.params.k=2", "model=timm:x"], ["a", "b"])
    assert sets == {"a": ["train.lr=0.1", "model=timm:x"],
                    "b": ["train.lr=0.1", "model=timm:x", "strategy.params.k=2"]}
    with pytest.raises(ConfigError, match="'c' is not one of the compared"):
        split_sets(["c:train.lr=1"], ["a", "b"])
    with pytest.raises(ConfigError, match="at least one strategy"):
        compare("timm:test_resnet", [" "], flags=TINY, out=str(tmp_path))


def test_cli_compare_json_and_table(tmp_path, capsys, monkeypatch):
    from zoo.cli import main
    from zoo.cli.compare_cmd import print_leaderboard
    from zoo.cli.output import console

    acc = {"linear-probe": {0: 0.7}, "finetune": {0: 0.6}}
    _fake_runner(monkeypatch, acc)
    capsys.readouterr()
    main(["compare", "timm:test_resnet", "-S", "linear-probe,finetune", "--weights", "none",
          "--epochs", "1", "--out", str(tmp_path), "--name", "cli", "--json"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert [e["strategy"] for e in result["leaderboard"]] == ["linear-probe", "finetune"]
    assert result["dir"] == str(tmp_path / "cli")
    monkeypatch.setenv("COLUMNS", "200")
    print_leaderboard(console(), result)
    text = capsys.readouterr().out
    assert "linear-probe won on test accuracy" in text and "compare.png" in text
