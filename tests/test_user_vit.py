"""User-written vision transformers (timm's way): parameters owned by the root module -- class
token, position embedding, DeiT's distillation token, register tokens -- are mapped to the channel
group they are coupled to and cut with it; the model prunes, exports and matches ONNX Runtime, and
the cost models count the pruned network exactly."""
import pytest
import torch

from hwprune.cost import FlopsCostModel, ParamsCostModel
from hwprune.counting import count_flops, count_params
from hwprune.export import export_onnx
from hwprune.graph import ChannelGraph
from hwprune.models import LoadedModel
from hwprune.prune import PruneConfig, prune

import user_vit

X = torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("factory, tokens", [("vit", ("cls_token", "pos_embed")),
                                             ("deit", ("cls_token", "dist_token", "pos_embed")),
                                             ("vit_reg", ("cls_token", "reg_token", "pos_embed"))])
def test_root_owned_tokens_prune_export_and_match_ort(factory, tokens, tmp_path):
    torch.manual_seed(0)
    model = getattr(user_vit, factory)().eval()
    graph = ChannelGraph(model, X)
    embed = graph.group("blocks.1.mlp.2")  # the embedding width: patch_embed out, residual stream, head in
    assert {n for n, _ in embed.free_params} == set(tokens) and embed.prunable
    for g in graph.groups:  # qkv feeds the heads: a group of whole heads (see tests/test_heads.py)
        if g.name.endswith("attn.qkv"):
            assert g.kind == "heads" and g.width == 4 and g.prunable
    res = prune(LoadedModel(model, {"spec": factory}, 32), PruneConfig(ratio=0.5, progress=False))
    pruned = res.model
    for name in tokens:
        assert getattr(pruned, name).shape[-1] == 32  # 64 -> 32 with the embedding group
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    parity = export_onnx(pruned, X, str(tmp_path / "p.onnx"), samples=2)
    assert parity.ok and not parity.vacuous
    # the cost models say what the pruned network is
    widths = res.plan.widths
    assert FlopsCostModel(graph, X).predict(widths) == pytest.approx(count_flops(pruned, X), rel=1e-9)
    assert ParamsCostModel(graph).predict(widths) == pytest.approx(count_params(pruned), rel=1e-9)
