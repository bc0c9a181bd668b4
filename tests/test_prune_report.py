"""The reshaped prune (search / closed loop / typed report) keeps what users keep: report.json's
fields, and the committed table's predictions exactly as before the reshaping."""
import json
import os
import warnings

import pytest
import torch

from hwprune.graph import ChannelGraph
from hwprune.latency import LatencyTable
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.prune_report import PruneReport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")

#: predictions (ms) of the committed table at full, half and quarter width on the 16 grid, as
#: computed by the code of 741f441 (before backends, graph, search and report were reshaped)
PINNED = {"resnet18": [8.438638724453167, 2.3945630800938815, 0.9868631254671911],
          "resnet50": [19.5225099, 5.856282185533679, 2.2057173834886634],
          "mobilenet_v2": [2.7438001, 1.271446140262386, 0.6482285735249688]}

#: report.json's keys for a latency budget checked by measurement, in order, as 741f441 wrote them
REPORT_KEYS = ["model", "strategy", "seed", "budget", "table", "input_shape", "config", "before", "after",
               "flops_reduction", "params_reduction", "widths", "search_seconds", "evaluations", "cost", "latency",
               "closed_loop", "verdict", "artifacts", "evaluator"]
LATENCY_KEYS = {"baseline_predicted_ms", "predicted_ms", "speedup_predicted", "backend", "threads", "precision",
                "spinning", "statistic", "baseline_ms", "baseline_median_ms", "baseline_p90_ms", "measured_ms",
                "measured_median_ms", "measured_p90_ms", "speedup_measured", "budget_ms", "met_budget"}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_committed_table_predicts_exactly_as_before(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(COMMITTED, check_device=False)
    graph = ChannelGraph(load_model(name).model, torch.randn(1, 3, 224, 224))
    cm = table.cost_model(graph)
    half = {g.name: max(16, (g.width // 2) // 16 * 16) for g in graph.prunable}
    quarter = {g.name: max(16, (g.width // 4) // 16 * 16) for g in graph.prunable}
    assert [cm.predict({}), cm.predict(half), cm.predict(quarter)] == PINNED[name]


def test_report_json_keeps_its_fields(tmp_path, cli):
    table = str(tmp_path / "t.json")
    from hwprune.latency import ProfileConfig, profile

    profile(load_model("tiny_resnet"), ProfileConfig.quick(input_size=16, align=8, calib_variants=2, out=table),
            progress=False)
    cli("prune", "--model", "tiny_resnet", "--input-size", "16", "--budget", "0.8x", "--table", table, "--align", "8",
        "--out", str(tmp_path / "p"), "--quiet", check=False)
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert [k for k in rep if k != "warnings"] == REPORT_KEYS
    assert set(rep["latency"]) - {"table_drift"} == LATENCY_KEYS


def test_typed_report_reads_like_its_json():
    loaded = load_model("tiny_resnet")
    res = prune(loaded, PruneConfig(ratio=0.5, progress=False))
    rep = res.report
    assert isinstance(rep, PruneReport) and rep.latency is None and rep.met_budget is None
    d = rep.to_dict()
    assert rep["flops_reduction"] == d["flops_reduction"] == rep.flops_reduction > 1
    assert "latency" not in d and "verdict" not in rep and list(json.loads(json.dumps(d))) == list(d)
