"""``hwprune validate``: check a latency table against end-to-end measurements (placeholder until issue #3 lands)."""
from __future__ import annotations

from ..errors import HwpruneError


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a latency table against end-to-end measurements")
    p.set_defaults(func=run)


def run(args) -> int:
    raise HwpruneError("'hwprune validate' is not implemented yet (issue #3)")
