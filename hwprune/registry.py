"""Name -> factory registries (the timm pattern): a dict, a decorator and ``list_()``.

Used for importance criteria, strategies, backends and evaluators so that the CLI can list
what exists and a typo gets a helpful error instead of a KeyError.
"""
from __future__ import annotations

import difflib
import warnings
from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories. ``kind`` names what is registered, for error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                warnings.warn(f"overwriting {self.kind} {name!r} in the registry", stacklevel=2)
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.list())}"
            ) from None

    def list(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
