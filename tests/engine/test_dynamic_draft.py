"""Dynamic draft length: drafts only where their odds pay for their cost, and the text never changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.api import GenerationParams
from engine.draftcost import REMEASURE_SOON, REMEASURE_STEPS, REST_STEPS, DraftCosts
from engine.llama import LlamaError
from engine.runtime import Runtime
from tests.engine.test_lossless import PROMPT
from tests.fixtures.calibrated import build_calibrated

N_TOKENS = 400


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[int]]:
    return build_calibrated(tmp_path_factory.mktemp("calibrated") / "calibrated.gguf")


def reply(runtime: Runtime, depth: int, length: str, max_tokens: int = N_TOKENS) -> tuple[list[int], list[float]]:
    runtime.generator.reset()
    params = GenerationParams(max_tokens=max_tokens, mtp_depth=depth, draft_length=length)  # type: ignore[arg-type]
    r = runtime.generate(runtime.tokenize(PROMPT), params)
    return r.token_ids, [a or 0.0 for a in r.stats.acceptance_per_position]


def assert_dynamic_lossless(runtime: Runtime) -> None:
    plain, _ = reply(runtime, 0, "fixed")
    assert len(plain) == N_TOKENS
    for depth in (1, 2, 3):
        assert reply(runtime, depth, "dynamic")[0] == plain, f"dynamic drafting at depth {depth} changed the text"


def test_dynamic_drafting_is_lossless(
    load: Callable[..., Runtime], live_gguf: Path, calibrated: tuple[Path, set[int]]
) -> None:
    assert_dynamic_lossless(load(live_gguf))
    assert_dynamic_lossless(load(calibrated[0]))


def test_the_lossless_check_fails_without_kv_rollback(
    load: Callable[..., Runtime], live_gguf: Path, rollback_off: None
) -> None:
    with pytest.raises((AssertionError, LlamaError)):
        assert_dynamic_lossless(load(live_gguf))


class FixedCosts(DraftCosts):
    """Costs of a mixture-of-experts model, set rather than timed, so the test does not depend on the
    machine: one verified row costs 1, each further row 0.6 (each row reads its own experts), a head
    call 0.05, and a token is worth a plain step."""

    def verify_seconds(self, rows: int) -> float:
        return 1.0 + 0.6 * (rows - 1)

    def token_value(self) -> float:
        return 1.0

    def forced_length(self) -> None:
        return None

    def record_draft_call(self, head: int, seconds: float) -> None:
        self._draft[head] = 0.05


def test_drafts_only_where_the_heads_are_sure(
    load: Callable[..., Runtime], calibrated: tuple[Path, set[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where drafting costs 0.6 of a step a row, only drafts likelier than 0.6 may go in. The calibrated
    heads are sure (0.99) and right where they agree with the trunk, and split (0.45) elsewhere."""
    runtime = load(calibrated[0])
    costs = FixedCosts(3)
    monkeypatch.setattr(runtime.generator, "draft_costs", lambda _depth: costs)
    fixed_tokens, fixed = reply(runtime, 3, "fixed")
    dynamic_tokens, dynamic = reply(runtime, 3, "dynamic")
    assert dynamic_tokens == fixed_tokens
    assert fixed[0] < 0.9  # drafting everything, the first head is wrong on a good share of tokens
    assert dynamic[0] > 0.97 and dynamic[1] > 0.97  # drafting where sure, it is all but always right


# --- the decisions, on set figures ---


def timed(costs: DraftCosts, curve: list[float], call: float, per_token: float) -> DraftCosts:
    """Feed `costs` one step per batch size (rows 1..), as its first steps time them."""
    for rows, seconds in enumerate(curve, start=1):
        for head in range(rows - 1):
            costs.record_draft_call(head, call)
        costs.record_step(rows, seconds, per_token * 2, 2, 1 if rows > 1 else 0)
    return costs


def test_first_steps_time_one_row_and_two_then_stale_sizes() -> None:
    costs = DraftCosts(3)
    lengths = []
    while (length := costs.forced_length()) is not None:
        lengths.append(length)
        costs.record_step(length + 1, 0.01, 0.02, 1, 0)
    assert lengths == [0, 1]  # deeper sizes are extrapolated until a confident draft tries them
    costs.record_step(4, 0.012, 0.02, 1, 0)  # a depth-3 step, timed once
    for _ in range(REMEASURE_SOON - 1):
        costs.record_step(2, 0.01, 0.02, 1, 0)  # then one-draft steps
    assert costs.forced_length() == 0  # sizes timed once or twice are timed again soon: one row first
    for rows in (1, 4, 1, 4):
        costs.record_step(rows, 0.01, 0.02, 1, 0)
    for _ in range(REMEASURE_STEPS - 1):
        assert costs.forced_length() is None  # three timings each: they hold for REMEASURE_STEPS steps
        costs.record_step(2, 0.01, 0.02, 1, 0)
    assert costs.forced_length() == 0


def test_a_dense_curve_drafts_deep_an_moe_curve_does_not() -> None:
    dense = timed(DraftCosts(3), [1.0, 1.1, 1.2, 1.3], call=0.05, per_token=1.0)
    moe = timed(DraftCosts(3), [1.0, 1.7, 2.4, 3.1], call=0.05, per_token=1.0)
    for chain in (0.3, 0.6, 0.9):
        assert dense.keeps(chain, rows=3)
    assert moe.keeps(0.9, rows=3) and not moe.keeps(0.6, rows=3)
    assert dense.marginal_verify(3) == pytest.approx(0.1) and moe.marginal_verify(3) == pytest.approx(0.7)


def test_an_untimed_batch_size_is_extrapolated_from_below() -> None:
    costs = timed(DraftCosts(3), [1.0, 1.5], call=0.05, per_token=1.0)
    assert costs.verify_seconds(3) == pytest.approx(1.5 + 0.2)  # PRIOR_ROW_COST of a one-row batch per row
    assert DraftCosts(3).verify_seconds(1) is None


def test_speedup_over_plain_is_plain_step_over_the_pace() -> None:
    costs = DraftCosts(3)
    costs.record_step(1, 0.010, 0.012, 1, 0)
    assert costs.speedup_vs_plain() == pytest.approx(0.010 / 0.012)
    costs.record_step(4, 0.014, 0.020, 4, 3)
    pace = 0.012 + 0.2 * (0.005 - 0.012)
    assert costs.speedup_vs_plain() == pytest.approx(0.010 / pace)


def test_a_slow_spike_does_not_set_a_batch_sizes_cost() -> None:
    """Other work on the machine (or weights paged in at first) only ever adds time."""
    costs = DraftCosts(3)
    for seconds in (0.50, 0.011, 0.010, 0.012):  # the first timing caught pages being read in
        costs.record_step(2, seconds, 0.02, 1, 0)
    assert costs.verify_seconds(2) == pytest.approx(0.011)
    costs.record_draft_call(0, 0.3)
    costs.record_draft_call(0, 0.002)
    assert costs.wants_head(0, 1.0, 1) == (0.9 * costs.token_value() > 0.002 + costs.marginal_verify(1))


def test_while_exploring_the_first_head_always_drafts() -> None:
    """Auto's trials measure the first head even after early misses pushed its estimate down."""
    costs = timed(DraftCosts(3), [1.0, 1.7, 2.4, 3.1], call=0.05, per_token=1.0)
    for _ in range(6):
        costs.record_step(2, 1.7, 2.0, 1, 0)  # the first head missed six times
    assert not costs.wants_head(0, 1.0, 1) and not costs.keeps(0.3, 1)
    costs.exploring = True
    assert costs.wants_head(0, 1.0, 1) and costs.keeps(0.3, 1)
    assert not costs.keeps(0.3, 2)  # deeper drafts still only where they pay


def test_speedup_is_never_more_than_the_tokens_a_step_yields() -> None:
    """A plain row timed in a busy moment must not make drafting look 20x faster: a step verifying
    k rows costs at least one row, so the figure is cut to the tokens per step."""
    costs = DraftCosts(3)
    costs.record_step(1, 0.200, 0.200, 1, 0)  # plain, while another program ran
    for _ in range(5):
        costs.record_step(3, 0.010, 0.012, 3, 2)
    speedup = costs.speedup_vs_plain()
    assert speedup is not None and 2.0 < speedup <= 3.0


MOE_CURVE = [1.0, 1.68, 2.32, 2.87]  # the MoE Q4_K_M fixture's V(k)/V(1); a head call costs 0.19 of a row
DENSE_CURVE = [1.0, 1.3, 1.5, 1.7]  # a dense model: rows beyond the first cost little


def calls(costs: DraftCosts, n: int, kept_every: int) -> None:
    """n steps calling the first head, whose draft is sure enough to go in on one call in `kept_every`
    (and is then right); the others verify one row."""
    for i in range(n):
        costs.record_draft_call(0, 0.19)
        kept = i % kept_every == 0
        costs.record_step(2 if kept else 1, MOE_CURVE[1] if kept else 1.0, 2.0, 2 if kept else 1, 1 if kept else 0)


def test_a_head_whose_drafts_rarely_go_in_is_not_called() -> None:
    """The saving is per call: a head sure on one token in five is not worth its call on an MoE curve,
    a head sure on nine in ten is; both drafts, when kept, are right."""
    rare = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    calls(rare, 60, kept_every=5)
    often = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    calls(often, 60, kept_every=1)
    assert rare.head_acceptance(0) > 0.9 and often.head_acceptance(0) > 0.9
    assert not rare.wants_head(0, 1.0, 1)
    assert often.wants_head(0, 1.0, 1)


def test_a_head_left_uncalled_is_called_again_now_and_then() -> None:
    """Text the head suits again is found: once every REMEASURE_STEPS steps it is called regardless."""
    costs = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    calls(costs, 60, kept_every=5)
    steps = 0
    while not costs.wants_head(0, 1.0, 1) and steps < 10 * REMEASURE_STEPS:
        costs.record_step(1, 1.0, 1.0, 1, 0)
        steps += 1
    assert 0 < steps <= REMEASURE_STEPS


def test_slow_drafting_does_not_make_a_draft_look_worth_more_than_a_plain_step() -> None:
    costs = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    for _ in range(20):
        costs.record_step(2, 1.68, 3.0, 1, 0)  # rejected drafts: three seconds a token
    assert costs.token_value() == pytest.approx(1.0)  # one row verified: what a token costs plainly


def test_a_size_only_timing_probes_use_is_timed_ever_less_often() -> None:
    """Where drafts do not pay, re-timing sizes the odds never choose was most of dynamic drafting's cost."""
    costs = DraftCosts(3)
    for rows in (1, 2, 1, 2, 1, 2):
        costs.record_step(rows, 0.01, 0.02, 1, 0)  # three timings of one row and of two
    gaps: list[int] = []
    last = costs._step
    while len(gaps) < 5:
        if costs.forced_length() == 1:
            costs.record_step(2, 0.01, 0.02, 1, 0, probe=True)
            gaps.append(costs._step - last)
            last = costs._step
        else:
            costs.record_step(1, 0.01, 0.02, 1, 0)
    assert gaps[1:] == [factor * REMEASURE_STEPS + 1 for factor in (2, 4, 8, 8)]  # doubling, up to 8x
    costs.record_step(2, 0.01, 0.02, 2, 1)  # chosen by the odds: back to the plain interval
    assert costs._unchosen[2] == 0


def flat_drafts(costs: DraftCosts, n: int, right_every: int) -> int:
    """n steps of a flat head (top probability 0.08) whose draft is right once every `right_every` drafts, kept
    or not as the odds say; the number kept."""
    kept = 0
    for i in range(n):
        costs.record_draft_call(0, 0.19)
        if costs.keeps(costs.confidence(0, 0.08), 1):
            kept += 1
            hit = i % right_every == 0
            costs.record_step(2, MOE_CURVE[1], 2.0, 1 + hit, int(hit))
        else:
            costs.record_step(1, 1.0, 1.0, 1, 0)
    return kept


def test_a_flat_heads_drafts_go_in_on_its_blind_acceptance() -> None:
    """A head with a flat distribution (top probability 0.08) that is always right gets its drafts in on
    its acceptance measured blind; one right 1 time in 5 has the drafts the floor let in show it
    within a few steps, and then drafts no more, with no timing probe to tell it."""
    right = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    wrong = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    assert flat_drafts(right, 60, right_every=1) == 60
    assert (right.blind_acceptance(0) or 0.0) > 0.9
    assert flat_drafts(wrong, 60, right_every=5) <= 4
    assert not wrong.keeps(wrong.confidence(0, 0.08), 1)


def test_two_drafts_rejected_at_the_start_do_not_shut_a_good_head_out() -> None:
    """The first probes draft at the prompt's end, where heads often miss: the floor's prior outweighs them."""
    costs = timed(DraftCosts(3), DENSE_CURVE, call=0.05, per_token=1.0)
    for _ in range(2):
        costs.record_step(2, DENSE_CURVE[1], 2.0, 1, 0, probe=True)
    assert costs.keeps(costs.confidence(0, 0.08), 1)


def test_a_calibrated_heads_unsure_drafts_sink_its_floor() -> None:
    """For a head whose probability is its odds, the floor lets in only its least sure drafts, and these
    mostly fail: the floor falls below what a row costs and lets nothing in (its own word decides)."""
    costs = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    assert flat_drafts(costs, 30, right_every=3) <= 3
    assert costs.confidence(0, 0.3) == pytest.approx(costs.blind_acceptance(0))
    assert not costs.keeps(costs.confidence(0, 0.3), 1)
    assert costs.keeps(costs.confidence(0, 0.95), 1)


def test_deep_sizes_the_odds_could_not_choose_are_not_timed_again() -> None:
    """Where heads agree one time in three, even cheap rows would not take drafts three deep: re-timing
    sizes 3 and 4 was pure cost on an MoE model where Off is best. Where heads agree, they are re-timed."""
    rarely, often = (timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0) for _ in range(2))
    for i in range(90):
        rarely.record_step(2, MOE_CURVE[1], 2.0, 1 + (i % 3 == 0), int(i % 3 == 0))
        often.record_step(2, MOE_CURVE[1], 2.0, 2, 1)
    assert rarely.head_acceptance(0) < 0.4 < 0.9 < often.head_acceptance(0)
    forced: dict[str, set[int | None]] = {"rarely": set(), "often": set()}
    for name, costs in (("rarely", rarely), ("often", often)):
        for _ in range(3 * REMEASURE_STEPS):
            length = costs.forced_length()
            forced[name].add(length)
            costs.record_step(1 if length is None else length + 1, 1.0, 1.0, 1, 0, probe=length is not None)
    assert forced["rarely"] <= {None, 0, 1}
    assert {2, 3} <= forced["often"]


def test_heads_rest_while_the_first_is_not_worth_calling() -> None:
    costs = timed(DraftCosts(3), MOE_CURVE, call=0.19, per_token=1.0)
    costs.record_draft_call(0, 0.19)
    for _ in range(REST_STEPS):
        assert not costs.heads_resting()
        costs.record_step(1, 1.0, 1.0, 1, 0)
    costs.record_step(1, 1.0, 1.0, 1, 0)
    assert costs.heads_resting()
    costs.exploring = True  # Auto's trial measures the heads: they keep up
    assert not costs.heads_resting()


def first_head_outcomes(costs: DraftCosts, hits: list[bool]) -> None:
    for hit in hits:
        costs.record_draft_call(0, 0.05)
        costs.record_step(2, DENSE_CURVE[1], 1.3, 1 + hit, int(hit))


def test_a_run_of_misses_near_break_even_leaves_the_first_head_called() -> None:
    """Misses come in runs: a head right a little more often than it must be to pay is not left uncalled (for
    REMEASURE_STEPS steps) by eight misses in a row; a head right one time in ten soon is."""
    costs = timed(DraftCosts(3), DENSE_CURVE, call=0.05, per_token=1.0)
    break_even = (costs._draft[0] + costs.marginal_verify(1)) / costs.token_value()  # type: ignore[operator]
    first_head_outcomes(costs, [i % 2 == 0 for i in range(60)])
    assert costs.head_acceptance(0) < break_even + 0.2
    first_head_outcomes(costs, [False] * 8)
    assert costs.wants_head(0, 1.0, 1)
    first_head_outcomes(costs, [i % 10 == 0 for i in range(40)])
    assert not costs.wants_head(0, 1.0, 1)


def test_what_a_step_calling_a_head_spends_beyond_its_parts_counts_against_the_call() -> None:
    costs = timed(DraftCosts(3), DENSE_CURVE, call=0.05, per_token=1.0)
    for _ in range(40):
        costs.record_step(1, 1.0, 1.0 + 0.01, 1, 0)  # no head called: 0.01 s beyond the verification
        costs.record_draft_call(0, 0.05)
        costs.record_step(2, 1.3, 1.3 + 0.05 + 0.04, 2, 1)  # a head called: 0.04 s beyond the call and verification
    assert costs.calling_overhead() == pytest.approx(0.03, abs=0.002)


def test_a_deeper_head_must_show_it_pays() -> None:
    """A deeper head is judged on few outcomes (only when the drafts before it passed): where they make it look
    just worth its call and row, it is not called; where many outcomes show it worth it, it is."""
    few, many = (timed(DraftCosts(3), DENSE_CURVE, call=0.05, per_token=1.0) for _ in range(2))
    for costs, n in ((few, 3), (many, 90)):
        for i in range(n):
            costs.record_draft_call(0, 0.05)
            costs.record_draft_call(1, 0.05)
            hit = i % 3 != 0  # the second head is right two times in three after a right first draft
            costs.record_step(3, DENSE_CURVE[2], 1.5, 2 + hit, 1 + hit)
    chain = 0.8
    cost = few._draft[1] + few.marginal_verify(2)  # type: ignore[operator]
    assert chain * few.head_acceptance(1) * few.token_value() > cost  # at face value: worth it
    assert not few.wants_head(1, chain, 2)
    assert many.wants_head(1, chain, 2)
