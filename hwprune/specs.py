"""``module:attr`` / ``file.py:attr`` specs: how users point hwprune at their own code (a model
factory, a data function). One loader, so both read the same way and fail the same way."""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Optional, Type

from .errors import HwpruneError


def spec_file(spec: str) -> Optional[str]:
    """The absolute path of the Python file a ``file.py:attr`` spec names (None for any other
    spec). A spec as typed is relative to the folder it was typed in; this is not."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr or not target.endswith(".py"):
        return None
    return os.path.abspath(target)


def load_attr(spec: str, what: str, error: Type[HwpruneError]) -> Any:
    """The object ``attr`` names in ``module:attr`` (an importable module) or ``file.py:attr``
    (a Python file, imported from its path). Every failure raises ``error`` naming the spec and
    ``what`` it was meant to give (``"model"``, ``"data"``)."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise error(f"{what} spec {spec!r} is not 'module:function' or 'file.py:function'")
    if target.endswith(".py"):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise error(f"{what} file {target!r} does not exist ({what} spec {spec!r}); give a path to a .py file")
        name = f"hwprune_user_{what}_" + os.path.splitext(os.path.basename(path))[0]
        s = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(s)
        try:
            s.loader.exec_module(module)
        except Exception as e:
            raise error(f"importing {what} file {target!r} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise error(f"cannot import module {target!r} for {what} spec {spec!r}: {e}") from e
    if not hasattr(module, attr):
        raise error(f"{target!r} has no attribute {attr!r} ({what} spec {spec!r})")
    return getattr(module, attr)
