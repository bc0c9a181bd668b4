"""``hwprune profile``: build a per-layer latency table on a device (placeholder until issue #3 lands)."""
from __future__ import annotations

from ..errors import HwpruneError


def register(sub) -> None:
    p = sub.add_parser("profile", help="build a per-layer latency table on a device")
    p.set_defaults(func=run)


def run(args) -> int:
    raise HwpruneError("'hwprune profile' is not implemented yet (issue #3)")
