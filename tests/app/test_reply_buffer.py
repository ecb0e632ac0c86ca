"""The reply buffer: one owner of a streaming reply's text and draft spans (no Qt)."""

from __future__ import annotations

import pytest

from app.reply_buffer import ReplyBuffer


def test_appends_join_per_kind_and_drafted_runs_make_one_span_each() -> None:
    buffer = ReplyBuffer()
    buffer.append("reasoning", "Think ", False)
    buffer.append("reasoning", "hard", True)
    buffer.append("answer", "He", True)
    buffer.append("answer", "llo", True)
    buffer.append("answer", ", ", False)
    buffer.append("answer", "", True)  # empty drafted text adds no span
    buffer.append("answer", "world", True)
    assert buffer.reasoning == "Think hard"
    assert buffer.content == "Hello, world"
    assert buffer.draft_spans() == {"answer": [[0, 5], [7, 12]], "reasoning": [[6, 10]]}


def test_given_spans_are_read_not_changed_and_streaming_extends_a_copy() -> None:
    given = {"answer": [[0, 3]]}
    buffer = ReplyBuffer("abc", "", given)
    assert buffer.spans("answer") == [[0, 3]]
    assert buffer.spans("reasoning") == ()
    buffer.append("answer", "de", True)
    assert buffer.spans("answer") == [[0, 5]]
    assert given == {"answer": [[0, 3]]}


def test_draft_spans_is_a_copy() -> None:
    buffer = ReplyBuffer()
    buffer.append("answer", "abc", True)
    copied = buffer.draft_spans()
    copied["answer"][0][1] = 99
    assert buffer.spans("answer") == [[0, 3]]


def test_an_unknown_kind_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown text kind 'code'.*answer, reasoning"):
        ReplyBuffer().append("code", "x", False)


def test_finish_keeps_spans_when_the_final_text_is_what_streamed() -> None:
    buffer = ReplyBuffer()
    buffer.append("reasoning", "Hmm.", True)
    buffer.append("answer", "Hello", True)
    buffer.finish("Hello", "Hmm.")
    assert (buffer.content, buffer.reasoning) == ("Hello", "Hmm.")
    assert buffer.draft_spans() == {"answer": [[0, 5]], "reasoning": [[0, 4]]}


def test_finish_the_final_text_wins_and_spans_are_clipped_to_it() -> None:
    buffer = ReplyBuffer()
    buffer.append("answer", "Hello ", True)
    buffer.append("answer", "there ", False)
    buffer.append("answer", "STOP", True)  # streamed past where the final text ends
    buffer.append("reasoning", "abcdef", True)
    buffer.finish("Hello there", "abXdef")  # shorter answer; reasoning differs from its third character
    assert buffer.content == "Hello there"
    assert buffer.reasoning == "abXdef"
    assert buffer.draft_spans() == {"answer": [[0, 6]], "reasoning": [[0, 2]]}


def test_finish_with_a_longer_final_text_keeps_spans_and_later_appends_continue_from_it() -> None:
    buffer = ReplyBuffer()
    buffer.append("answer", "Hi", True)
    buffer.finish("Hi there", "")
    assert buffer.draft_spans()["answer"] == [[0, 2]]
    buffer.append("answer", "!", True)
    assert buffer.content == "Hi there!"
    assert buffer.draft_spans()["answer"] == [[0, 2], [8, 9]]
