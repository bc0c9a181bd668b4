"""Executors (issue #20): the local executor, and a real local Ray cluster (2 CPUs, started here and
shut down after) giving the same plans as local for evolution and netadapt, pinning torch threads
per worker, retrying a task whose worker was killed, and clear errors for a missing Ray or an
address that does not answer. Fleet profiling: two "devices" that are two Ray resources of this
machine, each measuring its bundle with the torch-free runner, one table each."""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from hwprune.errors import ConfigError
from hwprune.executor import LocalExecutor, make_executor
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.strategies._common import fidelity_evaluator


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, resources={"dev-a": 1, "dev-b": 1}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny_resnet")
    return loaded, fidelity_evaluator(loaded.model, torch.randn(1, 3, 32, 32), n=8)


def test_local_executor_maps_in_order():
    assert LocalExecutor().map(lambda shared, x: shared + x, [3, 1, 2], shared=10) == [13, 11, 12]
    with pytest.raises(ConfigError, match="--executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(ConfigError, match="unknown"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="add --executor ray"):
        PruneConfig(ray_address="auto")


def test_local_imap_draws_each_item_only_after_the_last_result_was_taken():
    """imap streams: with a generator of items, the next item is not drawn (read from disk, in
    family training) until the caller has taken the result before it."""
    events = []

    def items():
        for i in range(3):
            events.append(f"draw {i}")
            yield i

    for r in LocalExecutor().imap(lambda shared, x: shared + x, items(), shared=10):
        events.append(f"took {r}")
    assert events == ["draw 0", "took 10", "draw 1", "took 11", "draw 2", "took 12"]
    assert LocalExecutor().map(lambda shared, x: x, iter([])) == []


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to `import ray`
    with pytest.raises(ConfigError, match=r"pip install 'hwprune\[ray\]'"):
        make_executor("ray")


def test_address_that_does_not_answer():
    with pytest.raises(ConfigError, match="127.0.0.1:9 does not answer"):
        make_executor("ray", address="127.0.0.1:9")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        make_executor("ray", address="nowhere")


def test_ray_maps_in_order_with_pinned_threads(cluster):
    ex = make_executor("ray", worker_threads=1)

    def job(shared, x):
        return shared * x, torch.get_num_threads(), os.getpid()

    out = ex.map(job, list(range(6)), shared=7)
    assert [o[0] for o in out] == [7 * i for i in range(6)]
    assert {o[1] for o in out} == {1} and os.getpid() not in {o[2] for o in out}
    ex.close()
    assert cluster.is_initialized()  # joined the test's runtime, so closing leaves it up


def test_a_worker_deserialises_the_shared_payload_once(cluster):
    """The shared payload (an unpruned model and its evaluator) is fetched and unpickled once per
    worker process, not once per task, and is uploaded once for several maps of the same payload:
    each worker's first task finds it fresh, every later one finds the copy it already holds."""
    ex = make_executor("ray")

    def job(shared, x):
        fresh = "seen" not in shared  # a probe only: real work must not change shared
        shared["seen"] = True
        return fresh, os.getpid()

    payload = {"model": torch.zeros(1000)}
    out = ex.map(job, list(range(8)), shared=payload) + ex.map(job, list(range(8)), shared=payload)
    assert sum(f for f, _ in out) == len({pid for _, pid in out}) <= 2 + 1  # once per worker (Ray may add one)
    assert "seen" not in payload  # workers hold their own copies, as Ray always gave them
    out = ex.map(job, list(range(4)), shared={"model": torch.ones(10)})
    assert sum(f for f, _ in out) == len({pid for _, pid in out})  # another payload: fresh again, once per worker
    ex.close()


def test_killed_worker_is_retried(cluster, tmp_path):
    """The first attempt of one task kills its worker process; Ray runs it again elsewhere."""
    marker = str(tmp_path / "killed-once")
    ex = make_executor("ray")

    def job(shared, x):
        if x == 2 and not os.path.exists(shared):
            open(shared, "w").close()
            os._exit(1)  # the worker dies mid-task
        return x * x

    assert ex.map(job, [0, 1, 2, 3], shared=marker) == [0, 1, 4, 9]
    assert os.path.exists(marker)


@pytest.mark.parametrize("name,opts", [("evolution", {"evo_pop": 6, "evo_gens": 1}),
                                       ("netadapt", {"netadapt_initial": 0.2})])
def test_same_plan_as_local(cluster, tiny, name, opts):
    """Work items carry their plan; the model, data and evaluator go once per map: the plan, the
    scores and the number of evaluations are those of the local run."""
    loaded, ev = tiny
    res = {}
    for ex in ("local", "ray"):
        res[ex] = prune(loaded, PruneConfig(strategy=name, budget="60%flops", options=opts, align=16, progress=False,
                                            executor=ex), evaluator=ev)
    local, ray_ = res["local"], res["ray"]
    assert local.plan.kept == ray_.plan.kept and local.report.evaluations == ray_.report.evaluations
    if name == "evolution":
        assert [m["error"] for m in local.artifacts["pareto"]["front"]] == \
               [m["error"] for m in ray_.artifacts["pareto"]["front"]]
    else:
        assert local.artifacts["netadapt_history"] == ray_.artifacts["netadapt_history"]
    assert torch.equal(local.model(torch.ones(1, 3, 32, 32)), ray_.model(torch.ones(1, 3, 32, 32)))


def test_fine_tuned_scores_match_local_with_the_same_threads(cluster, tiny, capsys):
    """NetAdapt with short fine-tunes: a score that trains depends on torch's thread count, so Ray
    workers given the local thread count (and as many Ray CPUs) score every proposal as the local
    run does; with another count the search says so once."""
    from hwprune.data import make_data
    from hwprune.executor import thread_mismatch

    loaded, ev = tiny
    data = make_data("synthetic", input_size=32, batch_size=16, seed=0, n_train=32, n_val=32)
    here = torch.get_num_threads()
    opts = {"netadapt_initial": 0.25, "netadapt_ft_steps": 2}  # one iteration: every group proposes
    res = {}
    for ex in ("local", "ray"):
        res[ex] = prune(loaded, PruneConfig(strategy="netadapt", budget="80%flops", options=opts, align=16,
                                            progress=False, executor=ex, worker_threads=here),
                        calib=data.calib, evaluator=ev)
    assert res["local"].artifacts["netadapt_history"] == res["ray"].artifacts["netadapt_history"]
    assert res["local"].plan.kept == res["ray"].plan.kept
    assert "--worker-threads" not in capsys.readouterr().err
    other = make_executor("ray", worker_threads=1 if here > 1 else 2)
    assert f"pass --worker-threads {here}" in thread_mismatch(other, 2)
    assert thread_mismatch(other, 0) is None and thread_mismatch(LocalExecutor(), 2) is None
    with pytest.raises(ConfigError, match="--worker-threads 3: .* largest node of this cluster has 2; pass "
                                          "--worker-threads 2"):
        make_executor("ray", worker_threads=3)  # no node could run it: Ray would wait forever


def test_cli_refuses_a_ray_address_that_does_not_answer(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "p"
    r = subprocess.run([sys.executable, "-m", "hwprune", "prune", "--model", "tiny_resnet", "--input-size", "32",
                        "--strategy", "evolution", "--budget", "60%flops", "--executor", "ray", "--ray-address",
                        "127.0.0.1:9", "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "does not answer" in r.stderr and not out.exists()


def _fleet_file(tmp_path, devices):
    text = ""
    for name, extra in devices.items():
        text += (f'[devices.{name}]\nresource = "dev-{name}"\nthreads = 1\nrepeats = 3\nmin_repeat_ms = 0.2\n'
                 f'calib_variants = 2\nout = "{tmp_path / name}.json"\n{extra}\n')
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return str(path)


def test_fleet_file_errors(tmp_path):
    from hwprune.fleet import load_fleet

    with pytest.raises(ConfigError, match="cannot be read"):
        load_fleet(str(tmp_path / "none.toml"))
    (tmp_path / "empty.toml").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="names no devices"):
        load_fleet(str(tmp_path / "empty.toml"))
    (tmp_path / "typo.toml").write_text('[devices.a]\nresource = "r"\nthread = 2\n')
    with pytest.raises(ConfigError, match="unknown keys \\['thread'\\]"):
        load_fleet(str(tmp_path / "typo.toml"))


def test_fleet_profiles_two_devices_on_their_ray_resources(cluster, tiny, tmp_path):
    """Two devices = two Ray resources of this machine (blocked and spinning ORT workers): each
    bundle is measured by a Ray task holding its resource, and each comes back as its own table
    that prices the model."""
    from hwprune.fleet import load_fleet, profile_fleet
    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable

    loaded, _ = tiny
    devices = load_fleet(_fleet_file(tmp_path, {"a": "", "b": "spinning = true"}))
    rows = profile_fleet(loaded, devices, input_size=16, points_per_axis=2)
    assert [r["device"] for r in rows] == ["a", "b"] and all(r["node"] for r in rows)
    graph = ChannelGraph(loaded.model, torch.randn(1, 3, 16, 16))
    spinning = []
    for r in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a quick table on a busy machine may warn about its calibration
            table = LatencyTable.load(r["table"])
        assert table.covers(graph) and table.cost_model(graph).units_sum({}) > 0
        spinning.append(bool(table.device.get("spinning")))
    assert spinning == [False, True]
    with pytest.raises(ConfigError, match="no Ray node offers 'dev-c'"):
        profile_fleet(loaded, load_fleet(_fleet_file(tmp_path, {"c": ""})), input_size=16, points_per_axis=2)



def test_family_members_train_on_ray_as_they_train_here(cluster, tmp_path):
    """Family training on the cluster, one member a task, with the local thread count per worker:
    every member's trained weights and top-1 equal the local run's."""
    from hwprune.checkpoint import load_checkpoint
    from hwprune.family import FamilyConfig, build_family
    from hwprune.family_train import FamilyTraining, train_family
    from hwprune.recover import RecoverConfig

    loaded = load_model("tiny_resnet")
    plan = prune(loaded, PruneConfig(strategy="global", budget="50%flops", progress=False)).plan
    plan.save(str(tmp_path / "plan.json"))
    training = FamilyTraining(data="synthetic", recipe=RecoverConfig(epochs=1, init="scratch"), batch_size=32,
                              n_train=96, n_val=64)
    here = torch.get_num_threads()
    rows, weights = {}, {}
    for ex in ("local", "ray"):
        out = str(tmp_path / ex)
        build_family(FamilyConfig(plan=str(tmp_path / "plan.json"), budgets="40%flops,70%flops", out=out, plot=False))
        executor = make_executor(ex, worker_threads=here)
        rows[ex] = train_family(out, training, executor)
        executor.close()
        weights[ex] = [load_checkpoint(os.path.join(out, r["trained"])).model.state_dict() for r in rows[ex]]
        assert json.loads(open(os.path.join(out, "family.json")).read())["training"]["executor"] == ex
    assert [(r["member"], r["top1"]) for r in rows["local"]] == [(r["member"], r["top1"]) for r in rows["ray"]]
    for a, b in zip(weights["local"], weights["ray"]):
        assert all(torch.equal(a[k], b[k]) for k in a)
