"""``hwprune run``: profile, prune, export, bench and report in one go (placeholder until issue #5 lands)."""
from __future__ import annotations

from ..errors import HwpruneError


def register(sub) -> None:
    p = sub.add_parser("run", help="profile, prune, export, bench and report in one go")
    p.set_defaults(func=run)


def run(args) -> int:
    raise HwpruneError("'hwprune run' is not implemented yet (issue #5)")
