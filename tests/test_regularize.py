"""Regularise, then cut (hwprune.regularize): each regulariser shrinks the channels the plan cuts,
so the cut moves the outputs less than the same training without it; the formulas are the
papers'; an empty plan costs nothing; bad input is a ConfigError; the CLI runs it."""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from torch import nn

from hwprune.base_model import LoadedModel
from hwprune.data import make_data
from hwprune.errors import ConfigError
from hwprune.graph import ChannelGraph
from hwprune.plan import PruningPlan, apply
from hwprune.prune import prune
from hwprune.prune_config import PruneConfig
from hwprune.regularize import (GrowingSchedule, make_regularizer, output_change, regularize_then_cut)
from hwprune.train import train
from hwprune.zoo import tiny_resnet

EPOCHS, LR = 4, 0.05
#: strengths big enough to matter in 32 steps (the paper defaults, 1e-4, are for ~1e5 steps)
STRENGTHS = {"slimming": 0.5, "tpp": 0.3, "group-lasso": 0.3}


def _data():
    """Fresh loaders each time: the train loader's shuffle state advances, so a shared one would
    give the second run another data order."""
    return make_data("synthetic", input_size=16, n_train=256, n_val=128, batch_size=32)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    loaded = LoadedModel(model=tiny_resnet(width=8, depth=1),
                         model_id={"spec": "tiny_resnet", "kwargs": {"width": 8, "depth": 1}}, input_size=16)
    plan = prune(loaded, PruneConfig(ratio=0.5, input_size=16, progress=False)).plan
    assert any(len(k) < plan.widths_before[g] for g, k in plan.kept.items())
    return loaded, plan


@pytest.fixture(scope="module")
def baseline(setup):
    """The same training (seed, epochs, lr, data order) with no regulariser, then the same cut."""
    loaded, plan = setup
    model = copy.deepcopy(loaded.model)
    train(model, _data(), epochs=EPOCHS, lr=LR, seed=0, progress=False)
    norm = make_regularizer("group-lasso", model, plan).removed_norm(model)
    x = next(iter(_data().calib))[0]
    return {"removed_norm": norm, "output_change": output_change(model, apply(model, plan), x)}


@pytest.mark.parametrize("name", ["slimming", "tpp", "group-lasso"])
def test_regularizer_shrinks_what_the_cut_removes(setup, baseline, name):
    loaded, plan = setup
    before = copy.deepcopy(loaded.model.state_dict())
    pruned, h = regularize_then_cut(loaded, plan, _data(), name, epochs=EPOCHS, strength=STRENGTHS[name], lr=LR,
                                    progress=False)
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in before.items())  # trained a copy
    assert len(h["term"]) == len(h["removed_norm"]) == EPOCHS + 1 and len(h["penalty"]) == EPOCHS
    assert h["term"][-1] < 0.8 * h["term"][0], h["term"]  # the regulariser falls during training
    assert h["removed_norm"][-1] < 0.9 * baseline["removed_norm"], (h["removed_norm"], baseline)
    assert h["output_change"] < 0.8 * baseline["output_change"], (h["output_change"], baseline)
    # the cut model is the plan's architecture and runs
    assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert pruned.layers[1].conv1.out_channels == len(plan.kept["layers.1.conv1"])
    if name != "slimming":  # growing λ: 0 at the start, Δ more every 10 steps
        assert h["coefficient"][0] == 0.0 and h["coefficient"][-1] == pytest.approx(STRENGTHS[name] * 3)


def test_growing_schedule_follows_tpp_defaults():
    s = GrowingSchedule()  # TPP Tab. 6: Δ 1e-4, ceiling 1, every 10 iterations
    assert (s.at(0), s.at(9), s.at(10), s.at(25)) == (0.0, 0.0, 1e-4, 2e-4)
    assert s.at(10**6) == 1.0


def _conv_plan():
    """conv0 (8 filters) -> BN -> ReLU -> conv1 (4): keep conv0's channels 0..3."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 3, 8, 8)
    g = next(g for g in ChannelGraph(model, x).groups if g.prunable)
    plan = PruningPlan(model_id={"spec": "test"}, input_shape=[1, 3, 8, 8], kept={g.name: [0, 1, 2, 3]},
                       widths_before={g.name: 8})
    return model, plan, x


def test_terms_are_the_papers_formulas():
    model, plan, x = _conv_plan()
    w, b = model[0].weight.detach(), model[0].bias.detach()
    gamma, beta, w1 = model[1].weight.detach(), model[1].bias.detach(), model[3].weight.detach()
    cut = torch.arange(4, 8)
    # slimming (Liu et al. 2017): L1 of the cut channels' BN gamma
    slim = make_regularizer("slimming", model, plan, x)
    assert float(slim.term(model).detach()) == pytest.approx(float(gamma[cut].abs().sum()))
    # TPP Eq. (3) + (5): ||W W^T * (1 - m m^T)||_F^2 + sum over cut channels of gamma^2 + beta^2; penalty lambda/2 x
    flat = w.reshape(8, -1)
    m = torch.tensor([1.0] * 4 + [0.0] * 4)
    gram = (flat @ flat.t()) * (1 - torch.outer(m, m))
    expect = float(gram.pow(2).sum() + gamma[cut].pow(2).sum() + beta[cut].pow(2).sum())
    tpp = make_regularizer("tpp", model, plan, x, strength=0.1)
    assert float(tpp.term(model).detach()) == pytest.approx(expect, rel=1e-5)
    tpp.step(25)
    assert float(tpp.penalty(model).detach()) == pytest.approx(0.5 * 0.2 * expect, rel=1e-5)
    # group lasso: sum over cut channels of the L2 norm of everything that channel owns
    per = (flat[cut].pow(2).sum(1) + b[cut] ** 2 + gamma[cut] ** 2 + beta[cut] ** 2
           + w1[:, cut].pow(2).sum((0, 2, 3)))
    gl = make_regularizer("group-lasso", model, plan, x)
    assert float(gl.term(model).detach()) == pytest.approx(float(per.sqrt().sum()), rel=1e-5)
    assert gl.removed_norm(model) == pytest.approx(float(per.sum().sqrt()), rel=1e-5)
    gl.step(10)
    gl.penalty(model).backward()  # differentiable
    assert model[0].weight.grad[cut].abs().sum() > 0 and model[0].weight.grad[:4].abs().sum() == 0


@pytest.mark.parametrize("name", ["slimming", "tpp", "group-lasso"])
def test_empty_plan_costs_nothing(name):
    model, plan, x = _conv_plan()
    keep_all = PruningPlan(model_id=plan.model_id, input_shape=plan.input_shape,
                           kept={g: list(range(8)) for g in plan.kept}, widths_before=plan.widths_before)
    reg = make_regularizer(name, model, keep_all, x, strength=1.0)
    reg.step(1000)
    assert float(reg.penalty(model)) == 0.0 and reg.removed_norm(model) == 0.0


def test_bad_input_is_a_config_error():
    model, plan, x = _conv_plan()
    with pytest.raises(ConfigError, match="slimming, tpp, group-lasso"):
        make_regularizer("l1-norm", model, plan, x)
    with pytest.raises(ConfigError, match="-0.5"):
        make_regularizer("tpp", model, plan, x, strength=-0.5)
    with pytest.raises(ConfigError, match="--data"):
        regularize_then_cut(model, plan, None, "tpp", epochs=1)
    with pytest.raises(ConfigError, match="reg-epochs"):
        regularize_then_cut(model, plan, _data(), "tpp", epochs=0)


SMALL = """
from hwprune.data import make_data
from hwprune.zoo import tiny_resnet


def model(num_classes=10):
    return tiny_resnet(num_classes=num_classes, width=8, depth=1)


def data(input_size=16, batch_size=32, seed=0):
    return make_data("synthetic", input_size=input_size, batch_size=batch_size, seed=seed, n_train=256, n_val=128)
"""


def test_cli_prune_regularize(cli, tmp_path):
    small = tmp_path / "small.py"
    small.write_text(SMALL)
    out = str(tmp_path / "p")
    base = ["prune", "--model", f"{small}:model", "--ratio", "0.5", "--input-size", "16", "--evaluator", "accuracy",
            "--backend", "none", "--quiet", "--out", out]
    bad = cli(*base, "--regularize", "tpp", check=False)
    assert bad.returncode == 2 and "--data" in bad.stderr and not os.path.exists(out)
    bad = cli(*base, "--data", f"{small}:data", "--regularize", "lasso", check=False)
    assert bad.returncode == 2 and "slimming, tpp, group-lasso" in bad.stderr
    proc = cli(*base, "--data", f"{small}:data", "--data-batch", "32", "--regularize", "tpp", "--reg-epochs", "3",
               "--reg-strength", "0.3")
    assert "regularized (tpp, 3 epochs) then cut" in proc.stdout
    with open(os.path.join(out, "report.json")) as f:
        reg = json.load(f)["regularize"]
    assert reg["name"] == "tpp" and reg["epochs"] == 3 and reg["strength"] == 0.3
    assert len(reg["removed_norm"]) == 4 and reg["removed_norm"][-1] < reg["removed_norm"][0]
    assert set(reg["accuracy"]) == {"before_cut", "after_cut"}
