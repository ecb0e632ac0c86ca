"""The `timings` object of a reply, named as llama-server names it (server-common.cpp,
server_slot_stats::to_json), with Stride's MTP figures per head beside llama-server's totals."""

from __future__ import annotations

from typing import Any

from engine.stats import ReplyStats


def _per(amount: float, count: int) -> float:
    return amount / count if count else 0.0


def timings(stats: ReplyStats) -> dict[str, Any]:
    """cache_n: prompt tokens reused from the KV cache; prompt_n: evaluated now; predicted_*: the reply.

    predicted_ms runs from the end of the prompt to the last token. Unlike llama-server, whose first
    token comes free with the prompt's last batch, Stride decodes the prompt's last token as the
    reply's first step, so predicted_per_second counts every predicted token over that time.
    """
    prompt_ms = (stats.prompt_seconds or 0.0) * 1000
    predicted_ms = stats.decode_seconds * 1000
    data: dict[str, Any] = {
        "cache_n": stats.n_prompt - stats.n_prompt_evaluated,
        "prompt_n": stats.n_prompt_evaluated,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": _per(prompt_ms, stats.n_prompt_evaluated),
        "prompt_per_second": 1000 * stats.n_prompt_evaluated / prompt_ms if prompt_ms else 0.0,
        "predicted_n": stats.n_predicted,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": _per(predicted_ms, stats.n_predicted),
        "predicted_per_second": stats.tokens_per_second or 0.0,
    }
    if stats.n_drafted > 0:
        depth = max(stats.mtp_depth, 0)
        data["draft_n"] = stats.n_drafted
        data["draft_n_accepted"] = stats.n_accepted
        # Per head (head k drafts the token k+1 ahead), as llama-server's log prints "acc per pos".
        data["draft_n_per_pos"] = list(stats.drafted_per_position[:depth])
        data["draft_n_accepted_per_pos"] = list(stats.accepted_per_position[:depth])
    data["mtp_depth"] = stats.mtp_depth
    return data
