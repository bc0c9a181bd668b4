"""Closed loop on a real (tiny, quickly profiled) ONNX Runtime table: every strategy's result is
measured end to end, side by side with the unpruned model (the table's own estimator), and must
meet the budget (+3%). The loop's control logic (confirm a miss, tighten, stop at the table's
floor, report a miss) is also tested against a controlled stand-in device, deterministically."""
import os
import warnings

import pytest
import torch

from hwprune.bench import BUDGET_STATISTIC
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.strategies._common import fidelity_evaluator

latency = pytest.importorskip("hwprune.latency")

FAST = {"amc_episodes": 5, "amc_warmup": 2, "evo_pop": 6, "evo_gens": 2, "sens_points": 3,
        "netadapt_initial": 0.15, "halp_steps": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """tiny_resnet and a quick real table of it (2 calibration variants): the closed loop's logic
    tests below drive it with a stand-in device, and the tests that measure for real make its
    calibration wrong on purpose, so a coarse table serves (the full protocol took 25 s a worker)."""
    torch.manual_seed(0)
    loaded = load_model("tiny_resnet")
    path = str(tmp_path_factory.mktemp("table") / "tiny.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latency.profile(loaded, latency.ProfileConfig.quick(backend="ort-cpu", threads=2, out=path, calib_variants=2),
                        progress=False)
    return loaded, path


COMMITTED = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")


@pytest.fixture(scope="module")
def resnet18():
    """resnet18 at 224 (~10-16 ms here: big enough that the side-by-side estimator is stable
    with the other xdist worker busy) and the committed table of this machine type; the searches
    score candidates on 64-pixel inputs (the network is fully convolutional up to its global pool),
    which cost a twelfth of 224-pixel ones: what is tested is the latency the plan is measured at,
    224, and a score only ranks candidates (sensitivity + netadapt: 34 s -> 26 s here)."""
    loaded = load_model("resnet18")
    return loaded, fidelity_evaluator(loaded.model, torch.randn(1, 3, 64, 64), n=8)


def _prune_measured(loaded, name, budget, table, ev=None, rounds=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prune(loaded, PruneConfig(strategy=name, budget=budget, options=FAST, progress=False, align=16,
                                         backend="ort-cpu", threads=2, closed_loop_rounds=rounds),
                     evaluator=ev, table=table)


@pytest.mark.parametrize("name", ["uniform", "global", "sensitivity", "netadapt", "amc", "halp", "evolution"])
def test_measured_latency_meets_half_the_latency(resnet18, name):
    """What README promises: `--budget 0.5x` is met by measurement -- the p10 estimator, pruned and
    unpruned side by side, the one bench reports -- by every strategy."""
    loaded, ev = resnet18
    res = _prune_measured(loaded, name, "0.5x", COMMITTED, ev)
    lat = res.report["latency"]
    assert lat["met_budget"], res.report["verdict"]
    assert lat["measured_ms"] <= lat["budget_ms"] * 1.03 and lat["speedup_measured"] >= 1 / 0.5 / 1.03
    assert lat["statistic"] == BUDGET_STATISTIC and lat["measured_median_ms"] > 0
    loop = res.report["closed_loop"]
    for step in loop:  # the estimator the verdict uses: p10 readings, pooled where one was near the line
        for base, got in step.get("readings_ms", []):
            assert 0 < got < base
    kept_t = missed_t = None  # the last target that met and was loosened; the last loosened one that missed
    for prev, step in zip(loop, loop[1:]):
        note = prev.get("note", "")
        if "target loosened" in note:  # met far under: loosened towards the middle of the spend band
            aim = prev["goal_ms"] * (1 - 0.10 / 2)
            loose = min(res.report["cost"]["baseline"], max(prev["target"], prev["predicted"]) * aim / prev["measured_ms"])
            if missed_t is not None:  # never past halfway to a target known to miss
                loose = min(loose, (prev["target"] + missed_t) / 2)
            assert step["target"] == pytest.approx(loose) and step["target"] > prev["target"]
            kept_t = prev["target"]
            continue
        if "halfway" in note:  # a loosened plan missed: searched between the target that met and this one
            missed_t = prev["target"]
            assert step["target"] == pytest.approx((kept_t + missed_t) / 2) and kept_t < step["target"] < missed_t
            continue
        # a re-search tightens what the table said of the missed result
        assert step["target"] == pytest.approx(min(prev["target"], prev["predicted"]) * prev["goal_ms"] / prev["measured_ms"])
        assert step["target"] < prev["predicted"]


def _resnet18_only(tmp_path, name: str, calibration) -> str:
    """A copy of the committed table holding resnet18's record alone, with ``calibration(units)``
    (units: the unpruned model's units sum, ms) as its calibration; returns the path."""
    import json

    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable

    doc = json.loads(open(COMMITTED).read())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(COMMITTED)
    graph = ChannelGraph(load_model("resnet18").model, torch.randn(1, 3, 224, 224))
    key = next(k for k, r in doc["models"].items() if r["spec"] == "resnet18")
    doc["models"] = {key: doc["models"][key]}
    doc["models"][key]["calibration"] = calibration(table.cost_model(graph).units_sum({}))
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def _scaled_calibration(units: float, factor: float) -> dict:
    """A calibration that under-predicts every pruned variant by ``factor`` (residual curve
    ``-(1 - factor) x units`` below 97% of the unpruned ``units``, 0 at full width): the unpruned
    model is predicted right, a pruned one ``factor`` times its real latency."""
    xs = [0.05 * units, 0.97 * units, units]
    return {"a": 1.0, "b": 0.0, "correction": {"units_ms": xs,
                                                "residual_ms": [-(1 - factor) * xs[0], -(1 - factor) * xs[1], 0.0]}}


def _scaled_table(tmp_path, factor: float) -> str:
    """The committed table's resnet18 record with :func:`_scaled_calibration`."""
    return _resnet18_only(tmp_path, f"scaled-{factor}.json", lambda units: _scaled_calibration(units, factor))


def test_closed_loop_re_searches_on_the_real_stopwatch_until_it_meets(resnet18, tmp_path):
    """A table that under-predicts pruned latency by half: its first plan (barely pruned: the table
    reaches 0.5x at ~97% of the units) misses 0.5x on the real ORT stopwatch by far, the loop
    tightens the target from the measurement and re-searches, and the final plan meets the budget
    by measurement. (Was 0.7: a clean-clone CI run measured that first plan at 0.5x of an unpruned
    model it read 29% slower than the table, so the miss the test needs did not happen.)"""
    loaded, _ = resnet18
    res = _prune_measured(loaded, "uniform", "0.5x", _scaled_table(tmp_path, 0.5), rounds=4)
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert len(loop) >= 2, loop
    assert loop[0]["measured_ms"] > loop[0]["goal_ms"] * 1.03  # the first plan missed, as measured
    assert loop[1]["target"] < loop[0]["target"]
    assert lat["met_budget"], res.report["verdict"]


def test_closed_loop_spends_a_budget_the_table_wasted(resnet18, tmp_path):
    """A table that over-predicts every pruned variant 1.6x: its first plan meets 0.5x with much of
    the budget unused (measured ~0.3x); the loop loosens the target by what the measurement left
    and searches again, and the result it keeps meets the budget and is wider than the first."""
    loaded, _ = resnet18
    res = _prune_measured(loaded, "uniform", "0.5x", _scaled_table(tmp_path, 1.6), rounds=3)
    loop, lat = res.report["closed_loop"], res.report["latency"]
    first = loop[0]
    assert first["measured_ms"] < first["goal_ms"] * 0.9, loop  # met, far under
    assert len(loop) >= 2 and loop[1]["target"] > first["target"] and "loosened" in first["note"], loop
    assert lat["met_budget"], res.report["verdict"]  # never a miss handed back for a met result
    kept = [int(step["note"].rsplit(" ", 1)[1]) for step in loop if "kept round" in step.get("note", "")]
    if not kept:
        # the plan that came back is wider than the first: by the table (deterministic for uniform), and by
        # measurement within the stopwatch's noise -- a clean-clone CI run (2026-12-03, resnet18 read at 31-33
        # ms, 4x the table) measured the first plan at 0.358x, two wider ones at 0.44x and the wider final
        # one at 0.355x: the ratio of one reading moves by several % with the machine's state
        assert res.report["cost"]["predicted"] > first["predicted"], loop
        assert lat["measured_ms"] / lat["baseline_ms"] > 0.95 * first["measured_ms"] / first["baseline_ms"], loop
    else:  # a busy machine (CI read resnet18 at 44 ms, 5x the table) shifted the ratios and a looser plan
        # missed: the last result that met comes back, as measured (the rule itself: the logic tests)
        # (the kept round is the last that met: a halfway re-search may sit between it and the last,
        # as in a CI run 2026-12-03 -- met, met, missed, halfway missed -> round 1 kept)
        met = [s["round"] for s in loop if s["measured_ms"] <= s["goal_ms"] * 1.03]
        assert loop[-1]["measured_ms"] > loop[-1]["goal_ms"] * 1.03 and kept == [met[-1]], loop
        assert lat["measured_ms"] == pytest.approx(loop[kept[0]]["measured_ms"]), loop
    if kept == [0]:  # the first plan came back: its own target, not a looser one (a loaded suite run)
        assert res.report["cost"]["final_target"] == pytest.approx(res.report["cost"]["target"])
    else:
        assert res.report["cost"]["final_target"] > res.report["cost"]["target"]


def test_prune_and_run_exit_3_when_the_budget_is_missed(setup, tmp_path, cli):
    """The same verdict gives the same exit status: a plan the device cannot confirm (an
    optimistic table, no re-search allowed) is MISSED, and `prune` and `run` both exit 3."""
    import json

    _, path = setup
    doc = json.loads(open(path).read())
    for rec in doc["models"].values():  # as _scaled_table(0.5): the first plan is barely pruned, measured ~2x the budget
        rec["calibration"] = _scaled_calibration(rec["units_full_ms"], 0.5)
    table = str(tmp_path / "scaled.json")
    open(table, "w").write(json.dumps(doc))
    # the tiny model and uniform: the verdict is the point here (resnet18 at 224 took 3.5 minutes of CI)
    p = cli("prune", "--model", "tiny_resnet", "--budget", "0.5x", "--table", table, "--closed-loop-rounds", "0",
            "--strategy", "uniform", "--align", "16", "--out", str(tmp_path / "p"), "--quiet", check=False)
    assert p.returncode == 3 and "MISSED" in p.stdout, p.stdout + p.stderr
    r = cli("run", "--model", "tiny_resnet", "--budget", "0.5x", "--table", table, "--closed-loop-rounds", "0",
            "--strategy", "uniform", "--align", "16", "--finetune-epochs", "0", "--batch", "1", "--quick",
            "--out", str(tmp_path / "r"), "--no-progress", check=False)
    assert r.returncode == 3 and "MISSED" in r.stdout, r.stdout + r.stderr[-3000:]


def test_closed_loop_warns_when_the_machine_is_not_the_tables(setup, tmp_path):
    """A table whose units all read 3x slow (a machine that has since become faster, as the VM
    did between 2026-11-25 and 11-30) predicts the unpruned model far from what it measures;
    the report says so and names the way out."""
    import json

    loaded, path = setup
    doc = json.loads(open(path).read())
    for fam in doc["families"].values():
        fam["points"] = {k: 3 * v for k, v in fam["points"].items()}
    for rec in doc["models"].values():
        rec["calibration"].pop("correction", None)  # prediction = 3x units (+ the line's intercept)
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(doc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune(loaded, PruneConfig(strategy="uniform", budget="0.8x", progress=False, backend="ort-cpu",
                                        threads=2, closed_loop_rounds=0), table=str(stale))
    drift = res.report["latency"]["table_drift"]
    assert drift["relative"] < -0.15 and drift["measured_full_ms"] > 0
    assert drift["relative"] == pytest.approx(drift["measured_full_ms"] / drift["predicted_full_ms"] - 1)
    assert drift["predicted_full_ms"] == pytest.approx(res.report["latency"]["baseline_predicted_ms"])
    assert any("--recalibrate" in w for w in res.report["warnings"])


def _device(fixed: float = 0.0, first_over: float | None = None):
    """A stand-in for the stopwatch in the closed loop's *logic* tests (the real measurement is
    exercised above). The unpruned model takes 1 ms. Either ``fixed`` ms does not shrink with
    pruning and the rest scales with FLOPs, or (``first_over``) the time scales with FLOPs at the
    rate that puts the first result ``first_over`` times the budget fraction: a device harsher
    than the table whatever the quickly profiled table says."""
    from hwprune.counting import summarize
    from hwprune_deploy.timing import Timing

    calls, scale = [], []

    def measure(config, models, x, precision="fp32", spinning=False):
        r = summarize(models["pruned"], x)["flops"] / summarize(models["baseline"], x)["flops"]
        if first_over is not None:
            if not scale:
                scale.append(first_over * float(config.budget.rstrip("x")) / r)
            ms = min(1.0, scale[0] * r)
        else:
            ms = fixed + (1 - fixed) * r
        calls.append(ms)
        return {"baseline": Timing(1.0, 1.0, 1.0, 0.0, 10, 1), "pruned": Timing(ms, ms, ms, 0.0, 10, 1)}

    measure.calls = calls
    return measure


def _prune_on(setup, monkeypatch, budget, rounds=3, spend_band=0.10, dev=None, **device):
    import hwprune.closed_loop as loop_mod

    loaded, path = setup
    dev = dev or _device(**device)
    monkeypatch.setattr(loop_mod, "measure_pair", dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune(loaded, PruneConfig(strategy="uniform", budget=budget, progress=False, backend="ort-cpu",
                                        threads=2, closed_loop_rounds=rounds, spend_band=spend_band), table=path)
    return res, dev.calls


def test_closed_loop_loosens_a_result_far_under_and_keeps_the_last_that_met(setup, monkeypatch):
    """A device kinder than the table (the first result measures 0.7x the budget): the loop loosens
    the target towards the middle of the spend band; a looser plan that misses is dropped and the
    result that met is handed back, with its own measurement and budget."""
    from hwprune_deploy.timing import Timing

    res, calls = _prune_on(setup, monkeypatch, "0.75x", first_over=0.7)
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert loop[0]["measured_ms"] == pytest.approx(0.75 * 0.7) and "loosened" in loop[0]["note"], loop
    aim = 0.75 * (1 - 0.10 / 2)
    assert loop[1]["target"] == pytest.approx(min(res.report["cost"]["baseline"],
                                                  max(loop[0]["target"], loop[0]["predicted"]) * aim / (0.75 * 0.7)))
    assert lat["met_budget"] and lat["measured_ms"] >= loop[0]["measured_ms"]
    # the band at 0 (--spend-band 0): the first result, far under, is kept as it is
    res, calls = _prune_on(setup, monkeypatch, "0.75x", first_over=0.7, spend_band=0.0)
    assert len(res.report["closed_loop"]) == len(calls) == 1 and res.report["latency"]["met_budget"]
    assert res.report["cost"]["final_target"] == res.report["cost"]["target"]

    seq = []

    def harsh_after_first(config, models, x, precision="fp32", spinning=False):
        ms = 0.75 * (0.7 if not seq else 1.2)  # the first plan far under, every looser one over
        seq.append(ms)
        return {"baseline": Timing(1.0, 1.0, 1.0, 0.0, 10, 1), "pruned": Timing(ms, ms, ms, 0.0, 10, 1)}

    harsh_after_first.calls = seq
    res, calls = _prune_on(setup, monkeypatch, "0.75x", dev=harsh_after_first)
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert 2 <= len(loop) <= 4 and "kept round 0" in loop[-1]["note"], loop
    for prev, step in zip(loop[1:], loop[2:]):  # each miss is bisected towards round 0's target
        assert "halfway" in prev["note"] and step["target"] == pytest.approx((loop[0]["target"] + prev["target"]) / 2)
    assert lat["met_budget"] and lat["measured_ms"] == pytest.approx(0.75 * 0.7) and lat["budget_ms"] == 0.75
    assert res.report["cost"]["final_target"] == loop[0]["target"] and res.report["verdict"].startswith("measured")


def test_a_loosened_plan_that_misses_is_searched_again_halfway(resnet18, monkeypatch):
    """Far under, then a loosened plan that misses (twice read), then the plan searched halfway
    between the two targets meets inside the spend band: that one is handed back, not round 0's.
    On resnet18 and the committed table, not the tiny net's table profiled by the fixture: that
    one's plans are a coarse staircase that changes with every profile, and a CI run's put the
    loosened target at the unpruned model and the halfway target on one of the two plans already
    tried, so no halfway round ran (2026-12-03)."""
    from hwprune_deploy.timing import Timing

    seq = []

    def overshoot_then_middle(config, models, x, precision="fp32", spinning=False):
        ms = 0.75 * (0.7, 1.2, 1.2, 0.93)[min(len(seq), 3)]
        seq.append(ms)
        return {"baseline": Timing(1.0, 1.0, 1.0, 0.0, 10, 1), "pruned": Timing(ms, ms, ms, 0.0, 10, 1)}

    overshoot_then_middle.calls = seq
    res, calls = _prune_on((resnet18[0], COMMITTED), monkeypatch, "0.75x", dev=overshoot_then_middle)
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert len(calls) == 4 and len(loop) == 3, loop
    assert "halfway" in loop[1]["note"] and loop[1]["readings_ms"] == [[1.0, 0.75 * 1.2], [1.0, 0.75 * 1.2]]
    assert loop[2]["target"] == pytest.approx((loop[0]["target"] + loop[1]["target"]) / 2)
    assert loop[0]["target"] < loop[2]["target"] < loop[1]["target"] and "note" not in loop[2], loop
    assert lat["met_budget"] and lat["measured_ms"] == pytest.approx(0.75 * 0.93)
    assert res.report["cost"]["final_target"] == pytest.approx(loop[2]["target"])
    assert loop[0]["predicted"] < loop[2]["predicted"] < loop[1]["predicted"]


def test_a_loosened_plan_that_reads_a_miss_once_is_measured_again(setup, monkeypatch):
    """The loosened plan's first reading misses (a slow moment), its second meets: pooled, the
    looser plan meets and is kept rather than thrown away for the tighter one."""
    from hwprune_deploy.timing import Timing

    seq = []

    def slow_once(config, models, x, precision="fp32", spinning=False):
        ms = 0.75 * (0.7, 1.1, 0.85)[min(len(seq), 2)]  # far under; then a miss read once, a pass next
        seq.append(ms)
        return {"baseline": Timing(1.0, 1.0, 1.0, 0.0, 10, 1), "pruned": Timing(ms, ms, ms, 0.0, 10, 1)}

    slow_once.calls = seq
    res, calls = _prune_on(setup, monkeypatch, "0.75x", dev=slow_once)
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert len(calls) == 3 and len(loop) == 2 and "loosened" in loop[0]["note"], loop
    assert loop[1]["readings_ms"] == [[1.0, 0.75 * 1.1], [1.0, 0.75 * 0.85]] and "kept round" not in loop[1].get("note", "")
    assert lat["met_budget"] and lat["measured_ms"] == pytest.approx(0.75 * 0.975)
    assert res.report["cost"]["final_target"] > loop[0]["target"]


def test_closed_loop_tightens_until_the_device_meets_the_budget(setup, monkeypatch):
    res, calls = _prune_on(setup, monkeypatch, "0.75x", first_over=1.15, spend_band=0.0)  # tightening alone
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert len(loop) >= 2, loop  # this device is harsher than the table: the first result misses
    assert loop[0]["measured_ms"] == pytest.approx(0.75 * 1.15) and "readings_ms" not in loop[0]  # a clear miss stands
    assert len(calls) == len(loop) + sum("readings_ms" in s for s in loop)
    for prev, step in zip(loop, loop[1:]):
        assert step["target"] == pytest.approx(min(prev["target"], prev["predicted"]) * prev["goal_ms"] / prev["measured_ms"])
    assert lat["met_budget"] and lat["measured_ms"] <= 0.75 * 1.03 and lat["measured_ms"] == pytest.approx(calls[-1])
    assert res.report["verdict"].startswith("measured")


def test_closed_loop_reports_a_budget_the_device_cannot_reach(setup, monkeypatch):
    res, calls = _prune_on(setup, monkeypatch, "0.5x", fixed=0.8)
    lat, loop = res.report["latency"], res.report["closed_loop"]
    assert not lat["met_budget"] and lat["measured_ms"] > 0.8
    assert res.report["verdict"].startswith("MISSED") and "lower the budget" in res.report["verdict"]
    assert len(loop) <= 4  # three re-searches at most, or fewer when the target falls below the table's floor
    assert len(loop) == 4 or "smallest reachable" in loop[-1].get("note", "")


def test_a_reading_near_the_line_is_measured_again_and_pooled(setup, monkeypatch):
    """Either side of the budget line, a first reading within CONFIRM_BAND is measured again and
    the two readings are pooled; the pooled reading decides (no second chance for misses only)."""
    from hwprune.prune import CONFIRM_BAND

    res, calls = _prune_on(setup, monkeypatch, "0.75x", first_over=1.0 + CONFIRM_BAND / 2)
    first = res.report["closed_loop"][0]
    assert len(first["readings_ms"]) == 2 and calls[:2] == [calls[0], calls[1]]
    assert first["measured_ms"] == pytest.approx((calls[0] + calls[1]) / 2)


def _loaded_device(full_ms: float, budget_ms: float, loaded_reads: int):
    """A stand-in for the stopwatch (logic test): the first ``loaded_reads`` readings are taken on a
    busy machine (the unpruned model at twice the table's ``full_ms``, the result 1.2x the budget),
    later ones on an idle one (the unpruned model as the table says, the result 0.92x the budget)."""
    from hwprune_deploy.timing import Timing

    calls = []

    def measure(config, models, x, precision="fp32", spinning=False):
        busy = len(calls) < loaded_reads
        base, ms = (2 * full_ms, 1.2 * budget_ms) if busy else (full_ms, 0.92 * budget_ms)
        calls.append(ms)
        return {"baseline": Timing(base, base, base, 0.0, 10, 1), "pruned": Timing(ms, ms, ms, 0.0, 10, 1)}

    measure.calls = calls
    return measure


def test_a_miss_of_a_budget_in_ms_on_a_busy_machine_is_measured_again_after_a_pause(setup, monkeypatch):
    """A budget in ms has no unpruned model to cancel load against: a result read while the
    machine is busy (its unpruned model twice the table's) must not make the loop tighten. It is
    measured again after a pause; the idle reading meets and is what the report holds. On a machine
    that stays busy the loop measures twice more, then judges at that speed, tightening as before,
    and does not pause again in later rounds. A share of the unpruned model never pauses (the other
    logic tests count every reading)."""
    import hwprune.closed_loop as loop_mod

    loaded, path = setup
    from hwprune.prune import make_context

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = make_context(loaded, PruneConfig(budget="0.6x", progress=False), table=path).baseline_cost
    budget = f"{0.6 * full:.6f}ms"
    pauses = []
    monkeypatch.setattr(loop_mod, "_pause", pauses.append)
    res, calls = _prune_on(setup, monkeypatch, budget, spend_band=0.0, dev=_loaded_device(full, 0.6 * full, 1))
    loop, lat = res.report["closed_loop"], res.report["latency"]
    assert len(loop) == 1 and len(calls) == 2 and pauses == [loop_mod.SETTLE_PAUSE_S], loop
    settle = loop[0]["settle"]
    assert settle["baseline_ms"] == pytest.approx([2 * full, full]) and settle["kept"] == 1 and settle["settled"]
    assert lat["met_budget"] and lat["measured_ms"] == pytest.approx(0.92 * 0.6 * full)
    assert "table_drift" not in res.report["latency"]  # the reading judged by is the table's speed

    pauses.clear()
    res, calls = _prune_on(setup, monkeypatch, budget, rounds=2, spend_band=0.0,
                           dev=_loaded_device(full, 0.6 * full, 99))
    loop = res.report["closed_loop"]
    settle = loop[0]["settle"]
    assert len(settle["baseline_ms"]) == 3 and not settle["settled"] and len(pauses) == 2
    assert len(loop) >= 2 and loop[1]["target"] < loop[0]["target"] and not res.report["latency"]["met_budget"]
    assert not any("settle" in s for s in loop[1:]) and len(calls) == len(loop) + 2
