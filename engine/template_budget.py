"""The time and size budget of one chat-template render, and the checks that keep to it.

A template's values are measured by their printed size before anything prints, hashes or joins
them; filters and string methods that could build large text check what they would build first.
engine/chat.py's sandbox calls these from every hook.
"""

from __future__ import annotations

import re
import string
import time
import types
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple, NoReturn

from jinja2 import Undefined
from jinja2.utils import Namespace

MAX_TEMPLATE_CHARS = 200_000  # real chat templates are under 20 kB
_MAX_COUNT = 100_000  # jinja's sandbox caps range() at this; batch/slice counts too
_MAX_DEPTH = 64  # deeper data could overflow the C stack (tuple hashing recurses)
MAX_INT_BITS = 1 << 16
_MAX_WIDTH = 1_000  # widths and precisions in format strings
_OPAQUE_WEIGHT = 32  # floats, None and objects jinja prints as a short repr


class LimitExceeded(Exception):
    """A template went over a time or size bound; str() is the reason."""


class _Size(NamedTuple):
    weight: int  # about how many characters the value prints as
    height: int  # container nesting below the value
    nodes: int  # values inside it, itself included
    volatile: bool  # contains a namespace, which the template can still change


class Budget:
    """Deadline and size limit of one render, shared by all the sandbox hooks."""

    def __init__(self, timeout_s: float, limit: int) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.limit = limit
        # id -> (value, size). Keeping the value stops its id being reused.
        self._memo: dict[int, tuple[object, _Size]] = {}
        self._memo_items = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"it did not finish within {self.timeout_s:g} seconds")

    def need(self, chars: int) -> None:
        if chars > self.limit:
            raise LimitExceeded(
                f"it tried to build about {chars:,} characters of text or data (the limit is {self.limit:,})"
            )

    def fit(self, value: object) -> int:
        return self.measure(value).weight

    def measure(self, value: object) -> _Size:
        """Size of value as printed, refusing values over the limits.

        Shared sub-values are counted every time they appear, as printing does,
        but visited once, so a value that doubles itself n times costs O(n).
        """
        return self._measure(value, 0, {})

    def _measure(self, value: object, level: int, seen: dict[int, _Size]) -> _Size:
        if isinstance(value, (str, bytes)):
            return _Size(len(value), 0, 1, False)
        if isinstance(value, int):
            return _Size(value.bit_length() // 3 + 1, 0, 1, False)
        if isinstance(value, Undefined):
            return _Size(0, 0, 1, False)
        items: Iterable[Any]
        if isinstance(value, Namespace):
            attrs: dict[str, Any] = object.__getattribute__(value, "_Namespace__attrs")
            items = attrs.items()
        elif isinstance(value, Mapping):
            items = value.items()
        elif isinstance(value, Collection) and not isinstance(value, range):
            items = value
        else:
            return _Size(_OPAQUE_WEIGHT, 0, 1, False)
        key = id(value)
        known = seen.get(key)
        if known is None:
            memo = self._memo.get(key)
            if memo is not None and memo[0] is value:
                known = memo[1]
        if known is not None:
            if level + known.height > _MAX_DEPTH:
                self._too_deep()
            return known
        if level > _MAX_DEPTH:
            self._too_deep()
        seen[key] = _Size(2, 0, 1, False)  # what a cycle prints as: "[...]"
        weight, height, count = 2, 0, 1
        volatile = isinstance(value, Namespace)
        pairs = isinstance(value, (Namespace, Mapping))
        for item in items:
            for part in item if pairs else (item,):
                size = self._measure(part, level + 1, seen)
                weight += size.weight + 2
                height = max(height, size.height + 1)
                count += size.nodes
                volatile = volatile or size.volatile
            if weight > self.limit:
                self.need(weight)
        result = _Size(weight, height, count, volatile)
        seen[key] = result
        if not volatile:
            self._remember(value, result)
        return result

    def _remember(self, value: object, size: _Size) -> None:
        # The memo only saves time; bound what it keeps alive.
        self._memo_items += size.nodes
        if self._memo_items > self.limit:
            self._memo.clear()
            self._memo_items = size.nodes
        self._memo[id(value)] = (value, size)

    def _too_deep(self) -> NoReturn:
        raise LimitExceeded(f"it built data nested more than {_MAX_DEPTH} levels deep")


BUDGET: ContextVar[Budget | None] = ContextVar("stride_chat_budget", default=None)


def current_budget() -> Budget:
    budget = BUDGET.get()
    if budget is None:
        raise RuntimeError("the chat template sandbox only runs inside render_chat()")
    return budget


def _arg(data: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return data[index] if len(data) > index else kwargs.get(name, default)


def as_int(value: object) -> int:
    return value if isinstance(value, int) else 0


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_width(width: str) -> None:
    if width == "*" or (width and int(width) > _MAX_WIDTH):
        raise LimitExceeded(f"it used a format width or precision over {_MAX_WIDTH}")


def check_percent_format(budget: Budget, fmt: str, values: object) -> None:
    specs = _PERCENT_SPEC.findall(fmt)
    for width, precision in specs:
        _check_width(width)
        _check_width(precision)
    budget.need(len(fmt) + len(specs) * (budget.fit(values) + _MAX_WIDTH))


def check_brace_format(budget: Budget, fmt: str, values: Iterable[object]) -> None:
    fields = 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise LimitExceeded("it used a computed width in a format string")
        for digits in re.findall(r"\d+", spec or ""):
            _check_width(digits)
    budget.need(len(fmt) + fields * (sum(budget.fit(v) for v in values) + _MAX_WIDTH))


def check_scalar_method(
    budget: Budget, method: types.BuiltinMethodType, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse str/bytes/int methods whose result would be far larger than their inputs.

    Returns args, with an iterable materialized where it had to be counted.
    """
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and value > budget.limit:  # ljust, zfill, to_bytes ...
            budget.need(value)
    owner = method.__self__
    if not isinstance(owner, (str, bytes)):
        return args
    name = method.__name__
    if name == "join" and args:
        items = list(args[0])
        budget.need(budget.fit(items) + len(owner) * len(items))
        return (items, *args[1:])
    if name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        hits = owner.count(old) if old else len(owner) + 1
        if len(args) > 2 and as_int(args[2]) >= 0:
            hits = min(hits, as_int(args[2]))
        budget.need(len(owner) + hits * max(0, len(new) - len(old)))
    elif name == "expandtabs":
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        budget.need(len(owner) + tabs * as_int(_arg(args, kwargs, 0, "tabsize", 8)))
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.need(len(owner) * longest)
    return args


# Checks for filters whose output can be far larger than their inputs. Each gets
# the filter's arguments (after any context argument) and may return them changed.
_FilterCheck = Callable[[Budget, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


def _center(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    budget.need(max(budget.fit(data[0]), as_int(_arg(data, kwargs, 1, "width", 80))))
    return data


def _indent(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(data[0])
    width = _arg(data, kwargs, 1, "width", 4)
    pad = len(width) if isinstance(width, str) else as_int(width)
    budget.need(len(text) + (text.count("\n") + 1) * pad)
    return data


def _format(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    check_percent_format(budget, str(data[0]), kwargs or data[1:])
    return data


def _join(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = list(data[0])
    budget.need(budget.fit(items) + len(str(_arg(data, kwargs, 1, "d", ""))) * len(items))
    return (items, *data[1:])


def _replace(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(data[0])
    old = str(_arg(data, kwargs, 1, "old", ""))
    new = str(_arg(data, kwargs, 2, "new", ""))
    hits = text.count(old) if old else len(text) + 1
    count = _arg(data, kwargs, 3, "count", None)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    budget.need(len(text) + hits * max(0, len(new) - len(old)))
    return data


def _wordwrap(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(data[0])
    width = max(as_int(_arg(data, kwargs, 1, "width", 79)), 1)
    wrap = _arg(data, kwargs, 3, "wrapstring", None) or "\n"
    budget.need(len(text) + (2 * len(text) // width + 1) * len(str(wrap)))
    return data


def _counted(param: str) -> _FilterCheck:
    def check(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if as_int(_arg(data, kwargs, 1, param, 0)) > _MAX_COUNT:
            raise LimitExceeded(f"it asked for more than {_MAX_COUNT:,} groups")
        return data

    return check


def _sum(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(_arg(data, kwargs, 2, "start", 0), (int, float)):
        return data
    # Adding lists or tuples copies the running total each time: quadratic.
    items = list(data[0])
    budget.need(budget.fit(items) * len(items))
    return (items, *data[1:])


def _pprint(budget: Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    size = budget.measure(data[0])
    budget.need(size.weight + size.nodes * (size.height + 2))
    return data


FILTER_CHECKS: dict[str, _FilterCheck] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "join": _join,
    "replace": _replace,
    "wordwrap": _wordwrap,
    "batch": _counted("linecount"),
    "slice": _counted("slices"),
    "sum": _sum,
    "pprint": _pprint,
}
