"""Several budgets at once (issue #20): parsing BUDGET@TABLE, the multi-dimensional knapsack against
brute force, strategies meeting every budget on two real ORT CPU tables of this machine (1 and 2
threads, quickly profiled here), the closed loop measuring both devices and reporting a third one
(a table from another machine) as predicted only, the same through `hwprune run`, and the refusals."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import assert_ran

from hwprune.budget import BoundBudget, parse_bound_budget, parse_budgets
from hwprune.errors import BudgetError, ConfigError, TableError
from hwprune.models import load_model
from hwprune.prune import PruneConfig, make_context, prune
from hwprune.strategies._common import fidelity_evaluator
from hwprune.strategies.knapsack import knapsack_mc_multi, knapsack_multi_brute

latency = pytest.importorskip("hwprune.latency")

FAST = {"evo_pop": 6, "evo_gens": 2, "netadapt_initial": 0.15, "halp_steps": 2, "amc_episodes": 4, "amc_warmup": 2,
        "sens_points": 3}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """tiny_resnet at 32 px, profiled quickly with 1 and with 2 ORT threads: two devices of this machine."""
    loaded = load_model("tiny_resnet")
    folder = tmp_path_factory.mktemp("tables")
    paths = []
    for threads in (1, 2):
        path = str(folder / f"tiny-{threads}t.json")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            latency.profile(loaded, latency.ProfileConfig.quick(backend="ort-cpu", threads=threads, out=path,
                                                                max_points_per_axis=2, input_size=32), progress=False)
        paths.append(path)
    ev = fidelity_evaluator(loaded.model, torch.randn(1, 3, 32, 32), n=16)
    budgets = []
    for path in paths:  # 0.8x where the table reaches it, else halfway between its floor and the unpruned model
        ctx = make_context(loaded, PruneConfig(budget=f"0.99x@{path}", align=16, progress=False))
        floor = ctx.artifacts["smallest_cost"] / ctx.baseline_cost
        budgets.append(f"{0.8 if floor < 0.6 else round((floor + 1) / 2 + 0.01, 2)}x@{path}")
    return loaded, paths, budgets, ev


def test_parse_bound_budgets():
    b = parse_budgets(["0.5x@a.json", "4ms", "50%flops"])
    assert b[0] == BoundBudget(parse_bound_budget("0.5x").budget, "a.json") and b[0].budget.value == 0.5
    assert b[1].table is None and b[1].budget.kind == "ms" and b[2].budget.unit == "flops"
    with pytest.raises(ConfigError, match="takes no table"):
        parse_bound_budget("50%flops@a.json")
    with pytest.raises(ConfigError, match="without a table"):
        parse_bound_budget("0.5x@")
    with pytest.raises(ConfigError, match="same table"):
        parse_budgets(["0.5x@a.json", "0.6x@a.json"])
    with pytest.raises(ConfigError, match="cannot read budget"):
        PruneConfig(strategy="halp", budget="0.5x", more_budgets=("fast@b.json",))
    with pytest.raises(ConfigError, match="first budget"):
        PruneConfig(more_budgets=("0.5x",))


def _instance(rng, K):
    n = int(rng.integers(3, 7))
    values, costs, extra = [], [], [[] for _ in range(K)]
    for _ in range(n):
        m = int(rng.integers(2, 5))
        values.append(np.sort(rng.random(m)).tolist())
        costs.append(np.sort(rng.integers(0, 10, m)).tolist())
        for k in range(K):
            extra[k].append(np.sort(rng.random(m) * 10).tolist())
    cap = int(sum(max(c) for c in costs) * rng.uniform(0.3, 0.9))
    caps = [sum(max(e) for e in extra[k]) * rng.uniform(0.3, 0.9) for k in range(K)]
    return values, costs, cap, extra, caps


def test_lagrangian_knapsack_against_brute_force():
    """On 150 random small instances with one or two extra dimensions: never infeasible where a
    feasible answer exists, never above the optimum, the dual bound never below it, and on average
    within 2% of it (measured here: 99.35% of optimal on average, min 81%, exact on 96 of 108)."""
    rng = np.random.default_rng(0)
    ratios, exact = [], 0
    for _ in range(150):
        values, costs, cap, extra, caps = _instance(rng, int(rng.integers(1, 3)))
        best, _ = knapsack_multi_brute(values, costs, cap, extra, caps)
        val, picks, info = knapsack_mc_multi(values, costs, cap, extra, caps)
        if not np.isfinite(best):
            assert picks == []
            continue
        assert picks, "a feasible instance came back infeasible"
        assert sum(costs[i][j] for i, j in enumerate(picks)) <= cap
        for ec, c in zip(extra, caps):
            assert sum(ec[i][j] for i, j in enumerate(picks)) <= c * (1 + 1e-9)
        assert val <= best + 1e-9 and info["dual_bound"] >= best - 1e-9
        ratios.append(val / best if best > 0 else 1.0)
        exact += val >= best - 1e-9
    print(f"\nLagrangian knapsack: {np.mean(ratios):.4f} of optimal on average, min {np.min(ratios):.3f}, "
          f"exact on {exact}/{len(ratios)}")
    assert np.mean(ratios) >= 0.98 and exact >= 0.7 * len(ratios)


def test_non_binding_extra_dimension_is_exact():
    rng = np.random.default_rng(1)
    values, costs, cap, extra, _ = _instance(rng, 1)
    caps = [1e9]
    from hwprune.strategies.halp import knapsack_mc

    assert knapsack_mc_multi(values, costs, cap, extra, caps)[0] == pytest.approx(knapsack_mc(values, costs, cap)[0])


@pytest.mark.parametrize("name", ["halp", "netadapt", "evolution"])
def test_strategies_meet_both_tables_and_measure_both_devices(tables, name):
    """Two ORT CPU tables of this machine (1 and 2 threads): the plan is predicted within both
    budgets, and the closed loop measures the pruned model on both devices, one row each."""
    loaded, paths, budgets, ev = tables
    cfg = PruneConfig(strategy=name, budget=budgets[0], more_budgets=(budgets[1],), options=FAST, align=16,
                      progress=False, backend="ort-cpu", closed_loop_rounds=0)  # measured once per device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune(loaded, cfg, evaluator=ev)
    ctx = make_context(loaded, cfg)
    widths = {k: v["after"] for k, v in res.report.widths.items()}
    for c in ctx.constraints:  # the original targets, whatever the loop tightened
        assert c.predict(widths) <= c.target * (1 + 1e-9), (c.label, c.predict(widths), c.target)
    rows = res.report.devices
    assert [r["table"] for r in rows] == paths and [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        # Both readings are real and the plan is predicted faster; whether the stopwatch agrees on a
        # tiny model at >=0.8x under a busy second xdist worker is noise (CI once read 2.15 vs 2.00 ms),
        # so the speed itself is left to the benchmarks.
        assert r["checked"] == "measured" and r["measured_ms"] > 0 and r["baseline_ms"] > 0
        assert r["predicted"] < r["baseline_predicted"]
        assert r["speedup_measured"] == pytest.approx(r["baseline_ms"] / r["measured_ms"])
        assert r["met"] == (r["measured_ms"] <= r["budget_ms"] * 1.03)
    out = res.model(torch.randn(2, 3, 32, 32))  # a real, smaller network
    assert out.shape == (2, 10) and res.report.flops_reduction > 1.0
    d = res.report.to_dict()
    assert len(d["devices"]) == 2 and len(d["budget"]["all"]) == 2


def test_all_strategies_meet_three_budgets_predicted(tables):
    """Every strategy meets two latency budgets and a FLOPs budget at once (predicted; no closed loop)."""
    loaded, paths, budgets, ev = tables
    for name in ["uniform", "global", "amc", "halp"]:
        cfg = PruneConfig(strategy=name, budget=budgets[0], more_budgets=(budgets[1], "70%flops"), options=FAST,
                          align=16, progress=False)
        res = prune(loaded, cfg, evaluator=ev)
        assert [r["met"] for r in res.report.devices] == [True, True, True], name
        assert [r["checked"] for r in res.report.devices] == ["predicted only"] * 2 + ["exact count"]
        assert res.report.met_budget is None  # nothing measured


def test_table_of_another_machine_is_predicted_only_in_ms_and_a_proxy_as_a_share(tables, tmp_path):
    """A table whose fingerprint is another device's is spent but its milliseconds are not measured
    here (predicted only); a share of the unpruned model on it is measured here, beside the
    unpruned model, as a proxy for that device's ratio -- the rule one budget follows too -- and
    every line that shows it says so (no drift warning: this machine is not meant to read as that
    table predicts)."""
    from hwprune.devices import device_line, devices_markdown

    loaded, paths, budgets, ev = tables
    with open(paths[1]) as f:
        d = json.load(f)
    d["device"]["cpu"] = "Some Other CPU 9000"
    other, other_b = str(tmp_path / "other.json"), str(tmp_path / "other-b.json")  # one budget a table
    for path in (other, other_b):
        with open(path, "w") as f:
            json.dump(d, f)
    share = budgets[1].split("@")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base_ms = make_context(loaded, PruneConfig(budget=f"0.99x@{other}", align=16, progress=False)).baseline_cost
        cfg = PruneConfig(strategy="uniform", budget=budgets[0], align=16, progress=False, backend="ort-cpu",
                          closed_loop_rounds=0, more_budgets=(f"{share}@{other}", f"{base_ms:.4f}ms@{other_b}"))
        rep = prune(loaded, cfg).report
    rows = rep.devices
    assert [r["checked"] for r in rows] == ["measured", "measured", "predicted only"]
    assert "proxy" not in rows[0] and "another device" in rows[1]["proxy"] and rows[1]["measured_ms"] > 0
    assert rows[1]["threads"] == 2 and "table_drift" not in rows[1]  # measured with the table's own settings
    assert "another device" in rows[2]["not_measured"] and rows[2]["measured_ms"] is None
    assert "a proxy for that device" in device_line(rows[1]) and "proxy" not in device_line(rows[0])
    assert "a proxy for that device" in rep.verdict.split(";")[1]
    assert "here: proxy" in devices_markdown(rows)[3] and "predicted only" in devices_markdown(rows)[4]


def test_unreachable_combination_names_each_devices_floor(tables):
    loaded, paths, budgets, ev = tables
    # half of what the second table says its smallest model takes (a fixed 0.05x was reachable on a
    # clean-clone CI run: a quick table's floor moves with the machine's state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = make_context(loaded, PruneConfig(strategy="uniform", budget="0.99x", align=16, progress=False),
                             table=paths[1])
    floor_ms = alone.artifacts["smallest_cost"]
    assert floor_ms > 0  # a quick table's remainder line once predicted -0.37 ms here (clean-clone CI, 2026-12-01)
    with pytest.raises(BudgetError) as e:
        make_context(loaded, PruneConfig(strategy="halp", budget=budgets[0],
                                         more_budgets=(f"{floor_ms / 2:.6f}ms@{paths[1]}",), align=16, progress=False))
    msg = str(e.value)
    assert "tiny-1t.json" in msg and "tiny-2t.json" in msg and "UNREACHABLE" in msg and "smallest reachable" in msg


def test_table_of_another_model_is_refused(tables):
    loaded, paths, budgets, ev = tables
    committed = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")
    with pytest.raises(TableError, match="another model"):
        make_context(loaded, PruneConfig(strategy="halp", budget=budgets[0], more_budgets=(f"0.5x@{committed}",),
                                         align=16, progress=False))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hwprune", *args], capture_output=True, text=True, timeout=600)


def test_cli_two_devices_writes_one_row_each(tables, tmp_path):
    loaded, paths, budgets, ev = tables
    out = tmp_path / "p"
    r = _cli("prune", "--model", "tiny_resnet", "--input-size", "32", "--strategy", "uniform", "--align", "16",
             "--budget", budgets[0], "--budget", budgets[1], "--budget", "80%flops", "--closed-loop-rounds", "0",
             "--quiet", "--plot", "--out", str(out))
    assert r.returncode in (0, 3), r.stderr  # 3: a device measured over its budget on a busy machine
    rep = json.loads((out / "report.json").read_text())
    assert [row["checked"] for row in rep["devices"]] == ["measured", "measured", "exact count"]
    md = (out / "report.md").read_text()
    assert md.count("| ort-cpu fp32 b1") == 2 and "| flops |" in md
    assert "tiny-1t.json" in r.stdout and "tiny-2t.json" in r.stdout
    import matplotlib.image

    png = matplotlib.image.imread(str(out / "devices.png"))  # each device's share of its budget, drawn
    assert png.shape[0] > 250 and png.shape[1] > 900 and "devices.png" in r.stdout


def test_recalibrate_re_times_every_bound_table_this_machine_can_measure(tables, tmp_path):
    """--recalibrate with several budgets: each bound table of this machine is re-timed with its
    own settings (units kept, history says so); a bound table of another device is left as it is
    and the run says why (timing it here would write this machine's speed into it)."""
    loaded, paths, budgets, ev = tables
    copies = []
    for i, (path, cpu) in enumerate([(paths[0], None), (paths[1], None), (paths[1], "Some Other CPU 9000")]):
        d = json.loads(open(path).read())
        if cpu:
            d["device"]["cpu"] = cpu
        copies.append(tmp_path / f"t{i}.json")
        copies[-1].write_text(json.dumps(d))
    before = [json.loads(c.read_text()) for c in copies]
    r = _cli("prune", "--model", "tiny_resnet", "--input-size", "32", "--strategy", "uniform", "--align", "16",
             "--budget", f"0.9x@{copies[0]}", "--budget", f"0.95x@{copies[1]}", "--budget", f"0.95x@{copies[2]}",
             "--closed-loop-rounds", "0", "--recalibrate", "--quiet", "--out", str(tmp_path / "p"))
    assert r.returncode in (0, 3), r.stderr
    after = [json.loads(c.read_text()) for c in copies]
    for i in (0, 1):
        assert after[i]["history"][-1]["recalibrated"] is True and after[i]["families"] == before[i]["families"]
        assert f"latency table {copies[i]} recalibrated" in r.stderr
    assert after[2] == before[2] and f"latency table {copies[2]} not recalibrated: measured on another device" in r.stderr


def test_recalibrate_refuses_a_table_of_other_hardware(tables, tmp_path):
    """Recalibrating a table re-times it *here*: a table whose fingerprint names another CPU is
    refused (it would get this machine's speed), naming the field and the fix, the file untouched;
    `hwprune prune --table T --recalibrate` says the same before any search."""
    from hwprune.errors import ConfigError
    from hwprune.latency.calibration import recalibrate

    loaded, paths, budgets, ev = tables
    d = json.loads(open(paths[1]).read())
    d["device"]["cpu"] = "Some Other CPU 9000"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    before = other.read_text()
    with pytest.raises(ConfigError, match=r"other hardware \(cpu: table 'Some Other CPU 9000'.*hwprune profile --out"):
        recalibrate(loaded, str(other))
    r = _cli("prune", "--model", "tiny_resnet", "--input-size", "32", "--strategy", "uniform", "--align", "16",
             "--budget", "0.9x", "--table", str(other), "--recalibrate", "--quiet", "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and "describes other hardware" in r.stderr and "Traceback" not in r.stderr
    assert other.read_text() == before and not (tmp_path / "p").exists()


def test_cli_refuses_bad_budgets_before_writing(tables, tmp_path):
    loaded, paths, budgets, ev = tables
    base = ["prune", "--model", "tiny_resnet", "--input-size", "32", "--strategy", "halp", "--align", "16", "--quiet"]
    out = tmp_path / "x"
    r = _cli(*base, "--budget", budgets[0], "--budget", f"0.5x@{tmp_path}/missing.json", "--out", str(out))
    assert r.returncode == 2 and "missing.json" in r.stderr and "does not exist" in r.stderr
    assert not out.exists()  # the unreachable combination is refused by make_context (tested above), before OUT


def test_closed_loop_tightens_only_the_device_that_missed(tables, tmp_path):
    """Device A's table is made to under-predict every pruned variant by half (its unpruned model
    predicted right): A's first plan keeps nearly the whole model and misses on the real stopwatch,
    so the loop tightens A's target alone, from the measurement, and searches again against both
    budgets; B's target is untouched."""
    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable

    loaded, paths, budgets, ev = tables
    doc = json.loads(open(paths[0]).read())
    graph = ChannelGraph(loaded.model, torch.randn(1, 3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        units = LatencyTable.load(paths[0]).cost_model(graph).units_sum({})
        b_full = LatencyTable.load(paths[1]).cost_model(graph).predict({})
    # half the units' latency up to 95% of the units, then rising to the full model's own: A's 0.7x
    # plan keeps ~97% of the units and measures near 1.0x, far over 0.7x whatever the machine's load
    # (a CI run with the curve at 0.6x up to half the units measured A's 79% plan under its budget)
    xs = [0.05 * units, 0.95 * units, units]
    (key,) = doc["models"]
    doc["models"][key]["calibration"] = {"a": 1.0, "b": 0.0, "correction": {
        "units_ms": xs, "residual_ms": [-0.5 * xs[0], -0.5 * xs[1], 0.0]}}
    scaled = tmp_path / "scaled.json"
    scaled.write_text(json.dumps(doc))
    # B's budget is three times its unpruned latency: no load on the machine can make B miss (CI runs
    # missed it at 0.8x, and at 0.99x when A's plan kept 98% of the model)
    cfg = PruneConfig(strategy="uniform", budget=f"0.7x@{scaled}", more_budgets=(f"{3 * b_full:.4f}ms@{paths[1]}",),
                      align=16, progress=False, backend="ort-cpu", closed_loop_rounds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = prune(loaded, cfg).report
    first, steps = rep.closed_loop[0]["devices"], rep.closed_loop
    assert not first[0]["met"] and len(steps) >= 2  # A missed: searched again
    a, b = rep.devices
    assert a["final_target"] < a["target"] and b["final_target"] == b["target"]
    assert steps[1]["devices"][0]["final_target"] == pytest.approx(
        min(first[0]["final_target"], first[0]["predicted"]) * first[0]["budget_ms"] / first[0]["measured_ms"])


def test_a_device_whose_unpruned_model_measures_far_off_its_table_is_warned(tables, tmp_path, monkeypatch):
    """Device A's table is made to predict everything at 0.3x of what it measured (a table from a
    machine three times faster, or this one under heavy load): the closed loop's first reading of
    A's unpruned model is far off, so A's row carries the drift and the report warns, naming A, as
    the single-budget loop does. A's budget is in ms and missed, so before judging, A is measured
    again after a pause (twice: it stays slow) and judged by the reading with the fastest unpruned
    model, at today's speed."""
    import hwprune.closed_loop as loop_mod

    loaded, paths, budgets, ev = tables
    doc = json.loads(open(paths[0]).read())
    (key,) = doc["models"]
    doc["models"][key]["calibration"] = {"a": 0.3, "b": 0.0}
    fast = tmp_path / "fast.json"
    fast.write_text(json.dumps(doc))
    full = make_context(loaded, PruneConfig(budget=f"0.99x@{fast}", align=16, progress=False)).baseline_cost
    pauses = []
    monkeypatch.setattr(loop_mod, "_pause", pauses.append)
    cfg = PruneConfig(strategy="uniform", budget=f"{0.9 * full:.5f}ms@{fast}", more_budgets=(budgets[1],), align=16,
                      progress=False, backend="ort-cpu", closed_loop_rounds=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = prune(loaded, cfg).report
    a = rep.devices[0]
    assert a["checked"] == "measured" and a["table_drift"]["relative"] > 1.0  # measured > 2x what it predicts
    assert a["table_drift"]["predicted_full_ms"] == pytest.approx(a["baseline_predicted"])
    assert any(w.startswith(f"the table predicts the unpruned model on {a['device']}") for w in rep.warnings)
    assert "a budget in ms is judged on today's speed" in a["table_drift"]["warning"]
    settle = a["settle"]
    assert len(settle["baseline_ms"]) == 3 and len(pauses) == 2 and not settle["settled"] and not a["met"]
    assert a["baseline_ms"] == min(settle["baseline_ms"]) == settle["baseline_ms"][settle["kept"]]
    assert a["measured_ms"] == settle["pruned_ms"][settle["kept"]]
    assert rep.closed_loop[0]["devices"][0]["settle"] == settle and "settle" not in rep.devices[1]  # B: a share


def test_threads_default_to_the_tables_and_a_contradicting_threads_is_refused(tables, tmp_path, capsys):
    """The closed loop, bench and --recalibrate time as the table the first latency budget is spent
    on was timed: without --threads its thread count is used (a 1-thread table was once checked and
    recalibrated at the default 2 threads), and a --threads that contradicts it is refused before
    any model is loaded, by `prune` and by `run` alike."""
    from hwprune.cli.main import main
    from hwprune.latency import LatencyTable
    from hwprune.service import measuring_threads

    one = LatencyTable.load(tables[1][0], check_device=False)  # tiny-1t.json
    assert measuring_threads(None, one, "ort-cpu") == 1 and measuring_threads(1, one, "ort-cpu") == 1
    assert measuring_threads(None, None, "ort-cpu") == 2 and measuring_threads(4, None, "ort-cpu") == 4
    assert measuring_threads(3, one, "torch-cpu") == 3  # measured on another backend: the table says nothing
    out = tmp_path / "p"
    for argv in (["prune", "--model", "tiny_resnet", "--budget", f"0.9x@{one.path}"],
                 ["prune", "--model", "tiny_resnet", "--budget", "0.9x", "--table", one.path],
                 ["run", "--model", "tiny_resnet", "--budget", f"0.9x@{one.path}"]):
        assert main([*argv, "--threads", "2", "--out", str(out)]) == 2
        assert "was profiled with 1 thread and --threads is 2" in capsys.readouterr().err
    assert not out.exists()


def test_run_with_several_budgets_meets_each_on_its_own_device(tables, tmp_path, cli, capsys):
    """Issue #20 through `hwprune run`: ``--budget`` repeated is one model for several devices. The
    first budget is the run's device (``BUDGET@TABLE`` or --table, profiled or reused otherwise;
    benched and exported there), every budget is met, each measured on its own device where this
    machine reaches it (two ORT tables of this machine, 2 and 1 threads) and, for a share on a
    copy relabelled as another CPU, here as a proxy for it. report.md has one row per device, devices.png shows
    them, and report.json's command line gives every budget back. Refused before any work: a
    budget's table that contradicts --table, one that does not exist, several with --precision int8."""
    from hwprune.cli.cmd_run import split_budgets
    from hwprune.cli.main import main

    assert split_budgets(None, None, "0.5x") == ("0.5x", None, ())
    assert split_budgets(["0.6x@t.json"], None, "0.5x") == ("0.6x", "t.json", ())
    assert split_budgets(["4ms", "0.7x@b.json", "50%flops"], "t.json", "0.5x") == ("4ms", "t.json",
                                                                                   ("0.7x@b.json", "50%flops"))
    out = tmp_path / "r"
    assert main(["run", "--budget", "0.5x@a.json", "--table", "b.json", "--out", str(out)]) == 2
    assert "names the table 'a.json' and --table 'b.json' another" in capsys.readouterr().err
    assert main(["run", "--budget", "0.5x", "--budget", "0.6x@missing.json", "--out", str(out)]) == 2
    assert "bound to table 'missing.json', which does not exist" in capsys.readouterr().err
    assert main(["run", "--precision", "int8", "--budget", "0.5x", "--budget", "4ms@b.json", "--out", str(out)]) == 2
    assert "--precision int8 takes one budget" in capsys.readouterr().err
    assert not out.exists()

    paths = dict(zip((1, 2), tables[1]))  # tiny-1t.json, tiny-2t.json
    d = json.loads(open(paths[1]).read())
    d["device"]["cpu"] = "Some Other CPU 9000"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    f1, f2 = (float(b.split("x@")[0]) for b in tables[2])  # reachable on each table (the fixture)
    given = [f"{f2}x", f"{f1}x@{paths[1]}", f"0.9x@{other}"]
    proc = cli("run", "--quick", "--model", "tiny_resnet", "--input-size", "32", "--align", "16", "--table", paths[2],
               *[a for b in given for a in ("--budget", b)], "--batch", "1", "--finetune-epochs", "0", "--no-progress",
               "--out", str(out), cwd=str(tmp_path), check=False)
    assert_ran(proc.returncode, proc.stdout + proc.stderr, "run with several budgets")
    rep = json.loads((out / "report.json").read_text())
    assert rep["budgets"] == given
    rows = rep["prune"]["devices"]
    assert [r["checked"] for r in rows] == ["measured"] * 3  # the share on another CPU's table: here, as a proxy
    assert [r["threads"] for r in rows] == [2, 1, 1] and "another device" in rows[2]["proxy"]
    for r, f in zip(rows, (f2, f1, 0.9)):  # each measured with its own table's settings, against its own unpruned model
        assert r["measured_ms"] > 0 and r["budget_ms"] == pytest.approx(f * r["baseline_ms"])
    assert proc.returncode == (0 if all(r["met"] for r in rows) else 3)
    assert rep["latency"]["1"]["speedup"] > 0 and rep["backend"]["threads"] == 2  # benched on the run's device
    md = (out / "report.md").read_text()
    assert "## Devices" in md and all(f"| {r['device']} | {r['budget']}" in md for r in rows) and "here: proxy" in md
    assert "devices.png" in " ".join(rep["files"]["figures"]) and (out / "devices.png").is_file()
    assert f"--budget {given[1]}" in rep["commands"][0] and f"--table {paths[2]}" in rep["commands"][0]
    for r in rows:
        assert f"{r['device']}: budget {r['budget']}" in proc.stdout


def test_one_budget_on_another_machines_table_is_predicted_only(tables, tmp_path):
    """One budget in ms spent on a table of a device this machine cannot measure: the closed loop
    is off (it would time this machine and judge that device's milliseconds by it; a 1.2 ms budget
    of a relabelled table was once 'met by measurement' here), the verdict says not measured, the
    report warns, and the result is what the table predicts under the budget. A share (0.5x) on it
    is still measured here, beside the unpruned model, and the verdict calls that a proxy."""
    loaded, paths, budgets, ev = tables
    d = json.loads(open(paths[1]).read())
    d["device"]["cpu"] = "Some Other CPU 9000"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    frac = float(budgets[1].split("x@")[0])
    common = dict(strategy="uniform", align=16, progress=False, backend="ort-cpu", threads=2, closed_loop_rounds=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base_ms = make_context(loaded, PruneConfig(budget=f"0.99x@{other}", **common)).baseline_cost
        r = prune(loaded, PruneConfig(budget=f"{frac * base_ms:.4f}ms@{other}", **common)).report
        share = prune(loaded, PruneConfig(budget=f"{frac}x@{other}", **common)).report
    assert r.latency.measured_ms is None and r.met_budget is None and r.closed_loop is None
    assert r.verdict.startswith("not measured") and "meets" in r.verdict
    assert r.latency.predicted_ms <= frac * base_ms * (1 + 1e-3)
    assert any("cannot measure" in w and "another device" in w for w in r.warnings)
    assert share.latency.measured_ms is not None and not any("cannot measure" in w for w in share.warnings)
    assert share.verdict.endswith("(on this machine, a proxy for the table's device)")  # said, as among several
    assert any("as a proxy for that device's ratio" in w for w in share.warnings) and share.latency.table_drift is None
    from hwprune.data import make_data  # --iterative 2: its last step is not measured here either

    data = make_data("synthetic", input_size=32, n_train=32, n_val=32, calib_size=32, batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = prune(loaded, PruneConfig(budget=f"{frac * base_ms:.4f}ms@{other}", iterative=2, **common),
                   data=data).report
    assert it.latency.measured_ms is None and it.verdict.startswith("not measured") and it.iterative["steps"] == 2
