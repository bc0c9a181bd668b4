"""hwprune train / hwprune.recover: scratch re-initialisation, the Scratch-B budget, distillation,
a real kill then --resume ending bit-identical to an uninterrupted run, the trained checkpoint
exporting, and clear errors that leave nothing half-written."""
from __future__ import annotations

import copy
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwprune.checkpoint import load_checkpoint, save_checkpoint
from hwprune.counting import summarize
from hwprune.data import make_data
from hwprune.errors import ConfigError
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.recover import RecoverConfig, recover
from hwprune.scratch import KNOWN_TRAIN_EPOCHS, base_train_epochs, reinitialize_, scratch_b_epochs
from hwprune.train_state import STATE_FILE, load_state, partial_dir
from hwprune.zoo import tiny_resnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = ("--data", "synthetic", "--n-train", "256", "--n-val", "128", "--batch-size", "16", "--input-size", "16")
#: both runs of the kill test under one thread: the same arithmetic, and no fight for the 2 cores
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data():
    return make_data("synthetic", input_size=32, batch_size=64, seed=0, n_train=256, n_val=128)


@pytest.fixture(scope="module")
def pruned_ckpt(tmp_path_factory) -> str:
    """tiny_resnet_synthetic (the shipped, trained model) pruned by half, as `hwprune prune` writes it."""
    result = prune(load_model("tiny_resnet_synthetic"), PruneConfig(ratio=0.5))
    path = str(tmp_path_factory.mktemp("ckpt") / "pruned.pt")
    save_checkpoint(path, result.model, result.plan)
    return path


def _bns(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_scratch_reinitialises_every_parameter_and_resets_bn_stats(pruned_ckpt):
    """--init scratch (Liu et al. 2019): every parameter is re-drawn at its pruned shape and every
    BN statistic is back to its initial value; recover(init="scratch") starts from exactly that."""
    model = load_checkpoint(pruned_ckpt).model
    trained = copy.deepcopy(model)
    assert any(float(bn.running_var.sub(1).abs().max()) > 1e-3 for bn in _bns(trained))  # stats were learnt
    torch.manual_seed(0)
    assert reinitialize_(model) == []  # tiny_resnet: every parameter belongs to a module that resets it
    for (name, p), (_, q) in zip(model.named_parameters(), trained.named_parameters()):
        assert p.shape == q.shape and not torch.equal(p, q), name
    for bn in _bns(model):
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert int(bn.num_batches_tracked) == 0
    # the fallback covers a parameter no module resets (a ViT's class token)
    vit = load_model("tiny_vit").model
    token = vit.class_token.detach().clone()
    assert "class_token" in reinitialize_(vit) and not torch.equal(vit.class_token, token)


def test_scratch_b_epochs_follow_the_flops_ratio(pruned_ckpt, tmp_path):
    """Scratch-B = round(base epochs x FLOPs(unpruned) / FLOPs(pruned)): the base epochs of the
    shipped model are the 3 of tools/train_default.py; --base-epochs overrides; a checkpoint of an
    unknown model with no record is refused naming --base-epochs."""
    loaded = load_checkpoint(pruned_ckpt)
    x = torch.zeros(1, 3, 32, 32)
    ratio = summarize(tiny_resnet().eval(), x)["flops"] / summarize(loaded.model, x)["flops"]
    assert 3.5 < ratio < 4.5  # half the channels of every group: about a quarter of the FLOPs
    assert KNOWN_TRAIN_EPOCHS["tiny_resnet_synthetic"] == 3  # tools/train_default.py --epochs default
    base, source = base_train_epochs(loaded)
    assert base == 3 and "tiny_resnet_synthetic" in source
    epochs, info = scratch_b_epochs(loaded, base, 32)
    assert epochs == round(3 * ratio) and info["flops_ratio"] == pytest.approx(ratio)
    assert scratch_b_epochs(loaded, 2, 32)[0] == round(2 * ratio)
    assert base_train_epochs(loaded, 7) == (7, "--base-epochs")
    loaded.meta = {"base_train_epochs": 5}
    assert base_train_epochs(loaded)[0] == 5

    other = prune(load_model("tiny_resnet", kwargs={"width": 8, "depth": 1}), PruneConfig(ratio=0.5))
    path = str(tmp_path / "other.pt")
    save_checkpoint(path, other.model, other.plan)
    with pytest.raises(ConfigError, match="--base-epochs N"):
        base_train_epochs(load_checkpoint(path))


def _kl(teacher: nn.Module, student: nn.Module, batches) -> float:
    with torch.no_grad():
        return float(sum(F.kl_div(F.log_softmax(student(x) / 4, 1), F.softmax(teacher(x) / 4, 1),
                                  reduction="batchmean") for x, _ in batches) / len(batches))


def test_distillation_moves_the_student_toward_the_teacher(pruned_ckpt, data):
    """With --distill-from the fine-tuned student's outputs end closer to the teacher's (KL at the
    KD temperature on validation batches) than the same fine-tune without a teacher."""
    teacher = load_model("tiny_resnet_synthetic").model
    val = list(itertools.islice(iter(data.val), 2))
    start = _kl(teacher, load_checkpoint(pruned_ckpt).model.eval(), val)
    cfg = RecoverConfig(epochs=2, seed=0, progress=False)
    plain = recover(load_checkpoint(pruned_ckpt), data, cfg)
    kd = recover(load_checkpoint(pruned_ckpt), data, cfg, teacher=teacher)
    with_kd, without = _kl(teacher, kd.model, val), _kl(teacher, plain.model, val)
    assert with_kd < start and with_kd < without, (start, with_kd, without)
    assert kd.report.kd == {"teacher": "the teacher", "alpha": 0.5, "temperature": 4.0} and plain.report.kd is None


def _train_cmd(model: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hwprune", "train", "--model", model, *SMALL, "--epochs", "3", "--seed", "3",
            "--out", out, "--quiet", *extra]


def test_kill_then_resume_gives_the_uninterrupted_result(pruned_ckpt, tmp_path, cli):
    """SIGKILL a real `hwprune train --epochs 3` once its first epoch's state is on disk: OUT does
    not exist, the state holds a finished epoch; --resume continues after it and ends with the
    same weights (torch.equal) and the same top-1 as an uninterrupted run with the same seed."""
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    state = os.path.join(partial_dir(killed), STATE_FILE)
    proc = subprocess.Popen(_train_cmd(pruned_ckpt, killed), cwd=ROOT, env=ONE_THREAD, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not os.path.exists(state) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    saved = load_state(partial_dir(killed))
    done = saved["loop"]["epoch"]
    assert 1 <= done < 3 and not os.path.exists(killed)  # nothing published, one or two epochs kept

    for cmd in (_train_cmd(pruned_ckpt, killed, "--resume"), _train_cmd(pruned_ckpt, whole)):
        subprocess.run(cmd, cwd=ROOT, env=ONE_THREAD, check=True, capture_output=True, timeout=600)
    assert not os.path.exists(partial_dir(killed)) and sorted(os.listdir(killed)) == ["report.json", "trained.pt"]
    a, b = load_checkpoint(os.path.join(killed, "trained.pt")), load_checkpoint(os.path.join(whole, "trained.pt"))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ra, rb = (json.load(open(os.path.join(d, "report.json"))) for d in (killed, whole))
    assert ra["resumed_from_epoch"] == done and rb["resumed_from_epoch"] is None
    assert ra["accuracy"] == rb["accuracy"] and ra["loss"] == rb["loss"] and ra["steps"] == rb["steps"] == 48
    assert a.plan.to_dict() == load_checkpoint(pruned_ckpt).plan.to_dict()  # the plan is kept
    assert a.meta["train_epochs"] == 3 and a.meta["base_train_epochs"] == 3 and a.meta["init"] == "inherit"

    onnx = str(tmp_path / "trained.onnx")  # trained.pt is a pruned.pt: export takes it
    cli("export", "--model", os.path.join(killed, "trained.pt"), "--format", "onnx", "--out", onnx)
    assert os.path.getsize(onnx) > 0


def test_unpruned_model_trains_from_scratch_into_a_loadable_checkpoint(data, tmp_path):
    """An unpruned model gets a keep-everything plan, so its trained.pt loads like a pruned.pt;
    its meta records the epochs, and a later --scratch-b of it uses them (FLOPs ratio 1)."""
    out = str(tmp_path / "out")
    loaded = load_model("tiny_resnet", kwargs={"width": 8, "depth": 1})
    result = recover(loaded, data, RecoverConfig(epochs=1, init="scratch", out=out, progress=False))
    assert result.report.accuracy["after"] is not None and result.report.epochs_rule == {"rule": "given"}
    back = load_checkpoint(os.path.join(out, "trained.pt"))
    assert back.plan.kept == {} and back.meta["train_epochs"] == 1
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back.model(x), result.model.eval()(x))
    assert scratch_b_epochs(back, base_train_epochs(back)[0], 32)[0] == 1


def test_errors_are_clear_and_leave_nothing(pruned_ckpt, data, tmp_path, cli, monkeypatch):
    out = str(tmp_path / "out")
    for kw, match in [({}, "--epochs E, or --scratch-b"), ({"epochs": 2, "scratch_b": True}, "not both"),
                      ({"scratch_b": True}, "--init scratch"), ({"epochs": 1, "init": "fresh"}, "inherit, scratch"),
                      ({"epochs": 1, "schedule": "step"}, "one-cycle, cosine"),
                      ({"epochs": 1, "kd_alpha": 2.0}, "kd_alpha 2.0"), ({"epochs": 1, "resume": True}, "--out"),
                      ({"epochs": 1, "base_epochs": 3}, "--scratch-b")]:
        with pytest.raises(ConfigError, match=match):
            RecoverConfig(**kw)
    cfg = RecoverConfig(epochs=1, out=out, progress=False)
    with pytest.raises(ConfigError, match="--data synthetic"):
        recover(load_checkpoint(pruned_ckpt), None, cfg)
    five = prune(load_model("tiny_resnet", kwargs={"num_classes": 5, "width": 8, "depth": 1}), PruneConfig(ratio=0.5))
    with pytest.raises(ConfigError, match="5 logits per image but the model gives 10"):
        recover(load_checkpoint(pruned_ckpt), data, cfg, teacher=five.model)
    assert not os.path.exists(out) and not os.path.exists(partial_dir(out))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        recover(load_checkpoint(pruned_ckpt), data, RecoverConfig(epochs=1, out=str(foreign), progress=False))
    assert os.listdir(foreign) == ["notes.txt"] and not os.path.exists(partial_dir(str(foreign)))

    # a run that dies after its last epoch (here: writing OUT fails) leaves OUT absent and its state
    # kept; that state is never overwritten by accident: refused without --resume, and with --resume
    # under other settings; --resume with the same settings only writes OUT
    part = partial_dir(out)
    first = RecoverConfig(epochs=1, lr=0.5, out=out, progress=False)

    def disk_full(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("hwprune.recover.write_outputs", disk_full)
    with pytest.raises(OSError):
        recover(load_checkpoint(pruned_ckpt), data, first)
    monkeypatch.undo()
    assert os.listdir(part) == [STATE_FILE] and not os.path.exists(out)
    with pytest.raises(ConfigError, match="pass --resume to continue it"):
        recover(load_checkpoint(pruned_ckpt), data, RecoverConfig(epochs=1, lr=0.5, out=out, progress=False))
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0.5 -> 0.01\)"):
        recover(load_checkpoint(pruned_ckpt), data, RecoverConfig(epochs=1, out=out, resume=True, progress=False))
    done = recover(load_checkpoint(pruned_ckpt), data, RecoverConfig(epochs=1, lr=0.5, out=out, resume=True,
                                                                      progress=False))
    assert done.report.resumed_from_epoch == 1 and done.report.steps == 4
    assert sorted(os.listdir(out)) == ["report.json", "trained.pt"] and not os.path.exists(part)

    proc = cli("train", "--model", pruned_ckpt, "--epochs", "1", "--out", str(tmp_path / "cli"), check=False)
    assert proc.returncode == 2 and "pass --data synthetic" in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "cli")


def test_seed_sets_the_data_order_whatever_trained_on_the_loader_before(data):
    """``fit`` re-seeds the loader's own generators (shuffle, augmentation) from its seed: one seed
    gives bit-identical weights with or without another training on the same loader before it,
    and another seed gives other weights."""
    from hwprune.recover import LoopSettings, fit

    def run(seed: int, warm: bool) -> dict:
        if warm:  # advances the loader's stream the way an earlier recipe in a benchmark did
            fit(tiny_resnet(width=8, depth=1), data, LoopSettings(steps=3, seed=7, progress=False))
        torch.manual_seed(0)
        model = tiny_resnet(width=8, depth=1)
        fit(model, data, LoopSettings(steps=4, seed=seed, progress=False))
        return model.state_dict()

    a, b, c = run(1, False), run(1, True), run(2, False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
