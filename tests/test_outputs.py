"""Output folders are complete or absent (issue #22, item 9): `hwprune prune` and `hwprune run`
write into a staging sibling and rename it to --out only when everything was written."""
import json
import os

import pytest

from hwprune.errors import ConfigError
from hwprune.outdir import staged_output_dir


def _tree(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


def _fail_on_report(monkeypatch):
    from hwprune.cli import cmd_prune

    real = cmd_prune.write_json

    def write_json(path, obj):
        if os.path.basename(path) == "report.json":
            raise RuntimeError("disk full (simulated)")
        real(path, obj)

    monkeypatch.setattr(cmd_prune, "write_json", write_json)


PRUNE = ["prune", "--model", "tiny_resnet", "--input-size", "16", "--ratio", "0.5", "--align", "8", "--quiet"]


def test_prune_that_fails_leaves_no_folder_and_keeps_an_earlier_one(tmp_path, monkeypatch):
    from hwprune.cli.main import main

    _fail_on_report(monkeypatch)
    out = tmp_path / "out" / "p"  # its parent does not exist either
    with pytest.raises(RuntimeError, match="simulated"):
        main(PRUNE + ["--out", str(out)])
    assert os.listdir(tmp_path) == []  # no OUT, no parent made for it, no .p.tmp-* sibling

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "report.json").write_text('{"from": "an earlier run"}\n')
    (earlier / "plan.json").write_text('{"old": true}\n')
    before = _tree(earlier)
    with pytest.raises(RuntimeError, match="simulated"):
        main(PRUNE + ["--out", str(earlier)])
    assert _tree(earlier) == before
    assert sorted(os.listdir(tmp_path)) == ["earlier"]

    monkeypatch.undo()  # now it succeeds: the earlier folder is replaced as a whole
    assert main(PRUNE + ["--out", str(earlier)]) == 0
    assert sorted(os.listdir(earlier)) == ["plan.json", "pruned.pt", "report.json"]
    assert "from" not in json.loads((earlier / "report.json").read_text())
    assert sorted(os.listdir(tmp_path)) == ["earlier"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(earlier).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_run_that_fails_at_export_leaves_no_folder(tmp_path, monkeypatch):
    """The old `hwprune run` made --out and wrote pruned.pt before the export could fail."""
    from hwprune import export, pipeline
    from hwprune.latency import ProfileConfig, profile

    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    table = profile(pipeline.load_model("tiny_resnet"), ProfileConfig.quick(align=8, out=str(tmp_path / "t.json")),
                    progress=False)  # a coarse table of its own: a real profile takes a minute

    def broken_export(*a, **k):
        raise RuntimeError("exporter crashed (simulated)")

    monkeypatch.setattr(export, "export_onnx", broken_export)
    out = tmp_path / "run"
    config = pipeline.RunConfig(quick=True, progress=False, finetune_epochs=0, batches=(1,), out=str(out),
                                strategy="uniform-bisect", table=table)
    with pytest.raises(RuntimeError, match="simulated"):
        pipeline.run_pipeline(config)
    assert not [e for e in os.listdir(tmp_path) if "run" in e]  # no run/, no .run.tmp-* left


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path, monkeypatch):
    """Replacing --out as a whole must never delete a user's files: a folder with other things
    in it, or the current folder, is refused up front with the fix."""
    from hwprune.cli.main import main

    src = tmp_path / "project"
    src.mkdir()
    (src / "train.py").write_text("print('mine')\n")
    with pytest.raises(ConfigError, match="'train.py', which hwprune did not write"):
        with staged_output_dir(str(src)):
            pass
    assert main(PRUNE + ["--out", str(src)]) == 2  # refused before the search, exit 2
    assert os.listdir(src) == ["train.py"]
    monkeypatch.chdir(src)
    with pytest.raises(ConfigError, match="current folder"):
        with staged_output_dir("."):
            pass
    assert sorted(os.listdir(tmp_path)) == ["project"]


def test_run_reuses_a_table_from_an_earlier_out_and_keeps_it(tmp_path):
    """`hwprune run` reuses a table it profiled into an earlier --out; since a finished run
    replaces that folder, the table is carried into the new one, at the path the report names.
    A table profiled into the staging folder is named by its final path, not the staging one."""
    from hwprune import pipeline
    from hwprune.latency import ProfileConfig, profile

    out = tmp_path / "run"
    loaded = pipeline.load_model("tiny_resnet", kwargs={"width": 8, "depth": 1})
    earlier = profile(loaded, ProfileConfig.quick(input_size=16, align=8, out=str(out / "latency_table.json")),
                      progress=False)
    config = pipeline.RunConfig(out=str(out), progress=False, align=8)
    with staged_output_dir(str(out)) as work:
        found = pipeline.get_table(config, pipeline.Run(config), loaded, 16, out_dir=work)
        assert found == earlier
        table = pipeline._staged_table(found, config, work)
        assert table.path == earlier and os.path.isfile(os.path.join(work, "latency_table.json"))
        fresh = pipeline._staged_table(os.path.join(work, "latency_table.json"), config, work)
        assert fresh.path == os.path.join(str(out), "latency_table.json")
    assert os.listdir(out) == ["latency_table.json"] and sorted(os.listdir(tmp_path)) == ["run"]
