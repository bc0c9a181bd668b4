"""Report: report.md + report.json + legible PNGs from a real prune result and a real bench."""
import json
import os

import pytest

from hwprune.bench import BenchConfig, bench
from hwprune.checkpoint import save_checkpoint
from hwprune.jsonio import write_json
from hwprune.models import LoadedModel, load_model
from hwprune.prune import PruneConfig, prune
from hwprune.report import build_report, write_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    base = load_model("tiny_resnet")
    res = prune(base, PruneConfig(ratio=0.5))
    b = bench({"baseline": base, "pruned": LoadedModel(res.model, base.model_id, 32, plan=res.plan)},
              BenchConfig(threads=1, batches=(1, 4), warmup=1, repeats=3, min_repeat_ms=1.0), progress=False)
    return base, res, b


def test_write_report_files_and_content(tmp_path, result):
    base, res, b = result
    layers = ["stem.0", "layers.0.conv1", "fc"]
    breakdown = {"before": {k: 0.1 * (i + 1) for i, k in enumerate(layers)},
                 "after": {k: 0.05 * (i + 1) for i, k in enumerate(layers)}}
    pr = {**res.report.to_dict(), "warnings": ["the table drifted"]}  # the prune step's warnings reach report.md
    rep = write_report(str(tmp_path), pr, b, breakdown=breakdown, accuracy={"before": 0.9, "after": 0.8},
                       extra={"notes": ["a note"]})
    names = sorted(os.listdir(tmp_path))
    assert {"report.md", "report.json", "latency_throughput.png", "width_profile.png", "latency_breakdown.png",
            "summary.png"} <= set(names)
    assert not any(n.startswith(".tmp") for n in names)
    for f in rep["files"]["figures"]:
        with open(f, "rb") as fh:
            assert fh.read(8) == PNG
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["latency"]["1"]["speedup"] == pytest.approx(b["speedup"]["1"])
    assert on_disk["flops"]["reduction"] > 1 and on_disk["accuracy"]["before"] == 0.9
    md = (tmp_path / "report.md").read_text()
    for s in ("FLOPs", "params", "top-1", "speedup", "Width profile", "Where the time goes", "a note",
              "> **warning:** the table drifted", "![summary.png](summary.png)"):
        assert s in md, s


def test_build_report_from_prune_folder(tmp_path, result):
    base, res, b = result
    res.plan.save(str(tmp_path / "plan.json"))
    save_checkpoint(str(tmp_path / "pruned.pt"), res.model, res.plan)
    write_json(str(tmp_path / "report.json"), res.report.to_dict())
    write_json(str(tmp_path / "bench.json"), b)
    rep = build_report(str(tmp_path), bench_json=str(tmp_path / "bench.json"), out_dir=str(tmp_path / "r"))
    assert (tmp_path / "r" / "report.md").is_file() and rep["latency"]["4"]["pruned"]["median_ms"] > 0
    assert "predicted" not in rep  # no table given: no prediction column, and none is invented
