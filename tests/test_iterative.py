"""hwprune prune --iterative K (issue #18 item 4): the budget reached in K cut + fine-tune steps on
a geometric schedule, the plan composed relative to the unpruned model."""
import json

import pytest
import torch

from hwprune.data import make_data
from hwprune.errors import ConfigError
from hwprune.evaluate import make_evaluator
from hwprune.iterative import compose, step_targets
from hwprune.models import load_model
from hwprune.plan import PruningPlan, apply
from hwprune.prune import PruneConfig, prune


def test_geometric_schedule_ends_at_the_budget():
    t = step_targets(100.0, 25.0, 2)
    assert t == pytest.approx([50.0, 25.0])  # an equal fraction of what is left per step
    assert step_targets(10.0, 5.0, 1) == pytest.approx([5.0])
    with pytest.raises(ConfigError):
        step_targets(10.0, 5.0, 0)


def test_compose_maps_a_second_cut_back_to_the_unpruned_channels():
    plan = PruningPlan(model_id={}, input_shape=[1, 3, 8, 8], kept={"a": [0, 2]})
    assert compose({"a": [1, 3, 5, 7], "b": [0, 1]}, plan) == {"a": [1, 5], "b": [0, 1]}


def test_two_steps_meet_the_budget_with_a_finetune_between(tmp_path):
    loaded = load_model("tiny_resnet_synthetic")
    data = make_data("synthetic", input_size=32, batch_size=32, seed=0, n_train=128, n_val=64)
    ev = make_evaluator("accuracy", data)
    r = prune(loaded, PruneConfig(strategy="uniform", budget="50%flops", iterative=2, progress=False),
              calib=data.calib, evaluator=ev, data=data)
    rep = r.report.to_dict()
    hist = rep["iterative"]["history"]
    assert [h["step"] for h in hist] == [1, 2]
    assert hist[0]["fraction_of_unpruned"] == pytest.approx(0.5 ** 0.5)
    assert hist[0]["predicted"] <= hist[0]["target"] * (1 + 1e-9)
    assert hist[0]["finetune"]["epochs"] == 1 and len(hist[0]["finetune"]["loss"]) == 1
    assert "accuracy_after_finetune" in hist[0] and "finetune" not in hist[1]
    cost = rep["cost"]
    assert cost["predicted"] <= cost["target"] * (1 + 1e-9) and cost["baseline"] == pytest.approx(cost["target"] * 2)
    assert rep["flops_reduction"] >= 2 / 1.01
    # the plan is relative to the unpruned model: cut it again and the written weights load
    x = torch.randn(2, 3, 32, 32)
    m = apply(loaded.model, PruningPlan.from_dict(json.loads(json.dumps(r.plan.to_dict()))))
    m.load_state_dict(r.model.state_dict())
    assert torch.allclose(m.eval()(x), r.model.eval()(x))
    # the fine-tune between the steps trained the weights: the stem is no longer the unpruned
    # stem's kept filters (a one-shot cut without fine-tune would be exactly them)
    kept = r.plan.kept.get("stem.0", list(range(loaded.model.stem[0].out_channels)))
    assert not torch.equal(r.model.stem[0].weight, loaded.model.stem[0].weight[kept])


def test_iterative_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="--budget"):
        PruneConfig(strategy="uniform", ratio=0.5, iterative=2)
    with pytest.raises(ConfigError, match="must be >= 1"):
        PruneConfig(strategy="uniform", budget="0.5x", iterative=0)
    with pytest.raises(ConfigError, match="search fp32 costs"):
        PruneConfig(strategy="uniform", budget="0.5x", iterative=2, precision="int8", backend="ort-cpu")
    with pytest.raises(ConfigError, match="training data"):
        prune(load_model("tiny_resnet"), PruneConfig(strategy="uniform", budget="50%flops", iterative=2,
                                                     progress=False))


def test_cli_prints_the_steps(cli, tmp_path):
    out = tmp_path / "p"
    p = cli("prune", "--model", "tiny_resnet_synthetic", "--budget", "60%flops", "--iterative", "2", "--data",
            "synthetic", "--n-train", "64", "--n-val", "32", "--data-batch", "32", "--evaluator", "accuracy",
            "--out", str(out), "--quiet")
    assert "iterative step 1/2" in p.stdout and "fine-tuned 1 epoch(s)" in p.stdout
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["iterative"]["history"]) == 2 and rep["cost"]["predicted"] <= rep["cost"]["target"] * (1 + 1e-9)
