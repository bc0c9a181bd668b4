"""`--data imagefolder:PATH` end to end through the real CLI on a small real image folder
(issue #22 items 11 and 12): prune and run --quick, and a class count that does not fit the model."""
import json

import pytest
import torch

from conftest import assert_ran
from hwprune.cli.main import main

CLASSES = 4
PER_CLASS = 12


def make_image_folder(root, classes=CLASSES, per_class=PER_CLASS, size=32):
    """``classes`` sub-folders of ``per_class`` 32-px PNGs; each class has its own colour (plus
    noise), so a network can tell them apart."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True)
        base = rng.integers(0, 256, size=3)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs") / "data")


def _runs(ckpt, classes=CLASSES):
    from hwprune.models import load_model

    loaded = load_model(str(ckpt))
    with torch.no_grad():
        y = loaded.model(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, classes) and torch.isfinite(y).all()
    return loaded


def test_prune_on_an_image_folder(image_folder, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", "--model", "tiny_resnet", "--num-classes", str(CLASSES), "--input-size", "32",
                 "--data", f"imagefolder:{image_folder}", "--data-batch", "16", "--ratio", "0.5", "--align", "8",
                 "--finetune-epochs", "1", "--out", str(out), "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["evaluator"] == f"adaptive-bn on imagefolder:{image_folder}"
    acc = rep["accuracy"]
    assert all(0.0 <= acc[k] <= 1.0 for k in ("before", "after", "after_finetune"))
    assert rep["finetune"]["epochs"] == 1 and rep["input_shape"] == [1, 3, 32, 32]
    assert rep["after"]["params"] < rep["before"]["params"]
    loaded = _runs(out / "pruned.pt")
    assert loaded.model_id["kwargs"] == {"num_classes": CLASSES}
    assert "accuracy" in capsys.readouterr().out


def test_run_quick_on_an_image_folder(image_folder, tmp_path, capsys):
    from hwprune.latency import ProfileConfig, profile
    from hwprune.models import load_model

    # a coarse table of this very model: `run` would otherwise profile one (a minute on 2 cores)
    table = profile(load_model("tiny_resnet", kwargs={"num_classes": CLASSES}),
                    ProfileConfig.quick(input_size=32, align=8, out=str(tmp_path / "t.json")), progress=False)
    out = tmp_path / "run"
    code = main(["run", "--quick", "--model", "tiny_resnet", "--num-classes", str(CLASSES), "--input-size", "32",
                 "--data", f"imagefolder:{image_folder}", "--table", table, "--align", "8", "--batch", "1",
                 "--out", str(out), "--no-progress"])
    printed = capsys.readouterr()
    assert_ran(code, printed.out + printed.err, "run on an image folder")
    rep = json.loads((out / "report.json").read_text())
    assert rep["run"]["data"] == f"imagefolder:{image_folder}"
    assert rep["accuracy"]["split"].startswith(f"imagefolder:{image_folder} val, ")  # ", N images"
    assert 0.0 <= rep["accuracy"]["before"] <= 1.0 and 0.0 <= rep["accuracy"]["after_finetune"] <= 1.0
    assert rep["parity"]["pruned"]["ok"] and rep["latency"]["1"]["speedup"] > 0
    assert rep["files"]["report_md"] == f"{out}/report.md" and f"report: {out}/report.md" in printed.out
    _runs(out / "pruned.pt")
    assert (out / "pruned.onnx").is_file()


def test_more_classes_than_model_outputs_is_a_clear_error(tmp_path, capsys):
    """An image folder with 12 classes and a 10-output model: the labels 10 and 11 reached
    cross_entropy as 'Target 11 is out of bounds' (a traceback) after the whole search."""
    from hwprune import pipeline
    from hwprune.data import make_data
    from hwprune.errors import ConfigError
    from hwprune.models import load_model
    from hwprune.train import train

    folder = make_image_folder(tmp_path / "twelve", classes=12, per_class=3)
    data = f"imagefolder:{folder}"
    rc = main(["prune", "--model", "tiny_resnet", "--input-size", "32", "--data", data, "--ratio", "0.5",
               "--finetune-epochs", "1", "--out", str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "has 12 classes but the model gives 10 outputs" in err and "--num-classes 12" in err
    assert not (tmp_path / "p").exists()

    config = pipeline.RunConfig(model="tiny_resnet", data=data, input_size=32, quick=True, progress=False,
                                out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="--num-classes 12"):
        pipeline.run_pipeline(config)

    bundle = make_data(data, input_size=32, batch_size=8)
    with pytest.raises(ConfigError, match="12 classes but the model gives 10 outputs"):
        train(load_model("tiny_resnet").model, bundle, epochs=1, progress=False)
    assert main(["prune", "--model", "tiny_resnet", "--num-classes", "12", "--input-size", "32", "--data", data,
                 "--ratio", "0.5", "--finetune-epochs", "1", "--out", str(tmp_path / "p"), "--quiet"]) == 0
