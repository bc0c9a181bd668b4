"""A checkpoint of a trained but uncut model (what `hwprune train` writes for an unpruned model) is
pruned like any model, its trained weights kept; a pruned one or one with 2:4 masks is refused."""
import torch

from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.graph import ChannelGraph
from hwprune.models import load_model
from hwprune.plan import PruningPlan


def _ckpt(tmp_path):
    torch.manual_seed(3)
    model = load_model("tiny_resnet").model
    with torch.no_grad():
        model.stem[0].weight.mul_(3.0)  # "trained": not what a fresh tiny_resnet holds
    plan = PruningPlan(model_id={"spec": "tiny_resnet"}, input_shape=[1, 3, 32, 32], kept={})
    path = str(tmp_path / "trained.pt")
    save_checkpoint(path, model, plan)
    return path, model


def test_trained_uncut_checkpoint_prunes_with_its_weights(tmp_path, cli):
    path, model = _ckpt(tmp_path)
    cli("prune", "--model", path, "--ratio", "0.5", "--out", str(tmp_path / "p"), "--quiet")
    pruned = load_checkpoint(str(tmp_path / "p" / "pruned.pt"))
    assert pruned.plan.kept  # channels were cut
    w = pruned.model.stem[0].weight
    assert w.shape[0] < model.stem[0].weight.shape[0]
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32))
    group = next(g.name for g in graph.groups if any(m.module == "stem.0" and m.side == "out" for m in g.members))
    assert torch.equal(w, model.stem[0].weight[pruned.plan.kept[group]])  # the stem's kept filters: the trained ones


def test_pruned_checkpoint_is_refused(tmp_path, cli):
    from hwprune.plan import apply

    model = load_model("tiny_resnet").model
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32))
    g = graph.prunable[0]
    plan = PruningPlan(model_id={"spec": "tiny_resnet"}, input_shape=[1, 3, 32, 32], kept={g.name: list(range(8))},
                       widths_before={x.name: x.width for x in graph.groups})
    path = str(tmp_path / "pruned.pt")
    save_checkpoint(path, apply(model, plan), plan)
    p = cli("prune", "--model", path, "--ratio", "0.5", "--out", str(tmp_path / "p"), check=False)
    assert p.returncode == 2 and "already pruned" in p.stderr


def test_checkpoint_with_2to4_masks_is_refused_for_a_channel_cut(tmp_path, cli):
    from hwprune.sparsity import sparsify

    model = load_model("tiny_resnet").model
    sparsify(model, "2:4")
    path = str(tmp_path / "sparse.pt")
    save_checkpoint(path, model, PruningPlan(model_id={"spec": "tiny_resnet"}, input_shape=[1, 3, 32, 32], kept={}))
    p = cli("prune", "--model", path, "--ratio", "0.5", "--out", str(tmp_path / "p"), check=False)
    assert p.returncode == 2 and "2:4 masks" in p.stderr and not (tmp_path / "p").exists()
