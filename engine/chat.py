"""Chat prompts from a GGUF's chat template, rendered in a sandbox (reasoning.py splits the reply).

A GGUF's chat template is Jinja written by whoever made the file, so it is
rendered in jinja2's immutable sandbox with extra bounds on time and size:
every loop, call, attribute lookup, operator and filter checks the deadline,
and every value the template builds is measured (by its printed size) before
anything can print, hash or join it. Together these keep a hostile template
from hanging the app or exhausting memory; it fails with ChatTemplateError and
the caller falls back to ChatML.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
import time
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Literal, NamedTuple, NoReturn, NotRequired, TypedDict, cast

from jinja2 import Template, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    reasoning_content: NotRequired[str]


class ChatTemplateError(Exception):
    """A chat template could not be rendered; str() is the reason in plain words."""


FALLBACK_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{{- message['content'] if message['content'] is string else '' }}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_MAX_TEMPLATE_CHARS = 200_000  # real chat templates are under 20 kB
_MAX_COUNT = 100_000  # jinja's sandbox caps range() at this; batch/slice counts too
_MAX_DEPTH = 64  # deeper data could overflow the C stack (tuple hashing recurses)
_MAX_INT_BITS = 1 << 16
_MAX_WIDTH = 1_000  # widths and precisions in format strings
_OPAQUE_WEIGHT = 32  # floats, None and objects jinja prints as a short repr


class _LimitExceeded(Exception):
    """A template went over a time or size bound; str() is the reason."""


class _Size(NamedTuple):
    weight: int  # about how many characters the value prints as
    height: int  # container nesting below the value
    nodes: int  # values inside it, itself included
    volatile: bool  # contains a namespace, which the template can still change


class _Budget:
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
            raise _LimitExceeded(f"it did not finish within {self.timeout_s:g} seconds")

    def need(self, chars: int) -> None:
        if chars > self.limit:
            raise _LimitExceeded(
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
        raise _LimitExceeded(f"it built data nested more than {_MAX_DEPTH} levels deep")


_BUDGET: ContextVar[_Budget | None] = ContextVar("stride_chat_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise RuntimeError("the chat template sandbox only runs inside render_chat()")
    return budget


def _arg(data: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return data[index] if len(data) > index else kwargs.get(name, default)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_width(width: str) -> None:
    if width == "*" or (width and int(width) > _MAX_WIDTH):
        raise _LimitExceeded(f"it used a format width or precision over {_MAX_WIDTH}")


def _check_percent_format(budget: _Budget, fmt: str, values: object) -> None:
    specs = _PERCENT_SPEC.findall(fmt)
    for width, precision in specs:
        _check_width(width)
        _check_width(precision)
    budget.need(len(fmt) + len(specs) * (budget.fit(values) + _MAX_WIDTH))


def _check_brace_format(budget: _Budget, fmt: str, values: Iterable[object]) -> None:
    fields = 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise _LimitExceeded("it used a computed width in a format string")
        for digits in re.findall(r"\d+", spec or ""):
            _check_width(digits)
    budget.need(len(fmt) + fields * (sum(budget.fit(v) for v in values) + _MAX_WIDTH))


def _check_scalar_method(
    budget: _Budget, method: types.BuiltinMethodType, args: tuple[Any, ...], kwargs: dict[str, Any]
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
        if len(args) > 2 and _int(args[2]) >= 0:
            hits = min(hits, _int(args[2]))
        budget.need(len(owner) + hits * max(0, len(new) - len(old)))
    elif name == "expandtabs":
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        budget.need(len(owner) + tabs * _int(_arg(args, kwargs, 0, "tabsize", 8)))
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.need(len(owner) * longest)
    return args


# Checks for filters whose output can be far larger than their inputs. Each gets
# the filter's arguments (after any context argument) and may return them changed.
_FilterCheck = Callable[[_Budget, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


def _center(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    budget.need(max(budget.fit(data[0]), _int(_arg(data, kwargs, 1, "width", 80))))
    return data


def _indent(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(data[0])
    width = _arg(data, kwargs, 1, "width", 4)
    pad = len(width) if isinstance(width, str) else _int(width)
    budget.need(len(text) + (text.count("\n") + 1) * pad)
    return data


def _format(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    _check_percent_format(budget, str(data[0]), kwargs or data[1:])
    return data


def _join(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = list(data[0])
    budget.need(budget.fit(items) + len(str(_arg(data, kwargs, 1, "d", ""))) * len(items))
    return (items, *data[1:])


def _replace(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(data[0])
    old = str(_arg(data, kwargs, 1, "old", ""))
    new = str(_arg(data, kwargs, 2, "new", ""))
    hits = text.count(old) if old else len(text) + 1
    count = _arg(data, kwargs, 3, "count", None)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    budget.need(len(text) + hits * max(0, len(new) - len(old)))
    return data


def _wordwrap(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(data[0])
    width = max(_int(_arg(data, kwargs, 1, "width", 79)), 1)
    wrap = _arg(data, kwargs, 3, "wrapstring", None) or "\n"
    budget.need(len(text) + (2 * len(text) // width + 1) * len(str(wrap)))
    return data


def _counted(param: str) -> _FilterCheck:
    def check(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if _int(_arg(data, kwargs, 1, param, 0)) > _MAX_COUNT:
            raise _LimitExceeded(f"it asked for more than {_MAX_COUNT:,} groups")
        return data

    return check


def _sum(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(_arg(data, kwargs, 2, "start", 0), (int, float)):
        return data
    # Adding lists or tuples copies the running total each time: quadratic.
    items = list(data[0])
    budget.need(budget.fit(items) * len(items))
    return (items, *data[1:])


def _pprint(budget: _Budget, data: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    size = budget.measure(data[0])
    budget.need(size.weight + size.nodes * (size.height + 2))
    return data


_FILTER_CHECKS: dict[str, _FilterCheck] = {
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


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters marked pass_context/pass_eval_context/pass_environment get that first.
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0
    check = _FILTER_CHECKS.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        head, data = args[:skip], args[skip:]
        for value in (*data, *kwargs.values()):
            budget.fit(value)
        if check is not None:
            data = check(budget, data, kwargs)
        result = func(*head, *data, **kwargs)
        budget.fit(result)
        return result

    return guarded


def _ticking(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def ticking(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        return func(*args, **kwargs)

    return ticking


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # HF transformers' signature and defaults. jinja2's own tojson rejects
    # ensure_ascii and HTML-escapes, which would change prompts.
    budget = _budget()
    size = budget.measure(value)
    pad = len(indent) if isinstance(indent, str) else _int(indent)
    gaps = sum(len(s) for s in separators) if separators else 4
    budget.need(size.weight * (6 if ensure_ascii else 2) + size.nodes * (size.height * pad + gaps + 2))
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: object) -> NoReturn:
    raise ChatTemplateError(f"the template raised an error: {message}")


def _strftime_now(fmt: str) -> str:
    _budget().need(len(fmt) + fmt.count("%") * 64)
    return datetime.now().strftime(fmt)


def _finalize(value: Any) -> Any:
    budget = _budget()
    budget.tick()
    budget.fit(value)
    return value


class _Ticking:
    """A loop's iterable that checks the clock on every item.

    A loop whose body calls nothing, e.g. an empty inner loop, passes through no
    other hook and would otherwise spin unchecked.
    """

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Iterable[Any], budget: _Budget) -> None:
        self._items = items
        self._budget = budget

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self._budget.tick()
            yield item

    def __len__(self) -> int:
        # Keeps loop.length cheap; TypeError for generators, as LoopContext expects.
        return len(cast(Collection[Any], self._items))


def _env_call(name: str, *args: nodes.Expr) -> nodes.Call:
    lineno = args[0].lineno
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), list(args), [], None, None, lineno=lineno)


class _GuardInserter(NodeTransformer):
    """Routes loops, `~` and container literals through the sandbox's checks.

    Compiled templates build these with plain Python, which no sandbox hook sees.
    """

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _env_call("stride_iter", cast(nodes.Expr, node.iter))
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("stride_concat", *node.nodes)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("stride_sized", node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("stride_sized", node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("stride_sized", node) if node.ctx == "load" else node


_SEQUENCES = (str, bytes, list, tuple)


class _Sandbox(ImmutableSandboxedEnvironment):
    # All arithmetic, so each operation checks the clock and sizes its operands.
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self) -> None:
        # trim_blocks/lstrip_blocks as HF transformers renders chat templates.
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.loopcontrols"],
            finalize=_finalize,
        )
        del self.globals["lipsum"]  # an unchecked Python loop; no chat template uses it
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        filters = {**self.filters, "tojson": _tojson}
        del filters["urlize"]  # output grows per link by caller-chosen strings; HTML only
        self.filters = {name: _guard_filter(name, func) for name, func in filters.items()}
        tests: Mapping[str, Any] = self.tests
        self.tests = {name: _ticking(func) for name, func in tests.items()}

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().tick()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        for value in (*args, *kwargs.values()):
            budget.fit(value)
        if isinstance(obj, types.BuiltinMethodType) and isinstance(obj.__self__, (str, bytes, int)):
            args = _check_scalar_method(budget, obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        budget.fit(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        left_weight, right_weight = budget.fit(left), budget.fit(right)
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "+" and isinstance(left, _SEQUENCES):
            budget.need(left_weight + right_weight)
        elif operator == "*" and ints:
            self._check_bits(left.bit_length() + right.bit_length())
        elif operator == "*" and isinstance(left, _SEQUENCES) and isinstance(right, int):
            budget.need(left_weight * max(right, 0))
        elif operator == "*" and isinstance(right, _SEQUENCES) and isinstance(left, int):
            budget.need(right_weight * max(left, 0))
        elif operator == "**" and ints and right > 0 and abs(left) > 1:
            self._check_bits(int(right * math.log2(abs(left))) + 1)
        elif operator == "%" and isinstance(left, (str, bytes)):
            fmt = left if isinstance(left, str) else left.decode("latin-1")
            _check_percent_format(budget, fmt, right)
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def _check_bits(bits: int) -> None:
        if bits > _MAX_INT_BITS:
            raise _LimitExceeded(f"it tried to compute a number of about {bits * 3 // 10:,} digits")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_brace_format(_budget(), fmt, (*args, *kwargs.values()))
            return wrapper(*args, **kwargs)

        return checked

    def concat(self, parts: Iterable[str]) -> str:
        # Joins what macros, {% set %} blocks and {% filter %} blocks printed.
        pieces = list(parts)
        budget = _budget()
        budget.tick()
        budget.need(sum(map(len, pieces)))
        return "".join(pieces)

    def stride_iter(self, iterable: Iterable[Any]) -> _Ticking:
        return _Ticking(iterable, _budget())

    def stride_concat(self, *parts: Any) -> str:
        budget = _budget()
        budget.need(sum(budget.fit(part) for part in parts))
        return "".join(map(str, parts))

    @staticmethod
    def stride_sized(value: Any) -> Any:
        return value  # call() has measured it on the way out


_SANDBOX = _Sandbox()


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> Template:
    tree = cast(nodes.Template, _GuardInserter().visit(_SANDBOX.parse(source)))
    tree.set_environment(_SANDBOX)
    return _SANDBOX.from_string(tree)


def _describe(exc: Exception) -> str:
    if isinstance(exc, _LimitExceeded):
        return str(exc)
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"it tried something the sandbox forbids ({exc})"
    if isinstance(exc, UndefinedError):
        return f"it used something that is not defined ({exc})"
    if isinstance(exc, RecursionError):
        return "it recursed too deeply"
    if isinstance(exc, MemoryError):
        return "it ran out of memory"
    return f"{type(exc).__name__}: {exc}"


def _collect(chunks: Iterable[str], budget: _Budget) -> str:
    pieces: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > budget.limit:
            raise _LimitExceeded(f"its output grew past {budget.limit:,} characters")
        budget.tick()
        pieces.append(chunk)
    return "".join(pieces)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    variables: Mapping[str, Any] | None = None,
    timeout_s: float = 2.0,
    max_output_chars: int = 4_000_000,
) -> str:
    """Render a chat template as HF transformers and llama.cpp do, in a bounded sandbox.

    variables adds template variables (tools, enable_thinking ...); the named
    arguments win over entries of the same name. timeout_s covers compiling
    too. max_output_chars bounds the prompt and every value built on the way,
    so messages that print longer than it fail as well. Raises ChatTemplateError.
    """
    budget = _Budget(timeout_s, max_output_chars)
    token = _BUDGET.set(budget)
    try:
        if len(template) > _MAX_TEMPLATE_CHARS:
            raise _LimitExceeded(f"it is {len(template):,} characters long (the limit is {_MAX_TEMPLATE_CHARS:,})")
        context = {
            **(variables or {}),
            "messages": [dict(message) for message in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": bos_token,
            "eos_token": eos_token,
        }
        return _collect(_compile(template).generate(context), budget)
    except ChatTemplateError:
        raise
    except Exception as exc:
        raise ChatTemplateError(_describe(exc)) from exc
    finally:
        _BUDGET.reset(token)


def render_or_fallback(
    template: str | None, messages: Sequence[Mapping[str, Any]], **kwargs: Any
) -> tuple[str, str | None]:
    """Render with the model's template, or with ChatML plus a warning saying why.

    kwargs are render_chat's keyword arguments.
    """
    if template is None or not template.strip():
        warning = "the model has no chat template; using the built-in ChatML template instead"
    else:
        try:
            return render_chat(template, messages, **kwargs), None
        except ChatTemplateError as exc:
            warning = f"the model's chat template failed: {exc}; using the built-in ChatML template instead"
    return render_chat(FALLBACK_TEMPLATE, messages, **kwargs), warning
