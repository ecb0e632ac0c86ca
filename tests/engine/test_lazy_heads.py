"""Heads the depth does not use catch up lazily, and draft exactly as if they never fell behind.

The fixture's heads attend over their own KV cache (builders.context_block) and mix in the
hidden rows they are given, so a head that missed or garbled positions, or kept a row made from
the wrong hidden state, drafts other tokens. Lazy catch-up must give the same drafts, step for
step, as catching every head up at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import mtp
from engine.api import AUTO, GenerationParams
from engine.draftcost import DraftCosts
from engine.mtp import Draft, MtpDrafter
from engine.runtime import Runtime
from tests.engine.test_autodraft import Scripted
from tests.engine.test_lossless import PROMPT
from tests.fixtures import builders

CONTEXT_STRENGTH = 10.0  # heads still agree often (~80 % at depth 1), but not always
HIDDEN_MIX = 0.3  # and what they draft depends on the hidden rows they are paired with


@pytest.fixture(scope="module")
def context_heads_gguf(fixture_dir: Path) -> Path:
    return builders.build_context_heads(
        fixture_dir / "context-heads.gguf", builders.oracle(), CONTEXT_STRENGTH, HIDDEN_MIX
    )


@pytest.fixture
def runtime(load: Callable[..., Runtime], context_heads_gguf: Path) -> Iterator[Runtime]:
    yield load(context_heads_gguf)


def recorded_drafts(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    drafts: list[tuple[int, ...]] = []
    original = MtpDrafter.draft

    def recording(self: MtpDrafter, *args: object, **kw: object) -> Draft:
        draft = original(self, *args, **kw)  # type: ignore[arg-type]
        drafts.append(tuple(draft.tokens))
        return draft

    monkeypatch.setattr(MtpDrafter, "draft", recording)
    return drafts


def conversation(
    runtime: Runtime, depths: list[int | str], scripted: bool, monkeypatch: pytest.MonkeyPatch
) -> list[list[int]]:
    """Replies to a growing prompt, one per depth, reusing the KV caches between them."""
    runtime.generator.reset()
    runtime.generator.forget_auto()
    if scripted:  # Off without rows, refills of the heads' window, drafting: over and over
        monkeypatch.setattr(runtime.generator, "auto", lambda _depth: Scripted(3, runtime.generator.head_window))
    prompt = runtime.tokenize(PROMPT)
    replies = []
    for depth in depths:
        reply = runtime.generate(prompt, GenerationParams(max_tokens=150, mtp_depth=depth))
        replies.append(reply.token_ids)
        prompt = prompt + reply.token_ids + runtime.tokenize(" again")[1:]
    return replies


@pytest.mark.parametrize(
    ("depths", "scripted", "lazy_rows"),
    [([1, 3], False, None), ([2, 1, 3], False, None), ([AUTO, AUTO], True, None), ([1, 3], False, 16)],
    ids=["depth 1 then 3", "2, 1, then 3", "auto: Off, refills and drafting", "queue bound reached mid-reply"],
)
def test_lazy_heads_draft_what_eager_heads_draft(
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    depths: list[int | str],
    scripted: bool,
    lazy_rows: int | None,
) -> None:
    if lazy_rows is not None:
        monkeypatch.setattr(mtp, "LAZY_ROWS", lazy_rows)
    drafts = recorded_drafts(runtime, monkeypatch)
    monkeypatch.setattr(MtpDrafter, "lazy", False)
    eager_replies = conversation(runtime, depths, scripted, monkeypatch)
    eager = list(drafts)
    drafts.clear()
    monkeypatch.setattr(MtpDrafter, "lazy", True)
    lazy_replies = conversation(runtime, depths, scripted, monkeypatch)
    assert lazy_replies == eager_replies
    assert drafts == eager


@pytest.mark.parametrize("taken_away", ["kv cache", "hidden row"])
def test_the_fixture_heads_depend_on_their_kv_cache_and_hidden_rows(runtime: Runtime, taken_away: str) -> None:
    """Without this the test above could not tell a head that missed positions, or one paired
    with the wrong hidden row."""
    prompt = runtime.tokenize(PROMPT)
    reply = runtime.generate(prompt, GenerationParams(max_tokens=40, mtp_depth=3))
    drafter = runtime.generator.drafter
    assert drafter is not None
    end, last = len(runtime.generator.cached), reply.token_ids[-1]
    drafter.draft(last, end, 1, 0.0)
    informed = drafter.ctx.logits(-1).copy()
    drafter.rollback(end)
    if taken_away == "kv cache":
        drafter.ctx.remove_from(0)  # the heads forget every earlier position
    else:
        drafter.pending_h = np.roll(drafter.pending_h, 1)  # the draft row gets another state
    drafter.draft(last, end, 1, 0.0)
    assert np.abs(drafter.ctx.logits(-1) - informed).max() > 1.0


def test_heads_left_behind_catch_up_at_the_next_prompt_not_when_the_reply_ends(runtime: Runtime) -> None:
    """A reply at depth 1 leaves two heads behind; catching them up before the reply's end would
    pause it (on a big model, a second or more). The next turn still reuses every cached position."""
    generator, drafter = runtime.generator, runtime.generator.drafter
    assert drafter is not None
    prompt = runtime.tokenize(PROMPT)
    reply = runtime.generate(prompt, GenerationParams(max_tokens=100, mtp_depth=1))
    cached = len(generator.cached)
    assert drafter.valid_upto <= len(prompt) < drafter.confirmed_upto == cached
    follow_up = [*prompt, *reply.token_ids, *runtime.tokenize(" again")[1:]]
    second = runtime.generate(follow_up, GenerationParams(max_tokens=20, mtp_depth=3))
    # Only what the cache lacks is evaluated, and one token again for its hidden row.
    assert second.stats.n_prompt_evaluated == len(follow_up) - cached + 1


def test_heads_pair_each_token_with_the_trunk_state_before_it(
    load: Callable[..., Runtime], fixture_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MTP's contract: a head gets token p with the trunk's hidden row at p-1, in draft calls (the
    carried-over row, then the previous head's) and in catch-up rows alike. These heads read only
    the row, so each draft names the token whose row it was given."""
    o = builders.oracle((0.0, 0.5, 0.0))  # the second head's table differs from the first's
    runtime = load(builders.build_hidden_reading_heads(fixture_dir / "hidden-reading.gguf", o))
    drafted: list[tuple[int, tuple[int, ...]]] = []
    original = MtpDrafter.draft

    def recording(self: MtpDrafter, last: int, pos0: int, *args: object, **kw: object) -> Draft:
        draft = original(self, last, pos0, *args, **kw)  # type: ignore[arg-type]
        drafted.append((pos0, tuple(draft.tokens)))
        return draft

    monkeypatch.setattr(MtpDrafter, "draft", recording)
    prompt = runtime.tokenize(PROMPT)
    tokens = prompt + runtime.generate(prompt, GenerationParams(max_tokens=60, mtp_depth=2)).token_ids
    assert len(drafted) > 20
    for pos0, draft in drafted:
        before = tokens[pos0 - 1]  # the token at pos0 is the one drafted after
        assert draft == (o.head_maps[0][before], o.head_maps[1][before])[: len(draft)]

    generator, drafter = runtime.generator, runtime.generator.drafter
    assert drafter is not None
    start = len(prompt)
    generator.reset()
    generator._prefill(tokens[:start], True, lambda: False, None)
    for pos in range(start, len(tokens)):  # as steps at depth 1 leave the other heads: behind
        generator.target.decode([tokens[pos]], pos, outputs="last")
        drafter.confirm([tokens[pos]], pos, generator.target.hidden_rows(1))
    rows = len(tokens) - start
    n = drafter._catch_up_head(0, outputs=rows)  # catch-up rows, with logits: what the head makes of each
    caught_up = [int(np.argmax(drafter.ctx.logits(i))) for i in range(n - rows, n)]
    assert caught_up == [o.head_maps[0][tokens[p - 1]] for p in range(start, len(tokens))]


def test_heads_dynamic_drafting_leaves_uncalled_rest_on_their_last_positions(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncalled heads would otherwise catch up on every position at their next call (about 4 % of an MoE
    reply that drafts nothing); resting, they keep the last RESTING_CONTEXT to 2x that, and the text, this
    reply's and the next one's with drafting, stays what plain decoding gives."""
    prompt = runtime.tokenize(PROMPT)
    runtime.generator.reset()
    plain = runtime.generate(prompt, GenerationParams(max_tokens=120, mtp_depth=0)).token_ids
    runtime.generator.reset()
    monkeypatch.setattr(DraftCosts, "wants_head", lambda *_: False)
    monkeypatch.setattr(DraftCosts, "forced_length", lambda _: None)
    resting = runtime.generate(prompt, GenerationParams(max_tokens=120, mtp_depth=3, draft_length="dynamic"))
    drafter = runtime.generator.drafter
    assert drafter is not None and resting.token_ids == plain and resting.stats.n_drafted == 0
    behind = drafter.confirmed_upto - drafter.valid_upto
    assert mtp.RESTING_CONTEXT <= behind <= 2 * mtp.RESTING_CONTEXT
    assert drafter.confirmed_upto - drafter._queue_start == behind  # older rows are no longer kept
    monkeypatch.undo()
    follow_up = [*prompt, *plain, *runtime.tokenize(" again")[1:]]
    drafting = runtime.generate(follow_up, GenerationParams(max_tokens=60, mtp_depth=3))
    runtime.generator.reset()
    assert drafting.token_ids == runtime.generate(follow_up, GenerationParams(max_tokens=60, mtp_depth=0)).token_ids
    assert drafting.stats.n_accepted > 0
