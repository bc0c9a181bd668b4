"""``hwprune bench``: measure latency and throughput side by side (placeholder until issue #5 lands)."""
from __future__ import annotations

from ..errors import HwpruneError


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure latency and throughput side by side")
    p.set_defaults(func=run)


def run(args) -> int:
    raise HwpruneError("'hwprune bench' is not implemented yet (issue #5)")
