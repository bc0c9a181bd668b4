"""Name -> factory registries (the timm pattern): a dict, a decorator and ``list_()``.

Used for importance criteria, strategies, backends and evaluators so that the CLI can list
what exists and a typo gets a helpful error instead of a KeyError.

An entry may be the object itself or a lazy ``"package.module:attribute"`` path, imported the
first time :meth:`Registry.get` asks for it (as :mod:`hwprune_deploy.backends` names its
backends): the built-in criteria and strategies are declared that way, so listing them -- every
``hwprune COMMAND --help`` -- imports neither PyTorch nor the modules that implement them.
"""
from __future__ import annotations

import difflib
import warnings
from typing import Any, Callable, Generic, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")


def resolve(target: Union[str, Any]) -> Any:
    """``"package.module:attribute"`` imported and looked up (the backends registry's
    :func:`hwprune_deploy.backends.load_target`); anything else returned as it is."""
    if not isinstance(target, str):
        return target
    from hwprune_deploy.backends import load_target

    return load_target(target)


class Registry(Generic[T]):
    """A named collection of factories. ``kind`` names what is registered, for error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Union[T, str]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name`` (a warning on overwrite)."""
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, target: Union[T, str]) -> None:
        """Register ``target`` as ``name``: the object, or its ``"package.module:attribute"`` path,
        imported on the first :meth:`get` (a warning on overwrite)."""
        if name in self._items:
            warnings.warn(f"overwriting {self.kind} {name!r} in the registry", stacklevel=3)
        self._items[name] = target

    def get(self, name: str) -> T:
        try:
            item = self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.list())}"
            ) from None
        if isinstance(item, str):
            item = self._items[name] = resolve(item)
        return item  # type: ignore[return-value]

    def list(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
