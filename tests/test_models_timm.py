"""timm as a model source (``--model timm:NAME``, issue #17 item 3).

Representative tiny timm architectures, one per kind of coupling timm adds, at 32-64 px: prune
50% (uniform, l1), run, check the cost models against the pruned network, export to ONNX and
match ONNX Runtime -- the steps ``tools/sweep_timm.py`` runs on every family (table in
docs/models.md). The model source itself: random init with timm's own input size, ``img_size``
for a ViT, ``--weights`` from a local file, no network, and clear errors (timm absent, an unknown
or hub name). Skipped where timm is not installed.
"""
from __future__ import annotations

import os
import socket
import sys

import pytest
import torch

timm = pytest.importorskip("timm")

from hwprune.errors import ModelLoadError  # noqa: E402
from hwprune.models import load_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

# (timm architecture, input size): what each adds to the channel graph
CASES = [
    ("ecaresnet26t", 32),            # ECA gates: a Conv1d along the channel axis (traced as one edge; hung before)
    ("mobilenetv3_small_050", 32),   # SE blocks, hard-swish, depthwise
    ("convnext_atto", 32),           # timm LayerNorm2d, layer scale owned by the block
    ("regnety_002", 32),             # grouped convs + SE in residual blocks
    ("deit_tiny_distilled_patch16_224", 32),  # root-owned cls/dist tokens + pos embed, timm Attention heads
    ("levit_128s", 64),              # attention with per-head biases: embedding kept whole by its handler
    ("resmlp_12_224", 32),           # token-mixing Linear: residual stream frozen, channel MLPs cut
    ("poolformerv2_s12", 32),        # MetaFormer Scale, bias-free LayerNorm2d / GroupNorm1
    ("nf_regnet_b0", 32),            # ScaledStdConv2d (dense and grouped): a per-output-channel gain
    ("efficientvit_b0", 32),         # linear attention products computed in the container, heads from qkv.conv
    ("davit_tiny", 32),              # window and channel attention with head width from the input: kept whole
    ("inception_next_tiny", 32),     # token mixer splitting by stored sizes: kept whole, MLPs cut
    ("focalnet_tiny_srf", 32),       # focal modulation (one-channel gate slices): kept whole, MLPs cut
    ("efficientformerv2_s0", 32),    # conv attention with talking heads: kept whole (the group search ran out of memory)
    ("gcvit_xxtiny", 32),            # window attention with a global query passed in: kept whole, its bias table too
    ("efficientvit_m0", 32),         # cascaded group attention (per-head chunks and biases): kept whole
    ("visformer_tiny", 32),          # (1, C, H, W) position embeddings owned by the root: cut along C
    ("mobilevitv2_050", 32),         # linear self-attention splitting qkv by stored sizes [1, d, d]: kept whole
    ("coatnet_pico_rw_224", 32),     # conv attention widening dim -> dim_out, relative position bias: kept whole, both sides
    ("cspresnet50", 32),             # a split's second half read by a block's conv and its residual sum: mapped by chunk
    ("cs3darknet_s", 32),            # its first half read twice (Torch-Pruning's build failed at the concatenation)
    ("ghostnet_050", 32),            # ghost modules (a conv and its depthwise copy concatenated): kept whole, SE and head cut
    ("ghostnetv2_100", 64),          # ghost modules with a pooled gate branch (not run at 32): kept whole likewise
    ("maxvit_pico_rw_256", 32),      # channels-last block/grid partition attention: attention kept whole, partitions traced
]


@pytest.mark.parametrize("name,size", CASES)
def test_timm_family_prunes_runs_costs_exports_and_matches_ort(name, size):
    from sweep_models import FLOPS_TOL
    from sweep_timm import check_one

    row = check_one(name, size)
    assert row["status"] == "ok", f"{row['stage']}: {row['error']}\n{row.get('traceback', '')}"
    assert row["input_size"] == size  # ran at the size asked for, not a fallback
    assert row["prunable"] > 0 and row["params_after"] < PARAMS_KEPT_UNDER.get(name, 0.75) * row["params_before"]
    assert row["flops_after"] < row["flops_before"]
    cost = row["cost"]
    # exact, except ECA's channel-axis Conv1d (counted at full width; the sweep's FLOPS_TOL)
    assert cost["flops_pred"] == pytest.approx(cost["flops_real"], rel=FLOPS_TOL if name == "ecaresnet26t" else 1e-6)
    assert cost["params_pred"] == pytest.approx(cost["params_real"], rel=1e-6)
    assert cost["units"] > 0 and cost["n_unit_mismatches"] == 0
    p = row["parity"]
    assert p["ok"] and not p["vacuous"] and p["max_abs"] <= p["tolerance"]
    frozen = " ".join(row["frozen"].values())
    assert FROZEN_BECAUSE.get(name, "") in frozen, frozen


#: where a 50% cut keeps more than 3/4 of the parameters: the attention stages of EfficientFormerV2
#: (79% kept at 32 px) and of GCViT (76%) keep their embedding whole
PARAMS_KEPT_UNDER = {"efficientformerv2_s0": 0.85, "gcvit_xxtiny": 0.85}

#: what keeps channels whole in these families, as the graph says it
FROZEN_BECAUSE = {"levit_128s": "LeViT attention (per-head attention biases) reshapes its heads",
                  "resmlp_12_224": "the trace maps its channels beyond",
                  "davit_tiny": "DaViT channel attention reshapes its heads",
                  "inception_next_tiny": "InceptionNeXt's token mixer splits its input",
                  "focalnet_tiny_srf": "FocalNet's focal modulation splits",
                  "efficientformerv2_s0": "EfficientFormerV2 attention (attention biases, talking heads",
                  "gcvit_xxtiny": "GCViT window attention (a global query repeated over the windows)",
                  "efficientvit_m0": "EfficientViT-M (MSRA) cascaded group attention",
                  "mobilevitv2_050": "MobileViTv2's linear self-attention splits its qkv conv's output",
                  "coatnet_pico_rw_224": "CoAtNet's (and NCHW MaxViT's) attention (heads viewed from its qkv conv",
                  "cspresnet50": "channels pass through a split into chunks of a size the code fixes",
                  "cs3darknet_s": "channels pass through a split into chunks of a size the code fixes",
                  "ghostnet_050": "GhostNet's ghost module concatenates a conv's output",
                  "ghostnetv2_100": "GhostNet's ghost module concatenates a conv's output",
                  "maxvit_pico_rw_256": "timm MaxViT's attention (channels-last) views its qkv"}


def test_a_cut_the_trace_misread_is_refused_not_returned_broken():
    """A coupling the trace cannot see (a buffer sized to the channels) surfaces as a clear error
    from the cut itself, not as a model that fails later."""
    from torch import nn

    from hwprune.errors import UnsupportedModelError
    from hwprune.graph import ChannelGraph

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 16, 3), nn.Linear(16, 4)
            self.register_buffer("scale", torch.ones(16))

        def forward(self, x):
            y = self.conv(x) * self.scale.view(1, 16, 1, 1)
            return self.head(y.mean((2, 3)))

    x = torch.randn(1, 3, 16, 16)
    g = ChannelGraph(Scaled().eval(), x)
    with pytest.raises(UnsupportedModelError, match=r"no longer runs after cutting 1 channel groups \(e.g. conv\)"):
        g.prune_({"conv": list(range(8))})


def test_selective_kernel_is_cut_through_its_paths_and_split_input_refused():
    from torch import nn
    from timm.layers import SelectiveKernel

    from hwprune.cost import FlopsCostModel, ParamsCostModel
    from hwprune.counting import count_flops, count_params
    from hwprune.errors import UnsupportedModelError
    from hwprune.graph import ChannelGraph, keep_top

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), SelectiveKernel(32, 64, split_input=False),
                      nn.Conv2d(64, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    x = torch.randn(1, 3, 24, 24)
    g = ChannelGraph(m, x)
    assert "0" in {gr.name for gr in g.prunable}  # the SK input (conv 0's output) is a prunable group
    flops, params = FlopsCostModel(g, x), ParamsCostModel(g)
    widths = {gr.name: gr.width // 2 for gr in g.prunable}
    g.prune_({gr.name: keep_top(torch.rand(gr.width), widths[gr.name]) for gr in g.prunable})
    assert all(p.conv.in_channels == 16 for p in m[3].paths)
    assert m(x).shape == (1, 10)
    assert flops.predict(widths) == count_flops(m, x) and params.predict(widths) == count_params(m)
    sk_split = nn.Sequential(nn.Conv2d(3, 32, 3), SelectiveKernel(32, 32, split_input=True), nn.Conv2d(32, 8, 1)).eval()
    with pytest.raises(UnsupportedModelError, match="splits its input channels across its 2 conv paths"):
        ChannelGraph(sk_split, x)


def test_scaled_std_conv_gain_is_cut_with_the_output_channels_it_belongs_to():
    """NF nets' ScaledStdConv2d scales each standardised filter by its own ``gain``: the gain of a
    kept filter must stay with it (not just be cut to the right length), and the parameter model
    counts it per output channel."""
    from torch import nn
    from timm.layers import ScaledStdConv2d

    from hwprune.cost import ParamsCostModel
    from hwprune.counting import count_params
    from hwprune.graph import ChannelGraph

    torch.manual_seed(0)
    m = nn.Sequential(ScaledStdConv2d(3, 16, 3), nn.ReLU(), ScaledStdConv2d(16, 32, 3, groups=4), nn.ReLU(),
                      ScaledStdConv2d(32, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    for i in (0, 2):  # gain k + 1 on filter k: a kept filter's gain says which filter it was
        m[i].gain.data = torch.arange(m[i].out_channels, dtype=torch.float).view(-1, 1, 1, 1) + 1
    w0 = m[0].weight.detach().clone()
    x = torch.randn(1, 3, 16, 16)
    g = ChannelGraph(m, x)
    assert {gr.name for gr in g.prunable} >= {"0", "2", "4"}
    params = ParamsCostModel(g)
    kept = {"0": [0, 3, 5, 6, 9, 10, 12, 15], "2": [k for b in range(4) for k in (8 * b + 1, 8 * b + 6)]}
    g.prune_(kept)
    assert m(x).shape == (1, 4)
    for i, name in ((0, "0"), (2, "2")):
        assert m[i].gain.flatten().tolist() == [k + 1.0 for k in kept[name]]
    assert torch.equal(m[0].weight, w0[kept["0"]])
    assert m[2].in_channels == 8 and m[4].in_channels == 8 and m[4].gain.shape == (8, 1, 1, 1)
    assert params.predict({"0": 8, "2": 8}) == count_params(m)


@pytest.mark.parametrize("name,module,why", [
    ("mambaout_femto", "stages.0.blocks.0", "splits fc1's output on its last \\(channels-last\\) axis"),
])
def test_unsupported_timm_blocks_are_refused_by_name_before_tracing(name, module, why):
    """A coupling hwprune cannot cut yet is refused naming the module and why, not as an index
    error from the importance scores (MambaOut)."""
    from hwprune.errors import UnsupportedModelError
    from hwprune.graph import ChannelGraph

    m = timm.create_model(name).eval()
    with pytest.raises(UnsupportedModelError, match=f"module '{module}' .*{why}"):
        ChannelGraph(m, torch.randn(1, 3, 32, 32))


def test_timm_spec_builds_random_init_at_timms_input_size():
    a = load_model("timm:mobilevit_xxs")
    assert a.input_size == timm.models.get_pretrained_cfg("mobilevit_xxs").input_size[-1] == 256
    assert a.model_id == {"spec": "timm:mobilevit_xxs", "kwargs": {}}
    assert not a.model.training
    # random init: two builds under different seeds differ
    torch.manual_seed(1)
    w1 = load_model("timm:resnet10t").model.fc.weight.detach().clone()
    torch.manual_seed(2)
    w2 = load_model("timm:resnet10t").model.fc.weight.detach()
    assert not torch.equal(w1, w2)


def test_img_size_builds_a_vit_for_that_size_and_is_ignored_by_a_cnn():
    vit = load_model("timm:vit_tiny_patch16_224", kwargs={"img_size": 32, "num_classes": 7})
    assert vit.input_size == 32 and vit.model.pos_embed.shape[1] == 1 + (32 // 16) ** 2
    assert vit.model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    cnn = load_model("timm:resnet10t", kwargs={"img_size": 48})
    assert cnn.input_size == 48 and cnn.model(torch.randn(1, 3, 48, 48)).shape == (1, 1000)


def test_weights_from_a_local_file_and_no_network(tmp_path, monkeypatch):
    torch.manual_seed(0)
    src = load_model("timm:resnet10t", kwargs={"num_classes": 5}).model
    path = tmp_path / "w.pt"
    torch.save({"state_dict": src.state_dict()}, path)

    def no_network(*a, **k):
        raise AssertionError("hwprune tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    torch.manual_seed(1)
    loaded = load_model("timm:resnet10t", weights=str(path), kwargs={"num_classes": 5})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), src.eval()(x))
    with pytest.raises(ModelLoadError, match="do not fit the model"):
        load_model("timm:resnet10t", weights=str(path))  # 1000 classes: the head does not fit


@pytest.mark.parametrize("spec,match", [
    ("timm:resnet_18", r"timm has no architecture 'resnet_18'.*Did you mean .*timm:resnet18"),
    ("timm:", "names no architecture"),
    ("timm:hf-hub:timm/resnet18.a1_in1k", "hwprune never downloads.*--weights"),
])
def test_bad_timm_specs_are_refused_clearly(spec, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(spec)


def test_timm_absent_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ModelLoadError, match=r"timm is not installed: pip install 'hwprune\[timm\]'"):
        load_model("timm:resnet18")


def test_cli_prunes_a_timm_vit_and_exports_its_checkpoint(tmp_path, capsys):
    """The CLI end to end: --input-size builds the ViT for 32 px, the checkpoint rebuilds it."""
    from hwprune.checkpoint import load_checkpoint
    from hwprune.cli.main import main

    out, onnx = tmp_path / "p", tmp_path / "m.onnx"
    assert main(["prune", "--model", "timm:vit_tiny_patch16_224", "--input-size", "32", "--ratio", "0.5",
                 "--strategy", "uniform", "--out", str(out), "--quiet"]) == 0
    assert main(["export", "--model", str(out / "pruned.pt"), "--out", str(onnx)]) == 0
    assert "parity" in capsys.readouterr().out and onnx.is_file()
    loaded = load_checkpoint(str(out / "pruned.pt"))
    assert loaded.model_id["spec"] == "timm:vit_tiny_patch16_224" and loaded.input_size == 32
    assert loaded.model.blocks[0].mlp.fc1.out_features < 192 * 4
