"""Typed strategy options: each strategy declares its knobs as a dataclass of :func:`option` fields.

A field carries its default, one line of help and its valid range; :class:`StrategyOptions`
coerces every value to the field's type in ``__post_init__`` (the CLI hands over strings) and
checks the range, so ``halp_steps=abc`` or ``evo_pop=2`` fails before any work with a message
naming the value and the fix, and ``hwprune prune --help`` is generated from the same fields.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def option(default: Any, help: str, *, ge: Optional[float] = None, gt: Optional[float] = None,
           le: Optional[float] = None, lt: Optional[float] = None, default_text: Optional[str] = None,
           example: Any = None):
    """A strategy option field: ``default``, one line of ``help``, and the range checked on
    construction (``ge``/``gt``/``le``/``lt``). ``default_text`` describes a computed default
    (``default`` None); ``example`` is the value error messages suggest (default: ``default``)."""
    return field(default=default, metadata={"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt,
                                            "default_text": default_text, "example": example})


def _base_type(tp) -> tuple[type, bool]:
    """(int | float | bool, whether None is allowed) of a field annotation."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


_WORDS = {int: "an int", float: "a number", bool: "true or false (1 or 0)"}


def _example(f: dataclasses.Field) -> Any:
    ex = f.metadata.get("example")
    ex = f.default if ex is None else ex
    return str(ex).lower() if isinstance(ex, bool) else ex


def _coerce(f: dataclasses.Field, tp, value: Any) -> Any:
    base, nullable = _base_type(tp)
    raw = value.strip() if isinstance(value, str) else value
    if nullable and (raw is None or (isinstance(raw, str) and raw.lower() in ("", "none"))):
        return None  # the computed default
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, int) and raw in (0, 1):
                return bool(raw)
            if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
        elif base is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, str):
                return int(raw)
        elif base is float:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                return float(raw)
            if isinstance(raw, str):
                return float(raw)
        else:
            return raw
    except ValueError:
        pass
    raise ConfigError(f"option {f.name}={value}: {f.name} takes {_WORDS[base]}, e.g. {f.name}={_example(f)}")


def _range_text(md) -> str:
    """'>= 4', '<= 1' or, bounded on both sides, an interval: 'in (0, 1]'."""
    lo, lo_open = (md["gt"], True) if md.get("gt") is not None else (md.get("ge"), False)
    hi, hi_open = (md["lt"], True) if md.get("lt") is not None else (md.get("le"), False)
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""


def _in_range(md, v) -> bool:
    return ((md.get("ge") is None or v >= md["ge"]) and (md.get("gt") is None or v > md["gt"])
            and (md.get("le") is None or v <= md["le"]) and (md.get("lt") is None or v < md["lt"]))


@dataclass
class StrategyOptions:
    """Base of every strategy's options dataclass (the fields are declared with :func:`option`).

    Values are coerced to each field's type and range-checked here, so an instance is always valid.
    A strategy without knobs uses this class itself."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            given = getattr(self, f.name)
            v = _coerce(f, hints[f.name], given)
            if v is not None and not isinstance(v, bool) and not _in_range(f.metadata, v):
                raise ConfigError(f"option {f.name}={given} is out of range: {f.name} must be "
                                  f"{_range_text(f.metadata)}, e.g. {f.name}={_example(f)} ({f.name}: {f.metadata['help']})")
            setattr(self, f.name, v)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """Per option: name, type, default and help (with its range), for ``--help`` and docs."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            base, _ = _base_type(hints[f.name])
            default = f.metadata.get("default_text") or (str(f.default).lower() if isinstance(f.default, bool)
                                                         else str(f.default))
            rng = _range_text(f.metadata)
            rows.append({"name": f.name, "type": base.__name__, "default": default,
                         "help": f.metadata["help"] + f"; {base.__name__}" + (f" {rng}" if rng else "")})
        return rows
