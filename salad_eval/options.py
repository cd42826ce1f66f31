"""Options declared once: a dataclass field carries its default, help text and allowed values.

``option(8, help="...", min=1)`` is a ``dataclasses.field`` whose metadata the rest reads: the
gap run's spec (``salad_eval.run.spec.RunSpec``) builds ``salad-eval gap``'s options and
``evaluate()``'s checks from it, and ``salad_train.config`` its sections' checks. ``typed`` and
``check_value`` are the one check of a value against its field, whichever front end spells the
option (``--limit`` on the command line, ``run.limit`` in a config).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from salad_eval.errors import SaladError

KEY = "salad_option"  # the metadata entry of a declared option


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    min: float | None = None,  # inclusive ends, as typer and lm-eval spell them
    max: float | None = None,
    above: float | None = None,
    choices: Sequence[str] = (),
    pair: bool = False,
    ordered: bool = False,
    why: str | None = None,
    metavar: str | None = None,
    repeat: bool = False,
) -> Any:
    """A dataclass field declaring an option. A list's range holds for each element; ``above``
    is an exclusive lower end; a number may also be one of ``choices`` (``auto``). ``pair``: two
    values, ``ordered``: ``[min, max]``. ``why`` replaces the out-of-range message (``{option}``
    names the option as its front end spells it). On a command line a list is comma-separated,
    or with ``repeat`` a repeated option."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "above": above,
        "choices": tuple(choices),
        "pair": pair or ordered,
        "ordered": ordered,
        "why": why,
        "metavar": metavar,
        "repeat": repeat,
    }
    if isinstance(default, (list, tuple)):  # a fresh list per instance
        return dataclasses.field(default_factory=lambda: list(default), metadata={KEY: meta})
    return dataclasses.field(default=default, metadata={KEY: meta})


def declared(field: dataclasses.Field) -> dict[str, Any] | None:
    """The option metadata of ``field``; None for a field that is not an option."""
    return field.metadata.get(KEY)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The declared options of a dataclass, in declaration order."""
    return [f for f in dataclasses.fields(cls) if declared(f) is not None]


def default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def typed(value: Any, annotation: str, label: str) -> Any:
    """``value`` as the declared type (a string annotation), or a one-line error naming ``label``
    (``config key train.steps``, ``--limit``), the type and the value."""
    base = annotation.removesuffix(" | None")
    if value is None and base != annotation:
        return None
    if base.startswith(("list[", "tuple[")):
        element = base.split("[")[1].split(",")[0].rstrip("]")
        values = [value] if isinstance(value, (str, int, float)) else value  # one value: a list
        if not isinstance(values, (list, tuple)):
            raise SaladError(f"{label} must be a list of {element}, got {value!r}")
        converted = [typed(v, element, label) for v in values]
        return tuple(converted) if base.startswith("tuple[") else converted
    kinds = base.split(" | ")
    if "float" in kinds and isinstance(value, str):
        try:
            return float(value)  # YAML reads 5e-4 as a string
        except ValueError:
            pass
    for kind in kinds:
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }.get(kind, isinstance(value, str))  # str and the Literal names (checked where used)
        if ok:
            return float(value) if kind == "float" else value
    words = {"int": "an integer", "float": "a number", "bool": "true or false"}
    wanted = " or ".join(words.get(kind, "text") for kind in kinds)
    raise SaladError(f"{label} must be {wanted}, got {value!r}")


def rule(meta: dict[str, Any]) -> str:
    """The allowed values in words: ``>= 1``, ``0 to 1``, ``> 0``, ``one of a, b``, ``>= 1 or
    auto``."""
    low, high, above, choices = meta["min"], meta["max"], meta["above"], meta["choices"]
    words = []
    if low is not None and high is not None:
        words.append(f"{low:g} to {high:g}")
    elif low is not None:
        words.append(f">= {low:g}")
    elif above is not None:
        words.append(f"> {above:g}")
    elif high is not None:
        words.append(f"<= {high:g}")
    if choices:
        words.append(("one of " if len(choices) > 1 and not words else "") + ", ".join(choices))
    return " or ".join(words)


def check_value(value: Any, meta: dict[str, Any], name: str, shown: str) -> None:
    """Refuse ``value`` (already ``typed``) outside its declared values, in one line that starts
    with ``shown`` (``--limit 1``, ``config key run.limit=1``) and names ``name`` to change."""
    if value is None:
        return
    if meta["pair"] and len(value) != 2:
        raise SaladError(f"{shown} must hold two values")
    if meta["ordered"] and value[0] > value[1]:
        raise SaladError(f"{shown} must be [min, max]")
    for x in value if isinstance(value, list) else [value]:
        if x in meta["choices"]:
            continue
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if _within(x, meta):
                continue
            if meta["why"]:
                raise SaladError(f"{shown}: {meta['why'].format(option=name)}")
            raise SaladError(f"{shown} is out of range: it must be {rule(meta)}")
        if meta["choices"]:
            raise SaladError(f"{shown} must be {rule(meta)}")


def _within(x: float, meta: dict[str, Any]) -> bool:
    low, high, above = meta["min"], meta["max"], meta["above"]
    return (
        (low is None or x >= low) and (high is None or x <= high) and (above is None or x > above)
    )
