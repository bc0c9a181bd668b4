import pytest
import torch
from torch import nn

from hwprune.errors import PlanMismatchError
from hwprune.graph import ChannelGraph, keep_top
from hwprune.zoo import tiny_resnet, tiny_vit


def test_resnet_groups_couple_residual_channels():
    m = tiny_resnet().eval()
    g = ChannelGraph(m, torch.randn(1, 3, 32, 32))
    names = {gr.name: gr for gr in g.groups}
    # the stem output is summed with every block of stage 1: one residual group spans them
    stem = names["stem.0"]
    assert stem.kind == "residual"
    assert {"layers.0.conv2", "layers.1.conv2", "layers.2.conv1"} <= set(stem.layers)
    # the classifier's outputs are never a group
    assert all("fc" != gr.name for gr in g.groups)
    # inner block convs are independent groups
    assert names["layers.0.conv1"].kind == "conv" and names["layers.0.conv1"].width == 32


def test_building_the_graph_runs_the_model_once_on_the_batched_input():
    """Every candidate a search evaluates builds a graph: one forward pass, on the input as given.
    Before, a batch-1 tensor handed to Torch-Pruning was first unpacked into an unbatched [C, H, W]
    call (run until a layer refused it), and the output layer was found by a second, full pass."""
    m = tiny_resnet().eval()
    shapes = []
    m.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    g = ChannelGraph(m, torch.randn(1, 3, 32, 32))
    assert shapes == [(1, 3, 32, 32)]
    assert all(gr.name != "fc" for gr in g.groups)  # the output layer was still found, and kept whole


def test_candidate_widths_respect_align_and_min_width():
    m = tiny_resnet().eval()
    g = ChannelGraph(m, torch.randn(1, 3, 32, 32)).group("layers.4.conv1")  # width 128
    ws = g.candidate_widths(align=16, min_width=32)
    assert ws[0] == 32 and ws[-1] == 128 and all(w % 16 == 0 for w in ws)
    assert g.snap(70, align=16, min_width=32) == 64
    assert g.snap(72, align=16, min_width=32) == 80  # tie goes up
    assert g.snap(3, align=16, min_width=32) == 32


def test_vit_embed_group_keeps_heads_equal():
    m = tiny_vit().eval()
    g = ChannelGraph(m, torch.randn(1, 3, 32, 32))
    embed = [gr for gr in g.groups if gr.kind == "embed"]
    assert len(embed) == 1 and embed[0].blocks == 4 and embed[0].width == 64
    assert all(w % 4 == 0 for w in embed[0].candidate_widths(align=8))
    with pytest.raises(PlanMismatchError, match="attention heads"):
        g.prune_({embed[0].name: list(range(10))})  # 10 channels, all in heads 0-1


def test_keep_top_per_block():
    scores = torch.tensor([5.0, 6, 2, 9, 0, 3, 7, 4])
    assert keep_top(scores, 4) == [0, 1, 3, 6]
    assert keep_top(scores, 4, blocks=2) == [1, 3, 6, 7]


def test_custom_parameter_owner_is_cut_with_its_group():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1, 8, 1, 1))

        def forward(self, x):
            return x * self.gain

    m = nn.Sequential(nn.Conv2d(3, 8, 3), Scale(), nn.Conv2d(8, 4, 3))
    # an unwrapped parameter the trace couples to conv 0's group: cut with it (was refused)
    graph = ChannelGraph(m, torch.randn(1, 3, 16, 16))
    assert ("1.gain", 1) in graph.group("0").free_params
    pruned = graph.prune_({"0": [0, 2, 4, 6]})
    assert pruned[1].gain.shape == (1, 4, 1, 1) and pruned(torch.randn(1, 3, 16, 16)).shape == (1, 4, 12, 12)


def test_params_cost_model_counts_attention_internals():
    """Swin's q/k/v and output projections sit inside an attention unit: the params model must
    scale them with the unit's group (and MultiheadAttention's out_proj with the embed group)."""
    from torchvision.models.swin_transformer import SwinTransformer

    from hwprune.cost import ParamsCostModel
    from hwprune.counting import count_params
    from hwprune.models import LoadedModel
    from hwprune.prune import PruneConfig, make_context, prune

    for model, size in ((SwinTransformer([4, 4], 32, [1, 1], [2, 4], [4, 4], stochastic_depth_prob=0.0), 32),
                        (tiny_vit(), 32)):
        loaded = LoadedModel(model.eval(), {"spec": "x", "kwargs": {}}, size)
        cfg = PruneConfig(strategy="uniform", ratio=0.5, input_size=size)
        graph = make_context(loaded, cfg).graph
        assert any(k.endswith(("qkv", "out_proj")) for k in graph.layer_groups(expand_units=True))
        res = prune(loaded, cfg)
        predicted = ParamsCostModel(graph).predict(res.plan.widths)
        assert abs(predicted / count_params(res.model) - 1) < 0.02


def test_a_root_owned_nchw_position_embedding_is_cut_along_its_channels():
    """A (1, C, H, W) parameter added to a feature map (Visformer's pos_embed1..3) is cut along C,
    with the conv it is added to; Torch-Pruning's default (the last dimension) cut W instead and
    the pruned model no longer ran."""
    class PosNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.conv = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1)
            self.pos = nn.Parameter(torch.randn(1, 16, 8, 8))
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            y = torch.relu(self.stem(x)) + self.pos
            return self.head(torch.relu(self.conv(y)).mean((2, 3)))

    net, x = PosNet().eval(), torch.randn(2, 3, 16, 16)
    g = ChannelGraph(net, x)
    name = next(gr.name for gr in g.prunable if gr.name.startswith("stem"))
    keep = [0, 2, 5, 7, 9, 11, 12, 15]
    ref = net.pos.detach()[:, keep].clone()
    g.prune_({name: keep})
    assert tuple(net.pos.shape) == (1, 8, 8, 8) and torch.equal(net.pos.detach(), ref)
    assert net(x).shape == (2, 4)


def test_torch_pruning_is_imported_without_timm_and_timm_still_works():
    """Torch-Pruning imports timm only for its own FLOP counter's hooks; hwprune's graph keeps it
    from doing so (about 0.6 s of every command's start), and timm stays importable after, its
    models traced by the same graph code."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from hwprune.graph import ChannelGraph\n"
            "from hwprune.zoo import tiny_resnet\n"
            "g = ChannelGraph(tiny_resnet(), torch.randn(1, 3, 32, 32))\n"
            "assert 'torch_pruning' in sys.modules and 'timm' not in sys.modules, sorted(k for k in sys.modules if 'timm' in k)\n"
            "assert any(gr.prunable for gr in g.groups)\n"
            "try:\n"
            "    import timm\n"
            "except ImportError:\n"
            "    print('no timm')\n"
            "else:\n"
            "    m = timm.create_model('resnet10t', pretrained=False, num_classes=10)\n"
            "    assert any(gr.prunable for gr in ChannelGraph(m, torch.randn(1, 3, 32, 32)).groups)\n"
            "    print('timm ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() in ("timm ok", "no timm")


class _GroupedBlock(nn.Module):
    """1x1 conv -> grouped 3x3 conv (``groups`` conv groups) -> 1x1 conv: a ResNeXt/RegNet block body."""

    def __init__(self, width: int, groups: int):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, width, 1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=groups), nn.ReLU())
        self.c = nn.Conv2d(width, 32, 1)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def _ort_runs_blocked(model: nn.Module, x: torch.Tensor, tmp_path) -> bool:
    """Whether ORT's optimized graph (ORT_ENABLE_ALL, this CPU) runs the grouped conv in its blocked
    NCHWc layout: a Conv node of domain com.microsoft.nchwc with a group attribute > 1."""
    from conftest import optimized_graph

    from hwprune.onnx_export import onnx_bytes

    g = optimized_graph(onnx_bytes(model, x), tmp_path)
    return any(n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"
               and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in g.node)


def test_grouped_conv_widths_keep_each_conv_group_on_the_grid(tmp_path):
    """A grouped conv whose conv groups are each a multiple of the grid wide is only cut to widths
    that keep them so: ORT runs a grouped conv in its blocked layout only when the channels *per
    conv group* are multiples of the NCHWc block (regnet_y_400mf, 8 per group, cut to 4 per group
    on an AVX2 host ran 0.34 ms slower, not faster). Checked against ORT's optimized graph on this
    CPU: every grid width stays blocked, and the width the grid now skips would not."""
    from hwprune.latency.measure import build_variant
    from hwprune_deploy.ort import nchwc_block

    x = torch.randn(1, 3, 16, 16)
    block = nchwc_block() or 8
    m = _GroupedBlock(4 * block, 2).eval()  # 2 conv groups of 2 blocks each
    grp = {g.name: g for g in ChannelGraph(m, x).groups}["b.0"]
    assert grp.conv_groups == 2 and grp.blocks == 2
    assert grp.candidate_widths(block) == [2 * block, 4 * block]  # 1 or 2 blocks per conv group
    assert grp.step_reason(block).startswith(f"step {2 * block} = 2 conv groups x {block}")
    # conv groups already off the grid at full width (ResNeXt's 4 per group): any multiple of the grid
    narrow = {g.name: g for g in ChannelGraph(_GroupedBlock(32, 8).eval(), x).groups}["b.0"]
    assert narrow.candidate_widths(8) == [8, 16, 24, 32] and narrow.step_reason(8) == ""
    if not nchwc_block():
        pytest.skip("ORT's NCHWc layout is x86-only: the layout half of this test needs AVX/AVX-512")
    for w in grp.candidate_widths(block):
        assert _ort_runs_blocked(build_variant(m, x, {"b.0": w}), x, tmp_path), w
    # half a block per conv group: the old grid allowed it (a multiple of the block overall), ORT leaves the layout
    assert not _ort_runs_blocked(build_variant(m, x, {"b.0": block}), x, tmp_path)


def test_inspect_says_why_a_grouped_conv_group_steps_coarser(tmp_path, capsys):
    """`hwprune inspect` names the step and its cause next to the widths a grouped conv can take,
    in its table and its JSON, so a group that never moves is not a mystery."""
    import json

    from hwprune.cli.main import main

    src = tmp_path / "grouped.py"
    src.write_text("import torch.nn as nn\n\n"
                   "def make():\n"
                   "    return nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1, groups=8),\n"
                   "                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))\n")
    out = tmp_path / "groups.json"
    assert main(["inspect", "--model", f"{src}:make", "--input-size", "16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "64..64 (1); step 64 = 8 conv groups x 8" in text and "only the full width fits" in text
    rows = {r["name"]: r for r in json.loads(out.read_text())["groups"]}
    assert rows["2"]["conv_groups"] == 8 and rows["2"]["step"] == 64 and rows["2"]["candidate_widths"] == [64]
    assert main(["inspect", "--model", f"{src}:make", "--input-size", "16", "--align", "4"]) == 0
    assert "32..64 (2); step 32 = 8 conv groups x 4" in capsys.readouterr().out
