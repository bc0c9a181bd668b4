"""Whole-head removal (issue #17.5): a fused-qkv attention with ``num_heads`` (timm's layout, and
user-written ones like it) prunes whole heads -- q, k, v rows and output-projection columns of a
head go together and ``num_heads`` drops -- as a search dimension beside the widths. Cutting a
head is exactly silencing it; the pruned model exports and matches ONNX Runtime; the cost models
count it exactly; halp on a real ViT table chooses heads and widths and meets its budget by
measurement."""
import copy
import warnings

import pytest
import torch

from hwprune.cost import FlopsCostModel, ParamsCostModel
from hwprune.counting import count_flops, count_params
from hwprune.export import export_onnx
from hwprune.graph import ChannelGraph
from hwprune.models import LoadedModel
from hwprune.plan import PruningPlan, apply

import user_vit

X = torch.randn(2, 3, 32, 32)


def _plan(graph, kept):
    return PruningPlan(model_id={"spec": "vit"}, input_shape=[1, 3, 32, 32], kept=kept,
                       widths_before={g.name: g.width for g in graph.groups})


def test_heads_are_a_group_of_whole_heads():
    graph = ChannelGraph(user_vit.vit().eval(), X[:1])
    heads = [g for g in graph.groups if g.kind == "heads"]
    assert len(heads) == 2
    for g in heads:
        assert g.width == 4 and g.head_dim == 16 and g.prunable
        assert g.candidate_widths(align=16, min_width=8) == [1, 2, 3, 4]  # any head count, no channel grid
        assert {(m.module.rsplit(".", 1)[-1], m.side, m.channels) for m in g.members} == {("qkv", "out", 192),
                                                                                          ("proj", "in", 64)}


def test_cutting_a_head_is_silencing_it():
    """The pruned model computes what the unpruned one computes with those heads' outputs zeroed
    (their output-projection columns): the right rows and columns went, and the others' order held."""
    torch.manual_seed(0)
    model = user_vit.vit().eval()
    graph = ChannelGraph(copy.deepcopy(model), X[:1])
    pruned = apply(model, _plan(graph, {"blocks.0.attn.qkv": [0, 2], "blocks.1.attn.qkv": [1, 2, 3]}))
    attn0, attn1 = pruned.blocks[0].attn, pruned.blocks[1].attn
    assert (attn0.num_heads, attn0.qkv.out_features, attn0.proj.in_features) == (2, 96, 32)
    assert (attn1.num_heads, attn1.qkv.out_features, attn1.proj.in_features) == (3, 144, 48)
    assert attn0.head_dim == attn1.head_dim == 16
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        for block, gone in ((silenced.blocks[0], (1, 3)), (silenced.blocks[1], (0,))):
            for h in gone:
                block.attn.proj.weight[:, h * 16:(h + 1) * 16] = 0
        assert torch.allclose(pruned(X), silenced(X), atol=1e-5)
        assert not torch.allclose(pruned(X), model(X), atol=1e-3)  # and the heads did matter


def test_heads_and_widths_export_match_ort_and_cost_exactly(tmp_path):
    torch.manual_seed(1)
    model = user_vit.deit().eval()
    graph = ChannelGraph(copy.deepcopy(model), X[:1])
    kept = {"blocks.0.attn.qkv": [3], "blocks.1.attn.qkv": [0, 1], "blocks.1.mlp.2": list(range(0, 64, 2)),
            "blocks.0.mlp.0": list(range(80))}
    pruned = apply(model, _plan(graph, kept))
    assert pruned(X).shape == (2, 10)
    parity = export_onnx(pruned, X[:1], str(tmp_path / "p.onnx"), samples=2)
    assert parity.ok and not parity.vacuous
    widths = {k: len(v) for k, v in kept.items()}
    assert FlopsCostModel(graph, X[:1]).predict(widths) == pytest.approx(count_flops(pruned, X[:1]), rel=1e-9)
    assert ParamsCostModel(graph).predict(widths) == pytest.approx(count_params(pruned), rel=1e-9)


def test_timm_vit_loses_whole_heads(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    graph = ChannelGraph(copy.deepcopy(model), x)
    heads = {g.name: g for g in graph.groups if g.kind == "heads"}
    assert len(heads) == 12 and all(g.width == 3 and g.head_dim == 64 for g in heads.values())
    kept = {name: [0, 2] for name in list(heads)[:6]}
    pruned = apply(model, PruningPlan(model_id={"spec": "timm"}, input_shape=[1, 3, 32, 32], kept=kept,
                                      widths_before={g.name: g.width for g in graph.groups}))
    assert sorted(b.attn.num_heads for b in pruned.blocks) == [2] * 6 + [3] * 6
    parity = export_onnx(pruned, x, str(tmp_path / "t.onnx"), samples=2)
    assert parity.ok and not parity.vacuous
    assert FlopsCostModel(graph, x).predict({k: 2 for k in kept}) == pytest.approx(count_flops(pruned, x), rel=1e-9)


@pytest.fixture(scope="module")
def vit_table(tmp_path_factory):
    """A ViT big enough to time (6 heads of 32, 8x8 tokens) and a quick ORT table of it."""
    from hwprune import latency

    torch.manual_seed(0)
    model = user_vit.ViT(num_classes=10, img=64, patch=8, dim=192, depth=2, heads=6, mlp=384).eval()
    loaded = LoadedModel(model, {"spec": "user-vit-192"}, 64)
    path = str(tmp_path_factory.mktemp("vit") / "vit.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latency.profile(loaded, latency.ProfileConfig(backend="ort-cpu", threads=2, out=path, points_per_axis=2,
                                                      max_points_per_axis=3, calib_variants=2), progress=False)
    return loaded, path


def test_halp_on_a_vit_table_chooses_heads_and_meets_by_measurement(vit_table):
    from hwprune.prune import PruneConfig, prune

    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable

    loaded, path = vit_table
    # the residual stream is kept (--ignore), so the MLP widths at their floor cannot reach 0.45x by
    # this table and heads must be cut; with the residual free, halp met 0.6x by residual and MLP
    # widths alone on a busy CI run (the measured table decides which is cheaper)
    keep = ("blocks.1.mlp.2",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = ChannelGraph(loaded.model, torch.randn(1, 3, 64, 64), ignore=keep)
        cost = LatencyTable.load(path).cost_model(graph)
    assert {g.kind for g in graph.groups} == {"heads", "linear"}
    floor = {g.name: 16 for g in graph.groups if g.kind != "heads"}
    assert cost.predict(floor) / cost.predict({}) > 0.5, cost.predict(floor) / cost.predict({})  # 0.63 here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune(loaded, PruneConfig(strategy="halp", budget="0.45x", options={"halp_steps": 2}, progress=False,
                                        align=16, backend="ort-cpu", threads=2, closed_loop_rounds=3,
                                        ignore=keep), table=path)
    widths = res.plan.widths
    heads = [k for k in widths if k.endswith("attn.qkv")]
    assert heads and any(widths[k] < 6 for k in heads), widths  # heads were a dimension it used
    assert all(b.attn.num_heads == widths.get(f"blocks.{i}.attn.qkv", 6) for i, b in enumerate(res.model.blocks))
    assert res.model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    lat = res.report["latency"]
    assert lat["met_budget"], res.report["verdict"]


def test_the_table_times_the_attention_products_per_head_count(vit_table):
    """The attention products are a unit of their own (heads x tokens x head_dim), timed at several
    head counts: the table sees them shrink with the heads instead of leaving them in the remainder."""
    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable
    from hwprune.latency.units import extract_units

    loaded, path = vit_table
    graph = ChannelGraph(loaded.model, torch.randn(1, 3, 64, 64))
    products = [u for u in extract_units(graph, fuse=False) if u.family.kind == "attn"]
    assert sorted(u.layer for u in products) == ["blocks.0.attn.products", "blocks.1.attn.products"]
    assert products[0].family.h == 65 and products[0].family.w == 32 and products[0].cin == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(path)
    entry = table.families[products[0].family.key]
    assert len(entry.points) >= 2 and entry.value(6, 6) > entry.value(entry.cins[0], entry.cins[0]) > 0
    cost = table.cost_model(graph)
    full = cost.units_sum({})
    fewer = cost.units_sum({"blocks.0.attn.qkv": 2, "blocks.1.attn.qkv": 2})
    assert fewer < full
