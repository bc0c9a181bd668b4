"""`hwprune siblings`: the stock models of a family timed side by side with the reference (and a
pruned checkpoint) on real ONNX Runtime sessions, judged against the line with torchvision's
published top-1 (read from the weights' metadata, offline)."""
import json

import pytest
from torchvision.models import get_model_weights

from hwprune.checkpoint import save_checkpoint
from hwprune.cli.main import main
from hwprune.errors import ConfigError
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.siblings import (SiblingsConfig, candidates, family_of, format_siblings, judge, pareto_front, published,
                              siblings)

FAST = ["--input-size", "64", "--repeats", "5", "--warmup", "1"]


def test_candidates_are_the_smaller_members_of_the_family():
    assert family_of("resnext50_32x4d") == family_of("wide_resnet50_2") == family_of("resnet18") == "resnet"
    assert family_of("regnet_y_400mf") == family_of("regnet_x_8gf") == "regnet"
    assert candidates("resnet50") == ["resnet18", "resnet34"]  # cheapest first; resnext50 publishes more GFLOPs
    assert candidates("mobilenet_v3_large") == ["mobilenet_v3_small"]
    everything = candidates("resnet50", "all")
    assert "mobilenet_v3_small" in everything and "resnet101" not in everything and "resnet50" not in everything
    assert candidates("convnext_tiny") == []  # the smallest of its family
    # the published figure is the metadata's, at the asked resolution where torchvision has one
    meta = {w.name: w.meta["_metrics"]["ImageNet-1K"]["acc@1"] for w in get_model_weights("resnet50")}
    assert published("resnet50", 224)["top1"] == max(meta.values())
    b3 = published("efficientnet_b3", 224)
    assert b3["crop"] != 224 and not b3["at_input_size"]  # only published at its own resolution: said so
    assert published("timm:resnet18") is None
    with pytest.raises(ConfigError, match="not a torchvision classifier"):
        candidates("tiny_resnet")


def test_cli_siblings_times_the_family_and_names_the_top1_to_beat(tmp_path, capsys):
    out = tmp_path / "sib.json"
    png = tmp_path / "sib.png"
    assert main(["siblings", "--model", "mobilenet_v3_large", "--budget", "0.9x", *FAST, "--json", str(out),
                 "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"mobilenet_v3_large (reference)", "mobilenet_v3_small"}
    ref, small = rows["mobilenet_v3_large (reference)"], rows["mobilenet_v3_small"]
    assert ref["ratio"] == pytest.approx(1.0) and ref["role"] == "reference"
    # measured, not looked up: about 4x fewer FLOPs runs clearly faster side by side
    assert small["flops"] < ref["flops"] / 2 and 0 < small["ratio"] < 0.9 and small["ms"] > 0
    assert res["line_ms"] == pytest.approx(0.9 * ref["ms"])
    assert res["within"] == ["mobilenet_v3_small"] and res["best_within"] == "mobilenet_v3_small"
    # the top-1 to beat is torchvision's figure for the sibling (published at 224 px, and said so at 64)
    assert res["best_within_top1"] == small["published"]["top1"] == published("mobilenet_v3_small")["top1"]
    assert not small["published"]["at_input_size"] and "@224px" in text and "published at 224 px" in text
    assert "worth shipping only if it beats" in text and "mobilenet_v3_small" in text
    assert png.stat().st_size > 5000


def test_cli_siblings_of_a_pruned_checkpoint_uses_its_measured_latency(tmp_path, capsys):
    loaded = load_model("mobilenet_v3_large")
    res = prune(loaded, PruneConfig(strategy="uniform", ratio=0.5, input_size=64, align=8))
    ckpt = tmp_path / "pruned.pt"
    save_checkpoint(str(ckpt), res.model, res.plan)
    out = tmp_path / "sib.json"
    assert main(["siblings", "--model", str(ckpt), "--repeats", "5", "--warmup", "1", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    rows = {r["model"]: r for r in got["rows"]}
    assert set(rows) == {"mobilenet_v3_large (reference)", "pruned", "mobilenet_v3_small"}
    assert got["input_size"] == 64  # the checkpoint's own input size
    assert got["line_ms"] == rows["pruned"]["ms"] and "pruned model" in got["line_from"]
    assert 0 < rows["pruned"]["ratio"] < 1
    assert (got["best_within"] == "mobilenet_v3_small") == (rows["mobilenet_v3_small"]["ms"] <= got["line_ms"] * 1.03)
    with pytest.raises(ConfigError, match="own measured latency is the line"):
        _run(["siblings", "--model", str(ckpt), "--budget", "0.5x"])


def _run(argv):
    """Run a command the way main does, raising its ConfigError instead of printing it."""
    from hwprune.cli.main import build_parser

    args = build_parser(argv[0]).parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("argv, match", [
    (["--model", "resnet50", "--budget", "50%flops"], "compares latency"),
    (["--model", "convnext_tiny", "--budget", "0.5x"], "no smaller torchvision sibling"),
    (["--model", "tiny_resnet", "--budget", "0.5x"], "--candidates"),
    (["--model", "a.onnx"], "checkpoint or model name"),
    (["--model", "resnet50", "--candidates", ","], "names no model"),
    (["--model", "resnet50", "--candidates", "resnet50", "--budget", "0.5x"], "no candidate besides the reference"),
    (["--model", "resnet18", "--candidates", "vit_b_32", "--input-size", "64"], r"vit_b_32 cannot run at 64x64 px"),
])
def test_siblings_refuses_bad_input_with_the_fix(argv, match):
    with pytest.raises(ConfigError, match=match):
        _run(["siblings", *argv])


def test_siblings_library_accepts_named_candidates_of_any_source():
    res = siblings(load_model("tiny_resnet"), SiblingsConfig(budget="1.0x", names=["tiny_mobilenet"], repeats=5,
                                                            warmup=1), progress=False)
    rows = {r["model"]: r for r in res["rows"]}
    assert set(rows) == {"tiny_resnet (reference)", "tiny_mobilenet"}
    assert rows["tiny_mobilenet"]["published"] is None and rows["tiny_mobilenet"]["ms"] > 0
    assert res["line_ms"] == rows["tiny_resnet (reference)"]["ms"] and res["best_within"] is None
    text = format_siblings(res)  # within the line or not, there is no published figure to beat: said either way
    assert ("no top-1 published at 32 px to beat" in text) == bool(res["within"])
    assert ("no stock sibling runs within the line" in text) == (not res["within"])


def _row(name, ms, top1=None, crop=224, role="candidate"):
    pub = None if top1 is None else {"top1": top1, "crop": crop, "at_input_size": crop == 224, "weights": "W"}
    return {"model": name, "role": role, "ms": ms, "published": pub}


def test_judge_counts_the_tolerance_and_prefers_figures_at_the_timed_resolution():
    rows = [_row("ref", 50.0, 80.9, role="reference"), _row("b3", 25.0, 82.0, crop=300),
            _row("regnet", 25.7, 80.9), _row("r18", 22.0, 69.8), _row("user", 10.0), _row("r34", 44.0, 73.3)]
    within, best = judge(rows, 25.0)
    assert [r["model"] for r in within] == ["b3", "regnet", "r18", "user"]  # 25.7 <= 25 * 1.03; the reference is not a candidate
    assert best["model"] == "regnet"  # b3's 82.0 is published at 300 px, not what it scores at 224
    assert judge(rows[:2], 25.0)[1]["model"] == "b3"  # the only figure there is: used, and the verdict says where from
    assert judge(rows, 20.0)[1] is None and judge(rows, None) == ([], None)
    # b3 (another resolution) is out, r34 (slower and less accurate than regnet) and the reference (slower, no better)
    assert pareto_front(rows) == ["r18", "regnet"]


def test_prune_of_a_torchvision_model_names_the_siblings_command_and_it_runs(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", "--model", "mobilenet_v3_small", "--input-size", "32", "--ratio", "0.5", "--align", "8",
                 "--out", str(out)]) == 0
    hint = [ln for ln in capsys.readouterr().out.splitlines() if "hwprune siblings" in ln]
    assert len(hint) == 1, hint
    argv = hint[0].split("hwprune ", 1)[1].split()
    assert argv[:3] == ["siblings", "--model", str(out / "pruned.pt")]
    assert main(argv + ["--repeats", "3", "--warmup", "1", "--json", str(tmp_path / "s.json")]) == 0
    rows = {r["model"] for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert {"mobilenet_v3_small (reference)", "pruned", "shufflenet_v2_x0_5"} <= rows  # --scope all: under its GFLOPs
    # a zoo model has no torchvision siblings: no hint
    assert main(["prune", "--model", "tiny_resnet", "--input-size", "16", "--ratio", "0.5", "--align", "8",
                 "--out", str(tmp_path / "q")]) == 0
    assert "hwprune siblings" not in capsys.readouterr().out


def test_run_summary_names_the_siblings_command_for_torchvision_models():
    from hwprune.cli.cmd_run import summary_lines

    rep = {"model": {"spec": "resnet50"}, "strategy": "halp", "budget": "0.5x",
           "backend": {"name": "ort-cpu", "threads": 2}, "flops": {"reduction": 2.0}, "params": {"reduction": 1.5},
           "files": {"report_md": "/o/run/report.md"}}
    assert summary_lines(rep).splitlines()[-1].endswith("hwprune siblings --model /o/run/pruned.pt --scope all")
    rep["model"]["spec"] = "tiny_resnet"  # the zoo's models have no torchvision siblings
    assert "siblings" not in summary_lines(rep)
