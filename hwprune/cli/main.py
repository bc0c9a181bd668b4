"""Entry point: ``hwprune <command> ...``. Each command lives in ``cmd_<name>.py`` and exposes
``register(subparsers)``; it parses arguments and calls one library function.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import HwpruneError

COMMANDS = ["inspect", "profile", "validate", "prune", "family", "train", "baseline", "export", "bench", "run"]

DESCRIPTION = """\
hwprune: prune PyTorch vision models to a latency budget measured on *your* device.

The three jobs:
  1. hwprune profile  --model resnet50 --backend ort-cpu        # per-layer latency table
  2. hwprune prune    --model resnet50 --budget 0.5x --table T  # prune to a measured budget
  3. hwprune export   --model out/pruned.pt --format onnx        # deployable engine + parity check
Or all at once, on an embedded default demo:  hwprune run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwprune", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hwprune {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".cmd_{name}", __package__).register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hwprune")
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
