"""What a newcomer meets: ``zoo run -s auto`` prints the choice and the trial table it
computed; ``zoo run`` prints a plan's automatic choices."""
from __future__ import annotations

from zoo_cli_helpers import TINY_FLAGS, cli


def _weights_file(path):
    """timm's ``test_resnet`` with fixed random weights as a ``--weights FILE`` (so the run
    has source weights and ``auto`` runs its trials)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_resnet")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_auto_prints_its_choice_and_trial_table(capsys, tmp_path):
    weights = _weights_file(tmp_path / "source.safetensors")
    flags = [f for f in TINY_FLAGS if f != "none" and f != "--weights"]
    code, out, err = cli(capsys, "run", "timm:test_resnet", "-s", "auto", "--weights", weights,
                         "--epochs", "3", *flags, "--out", tmp_path, "--name", "a",
                         "--set", "strategy.params.candidates=[linear-probe,finetune]")
    assert code == 0, err
    lines = out.splitlines()
    chose = [line for line in lines if line.startswith("auto chose '")]
    assert len(chose) == 1
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("candidate"))
    rows = lines[header + 1:header + 7]
    assert {r.split()[0] for r in rows} == {"finetune", "linear-probe"}
    assert sum("<- chosen" in r for r in rows) == 1
    # the table is printed before training starts, unwrapped
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/"))
    assert header < first_epoch


def test_run_prints_automatic_choices_and_json_stays_clean(capsys, tmp_path):
    code, out, err = cli(capsys, "run", "timm:test_resnet", "-s", "finetune", "--epochs", "1",
                         *TINY_FLAGS, "--out", tmp_path, "--name", "f")
    assert code == 0, err
    assert "backbone_lr_mult auto → 1.0 (no source weights: training from scratch)" in out
    code, out, err = cli(capsys, "run", "timm:test_resnet", "-s", "finetune", "--epochs", "1",
                         *TINY_FLAGS, "--out", tmp_path, "--name", "g", "--json")
    assert code == 0 and out.lstrip().startswith("{") and "backbone_lr_mult auto" not in out
