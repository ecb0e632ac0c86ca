from __future__ import annotations

import json
import random
import time
from datetime import datetime
from typing import Any

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.ext import loopcontrols

from engine.chat import (
    FALLBACK_TEMPLATE,
    ChatMessage,
    ChatTemplateError,
    render_chat,
    render_or_fallback,
)
from engine.reasoning import Piece, ThinkSplitter, generation_starts_in_reasoning, split_reasoning
from tests.sdist import read_sdist_member

STEP_TEMPLATE = "vendor/llama.cpp/models/templates/StepFun3.5-Flash.jinja"
CHATML_SYSTEM_USER = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Wetter für Zürich",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def step_template() -> str:
    return read_sdist_member(STEP_TEMPLATE)


# --- the real Step 3.5 Flash template ---------------------------------------------


@pytest.mark.parametrize(
    "earlier_reply",
    [
        ChatMessage(role="assistant", content="<think>\nplan\n</think>\n\nHello"),
        ChatMessage(role="assistant", content="Hello", reasoning_content="plan"),
    ],
    ids=["think-in-content", "reasoning_content"],
)
def test_step_template_drops_reasoning_of_turns_before_the_last_user_turn(
    step_template: str, earlier_reply: ChatMessage
) -> None:
    messages: list[ChatMessage] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        earlier_reply,
        {"role": "user", "content": "And now?"},
    ]
    prompt = render_chat(step_template, messages)
    assert prompt == (
        CHATML_SYSTEM_USER + "<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert generation_starts_in_reasoning(prompt)


def test_step_template_keeps_reasoning_within_the_current_tool_loop(step_template: str) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "<think>\nneed a tool\n</think>\n\nChecking.",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}],
        },
        {"role": "tool", "content": "sunny"},
    ]
    prompt = render_chat(step_template, messages, variables={"tools": TOOLS})
    # tojson(ensure_ascii=False) leaves non-ASCII as is.
    assert '"description": "Wetter für Zürich"' in prompt
    assert prompt.startswith("<|im_start|>system\n# Tools\n")
    assert prompt.endswith(
        "<|im_start|>user\nWeather?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nneed a tool\n</think>\nChecking."
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nZürich\n</parameter>\n</function>\n</tool_call>"
        "<|im_end|>\n"
        "<|im_start|>tool_response\n<tool_response>sunny</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )


def test_step_template_without_generation_prompt(step_template: str) -> None:
    messages: list[ChatMessage] = [{"role": "user", "content": "Hi"}]
    prompt = render_chat(step_template, messages, add_generation_prompt=False, bos_token="<s>")
    assert prompt == "<s><|im_start|>user\nHi<|im_end|>\n"  # the template prints bos_token itself
    assert not generation_starts_in_reasoning(prompt)


def test_step_template_renders_the_same_as_plain_jinja(step_template: str) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is in "}, {"type": "image"}]},
        {"role": "assistant", "content": "<think>x</think>A cat.", "tool_calls": []},
        {"role": "user", "content": "<tool_response>r</tool_response>"},
        {"role": "system", "content": "obs", "name": "observation"},
    ]
    expected = (
        _plain_environment()
        .from_string(step_template)
        .render(messages=messages, tools=TOOLS, add_generation_prompt=True, bos_token="")
    )
    assert render_chat(step_template, messages, variables={"tools": TOOLS}) == expected


# --- template extensions and HF compatibility -------------------------------------


def _plain_environment() -> jinja2.Environment:
    """Unsandboxed jinja2 set up as HF transformers does, to compare against."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def tojson(
        value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    return env


BENIGN_TEMPLATES = [
    "{{ messages[0].content ~ '|' ~ messages|length ~ 1 ~ none }}",
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}",
    "{% for m in messages[::-1] if m.role == 'user' %}{{ m.content }}{% else %}none{% endfor %}",
    "{% for k, v in {'a': 1, 'b': [2, (3, 4)]}.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% set a, b = 1, 2 %}{{ a + b }} {{ [a, b] * 2 }} {{ (a, b) + (3,) }} {{ 7 // 2 }} {{ 2 ** 10 }} {{ 7 % 3 }}",
    "{% for x in [1, [2, [3]]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}{% endfor %}",
    "{% set block %}{% for i in range(3) %}{{ i }}{% endfor %}{% endset %}[{{ block }}]",
    "{% filter upper %}{% for m in messages %}{{ m.content }}{% endfor %}{% endfilter %}",
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}x{% endcall %}",
    "{{ '%s-%05.1f' % ('a', 2.5) }}|{{ '%(n)d' % {'n': 3} }}|{{ '%s=%d'|format('a', 1) }}",
    "{{ '{}:{:>4}'.format('a', 1) }} {{ '{x}'.format_map({'x': 2}) }}",
    "{{ ['a', 'b']|join(', ') }} {{ 'a-b'|replace('-', '+') }} {{ 'x\ny'|indent(2, first=true) }} {{ 'c'|center(5) }}",
    "{{ [1, 2, 3]|batch(2, 0)|list }} {{ [1, 2, 3]|slice(2)|list }} {{ 'aa bb cc'|wordwrap(3) }}",
    "{{ [[1], [2]]|sum(start=[]) }} {{ [1, 2]|sum }} {{ {'b': 1, 'a': [1]}|pprint }}",
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}"
    "{{ i }}{% endfor %}",
    "{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}{{ 'ab'.upper().center(4, '*') }}",
    "{{ messages|map(attribute='role')|select('equalto', 'user')|list|length }}{{ messages|selectattr('role')|first }}",
    "{{ {'é': [1, {'b': None}]}|tojson }} {{ {'b': 1, 'a': 2}|tojson(indent=2, sort_keys=true) }}",
    "{{ [1, 2]|tojson(separators=(',', ':')) }} {{ 'ü'|tojson(ensure_ascii=true) }}",
    "{{ bos_token }}{{ foo is defined }}{{ messages[0].missing }}{{ 'x' if messages[0].missing is string }}",
]


@pytest.mark.parametrize("template", BENIGN_TEMPLATES)
def test_sandbox_renders_like_plain_jinja(template: str) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    expected = (
        _plain_environment()
        .from_string(template)
        .render(messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="")
    )
    assert render_chat(template, messages, bos_token="<s>") == expected


def test_tojson_accepts_ensure_ascii_for_tools() -> None:
    template = "{% for tool in tools %}{{ tool|tojson(ensure_ascii=False) }}{% endfor %}"
    assert render_chat(template, [], variables={"tools": TOOLS}) == json.dumps(TOOLS[0], ensure_ascii=False)


def test_raise_exception_gives_chat_template_error() -> None:
    template = "{% if messages[0].role != 'system' %}{{ raise_exception('System message required') }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="System message required"):
        render_chat(template, [{"role": "user", "content": "hi"}])


def test_strftime_now() -> None:
    assert render_chat("{{ strftime_now('%Y') }}", []) == str(datetime.now().year)


def test_named_arguments_win_over_variables() -> None:
    template = "{{ bos_token }}{{ add_generation_prompt }}{{ extra }}"
    variables = {"bos_token": "X", "add_generation_prompt": 0, "extra": 1}
    assert render_chat(template, [], bos_token="<s>", variables=variables) == "<s>True1"


# --- fallback ---------------------------------------------------------------------


MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]
CHATML_PROMPT = CHATML_SYSTEM_USER + "<|im_start|>assistant\n"


def test_fallback_template_is_chatml() -> None:
    assert render_chat(FALLBACK_TEMPLATE, MESSAGES) == CHATML_PROMPT
    assert render_chat(FALLBACK_TEMPLATE, MESSAGES, add_generation_prompt=False) == CHATML_SYSTEM_USER
    assert not generation_starts_in_reasoning(CHATML_PROMPT)


def test_render_or_fallback_uses_a_working_template() -> None:
    assert render_or_fallback("{{ messages|length }}", MESSAGES) == ("2", None)


@pytest.mark.parametrize("template", [None, "", "  \n"])
def test_render_or_fallback_without_template(template: str | None) -> None:
    prompt, warning = render_or_fallback(template, MESSAGES)
    assert prompt == CHATML_PROMPT
    assert warning == "the model has no chat template; using the built-in ChatML template instead"


HOSTILE_TEMPLATES = {
    "dunder-escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "huge-range": "{% for i in range(10**9) %}{% for j in range(10**9) %}{% endfor %}{% endfor %}",
    "silent-nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "printing-nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "string-times-huge": "{{ 'a' * 10**10 }}",
    "string-times-large": "{{ 'ab' * 100000000 }}",
    "recursive-macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "raise-exception": "{{ raise_exception('no') }}",
    "syntax-error": "{% for %}",
    # Beyond the obvious: ways to build huge values without printing as you go.
    "list-loop-no-range": "{% set xs = range(100000)|list %}{% for i in xs %}{% for j in xs %}{% endfor %}{% endfor %}",
    "exponential-macro": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "concat-doubling": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
    ),
    "list-doubling": (
        "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}"
    ),
    "namespace-doubling": (
        "{% set ns = namespace(cur='abc') %}{% for i in range(60) %}{% set n = namespace() %}"
        "{% set n.a = ns.cur %}{% set n.b = ns.cur %}{% set ns.cur = n %}{% endfor %}{{ ns.cur }}"
    ),
    "macro-buffer": (
        "{% set s = 'a' * 10**6 %}{% macro m() %}{% for i in range(10**5) %}{{ s }}{% endfor %}{% endmacro %}{{ m() }}"
    ),
    "set-block-buffer": (
        "{% set s = 'a' * 10**6 %}{% set b %}{% for i in range(10**5) %}{{ s }}{% endfor %}{% endset %}{{ b }}"
    ),
    "join-huge-separator": "{{ range(100000)|join('a' * 10**6) }}",
    "replace-blowup": "{% set s = 'a' * 10**6 %}{{ s.replace('a', s) }}",
    "format-width": "{{ '{:>999999999}'.format(1) }}",
    "percent-width": "{{ '%0999999999d' % 1 }}",
    "center-width": "{{ 'a'|center(10**9) }}",
    "ljust-width": "{{ 'a'.ljust(10**9) }}",
    "huge-power": "{{ 2 ** (10**10) }}",
    "deep-tuple-hash": (
        "{% set ns = namespace(t=()) %}{% for i in range(10**5) %}{% set ns.t = (ns.t,) %}{% endfor %}{{ {ns.t: 1} }}"
    ),
    "lipsum": "{{ lipsum(10**9) }}",
}


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES.values(), ids=HOSTILE_TEMPLATES.keys())
def test_hostile_template_fails_fast(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(ChatTemplateError) as failure:
        render_chat(template, MESSAGES, timeout_s=2.0)
    assert time.monotonic() - started < 2.5
    assert str(failure.value)

    prompt, warning = render_or_fallback(template, MESSAGES, timeout_s=2.0)
    assert prompt == CHATML_PROMPT
    assert warning is not None
    assert warning.startswith("the model's chat template failed: ")
    assert warning.endswith("; using the built-in ChatML template instead")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{% for %}", "syntax error on line 1"),
        ("{{ ''.__class__.__mro__ }}", "the sandbox forbids"),
        ("{{ foo.bar }}", "not defined"),
        ("{{ raise_exception('no system') }}", "the template raised an error: no system"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deeply"),
        ("{{ 'ab' * 100000000 }}", "about 200,000,000 characters"),
        ("{% for i in range(20) %}x{% endfor %}", "output grew past 10 characters"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "within 0.2 seconds"),
        ("x" * 300_000, "300,000 characters long"),
    ],
)
def test_failure_reasons_are_plain(template: str, reason: str) -> None:
    with pytest.raises(ChatTemplateError, match=reason):
        render_chat(template, [], timeout_s=0.2, max_output_chars=10)


# --- where generation starts ------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n", True),
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("<|im_start|>assistant\n<think>\nx\n</think>\n", False),
        ("<|im_start|>user\nwhat does <think> mean?<|im_end|>\n<|im_start|>assistant\n", False),
        ("<|im_start|>assistant\n<think>\nunfinished<|im_end|>\n", False),
        ("<|im_start|>user\nsee <think><|im_end|>\n", False),
        ("<｜User｜>Hi<｜Assistant｜><think>\n", True),
        ("<｜User｜>Hi <think> there<｜Assistant｜>", False),
        ("", False),
    ],
)
def test_generation_starts_in_reasoning(prompt: str, expected: bool) -> None:
    assert generation_starts_in_reasoning(prompt) is expected


# --- ThinkSplitter ----------------------------------------------------------------


SAMPLES = [
    (True, "plan step\n</think>\n\nThe answer."),
    (True, "\nfirst\n\nsecond\n\n</think>\n\nA <b> tag and </thinking> text\n"),
    (True, "still thinking, no close tag\n\n"),
    (True, "x </thi"),
    (False, "Just an answer with < and <th and </think> text."),
    (False, "<think>\nhmm\n</think>\n\nHi"),
    (False, "Before <think>inside</think>after<think>again"),
    (False, "ends with <thin"),
]


def _merge(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for kind, text in pieces:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


def _run(starts_in_reasoning: bool, chunks: list[str]) -> list[Piece]:
    splitter = ThinkSplitter(starts_in_reasoning)
    pieces = [piece for chunk in chunks for piece in splitter.feed(chunk)] + splitter.flush()
    assert all(text for _, text in pieces), "empty piece"
    return _merge(pieces)


@pytest.mark.parametrize(("starts_in_reasoning", "text"), SAMPLES)
def test_splitter_is_independent_of_chunking(starts_in_reasoning: bool, text: str) -> None:
    whole = _run(starts_in_reasoning, [text])
    assert _run(starts_in_reasoning, list(text)) == whole
    for cut in range(len(text) + 1):
        assert _run(starts_in_reasoning, [text[:cut], text[cut:]]) == whole, cut
    rng = random.Random(text)
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(4, len(text))))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _run(starts_in_reasoning, chunks) == whole, chunks


FRAGMENTS = ["<think>", "</think>", "<", "</", "<th", "think", ">", "\n", "a", " "]


@given(
    starts_in_reasoning=st.booleans(),
    text=st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_splitter_chunking_property(starts_in_reasoning: bool, text: str, cuts: list[int]) -> None:
    bounds = sorted({min(cut, len(text)) for cut in cuts})
    chunks = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    assert _run(starts_in_reasoning, chunks) == _run(starts_in_reasoning, [text])
    # Output is the input with tags and newlines taken out, nothing added or reordered.
    rest = iter(text)
    assert all(char in rest for piece in _run(starts_in_reasoning, [text]) for char in piece[1])


@pytest.mark.parametrize(
    ("starts_in_reasoning", "text", "expected"),
    [
        (True, "plan step\n</think>\n\nThe answer.", [("reasoning", "plan step"), ("answer", "The answer.")]),
        (True, "\nfirst\n\nsecond\n\n</think>\n\nA\n", [("reasoning", "first\n\nsecond"), ("answer", "A\n")]),
        (True, "still thinking, no close tag\n\n", [("reasoning", "still thinking, no close tag")]),
        (True, "x </thi", [("reasoning", "x </thi")]),
        (False, "Plain <th answer", [("answer", "Plain <th answer")]),
        (False, "ends with <thin", [("answer", "ends with <thin")]),
        (False, "<think>\nhmm\n</think>\n\nHi", [("reasoning", "hmm"), ("answer", "Hi")]),
        (
            False,
            "Before <think>inside</think>after",
            [("answer", "Before "), ("reasoning", "inside"), ("answer", "after")],
        ),
    ],
)
def test_splitter_classifies(starts_in_reasoning: bool, text: str, expected: list[Piece]) -> None:
    assert _run(starts_in_reasoning, [text]) == expected


def test_splitter_holds_back_a_split_tag() -> None:
    splitter = ThinkSplitter(starts_in_reasoning=True)
    assert splitter.feed("abc</thi") == [("reasoning", "abc")]
    assert splitter.feed("nk>") == []
    assert splitter.feed("\n\nde") == [("answer", "de")]
    assert splitter.feed("f<") == [("answer", "f")]
    assert splitter.feed("g") == [("answer", "<g")]
    assert splitter.feed("") == []
    assert splitter.flush() == []


def test_splitter_merges_pieces_within_one_feed() -> None:
    splitter = ThinkSplitter(starts_in_reasoning=True)
    assert splitter.feed("a\n") == [("reasoning", "a")]
    assert splitter.feed("b") == [("reasoning", "\nb")]


def test_splitter_custom_tags() -> None:
    splitter = ThinkSplitter(False, open_tag="[THINK]", close_tag="[/THINK]")
    assert splitter.feed("[THINK]r[/THINK]a") + splitter.flush() == [("reasoning", "r"), ("answer", "a")]


@pytest.mark.parametrize(("starts_in_reasoning", "text"), SAMPLES)
def test_split_reasoning_agrees_with_splitter(starts_in_reasoning: bool, text: str) -> None:
    pieces = _run(starts_in_reasoning, list(text))
    reasoning = "".join(t for kind, t in pieces if kind == "reasoning")
    answer = "".join(t for kind, t in pieces if kind == "answer")
    assert split_reasoning(text, starts_in_reasoning) == (reasoning, answer)


def test_split_reasoning_of_step_reply(step_template: str) -> None:
    prompt = render_chat(step_template, [{"role": "user", "content": "Hi"}])
    reply = "The user greets me.\n</think>\nHello!"
    assert split_reasoning(reply, generation_starts_in_reasoning(prompt)) == ("The user greets me.", "Hello!")
