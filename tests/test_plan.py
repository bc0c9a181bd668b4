import json

import pytest
import torch

from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.errors import ConfigError, ModelLoadError, PlanMismatchError
from hwprune.models import load_model
from hwprune.plan import PruningPlan, apply
from hwprune.prune import PruneConfig, prune


@pytest.fixture(scope="module")
def pruned():
    loaded = load_model("tiny_resnet")
    return loaded, prune(loaded, PruneConfig(ratio=0.5))


def test_uniform_prune_removes_channels_physically(pruned):
    loaded, res = pruned
    m = res.model
    assert m.layers[0].conv1.out_channels == 16 and m.layers[0].conv1.weight.shape[0] == 16
    assert m.fc.out_features == 10
    y = m(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10)
    assert res.report["after"]["flops"] < 0.35 * res.report["before"]["flops"]
    # the original is untouched
    assert loaded.model.layers[0].conv1.out_channels == 32


def test_plan_json_round_trip(tmp_path, pruned):
    _, res = pruned
    p = tmp_path / "plan.json"
    res.plan.save(str(p))
    back = PruningPlan.load(str(p))
    assert back.kept == res.plan.kept and back.model_id == res.plan.model_id
    assert json.loads(p.read_text())["format"] == "hwprune-plan"


def test_checkpoint_round_trip_identical_outputs(tmp_path, pruned):
    _, res = pruned
    path = tmp_path / "pruned.pt"
    save_checkpoint(str(path), res.model, res.plan)
    back = load_checkpoint(str(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.model(x), res.model.eval()(x))
    # the file is plain tensors + JSON-like data, loadable without trusting pickled classes
    raw = torch.load(str(path), weights_only=True)
    assert raw["format"] == "hwprune-checkpoint"


def test_plan_for_other_model_is_rejected(pruned):
    _, res = pruned
    other = load_model("tiny_resnet", kwargs={"width": 16}).model
    with pytest.raises(PlanMismatchError, match="width"):
        apply(other, res.plan)
    vgg = load_model("tiny_vit").model
    with pytest.raises(PlanMismatchError, match="lacks"):
        apply(vgg, res.plan)


def test_bad_ratio_and_unknown_model():
    with pytest.raises(ConfigError, match="ratio 1.2"):
        PruneConfig(ratio=1.2)
    with pytest.raises(ModelLoadError, match="resnet18"):
        load_model("resnt18")


def test_factory_failure_and_bad_weights(tmp_path):
    f = tmp_path / "mynet.py"
    f.write_text("import torch\n"
                 "def good(num_classes=10):\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),"
                 " torch.nn.Conv2d(16, 16, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, num_classes))\n"
                 "def bad():\n    raise RuntimeError('boom')\n")
    with pytest.raises(ModelLoadError, match="boom"):
        load_model(f"{f}:bad")
    lm = load_model(f"{f}:good", kwargs={"num_classes": 5})
    sd = lm.model.state_dict()
    torch.save(sd, tmp_path / "w.pt")
    load_model(f"{f}:good", weights=str(tmp_path / "w.pt"), kwargs={"num_classes": 5})
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(f"{f}:good", weights=str(tmp_path / "w.pt"), kwargs={"num_classes": 7})
