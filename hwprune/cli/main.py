"""Entry point: ``hwprune <command> ...``. Each command lives in ``cmd_<name>.py`` and exposes
``register(subparsers)``; it parses arguments and calls one library function.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from ..errors import HwpruneError

#: the commands, in the order ``hwprune --help`` lists them, with the line it shows for each (the
#: same line each command's ``register`` gives its subparser)
SUMMARIES = {
    "inspect": "print a model's channel groups (name, width, FLOPs share)",
    "profile": "build a per-layer latency table on a device",
    "validate": "check a latency table against measured pruned variants",
    "prune": "prune a model to a latency/FLOPs budget (or a uniform ratio)",
    "family": "rescale a pruned plan's width profile to several budgets (copycat architectures)",
    "train": "recover accuracy: fine-tune, distil or retrain a (pruned) model from scratch",
    "baseline": "unstructured accuracy baselines: magnitude pruning, lottery ticket (dense shapes, no speedup)",
    "export": "export ONNX / TensorRT engines with a parity check",
    "bench": "measure latency and throughput side by side",
    "siblings": "the family's smaller stock models at your latency, measured, with their published top-1",
    "run": "profile, prune, export, bench and report in one go",
}
COMMANDS = list(SUMMARIES)

DESCRIPTION = """\
hwprune: prune PyTorch vision models to a latency budget measured on *your* device.

The three jobs:
  1. hwprune profile  --model resnet50 --backend ort-cpu        # per-layer latency table
  2. hwprune prune    --model resnet50 --budget 0.5x --table T  # prune to a measured budget
  3. hwprune export   --model out/pruned.pt --format onnx        # deployable engine + parity check
Or all at once, on an embedded default demo:  hwprune run
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: every command in full, or (``command`` given) that one in full and the
    others as their one-line summary only. A command's module imports what it runs (torch and the
    library: ~3 s), so ``hwprune --help``, ``--version`` or a mistyped command build none of them."""
    parser = argparse.ArgumentParser(prog="hwprune", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hwprune {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub.choices  # name -> its subparser, for errors that name the command's own flags
    for name in COMMANDS:
        if command is None or name == command:
            importlib.import_module(f".cmd_{name}", __package__).register(sub)
        else:
            sub.add_parser(name, help=SUMMARIES[name])
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hwprune")
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), "")
    parser = build_parser(command if command in SUMMARIES else "")
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unrecognized(parser, args, extra)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except HwpruneError as e:
        print(f"hwprune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hwprune {args.command}: interrupted", file=sys.stderr)
        return 130


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """Exit 2 on arguments the command does not take, with that command's usage (not the top
    level's) and, for a mistyped flag, the command's closest flag."""
    sp = parser.commands.get(getattr(args, "command", None) or "")
    if sp is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    known = [o for a in sp._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for word in extra:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7)
            hints.append(f"{flag}: did you mean {close[0]}?" if close else f"`hwprune {args.command}` has no {flag}")
    sp.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)}; see hwprune {args.command} "
                                                              "--help)" if hints else ""))


if __name__ == "__main__":
    sys.exit(main())
