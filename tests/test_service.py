"""One rule for which latency table a request uses: `hwprune prune` and `hwprune run` agree."""
import os

import pytest

from hwprune import pipeline
from hwprune.latency import ProfileConfig, profile
from hwprune.models import load_model
from hwprune.service import TableRequest, find_table


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three quick tables of tiny_resnet@16 side by side: spinning (named to sort first), blocked on
    a coarse grid (align 16), blocked on the fine grid (align 8, named to sort last)."""
    root = tmp_path_factory.mktemp("cwd")
    tables = root / "latency_tables"
    loaded = load_model("tiny_resnet")
    for name, kw in (("a-spin.json", {"spinning": True, "align": 8}), ("b-grid16.json", {"align": 16}),
                     ("c-blocked.json", {"align": 8})):
        profile(loaded, ProfileConfig.quick(input_size=16, out=str(tables / name), **kw), progress=False)
    return root


def test_prune_and_run_choose_the_same_table(folder, cli):
    tables = str(folder / "latency_tables")
    loaded = load_model("tiny_resnet")
    for spinning, align, want in ((False, 8, "c-blocked.json"), (True, 8, "a-spin.json"), (False, 16, "b-grid16.json")):
        req = TableRequest(spinning=spinning, align=align, input_size=16)
        found = find_table(req, loaded, folders=(tables,))
        assert os.path.basename(found) == want, (spinning, align, found)
        cfg = pipeline.RunConfig(spinning=spinning, align=align, out=str(folder / "o"), progress=False)
        assert pipeline.find_table(cfg, loaded, 16, folders=(tables,)) == found  # what `hwprune run` reuses
    # `hwprune prune` itself, run from that folder: the blocked table on the fine grid, then the spinning one
    for flags, want in (([], "c-blocked.json"), (["--ort-spinning"], "a-spin.json")):
        p = cli("prune", "--model", "tiny_resnet", "--input-size", "16", "--budget", "0.9x", "--align", "8",
                "--backend", "none", "--out", str(folder / "p"), "--quiet", *flags, cwd=str(folder))
        assert f"latency table: reused latency_tables/{want}" in p.stderr, p.stderr


def test_a_given_table_timed_the_other_way_is_refused(folder, cli):
    spin = str(folder / "latency_tables" / "a-spin.json")
    p = cli("prune", "--model", "tiny_resnet", "--input-size", "16", "--budget", "0.9x", "--align", "8",
            "--backend", "none", "--table", spin, "--out", str(folder / "q"), check=False, cwd=str(folder))
    assert p.returncode == 2 and "add --ort-spinning" in p.stderr and not (folder / "q").exists()
