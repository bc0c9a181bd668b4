"""Every `hwprune` command shown in README.md, docs/*.md and the CLI's --help examples runs, so an
example cannot silently go stale: each is parsed by the real CLI parser, and each command of a
code block (and each --help example) is run in order, on small settings, from a scratch folder
that holds a small latency table, image folders for /data/..., and the user package the README
names. Only the sizes change (model -> tiny_resnet_synthetic at 16 px, --quick, fewer samples,
batches and epochs; `siblings` keeps its torchvision model, at 64 px, and its family's candidates);
flags, verbs and file paths are the documented ones."""
from __future__ import annotations

import glob
import os
import re
import shlex

import numpy as np
import pytest
import torch

from conftest import assert_ran
from hwprune.cli.main import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SMALL_MODEL, SIZE = "tiny_resnet_synthetic", "32"  # at 16 px the 0.1 ms model is all fixed cost: 0.5x unreachable


def hardware_absent(cmd: str) -> bool:
    """True when the command needs what this machine lacks: TensorRT, or a CUDA GPU. On a GPU
    without TensorRT the CUDA commands run and only the TensorRT ones must be refused cleanly."""
    from hwprune_deploy.trt import unavailable_reason

    if "tensorrt" in cmd and unavailable_reason():
        return True
    return any(h in cmd for h in ("torch-cuda", "--device cuda")) and not torch.cuda.is_available()


def _clean(cmd: str) -> str:
    cmd = re.sub(r"\[[^\]]*\]", " ", cmd)  # optional parts shown in [brackets]
    return " ".join(cmd.split())


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, fences paired line by line."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        if lang is None and fence:
            lang, body = line.strip()[3:].strip(), []
        elif lang is not None and fence:
            blocks.append((lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def block_commands(path: str) -> list[str]:
    """Commands on the lines of shell code blocks (continuations joined, comments dropped)."""
    text = open(os.path.join(ROOT, path)).read()
    out = []
    for lang, block in fenced_blocks(text):
        if lang not in ("", "bash", "sh", "console", "shell"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|;", line):
                part = re.sub(r"^python3? -m hwprune_deploy\.cli ", "hwprune-deploy ", part.strip())
                if part.startswith(("hwprune ", "hwprune-deploy ")):
                    out.append(_clean(part))
    return out


def inline_commands(path: str) -> list[str]:
    """Complete commands quoted inline (with at least one flag and no placeholder)."""
    text = open(os.path.join(ROOT, path)).read()
    found = [_clean(re.split(r"&&|;|\|", m)[0]) for m in re.findall(r"`(hwprune [a-z]+ [^`]*)`", text)]
    return [c for c in found if " --" in c and not re.search(r"\.\.\.|<|\bNAME\b|\bCOMMAND\b|\bT\b", c)]


def help_examples() -> list[str]:
    out = []
    for p in _subparsers()[1].values():
        for text in (p.description or "", p.epilog or ""):
            out += [_clean(m) for m in re.findall(r"Example: (hwprune [^\n]*?)(?:$|\n|(?<=\S)\s{2,})", text)]
    return out


def help_example_lists() -> list[str]:
    """The commands listed under an ``examples:`` heading of a command's --help epilog: parsed by
    the test below (flags and values must be the command's own), not run (``--help`` examples
    given as ``Example: ...`` are run, in the same order as a document's)."""
    out = []
    for p in _subparsers()[1].values():
        block = (p.epilog or "").partition("examples:\n")[2]
        for line in block.splitlines():
            if not line.startswith("  hwprune "):
                break
            out.append(_clean(line.split(" #")[0]))
    return out


def _subparsers():
    parser = build_parser()
    return parser, next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def test_every_documented_command_parses():
    """Commands of code blocks and --help examples parse whole; commands quoted inline (often a
    verb and the flag under discussion) use only flags their verb has."""
    parser, verbs = _subparsers()
    seen = 0
    for path in DOCS:
        for cmd in block_commands(path):
            if re.search(r"<|\.\.\.", cmd) or cmd.startswith("hwprune-deploy "):
                continue  # the device CLI's commands are run below
            try:
                parser.parse_args(shlex.split(cmd)[1:])
            except SystemExit as e:  # --help exits 0 after printing
                if e.code != 0:
                    pytest.fail(f"{path}: `{cmd}` does not parse (exit {e.code})")
            seen += 1
        for cmd in inline_commands(path):
            argv = shlex.split(cmd)[1:]
            assert argv[0] in verbs, f"{path}: `{cmd}`: no verb {argv[0]!r}"
            known = {o for a in verbs[argv[0]]._actions for o in a.option_strings}
            unknown = [a for a in argv[1:] if a.startswith("--") and a not in known]
            assert not unknown, f"{path}: `{cmd}` uses flags `hwprune {argv[0]}` does not have: {unknown}"
            seen += 1
    for cmd in help_examples():
        parser.parse_args(shlex.split(cmd)[1:])
        seen += 1
    listed = help_example_lists()
    assert len(listed) >= 8, listed  # train, baseline and siblings list theirs
    for cmd in listed:
        if "..." not in cmd:
            parser.parse_args(shlex.split(cmd)[1:])
            seen += 1
    assert seen >= 15


def _set(argv: list[str], flag: str, value: str | None, add: bool = True) -> None:
    if flag in argv:
        i = argv.index(flag)
        if value is None:
            return
        argv[i + 1] = value
    elif add:
        argv += [flag] if value is None else [flag, value]


def smallen(cmd: str, scratch: str) -> list[str]:
    """The documented command on small settings (see module doc)."""
    argv = shlex.split(cmd.replace("/data/", f"{scratch}/data/"))[1:]
    verb = argv[0]
    models = [i + 1 for i, a in enumerate(argv) if a == "--model"]
    for i in models:
        if verb == "siblings":  # a torchvision name stays (its family is the point): smaller inputs, fewer candidates
            break
        if not argv[i].endswith((".pt", ".pt2", ".onnx")) and ":" not in argv[i]:  # a zoo name; a file stays
            argv[i] = SMALL_MODEL
    if verb == "siblings":
        _set(argv, "--input-size", "64")
        _set(argv, "--scope", "family", add=False)  # every torchvision classifier -> its family's
        _set(argv, "--repeats", "3")
        _set(argv, "--warmup", "1")
    if verb in ("profile", "validate", "prune", "run", "bench") or (verb == "inspect" and models):
        _set(argv, "--input-size", SIZE)
    if verb in ("profile", "run"):
        _set(argv, "--quick", None)
    if verb == "run":
        _set(argv, "--batch", "1")
        _set(argv, "--no-progress", None)
        _set(argv, "--finetune-epochs", "1", add=False)
        _set(argv, "--out", os.path.join(scratch, "hwprune_run"))
    if verb == "validate":
        _set(argv, "--samples", "3")
        _set(argv, "--no-recalibrate", None)
    if verb == "bench":
        if not any(a.endswith(".onnx") for a in argv):  # an exported file keeps its batch
            _set(argv, "--batch", "1,2")
        _set(argv, "--repeats", "3")
        _set(argv, "--warmup", "1")
    # a relative budget a quick 32-px table reaches on a busy machine (its floor read 0.39-0.5x in CI runs)
    for flag in ("--budget", "--budgets"):
        if flag in argv and argv[argv.index(flag) + 1].endswith("x"):
            argv[argv.index(flag) + 1] = "0.8x" if flag == "--budget" else "0.85x,0.95x"
    if verb in ("train", "baseline") or (verb == "family" and "--data" in argv):  # the documented sizes, smaller
        _set(argv, "--n-train", "128", add=False)
        _set(argv, "--n-val", "64")
        _set(argv, "--epochs", "1", add=False)
    if verb == "prune":
        _set(argv, "--finetune-epochs", "1", add=False)
        if "halp" in argv and "--option" not in argv:  # Taylor scores over 8 minibatches, not 32
            argv += ["--option", "halp_batches=8"]
        if "--data" in argv:
            _set(argv, "--n-train", "128")  # two batches for adaptive BN, one to score on
            _set(argv, "--n-val", "64")
        _set(argv, "--quiet", None)
    return argv


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder to run the docs from: a small latency table under the committed table's name, the
    image folders the docs point at, and the user package/weights the README's example uses."""
    from PIL import Image

    from hwprune.latency import ProfileConfig, profile
    from hwprune.models import load_model
    from hwprune.zoo import tiny_resnet

    root = tmp_path_factory.mktemp("docs")
    profile(load_model(SMALL_MODEL), ProfileConfig.quick(input_size=int(SIZE), calib_variants=4,
                                                          out=str(root / "latency_tables" / "amd-epyc-2c-ort-cpu-fp32-b1.json")),
            progress=False)
    rng = np.random.default_rng(0)
    for name, classes in (("val", 10), ("flowers", 5)):
        for c in range(classes):
            d = root / "data" / name / f"class{c}"
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "models.py").write_text(
        "from hwprune.zoo import tiny_resnet\n\n\ndef build_net(num_classes=10):\n"
        "    return tiny_resnet(num_classes=num_classes)\n")
    torch.save(tiny_resnet(num_classes=5).state_dict(), root / "net.pt")
    return root


def _same_run(cmd: str) -> tuple | None:
    """What ``hwprune run`` a documented command amounts to once made small (its parsed options),
    so that the same run shown in two documents (README's ``hwprune run``, docs/export.md's
    ``hwprune run --quick --out /tmp/r``) runs once: every small ``run`` writes to the scratch
    folder's own output, so no later command of a document reads what it wrote. None for the
    other verbs (a later command may read their outputs)."""
    if not cmd.startswith("hwprune run"):
        return None
    try:
        ns = build_parser().parse_args(smallen(cmd, "/scratch"))
    except SystemExit:
        return None
    return tuple(sorted((k, repr(v)) for k, v in vars(ns).items()))


def _documented_runs() -> dict[str, list[str]]:
    """Per source (a document, or --help), its runnable commands in order, each run once."""
    runs: dict[str, list[str]] = {}
    seen = set()
    for where, cmds in [(p, block_commands(p)) for p in DOCS] + [("--help", help_examples())]:
        for cmd in cmds:
            if re.search(r"<|\.\.\.", cmd) or cmd in seen:
                continue
            same = _same_run(cmd)
            if same is not None and same in seen:
                continue
            seen.update({cmd, same} - {None})
            runs.setdefault(where, []).append(cmd)
    return runs


@pytest.mark.parametrize("where", sorted(_documented_runs()))
def test_documented_commands_run_on_small_settings(where, scratch, monkeypatch, capsys):
    monkeypatch.chdir(scratch)
    monkeypatch.syspath_prepend(str(scratch))
    monkeypatch.setenv("HWPRUNE_CACHE", str(scratch / "cache"))
    from hwprune_deploy.cli import main as deploy_main

    for cmd in _documented_runs()[where]:
        if cmd.startswith("hwprune-deploy "):  # the device side: small protocol, same files
            argv = shlex.split(cmd)[1:] + ["--repeats", "3", "--min-repeat-ms", "0.5", "--no-progress"]
            code = deploy_main(argv)
            out = capsys.readouterr()
            assert code == 0, f"{where}: `{cmd}` exited {code}:\n{out.err[-1500:]}"
            continue
        argv = smallen(cmd, str(scratch))
        code = main(argv)
        out = capsys.readouterr()
        if hardware_absent(cmd):
            assert code == 2 and "Traceback" not in out.err, f"{where}: `{cmd}` -> {argv}: {out.err[-800:]}"
            continue
        assert_ran(code, out.out + out.err, f"{where}: `{cmd}` ran as `hwprune {' '.join(argv)}` and")


def test_the_docs_show_enough_commands_to_matter():
    """README and --help have commands, and each is run (under the first document that shows it)."""
    runs = _documented_runs()
    ran = {c for cmds in runs.values() for c in cmds}
    assert "README.md" in runs and help_examples() and set(help_examples()) <= ran
    assert sum(map(len, runs.values())) >= 10
