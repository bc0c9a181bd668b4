"""``hwprune export``: export ONNX / TensorRT engines with a parity check (placeholder until issue #5 lands)."""
from __future__ import annotations

from ..errors import HwpruneError


def register(sub) -> None:
    p = sub.add_parser("export", help="export ONNX / TensorRT engines with a parity check")
    p.set_defaults(func=run)


def run(args) -> int:
    raise HwpruneError("'hwprune export' is not implemented yet (issue #5)")
