"""Evaluators, least-squares reconstruction and training on a small real model and the synthetic data."""
from __future__ import annotations

import copy

import pytest
import torch

from hwprune.data import make_data
from hwprune.errors import ConfigError
from hwprune.evaluate import EVALUATORS, make_evaluator, reconstruct_, top1
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.train import finetune, load_default_model, train


@pytest.fixture(scope="module")
def data():
    return make_data("synthetic", input_size=32, batch_size=64, n_train=1024, n_val=256, calib_size=128)


@pytest.fixture(scope="module")
def trained():
    """The shipped default model (tiny_resnet trained on synthetic; training here is too slow)."""
    loaded = load_model("tiny_resnet")
    loaded.model.load_state_dict(load_default_model().state_dict())
    return loaded


def _pruned(loaded, ratio=0.5):
    return prune(loaded, PruneConfig(strategy="uniform", ratio=ratio, criterion="l1", progress=False)).model


def test_default_model_learned_the_synthetic_task(data, trained):
    assert top1(trained.model, data.val) > 0.5  # chance is 0.10


def _loss_on(model, batches) -> float:
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        return float(sum(F.cross_entropy(model(x), y) for x, y in batches) / len(batches))


def test_train_reduces_loss(data):
    """Training lowers the loss on fixed batches it trains on (the calibration split is a
    fixed subset of train), by a clear margin: not only that it ran."""
    import itertools

    torch.manual_seed(0)
    small = load_model("tiny_resnet", kwargs={"width": 8, "depth": 1}).model
    batches = list(itertools.islice(iter(data.calib), 2))
    before = _loss_on(small, batches)
    hist = train(small, data, steps=64, lr=0.1, progress=False)
    after = _loss_on(small, batches)
    assert hist["steps"] == 64 and hist["loss"][-1] < hist["loss"][0]
    assert after < 0.85 * before, (before, after)


def _kl_to(teacher, student, batches) -> float:
    import torch.nn.functional as F

    teacher.eval()
    student.eval()
    with torch.no_grad():
        return float(sum(F.kl_div(F.log_softmax(student(x) / 4, 1), F.softmax(teacher(x) / 4, 1),
                                  reduction="batchmean") for x, _ in batches) / len(batches))


def test_adaptive_bn_does_not_mutate_and_recovers(data, trained):
    pruned = _pruned(trained)
    before = copy.deepcopy(pruned.state_dict())
    plain = make_evaluator("accuracy", data)(pruned)
    abn = make_evaluator("adaptive-bn", data, bn_batches=4)(pruned)
    after = pruned.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    assert abn > plain + 0.02, (plain, abn)


def test_reconstruction_reduces_layer_error_and_is_exact_when_nothing_cut(data, trained):
    original = trained.model.eval()
    pruned = _pruned(trained)
    name = "layers.3.conv2"  # input and output channels both cut
    from hwprune.evaluate import _kept_rows

    m, o = dict(pruned.named_modules())[name], dict(original.named_modules())[name]
    assert m.in_channels < o.in_channels and m.out_channels < o.out_channels
    rows = _kept_rows(m.weight, o.weight)  # which original outputs survive (before the refit changes weights)
    x = next(iter(data.val))[0]

    def layer_err(model):
        got, want = {}, {}
        h1 = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: got.setdefault("y", o.clone()))
        h2 = o.register_forward_hook(lambda m, i, o: want.setdefault("y", o.clone()))
        with torch.no_grad():
            model(x), original(x)
        h1.remove(), h2.remove()
        w = want["y"][:, rows]
        return float(((got["y"] - w) ** 2).mean() / (w ** 2).mean())

    err0 = layer_err(pruned)
    done = reconstruct_(pruned, original, data.calib, max_batches=1)
    assert name in done
    assert layer_err(pruned) < 0.7 * err0
    # nothing cut: forcing a refit recovers the original layer output exactly
    same = copy.deepcopy(original)
    reconstruct_(same, original, data.calib, max_batches=1, layers=["layers.1.conv2", "layers.3.conv1"])
    with torch.no_grad():
        assert torch.allclose(same(x), original(x), atol=1e-3, rtol=1e-3)
    ev = make_evaluator("reconstruct", data, original=original, recon_batches=1, bn_batches=2, max_batches=1)
    assert 0.0 <= ev(_pruned(trained)) <= 1.0


def test_finetune_evaluator_and_registry(data, trained):
    pruned = _pruned(trained)
    before = copy.deepcopy(pruned.state_dict())
    acc = make_evaluator("finetune", data, steps=2, max_batches=1)(pruned)
    assert 0.0 <= acc <= 1.0 and all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())
    assert {"accuracy", "adaptive-bn", "reconstruct", "finetune"} <= set(EVALUATORS.list())
    with pytest.raises(ConfigError, match="adaptive-bn"):
        make_evaluator("adaptive_bn", data)
    with pytest.raises(ConfigError, match="original"):
        make_evaluator("reconstruct", data)


def test_user_evaluator(data, trained, tmp_path, monkeypatch):
    (tmp_path / "my_eval.py").write_text("def score(model, data):\n    return 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert make_evaluator("my_eval:score", data)(trained.model) == 0.25


def test_distillation_moves_the_student_toward_the_teacher(data, trained):
    """KD fine-tuning brings the pruned student's outputs closer to the teacher's (KL at the KD
    temperature on held-out batches) than the same fine-tune without a teacher does."""
    import itertools

    val = list(itertools.islice(iter(data.val), 2))
    pruned = _pruned(trained, ratio=0.6)
    start = _kl_to(trained.model, pruned, val)
    plain, kd = copy.deepcopy(pruned), copy.deepcopy(pruned)
    finetune(model=plain, data=data, epochs=1, seed=0, progress=False, steps=12)
    hist = finetune(model=kd, data=data, epochs=1, seed=0, teacher=trained.model, progress=False, steps=12)
    assert hist["steps"] == 12
    with_kd, without = _kl_to(trained.model, kd, val), _kl_to(trained.model, plain, val)
    assert with_kd < start and with_kd < without, (start, with_kd, without)


def test_load_default_model_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_default"):
        load_default_model(str(tmp_path / "none.pt"))
