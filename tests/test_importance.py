"""Each criterion ranks what it should on a tiny real CNN with hand-set channels."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hwprune.errors import ConfigError
from hwprune.graph import ChannelGraph
from hwprune.importance import get_criterion, list_criteria

DATA_DRIVEN = ["taylor", "fisher", "apoz", "act-mean", "act-std", "hrank"]
K = 3  # the channel we make unimportant


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    with torch.no_grad():
        net[1].weight.uniform_(0.8, 1.2)
        net[1].bias.uniform_(0.05, 0.2)
    return net.eval()


def _calib():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(2)]


def _scores(net, name, calib=None):
    graph = ChannelGraph(net, torch.randn(1, 3, 8, 8))
    group = next(g for g in graph.prunable if any(m.module == "0" and m.side == "out" for m in g.members))
    s = get_criterion(name)(graph, group, calib)
    assert s.shape == (8,) and torch.isfinite(s).all()
    return s


@pytest.mark.parametrize("name", ["l1", "l2", "fpgm", "bn-gamma", "taylor", "fisher", "act-mean", "act-std"])
def test_zeroed_filter_ranks_last(name):
    net = _net()
    with torch.no_grad():
        net[0].weight[K] = 0
        net[1].weight[K] = 0
        net[1].bias[K] = 0
        net[3].weight[:, K] = 0
    s = _scores(net, name, _calib())
    assert int(s.argmin()) == K, s


def test_always_zero_after_relu_has_full_apoz_and_ranks_last():
    net = _net()
    with torch.no_grad():
        net[1].bias[K] = -100.0  # BN output always negative -> ReLU output always zero
    s = _scores(net, "apoz", _calib())
    assert float(s[K]) == 0.0 and int(s.argmin()) == K  # score = 1 - APoZ, APoZ = 100%
    assert (s[torch.arange(8) != K] > 0).all()


def test_duplicated_filter_ranks_lowest_under_fpgm_not_l1():
    net = _net()
    with torch.no_grad():
        net[0].weight[0] *= 1.2
        net[0].weight[K] = net[0].weight[5] = net[0].weight[0]  # three identical filters, largest norm
    fp, mag = _scores(net, "fpgm"), _scores(net, "l2")
    assert set(fp.argsort()[:3].tolist()) == {0, K, 5}, fp
    assert set(mag.argsort()[-3:].tolist()) == {0, K, 5}, mag  # a norm criterion would keep them


def test_rank_deficient_map_ranks_low_under_hrank():
    net = _net()
    with torch.no_grad():
        net[0].weight[K] = 0  # constant map (BN bias only): rank 1
    s = _scores(net, "hrank", _calib())
    assert int(s.argmin()) == K and float(s[K]) <= 1.0 < float(s.max())


def test_random_reproducible_per_seed():
    net = _net()
    graph = ChannelGraph(net, torch.randn(1, 3, 8, 8))
    g = graph.prunable[0]
    rnd = get_criterion("random")
    assert torch.equal(rnd(graph, g, seed=1), rnd(graph, g, seed=1))
    assert not torch.equal(rnd(graph, g, seed=1), rnd(graph, g, seed=2))


@pytest.mark.parametrize("name", DATA_DRIVEN)
def test_data_driven_needs_calib(name):
    with pytest.raises(ConfigError, match="calibration"):
        _scores(_net(), name, None)


def test_one_pass_for_all_groups_and_model_untouched():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    graph = ChannelGraph(net, torch.randn(1, 3, 8, 8))
    calib = _calib()
    for name in DATA_DRIVEN:
        for g in graph.prunable:
            assert get_criterion(name)(graph, g, calib).shape == (g.width,)
    assert len(graph.__dict__["_hwprune_calib_stats"]) == 1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert set(DATA_DRIVEN + ["l1", "l2", "fpgm", "bn-gamma", "random"]) <= set(list_criteria())
