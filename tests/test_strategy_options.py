"""Typed strategy options (issue #16 item 4): each strategy declares a dataclass of its knobs;
PruneConfig checks ``options`` against it and the CLI's ``--option`` goes through the same check."""
import importlib.util
import json
import os

import pytest
import torch

from hwprune.cli.cmd_prune import OPTION_FLAGS, _options
from hwprune.cli.main import build_parser
from hwprune.errors import ConfigError, HwpruneError
from hwprune.models import load_model
from hwprune.prune import PruneConfig, make_context, prune
from hwprune.strategies import (StrategyOptions, check_options, get_strategy_spec, list_strategies, option_owners,
                                strategy_options)
from hwprune.strategies._common import fidelity_evaluator
from hwprune.strategies.options import AmcOptions, EvolutionOptions, HalpOptions, NetAdaptOptions, SensitivityOptions

TESTS = os.path.dirname(os.path.abspath(__file__))
ALL = ["uniform", "global", "sensitivity", "netadapt", "amc", "halp", "evolution"]

#: the defaults the strategies read with ctx.option(name, default) before the options were typed
LEGACY_DEFAULTS = {
    SensitivityOptions: {"sens_points": 5},
    NetAdaptOptions: {"netadapt_initial": 0.04, "netadapt_decay": 0.96, "netadapt_ft_steps": 0},
    AmcOptions: {"amc_episodes": 40, "amc_warmup": None, "amc_sigma": 0.5, "amc_decay": 0.95, "amc_max_prune": 0.9},
    HalpOptions: {"halp_bins": 2000, "halp_steps": 4, "halp_batches": 32, "halp_momentum": 0.9, "halp_max_prune": 0.625},
    EvolutionOptions: {"evo_pop": 16, "evo_gens": 8, "evo_reconstruct": True, "evo_fill": True},
}


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    return load_model("tiny_resnet", kwargs={"width": 16, "depth": 1})


def _widths(res):
    return {k: v["after"] for k, v in res.report["widths"].items()}


# ---------------------------------------------------------------- the registry
def test_every_strategy_declares_options_and_needs():
    needs_eval = {"sensitivity", "netadapt", "amc", "evolution"}
    assert set(ALL) <= set(list_strategies())
    for name in ALL:
        spec = get_strategy_spec(name)
        assert issubclass(spec.options, StrategyOptions)
        assert spec.needs_evaluator == (name in needs_eval), name
        assert spec.needs_budget == (name != "uniform"), name
    for cls, defaults in LEGACY_DEFAULTS.items():
        assert {k: getattr(cls(), k) for k in cls.names()} == defaults
    # one owner per option name, so "an option of another strategy" is well defined
    names = [o for n in list_strategies() for o in get_strategy_spec(n).options.names()]
    assert len(names) == len(set(names))


def test_lazily_declared_builtins_resolve_to_the_functions_their_modules_define():
    """The built-in strategies and criteria are declared by "module:function" path (so listing
    them imports no search); each path names a function of its own module, which runs when asked."""
    import importlib
    import inspect

    from hwprune.importance import CRITERIA
    from hwprune.registry import Registry, resolve
    from hwprune.strategies import STRATEGIES

    for registry in (STRATEGIES, CRITERIA):
        for name in registry.list():
            target = registry._items[name]
            fn = registry.get(name)
            fn = getattr(fn, "fn", fn)  # a StrategySpec's search function
            assert inspect.isfunction(fn), (name, fn)
            if isinstance(target, str) or isinstance(getattr(target, "target", None), str):
                path = target if isinstance(target, str) else target.target
                module, attr = path.split(":")
                assert getattr(importlib.import_module(module), attr) is fn and fn.__module__ == module, path
    # a user's own entry by path: imported on first get, then cached
    reg = Registry("thing")
    reg.add("dumps", "json:dumps")
    assert "dumps" in reg and reg.list() == ["dumps"]
    import json

    assert reg.get("dumps") is json.dumps and reg._items["dumps"] is json.dumps
    with pytest.raises(ValueError, match="not 'package.module:attribute'"):
        resolve("json.dumps")


@pytest.mark.parametrize("name", [n for n in ALL if n != "uniform"])
def test_strategies_that_need_a_budget_say_so(loaded, name):
    with pytest.raises(ConfigError, match="needs --budget"):
        prune(loaded, PruneConfig(strategy=name, ratio=0.5, progress=False),
              evaluator=lambda m: 1.0)


def test_context_options_are_typed(loaded):
    ctx = make_context(loaded, PruneConfig(strategy="halp", budget="50%flops", progress=False,
                                           options={"halp_steps": "3", "evo_pop": 8}))
    assert isinstance(ctx.options, HalpOptions)
    assert (ctx.options.halp_steps, ctx.options.halp_bins) == (3, 2000)
    assert not hasattr(ctx, "option")


# ---------------------------------------------------------------- unknown names
def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        PruneConfig(strategy="halp", budget="50%flops", options={"halp_stepz": 3})
    msg = str(e.value)
    assert "'halp_stepz'" in msg and "halp_steps" in msg and "halp_bins" in msg


def test_unknown_option_for_a_strategy_without_options():
    with pytest.raises(ConfigError) as e:
        PruneConfig(strategy="uniform", ratio=0.5, options={"halp_stepz": 3})
    assert "halp_steps" in str(e.value) and "takes no options" in str(e.value)
    with pytest.raises(ConfigError, match="unknown option 'zzz'.*options of amc: amc_episodes"):
        PruneConfig(strategy="amc", budget="0.5x", options={"zzz": 1})


def test_unknown_strategy_fails_on_construction():
    with pytest.raises(ConfigError, match="unknown strategy 'halpp'.*Did you mean 'halp'"):
        PruneConfig(strategy="halpp", budget="0.5x")


def test_options_must_be_a_dict():
    with pytest.raises(ConfigError, match="options must be a dict"):
        PruneConfig(strategy="halp", budget="0.5x", options=[("halp_steps", 3)])


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("strategy,name,value,words", [
    ("evolution", "evo_pop", "abc", "evo_pop takes an int, e.g. evo_pop=16"),
    ("evolution", "evo_pop", 4.5, "evo_pop takes an int"),
    ("evolution", "evo_pop", True, "evo_pop takes an int"),
    ("netadapt", "netadapt_decay", "fast", "netadapt_decay takes a number, e.g. netadapt_decay=0.96"),
    ("evolution", "evo_reconstruct", "maybe", "evo_reconstruct takes true or false"),
    ("amc", "amc_warmup", "some", "amc_warmup takes an int, e.g. amc_warmup=10"),
])
def test_malformed_value_is_a_clear_error(strategy, name, value, words):
    with pytest.raises(ConfigError) as e:
        PruneConfig(strategy=strategy, budget="0.5x", options={name: value})
    assert str(e.value).startswith(f"option {name}={value}: ") and words in str(e.value)


@pytest.mark.parametrize("strategy,name,value,bound", [
    ("evolution", "evo_pop", 2, ">= 4"),
    ("evolution", "evo_gens", "0", ">= 1"),
    ("sensitivity", "sens_points", 1, ">= 2"),
    ("netadapt", "netadapt_initial", 0, "in (0, 1]"),
    ("netadapt", "netadapt_decay", 1.5, "in (0, 1]"),
    ("netadapt", "netadapt_ft_steps", -1, ">= 0"),
    ("amc", "amc_episodes", 0, ">= 1"),
    ("amc", "amc_warmup", -2, ">= 0"),
    ("amc", "amc_sigma", -0.1, ">= 0"),
    ("amc", "amc_max_prune", "1.2", "in (0, 1]"),
    ("halp", "halp_steps", 0, ">= 1"),
    ("halp", "halp_bins", 0, ">= 1"),
])
def test_out_of_range_value_is_a_clear_error(strategy, name, value, bound):
    with pytest.raises(ConfigError) as e:
        PruneConfig(strategy=strategy, budget="0.5x", options={name: value})
    msg = str(e.value)
    assert msg.startswith(f"option {name}={value} is out of range: {name} must be {bound}, e.g. {name}=")


def test_values_are_coerced_and_other_strategies_options_kept():
    cfg = PruneConfig(strategy="evolution", budget="0.5x",
                      options={"evo_pop": "8", "evo_gens": 2.0, "evo_reconstruct": "false", "halp_steps": "x"})
    assert cfg.options == {"evo_pop": 8, "evo_gens": 2, "evo_reconstruct": False, "halp_steps": "x"}
    assert isinstance(cfg.options["evo_pop"], int)
    assert check_options("amc", {"amc_warmup": "none", "amc_sigma": 1})["amc_sigma"] == 1.0
    assert check_options("amc", {"amc_warmup": "none"})["amc_warmup"] is None
    json.dumps(cfg.options)  # the report records them


def _load_fast(filename):
    spec = importlib.util.spec_from_file_location(filename[:-3], os.path.join(TESTS, filename))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FAST


@pytest.mark.parametrize("filename", ["test_strategies_latency.py", "test_strategies.py"])
def test_shared_fast_options_are_accepted_by_every_strategy(filename):
    """The test suites pass one FAST dict to every strategy: each takes its own and ignores the rest."""
    fast = _load_fast(filename)
    assert set(fast) <= set(option_owners())
    for name in ALL:
        cfg = PruneConfig(strategy=name, budget="0.5x", options=fast)
        own = get_strategy_spec(name).options.names()
        assert cfg.options == fast
        for k in own:
            if k in fast:
                assert getattr(strategy_options(name, cfg.options), k) == fast[k]


# ---------------------------------------------------------------- defaults unchanged
def test_uniform_and_halp_defaults_give_the_same_plan_as_explicit_defaults(loaded):
    for strategy, kw, explicit in (("uniform", {"ratio": 0.5}, {}),
                                   ("halp", {"budget": "50%flops"}, {"halp_bins": 2000, "halp_steps": 4})):
        runs = [prune(loaded, PruneConfig(strategy=strategy, options=o, progress=False, **kw)) for o in ({}, explicit)]
        assert _widths(runs[0]) == _widths(runs[1])
        assert runs[0].plan.kept == runs[1].plan.kept
    # and a non-default value does reach the strategy
    one = prune(loaded, PruneConfig(strategy="halp", budget="50%flops", options={"halp_bins": 3}, progress=False))
    assert one.report["cost"]["predicted"] <= one.report["cost"]["target"] * (1 + 1e-9)


def test_amc_default_warmup_is_a_quarter_of_the_episodes(loaded):
    ev = fidelity_evaluator(loaded.model, torch.randn(1, 3, 32, 32), n=8)

    def plan(opts):
        return prune(loaded, PruneConfig(strategy="amc", budget="50%flops", seed=1, progress=False, options=opts),
                     evaluator=ev).plan.kept

    assert plan({"amc_episodes": 8}) == plan({"amc_episodes": 8, "amc_warmup": 2})


# ---------------------------------------------------------------- CLI
def _parse(*argv):
    return build_parser().parse_args(["prune", *argv])


def test_cli_dedicated_flags_map_onto_the_options():
    args = _parse("--evo-pop", "8", "--netadapt-decay", "0.9", "--option", "evo_gens=2", "halp_steps=3")
    assert _options(args) == {"evo_pop": "8", "netadapt_decay": "0.9", "evo_gens": "2", "halp_steps": "3"}
    cfg = PruneConfig(strategy="evolution", budget="0.5x", options=_options(args))
    assert (cfg.options["evo_pop"], cfg.options["evo_gens"]) == (8, 2)
    assert set(OPTION_FLAGS) <= set(option_owners())
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        _options(_parse("--option", "halp_steps"))
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        _options(_parse("--option", "=3"))


def test_cli_unknown_option_exits_2_naming_the_right_one(cli, tmp_path):
    out = tmp_path / "o"
    p = cli("prune", "--model", "tiny_resnet", "--ratio", "0.5", "--option", "halp_stepz=3", "--out", str(out),
            "--quiet", check=False)
    assert p.returncode == 2, p.stderr
    assert "halp_stepz" in p.stderr and "halp_steps" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_cli_malformed_and_out_of_range_exit_2(cli, tmp_path):
    for opt, words in (("evo_pop=abc", "evo_pop takes an int, e.g. evo_pop=16"),
                       ("evo_pop=2", "evo_pop must be >= 4")):
        p = cli("prune", "--model", "tiny_resnet", "--budget", "50%flops", "--strategy", "evolution", "--option", opt,
                "--out", str(tmp_path / "o"), "--quiet", check=False)
        assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_cli_help_lists_every_strategys_options(cli):
    text = cli("prune", "--help").stdout
    for name in ALL:
        assert f"  {name} (" in text
        for row in get_strategy_spec(name).options.describe():
            assert f"{row['name']}={row['default']}" in text
    assert "halp_steps=4" in text and "progressively tighter steps" in text and "evo_pop=16" in text
    assert "int >= 4" in text and "--option KEY=VALUE" in text


def test_errors_share_the_root():
    assert issubclass(ConfigError, HwpruneError)


@pytest.mark.parametrize("name", ["uniform", "global", "halp", "netadapt"])
def test_max_prune_keeps_a_share_of_every_group(loaded, name):
    """--max-prune F: no search takes any group below (1 - F) of its width (rounded up to the
    grid), and the budget is still met; without it the same searches cut some groups further
    (35% of the FLOPs: every group at half width keeps ~25%, so F = 0.5 leaves room)."""
    cfg = dict(strategy=name, budget="35%flops", align=8, progress=False, options={"netadapt_initial": 0.15})
    ev = fidelity_evaluator(loaded.model, torch.randn(1, 3, 32, 32), n=8)
    ctx = make_context(loaded, PruneConfig(**cfg, max_prune=0.5))
    floor = {g.name: g.candidate_widths(8, 8, 0.5)[0] for g in ctx.graph.prunable}
    assert all(floor[g.name] >= g.width / 2 for g in ctx.graph.prunable)
    res = prune(loaded, PruneConfig(**cfg, max_prune=0.5), evaluator=ev)
    widths = {g.name: res.plan.widths.get(g.name, g.width) for g in ctx.graph.prunable}
    assert all(w >= floor[g] for g, w in widths.items()), (widths, floor)
    assert res.report["cost"]["predicted"] <= res.report["cost"]["target"] * (1 + 1e-9)
    assert res.plan.provenance["max_prune"] == 0.5
    if name == "halp":  # halp has a floor of its own (below); without it
        cfg["options"] = {"halp_max_prune": 1}
    free = prune(loaded, PruneConfig(**cfg), evaluator=ev).plan.widths
    if name in ("halp", "netadapt"):  # uniform and (here) global cut the groups about alike
        assert any(free.get(g.name, g.width) < floor[g.name] for g in ctx.graph.prunable), free
    with torch.no_grad():
        assert res.model(torch.randn(1, 3, 32, 32)).shape[0] == 1


def test_max_prune_out_of_range_and_unreachable_say_what_to_change(loaded, cli, tmp_path):
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=rf"max-prune {bad} is out of range.*\(0, 1\]"):
            PruneConfig(strategy="uniform", ratio=0.5, max_prune=bad)
    from hwprune.pipeline import RunConfig, command_line

    with pytest.raises(ConfigError, match=r"max-prune 0 is out of range"):
        RunConfig(max_prune=0)
    assert build_parser().parse_args(["run", "--max-prune", "0.75"]).max_prune == 0.75
    assert command_line(RunConfig(max_prune=0.75)) == "hwprune run --max-prune 0.75"
    with pytest.raises(HwpruneError, match="below the smallest reachable"):
        prune(loaded, PruneConfig(strategy="halp", budget="10%flops", max_prune=0.5, progress=False))
    p = cli("prune", "--model", "tiny_resnet", "--input-size", "32", "--budget", "30%flops", "--strategy", "uniform",
            "--max-prune", "0.8", "--out", str(tmp_path / "o"), "--quiet", check=False)
    assert p.returncode == 0, p.stderr
    plan = json.loads((tmp_path / "o" / "plan.json").read_text())
    assert plan["provenance"]["max_prune"] == 0.8
    bad = cli("prune", "--model", "tiny_resnet", "--budget", "30%flops", "--max-prune", "2", check=False)
    assert bad.returncode == 2 and "max-prune 2.0 is out of range" in bad.stderr


def test_halp_keeps_three_eighths_of_every_group_unless_the_budget_needs_less(loaded, capsys):
    """halp's own floor (halp_max_prune 0.625): at a budget reachable with every group at 3/8 of its
    width no group goes below that; at one that is not, the floor is relaxed in 1/8 steps just
    enough (and the run says so), so halp reaches what it reached without a floor."""
    from hwprune.strategies.halp import halp_floor

    ev = fidelity_evaluator(loaded.model, torch.randn(1, 3, 32, 32), n=8)
    cfg = dict(strategy="halp", align=8, progress=False)
    ctx = make_context(loaded, PruneConfig(**cfg, budget="35%flops"))
    floor = {g.name: g.candidate_widths(8, 8, 0.625)[0] for g in ctx.graph.prunable}
    assert halp_floor(ctx) == 0.625
    res = prune(loaded, PruneConfig(**cfg, budget="35%flops"), evaluator=ev)
    assert res.artifacts["halp_max_prune"] == 0.625
    assert all(res.plan.widths.get(g, w) >= w for g, w in floor.items()), (res.plan.widths, floor)
    assert "cannot reach the budget" not in capsys.readouterr().err
    uncapped = prune(loaded, PruneConfig(**cfg, budget="35%flops", options={"halp_max_prune": 1}), evaluator=ev)
    assert any(uncapped.plan.widths.get(g, w) < w for g, w in floor.items())  # the floor changed the plan
    tight = prune(loaded, PruneConfig(**cfg, budget="15%flops"), evaluator=ev)
    assert 0.625 < tight.artifacts["halp_max_prune"] <= 1
    assert tight.report["cost"]["predicted"] <= tight.report["cost"]["target"] * (1 + 1e-9)
    assert "halp's floor halp_max_prune=0.625 cannot reach the budget; searching with" in capsys.readouterr().err
