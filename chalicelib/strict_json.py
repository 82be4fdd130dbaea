"""JSON as the API accepts it: finite numbers, integers of bounded size, bounded nesting.

Python's `json` reads `NaN` and `Infinity` (which JSON has not, and which Postgres refuses), raises a
bare ValueError for integers of 4,300+ digits and a RecursionError for nesting ~1000 deep. Here each
of those is an `Invalid` that names the rule, so every caller can answer 400/422 instead of 500.
"""
from __future__ import annotations

import json
import math
import typing

MAX_DEPTH = 64  # A1111 bodies nest ~6 deep (ControlNet units in alwayson_scripts)
MAX_INT_DIGITS = 20  # any 64-bit integer, signed or not


class Invalid(ValueError):
    """The text is not JSON, or breaks one of the limits; the message says which and why."""


def loads(text: str | bytes) -> object:
    """Parse `text`; raises `Invalid` (never RecursionError, OverflowError or a bare ValueError)."""
    try:
        if isinstance(text, (bytes, bytearray)):  # as json.loads reads bytes: UTF-8, -16 or -32
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        elif text.startswith("\ufeff"):  # json.loads refuses it so
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except RecursionError:
        raise Invalid(f"it is nested too deeply; the limit is {MAX_DEPTH} levels of arrays and objects") from None
    except Invalid:
        raise
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise Invalid(str(exc)) from None
    check_depth(value)
    return value


def check_depth(value: object) -> None:
    """Raise `Invalid` when arrays and objects nest deeper than MAX_DEPTH (walked level by level, without
    recursion, visiting only arrays and objects)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(MAX_DEPTH):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
        if not level:
            return
    raise Invalid(f"it is nested too deeply; the limit is {MAX_DEPTH} levels of arrays and objects")


def non_finite_paths(value: object) -> list[list]:
    """The locations (as loc lists) of NaN and ±Infinity floats inside `value`."""
    return paths_where(value, lambda item: isinstance(item, float) and not math.isfinite(item))


def leaves(value: object) -> typing.Iterator[object]:
    """Every value inside a decoded JSON `value` that is neither an array nor an object (walked without
    recursion, since a body may be nested deeply)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def paths_where(value: object, matches: typing.Callable[[object], bool]) -> list[list]:
    """The locations (as loc lists, sorted) of the values inside a decoded JSON `value`, neither arrays
    nor objects, that `matches` accepts; walked without recursion, since a body may be nested deeply."""
    if not any(matches(item) for item in leaves(value)):
        return []  # the common case, found without building a location for every value
    found, stack = [], [(value, [])]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, [*loc, str(key)]) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, [*loc, index]) for index, child in enumerate(item))
        elif matches(item):
            found.append(loc)
    return sorted(found, key=str)


def _refuse_constant(name: str) -> float:
    raise Invalid(f"{name} is not a JSON number; send finite numbers only")


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise Invalid(f"an integer has {digits} digits; the limit is {MAX_INT_DIGITS}")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(f"the number {text[:40]} is too large to be a finite number")
    return value


# One decoder for every call: json.loads with hooks would build a decoder and its scanner each time
# (about as long as parsing a small body). The scanner keeps no state between calls that a thread
# could disturb; json.loads itself shares one decoder across threads the same way.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float)
