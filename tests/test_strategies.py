"""Strategies on tiny_resnet against exact cost models (FLOPs, params) and a stand-in evaluator."""
import json

import numpy as np
import pytest
import torch

from hwprune.models import load_model
from hwprune.prune import PruneConfig, make_context, prune
from hwprune.strategies import list_strategies
from hwprune.strategies._common import fidelity_evaluator
from hwprune.strategies.amc import DDPG, amc_reward, clip_width, truncated_normal
from hwprune.strategies.evolution import choose_for_budget, dominates, pareto_front
from hwprune.strategies.halp import kept_value, knapsack_brute, knapsack_mc
from hwprune.strategies.netadapt import decrement_schedule, iteration_target

FAST = {"amc_episodes": 4, "amc_warmup": 2, "evo_pop": 4, "evo_gens": 1, "sens_points": 3,
        "netadapt_initial": 0.2, "halp_steps": 2}
ALL = ["uniform", "global", "sensitivity", "netadapt", "amc", "halp", "evolution"]


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    return load_model("tiny_resnet", kwargs={"width": 16, "depth": 1})


@pytest.fixture(scope="module")
def evaluator(loaded):
    return fidelity_evaluator(loaded.model, torch.randn(1, 3, 32, 32), n=16)


def test_registry_lists_all():
    assert set(ALL) <= set(list_strategies())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", ["50%flops"])
def test_every_strategy_meets_budget(loaded, evaluator, name, budget):
    res = prune(loaded, PruneConfig(strategy=name, budget=budget, options=FAST, progress=False), evaluator=evaluator)
    c = res.report["cost"]
    assert c["predicted"] <= c["target"] * (1 + 1e-9)
    # the real pruned model's FLOPs agree with the cost model's prediction, and it runs
    assert res.report["after"]["flops"] <= c["target"] * 1.001
    assert res.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert "accuracy" in res.report and res.report["strategy"] == name


def test_params_budget_and_cost_model_as_table(loaded):
    res = prune(loaded, PruneConfig(strategy="global", budget="40%params", progress=False))
    assert res.report["after"]["params"] <= 0.4 * res.report["before"]["params"] * 1.001
    # any CostModel may stand in for the latency table (unit ms): here FLOPs scaled to "ms"
    from hwprune.cost import FlopsCostModel

    class FakeMs:
        unit = "ms"

        def __init__(self, ctx):
            self.f = FlopsCostModel(ctx.graph, ctx.example_input)

        def predict(self, widths):
            return self.f.predict(widths) / 1e6

    ctx = make_context(loaded, PruneConfig(strategy="uniform", progress=False))
    res = prune(loaded, PruneConfig(strategy="halp", budget="0.5x", progress=False), table=FakeMs(ctx))
    assert res.report["latency"]["predicted_ms"] <= 0.5 * res.report["latency"]["baseline_predicted_ms"] * (1 + 1e-9)


@pytest.mark.parametrize("name", ["netadapt", "amc", "evolution"])
def test_same_seed_same_plan(loaded, evaluator, name):
    plans = [prune(loaded, PruneConfig(strategy=name, budget="50%flops", seed=3, options=FAST, progress=False),
                   evaluator=evaluator).plan.to_dict() for _ in range(2)]
    assert json.dumps(plans[0], sort_keys=True) == json.dumps(plans[1], sort_keys=True)


def test_uniform_ratio_mode_still_works(loaded):
    res = prune(loaded, PruneConfig(strategy="uniform", ratio=0.5, progress=False))
    assert res.report["flops_reduction"] > 2.5


# ---------------------------------------------------------------- exact pieces
def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(1, 5))
        values = [sorted(rng.random(int(rng.integers(1, 5))).tolist()) for _ in range(n)]
        costs = [sorted(rng.integers(0, 9, len(v)).tolist()) for v in values]
        cap = int(rng.integers(0, 25))
        v1, p1 = knapsack_mc(values, costs, cap)
        v2, p2 = knapsack_brute(values, costs, cap)
        assert v1 == pytest.approx(v2)
        if p1:
            assert sum(costs[i][j] for i, j in enumerate(p1)) <= cap
            assert sum(values[i][j] for i, j in enumerate(p1)) == pytest.approx(v1)


def test_knapsack_infeasible():
    assert knapsack_mc([[1.0], [2.0]], [[3], [4]], 5) == (float("-inf"), [])


def test_kept_value_is_top_k_sum():
    s = torch.tensor([0.1, 0.5, 0.2, 0.9])
    assert kept_value(s, [1, 2, 4]) == pytest.approx([0.9, 1.4, 1.7])


def test_netadapt_schedule_arithmetic():
    assert decrement_schedule(10.0, 0.1, 0.5, 0) == pytest.approx(1.0)
    assert decrement_schedule(10.0, 0.1, 0.5, 2) == pytest.approx(0.25)
    assert iteration_target(8.0, 5.0, 10.0, 0.1, 0.5, 1) == pytest.approx(7.5)
    assert iteration_target(5.2, 5.0, 10.0, 0.1, 0.5, 0) == pytest.approx(5.0)  # never below the budget


def test_amc_reward_and_clipping(loaded):
    assert amc_reward(0.8, 5.0, 5.0) == 0.8 and amc_reward(0.8, 5.1, 5.0) == -1.0
    ctx = make_context(loaded, PruneConfig(strategy="amc", budget="30%flops", progress=False))
    groups = ctx.graph.prunable
    decided = {}
    for t, g in enumerate(groups):  # the agent asks for no pruning at all: clipping must force it
        w = clip_width(ctx, decided, g, groups[t + 1:], g.width)
        rest_min = {r.name: ctx.grid(r)[0] for r in groups[t + 1:]}
        assert ctx.predict({**decided, g.name: w, **rest_min}) <= ctx.target * (1 + 1e-9)
        wider = [v for v in ctx.grid(g) if v > w]
        if wider:  # and it is the least pruning that keeps the budget reachable
            assert ctx.predict({**decided, g.name: wider[0], **rest_min}) > ctx.target
        decided[g.name] = w
    assert ctx.meets(decided)


def test_truncated_normal_and_ddpg_step():
    rng = np.random.default_rng(0)
    xs = [truncated_normal(rng, 0.9, 0.5, 0.0, 1.0) for _ in range(200)]
    assert min(xs) >= 0 and max(xs) <= 1
    agent = DDPG(9, seed=0)
    for i in range(10):
        agent.remember(np.random.rand(9).astype(np.float32), 0.5, 1.0, np.random.rand(9).astype(np.float32), 0.0)
    before = [p.clone() for p in agent.critic_t.parameters()]
    agent.update()
    after = list(agent.critic_t.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # soft update moved the target
    assert 0.0 <= agent.act(np.zeros(9, dtype=np.float32)) <= 1.0


def test_pareto_dominance():
    assert dominates((0.1, 1.0), (0.2, 1.0)) and not dominates((0.1, 1.0), (0.1, 1.0))
    assert not dominates((0.1, 2.0), (0.2, 1.0))
    pts = [(0.1, 5.0), (0.2, 3.0), (0.3, 3.0), (0.15, 6.0), (0.5, 1.0), (0.2, 3.0)]
    assert pareto_front(pts) == [0, 1, 4]
    # brute-force check on random points
    rng = np.random.default_rng(1)
    r = rng.random((30, 2)).tolist()
    front = set(pareto_front(r))
    for i, p in enumerate(r):
        assert (i in front) == (not any(dominates(q, p) for q in r))
    front = [{"error": 0.1, "cost": 5.0}, {"error": 0.2, "cost": 3.0}, {"error": 0.5, "cost": 1.0}]
    assert choose_for_budget(front, 3.0)["error"] == 0.2 and choose_for_budget(front, 0.5) is None


def test_cli_prune_budget_writes_report_and_plots(cli, tmp_path):
    out = tmp_path / "o"
    p = cli("prune", "--model", "tiny_resnet", "--budget", "50%flops", "--strategy", "evolution", "--evo-pop", "4",
            "--evo-gens", "1", "--out", str(out), "--plot", "--quiet", "--backend", "ort-cpu")
    assert "FLOPs" in p.stdout
    r = json.loads((out / "report.json").read_text())
    for k in ("strategy", "budget", "before", "after", "widths", "search_seconds", "seed", "latency", "accuracy"):
        assert k in r
    assert r["latency"]["measured_ms"] > 0 and r["latency"]["speedup_measured"] > 0
    pareto = json.loads((out / "pareto.json").read_text())
    assert sum(m["chosen"] for m in pareto["front"]) == 1
    assert (out / "widths.png").stat().st_size > 1000 and (out / "pareto.png").stat().st_size > 1000
