"""UTF-8 streaming and stop strings, fed piece by piece."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.text import StopMatcher, Utf8Stream


@given(st.text(), st.lists(st.integers(min_value=0, max_value=64), max_size=20))
def test_utf8_stream_never_splits_characters(text: str, cuts: list[int]) -> None:
    data = text.encode()
    stream, pieces, start = Utf8Stream(), [], 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        pieces.append(stream.feed(data[start:cut]))
        start = cut
    pieces.append(stream.flush())
    assert "".join(pieces) == text
    assert all(p.encode().decode() == p for p in pieces)


def test_invalid_bytes_become_replacement_characters() -> None:
    stream = Utf8Stream()
    assert stream.feed(b"a\xe2\x82") == "a"
    assert stream.feed(b"x") == "\ufffdx"


@given(
    st.text(alphabet="abc<>/", max_size=40),
    st.text(alphabet="abc<>/", min_size=1, max_size=4),
    st.integers(min_value=1, max_value=5),
)
def test_stop_matcher_equals_cutting_at_the_first_match(text: str, stop: str, chunk: int) -> None:
    matcher = StopMatcher([stop])
    shown = "".join(matcher.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)) + matcher.flush()
    expected = text[: text.index(stop)] if stop in text else text
    assert shown == expected
    assert (matcher.matched is not None) == (stop in text)
