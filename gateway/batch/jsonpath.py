"""The JSONPath subset SageMaker's batch transform documents for InputFilter and OutputFilter.

    $                  the whole record
    $.name  $['name']  a member of an object
    $['a','b']         an object of just those members (a projection: keys are kept)
    $[n]               an element of an array (negative: from the end, -1 the last)
    $[n,m]  $[s:e]     an array of those elements; slices as Python's, mixed freely: $[0,5:]
    *                  every member or element, as an array ($.*, $[*])

Steps chain: ``$.features[1:]``.  A CSV record is an array of its columns.  Why not a JSONPath
library: they return a list of matches (``$['a','b']`` gives ``[1, 2]``, not ``{"a": 1, "b": 2}``),
and the most used one cannot parse ``$[0,5:]``, one of SageMaker's own examples; the subset is
small enough to state exactly here.  Pure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 63            # the service's limit on InputFilter / OutputFilter


class PathError(ValueError):
    """A filter that does not fit the record (a missing member, an index past the end)."""


@dataclass(frozen=True)
class Step:
    kind: str              # "names" (one or more members), "items" (indexes and slices), "all"
    names: tuple[str, ...] = ()
    items: tuple = ()      # ints, and (start, stop) pairs for slices (None: open)
    single: bool = False   # one member or one index: the value itself, not wrapped


_NAME = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*|\*)")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_QUOTED = re.compile(r"""^\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*$""")
_INT = re.compile(r"^\s*-?\d+\s*$")
_SLICE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")


def compile_path(expr: str) -> tuple[Step, ...]:
    """The steps of ``expr``; ValueError saying what is wrong with it."""
    if not isinstance(expr, str) or not expr.startswith("$"):
        raise ValueError(f"the JSONPath {expr!r} must start with $")
    steps, pos = [], 1
    while pos < len(expr):
        m = _NAME.match(expr, pos)
        if m:
            steps.append(Step("all") if m.group(1) == "*" else Step("names", names=(m.group(1),), single=True))
            pos = m.end()
            continue
        m = _BRACKET.match(expr, pos)
        if not m:
            raise ValueError(f"the JSONPath {expr!r} cannot be read at character {pos + 1}: SageMaker's subset is "
                             "$, .name, ['name', ...], [n, ...], [start:end] and *")
        steps.append(_bracket(m.group(1), expr))
        pos = m.end()
    return tuple(steps)


def _bracket(inside: str, expr: str) -> Step:
    if inside.strip() == "*":
        return Step("all")
    parts = _split(inside)
    quoted = [_QUOTED.match(p) for p in parts]
    if all(quoted):
        names = tuple((q.group(1) if q.group(1) is not None else q.group(2)) for q in quoted)
        return Step("names", names=names, single=len(names) == 1)
    items = []
    for p in parts:
        if _INT.match(p):
            items.append(int(p))
        elif (s := _SLICE.match(p)) is not None:
            items.append((int(s.group(1)) if s.group(1) else None, int(s.group(2)) if s.group(2) else None))
        else:
            raise ValueError(f"the JSONPath {expr!r}: [{inside}] must be quoted names, or indexes and slices")
    return Step("items", items=tuple(items), single=len(items) == 1 and isinstance(items[0], int))


def _split(inside: str) -> list[str]:
    """Split on commas outside quotes."""
    out, cur, quote = [], [], None
    for ch in inside:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    if any(not p.strip() for p in out):
        raise ValueError(f"empty element in [{inside}]")
    return out


def select(steps: tuple[Step, ...], value):
    """``value`` seen through the path; PathError when the path does not fit it."""
    for step in steps:
        value = _apply(step, value)
    return value


def _apply(step: Step, value):
    if step.kind == "all":
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, list):
            return list(value)
        raise PathError(f"* needs an object or an array, not {_kind(value)}")
    if step.kind == "names":
        if not isinstance(value, dict):
            raise PathError(f"['{step.names[0]}'] needs an object, not {_kind(value)}")
        missing = [n for n in step.names if n not in value]
        if missing:
            raise PathError(f"the record has no member {missing[0]!r}")
        return value[step.names[0]] if step.single else {n: value[n] for n in step.names}
    if not isinstance(value, list):
        raise PathError(f"an index needs an array, not {_kind(value)}")
    out = []
    for item in step.items:
        if isinstance(item, int):
            if not -len(value) <= item < len(value):
                raise PathError(f"index {item} is outside the record's {len(value)} elements")
            out.append(value[item])
        else:
            out.extend(value[item[0]:item[1]])
    return out[0] if step.single else out


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)
