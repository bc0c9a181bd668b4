"""Progress bars that degrade to nothing: tqdm on stderr when wanted and installed (torch-free)."""
from __future__ import annotations

import sys


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, progress: bool, desc: str, unit: str, min_total: int = 1):
    """A tqdm bar, or a no-op one when progress is off, the job is tiny, or tqdm is absent."""
    if not progress or total < min_total:
        return NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return NoBar()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
