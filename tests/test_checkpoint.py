"""Checkpoints rebuild from any folder, and say what is wrong with a file that is not one
(issue #22 item 10, issue #17)."""
import os
import re

import pytest
import torch

from hwprune.checkpoint import save_checkpoint
from hwprune.cli.main import main
from hwprune.models import ModelSourceError, load_model
from hwprune.prune import PruneConfig, prune

NET_PY = """\
from hwprune.zoo import tiny_resnet


def build(num_classes=10):
    return tiny_resnet(num_classes=num_classes, width=16, depth=1)
"""


@pytest.fixture
def file_model_checkpoint(tmp_path, monkeypatch):
    """A user's net.py, pruned from its own folder as `--model net.py:build`."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "net.py").write_text(NET_PY)
    monkeypatch.chdir(proj)
    loaded = load_model("net.py:build")
    res = prune(loaded, PruneConfig(strategy="uniform", ratio=0.5, input_size=16, align=8))
    ckpt = proj / "out" / "pruned.pt"
    save_checkpoint(str(ckpt), res.model, res.plan)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = res.model.eval()(x)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return proj, ckpt, x, y


def test_file_spec_checkpoint_loads_from_another_folder(file_model_checkpoint, tmp_path):
    proj, ckpt, x, y = file_model_checkpoint
    assert not os.path.exists("net.py")
    loaded = load_model(str(ckpt))  # the old checkpoint re-imported 'net.py' from here: "does not exist"
    with torch.no_grad():
        assert torch.equal(loaded.model(x), y)
    f = loaded.model_id["file"]
    assert f["path"] == str(proj / "net.py") and len(f["sha256"]) == 64
    # the real CLI, from this folder too
    assert main(["export", "--model", str(ckpt), "--input-size", "16", "--out", str(tmp_path / "p.onnx")]) == 0
    assert (tmp_path / "p.onnx").is_file()


def test_file_spec_checkpoint_refuses_an_edited_or_missing_file(file_model_checkpoint, capsys):
    proj, ckpt, _, _ = file_model_checkpoint
    net = proj / "net.py"
    net.write_text(NET_PY.replace("width=16", "width=24"))
    with pytest.raises(ModelSourceError, match=r"model file .*net\.py' changed since checkpoint .*pruned\.pt"):
        load_model(str(ckpt))
    net.unlink()
    with pytest.raises(ModelSourceError, match=r"net\.py', which no longer exists; put that file back"):
        load_model(str(ckpt))
    assert main(["export", "--model", str(ckpt)]) == 2
    assert "no longer exists" in capsys.readouterr().err


def test_missing_or_unreadable_checkpoint_is_named_not_an_unknown_model(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert main(["export", "--model", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"model checkpoint {str(missing)!r} does not exist" in err and "unknown model" not in err

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    assert main(["export", "--model", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert f"{str(garbage)!r} is not a readable hwprune checkpoint: torch.load cannot read it" in err
    assert "unknown model" not in err

    plain = tmp_path / "weights.pt"
    torch.save(load_model("tiny_resnet").model.state_dict(), plain)
    assert main(["export", "--model", str(plain)]) == 2
    err = capsys.readouterr().err
    assert "plain state_dict" in err and "--weights" in err


def test_weights_files_as_users_save_them(tmp_path, capsys):
    """What training scripts write is read, or refused with the fix: a state_dict nested under
    'state_dict' with DataParallel's 'module.' prefixes loads the same weights; a whole pickled model
    (torch.save(model)) is never unpickled, and the message's one-line re-save gives a file that
    loads; a training checkpoint given as --model, or a pruned checkpoint given as --weights, says
    which flag it belongs to."""
    import subprocess
    import sys

    from hwprune.errors import ModelLoadError
    from hwprune.zoo import tiny_resnet

    net = tiny_resnet(num_classes=10)
    sd = net.state_dict()
    nested = tmp_path / "nested.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, nested)
    loaded = load_model("tiny_resnet", weights=str(nested)).model.state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert main(["inspect", "--model", str(nested)]) == 2
    assert "training checkpoint (its state_dict under 'state_dict')" in capsys.readouterr().err

    whole = tmp_path / "whole.pt"
    torch.save(net, whole)
    with pytest.raises(ModelLoadError, match=r"pickled object \(hwprune\.zoo\.TinyResNet\)") as e:
        load_model("tiny_resnet", weights=str(whole))
    fix = re.search(r'python -c "(.+?)"', str(e.value)).group(1)
    subprocess.run([sys.executable, "-c", fix], cwd=tmp_path, check=True)
    resaved = load_model("tiny_resnet", weights=str(tmp_path / "whole_weights.pt")).model.state_dict()
    assert all(torch.equal(resaved[k], sd[k]) for k in sd)
    assert main(["inspect", "--model", str(whole)]) == 2
    assert "pickled object" in capsys.readouterr().err

    pruned = tmp_path / "pruned.pt"
    res = prune(load_model("tiny_resnet"), PruneConfig(strategy="uniform", ratio=0.5, input_size=32))
    save_checkpoint(str(pruned), res.model, res.plan)
    with pytest.raises(ModelLoadError, match="pass it as --model"):
        load_model("tiny_resnet", weights=str(pruned))
    other = tmp_path / "other.pt"
    torch.save({"optimizer": {"lr": 0.1}}, other)
    with pytest.raises(ModelLoadError, match=r"holds dict with keys \['optimizer'\], not a state_dict"):
        load_model("tiny_resnet", weights=str(other))
