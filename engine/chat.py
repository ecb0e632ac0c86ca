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
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NoReturn, NotRequired, TypedDict, cast

from jinja2 import Template, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from engine.template_budget import (
    BUDGET,
    FILTER_CHECKS,
    MAX_INT_BITS,
    MAX_TEMPLATE_CHARS,
    Budget,
    LimitExceeded,
    as_int,
    check_brace_format,
    check_percent_format,
    check_scalar_method,
    current_budget,
)


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


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters marked pass_context/pass_eval_context/pass_environment get that first.
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0
    check = FILTER_CHECKS.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
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
        current_budget().tick()
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
    budget = current_budget()
    size = budget.measure(value)
    pad = len(indent) if isinstance(indent, str) else as_int(indent)
    gaps = sum(len(s) for s in separators) if separators else 4
    budget.need(size.weight * (6 if ensure_ascii else 2) + size.nodes * (size.height * pad + gaps + 2))
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: object) -> NoReturn:
    raise ChatTemplateError(f"the template raised an error: {message}")


def _strftime_now(fmt: str) -> str:
    current_budget().need(len(fmt) + fmt.count("%") * 64)
    return datetime.now().strftime(fmt)


def _finalize(value: Any) -> Any:
    budget = current_budget()
    budget.tick()
    budget.fit(value)
    return value


class _Ticking:
    """A loop's iterable that checks the clock on every item.

    A loop whose body calls nothing, e.g. an empty inner loop, passes through no
    other hook and would otherwise spin unchecked.
    """

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Iterable[Any], budget: Budget) -> None:
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
        current_budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current_budget().tick()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.tick()
        for value in (*args, *kwargs.values()):
            budget.fit(value)
        if isinstance(obj, types.BuiltinMethodType) and isinstance(obj.__self__, (str, bytes, int)):
            args = check_scalar_method(budget, obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        budget.fit(result)
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
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
            check_percent_format(budget, fmt, right)
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def _check_bits(bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise LimitExceeded(f"it tried to compute a number of about {bits * 3 // 10:,} digits")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            check_brace_format(current_budget(), fmt, (*args, *kwargs.values()))
            return wrapper(*args, **kwargs)

        return checked

    def concat(self, parts: Iterable[str]) -> str:
        # Joins what macros, {% set %} blocks and {% filter %} blocks printed.
        pieces = list(parts)
        budget = current_budget()
        budget.tick()
        budget.need(sum(map(len, pieces)))
        return "".join(pieces)

    def stride_iter(self, iterable: Iterable[Any]) -> _Ticking:
        return _Ticking(iterable, current_budget())

    def stride_concat(self, *parts: Any) -> str:
        budget = current_budget()
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
    if isinstance(exc, LimitExceeded):
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


def _collect(chunks: Iterable[str], budget: Budget) -> str:
    pieces: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > budget.limit:
            raise LimitExceeded(f"its output grew past {budget.limit:,} characters")
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
    budget = Budget(timeout_s, max_output_chars)
    token = BUDGET.set(budget)
    try:
        if len(template) > MAX_TEMPLATE_CHARS:
            raise LimitExceeded(f"it is {len(template):,} characters long (the limit is {MAX_TEMPLATE_CHARS:,})")
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
        BUDGET.reset(token)


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
