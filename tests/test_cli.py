import json
import os


def test_help_lists_all_commands(cli):
    out = cli("--help").stdout
    for c in ("profile", "validate", "prune", "export", "bench", "run", "inspect"):
        assert c in out


def test_inspect_prints_groups(cli, tmp_path):
    out = cli("inspect", "--model", "tiny_resnet", "--json", str(tmp_path / "g.json")).stdout
    assert "layers.0.conv1" in out and "FLOPs%" in out
    data = json.loads((tmp_path / "g.json").read_text())
    assert abs(sum(1 for g in data["groups"] if g["prunable"]) - len(data["groups"])) == 0


def test_prune_uniform_writes_plan_checkpoint_report(cli, tmp_path):
    out = tmp_path / "o"
    cli("prune", "--model", "tiny_resnet", "--strategy", "uniform", "--ratio", "0.5", "--out", str(out))
    assert {"plan.json", "pruned.pt", "report.json"} <= set(os.listdir(out))
    rep = json.loads((out / "report.json").read_text())
    assert rep["after"]["params"] < rep["before"]["params"]
    # the checkpoint is itself a valid --model
    txt = cli("inspect", "--model", str(out / "pruned.pt")).stdout
    assert "tiny_resnet" in txt


def test_errors_are_clear_and_exit_2(cli):
    p = cli("prune", "--ratio", "1.5", check=False)
    assert p.returncode == 2 and "ratio 1.5" in p.stderr and "Traceback" not in p.stderr
    p = cli("inspect", "--model", "resnt18", check=False)
    assert p.returncode == 2 and "Did you mean" in p.stderr
