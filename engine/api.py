"""The one door between the engine and the app: plain data both sides share.

Nothing here touches llama.cpp or Qt, so the app's settings, views and store can
use these types without loading the model library (tests/test_architecture.py
holds that). What the app *calls* in the engine comes through the adapter,
engine/qt_worker.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeGuard, get_args

# --- names and units -------------------------------------------------------------------------

DEMO_NAME = "demo"  # stands for the built-in demo model wherever a model path goes

_GIB = 1 << 30
_MIB = 1 << 20


def format_bytes(n: int) -> str:
    """33.0 MiB, 116.4 GiB: binary units, one decimal."""
    return f"{n / _GIB:.1f} GiB" if n >= _GIB else f"{max(n / _MIB, 0.1):.1f} MiB"


def format_params(n: int) -> str:
    """8.6 M, 196.8 B parameters."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


# --- what a reply is asked to do ---------------------------------------------------------------

# KV-cache element types by name, with llama.cpp's ggml_type numbers.
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2, "bf16": 30}

TextKind = Literal["reasoning", "answer"]
DraftSampling = Literal["greedy", "probabilistic"]
DraftLength = Literal["fixed", "dynamic"]
AUTO = "auto"
DRAFT_SAMPLING: tuple[DraftSampling, ...] = get_args(DraftSampling)
DRAFT_LENGTHS: tuple[DraftLength, ...] = get_args(DraftLength)


@dataclass(frozen=True)
class SamplerParams:
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = 0xFFFFFFFF  # llama.cpp's "random seed"

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 512
    sampler: SamplerParams = field(default_factory=SamplerParams)
    # None: every head the model has; AUTO: plain decoding or dynamic drafting (up to every head),
    # whichever is measured faster here (autodraft.py).
    mtp_depth: int | str | None = None
    p_min: float = 0.0
    stop: tuple[str, ...] = ()
    # greedy: each head's top token, kept while the target's sampler agrees (seeded output is the
    # same at every depth). probabilistic (temperature > 0): drafts drawn from the heads and
    # verified by rejection sampling, so acceptance holds up as temperature rises.
    draft_sampling: DraftSampling = "greedy"
    # fixed: every step drafts `mtp_depth` tokens (fewer only under p_min). dynamic: up to that many,
    # each only while its odds of passing are worth what it costs to draft and verify (draftcost.py).
    draft_length: DraftLength = "fixed"


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: int = 4096  # 0: the model's trained context; more than that is lowered to it (effective_context)
    n_threads: int = 0  # 0: all cores
    n_gpu_layers: int = 0
    kv_type: str = "f16"
    n_batch: int = 512

    def threads(self) -> int:
        return self.n_threads or max(1, os.cpu_count() or 1)


# --- what a reply streams ----------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A run of streamed text of one kind; from_draft marks tokens accepted from MTP drafts."""

    text: str
    kind: TextKind
    from_draft: bool


@dataclass(frozen=True)
class Delta:
    """What one decode step added: its text segments and the tokens behind them."""

    segments: tuple[Segment, ...]
    token_ids: tuple[int, ...]
    from_draft: tuple[bool, ...]


# --- what a reply measured ---------------------------------------------------------------------

# Why MTP is not running at the requested depth (None when it is).
MtpNote = Literal["no_heads", "weights_absent", "depth_zero", "depth_clamped", "auto_off"]
MTP_NOTE_TEXT: dict[str, str] = {  # by MtpNote
    "no_heads": "this model has no MTP heads, so it runs plain decoding",
    "weights_absent": "the model declares MTP heads but their weights are not in the file; "
    "give the separate MTP file to use them",
    "depth_zero": "MTP depth is set to Off",
    "depth_clamped": "the requested depth is more than the model's MTP heads; using all of them",
    "auto_off": "Auto runs plainly: checking drafts costs more than they save on this model and machine "
    "(it tries drafting again now and then, and with each new reply)",
}
StopReason = Literal["eog", "max_tokens", "stop_string", "context_full", "cancelled"]
AutoMode = Literal["drafting", "off"]  # with Auto: what the last step did


@dataclass(frozen=True)
class StatsSnapshot:
    """One reply's figures at one moment (engine/stats.py ReplyStats measures them).

    The field names are the keys of stride-cli's --json and of the stats the app stores,
    so `to_json` and `from_json` round-trip both.
    """

    n_prompt: int = 0  # prompt tokens in the context for this reply
    n_prompt_evaluated: int = 0  # of which evaluated now (the rest reused from the KV cache)
    n_predicted: int = 0
    n_drafted: int = 0
    n_accepted: int = 0
    acceptance: float | None = None
    drafted_per_position: tuple[int, ...] = ()  # index 0 is head 1
    accepted_per_position: tuple[int, ...] = ()
    acceptance_per_position: tuple[float | None, ...] = ()
    mean_accepted_length: float | None = None
    n_steps: int = 0
    tokens_per_second: float | None = None
    window_tokens_per_second: float | None = None
    ttft_s: float | None = None
    prompt_seconds: float | None = None
    prompt_tokens_per_second: float | None = None  # positions evaluated per second, picture encoding left out
    n_image_tokens: int = 0  # prompt positions that hold pictures
    image_encode_seconds: float = 0.0  # encoding this reply's new pictures (those in the KV cache cost nothing)
    decode_seconds: float = 0.0
    verify_seconds: float = 0.0
    mtp_depth: int = 0
    mtp_depth_requested: int | str = 0
    mtp_depth_now: int | None = None
    mtp_note: MtpNote | None = None
    stop_reason: StopReason | None = None
    estimated_speedup_vs_plain: float | None = None
    auto_mode: AutoMode | None = None

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON-ready data, one key per field."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatsSnapshot:
        """Read figures written by any version: a missing or ill-typed key takes its default, extra keys
        are ignored, so stats stored or exported before a field existed still read."""
        return cls(
            n_prompt=_count(data, "n_prompt"),
            n_prompt_evaluated=_count(data, "n_prompt_evaluated"),
            n_predicted=_count(data, "n_predicted"),
            n_drafted=_count(data, "n_drafted"),
            n_accepted=_count(data, "n_accepted"),
            acceptance=_number(data, "acceptance"),
            drafted_per_position=_counts(data, "drafted_per_position"),
            accepted_per_position=_counts(data, "accepted_per_position"),
            acceptance_per_position=_numbers(data, "acceptance_per_position"),
            mean_accepted_length=_number(data, "mean_accepted_length"),
            n_steps=_count(data, "n_steps"),
            tokens_per_second=_number(data, "tokens_per_second"),
            window_tokens_per_second=_number(data, "window_tokens_per_second"),
            ttft_s=_number(data, "ttft_s"),
            prompt_seconds=_number(data, "prompt_seconds"),
            prompt_tokens_per_second=_number(data, "prompt_tokens_per_second"),
            n_image_tokens=_count(data, "n_image_tokens"),
            image_encode_seconds=_number(data, "image_encode_seconds") or 0.0,
            decode_seconds=_number(data, "decode_seconds") or 0.0,
            verify_seconds=_number(data, "verify_seconds") or 0.0,
            mtp_depth=_count(data, "mtp_depth"),
            mtp_depth_requested=_requested_depth(data.get("mtp_depth_requested")),
            mtp_depth_now=now if _is_count(now := data.get("mtp_depth_now")) else None,
            mtp_note=_choice(data, "mtp_note", get_args(MtpNote)),
            stop_reason=_choice(data, "stop_reason", get_args(StopReason)),
            estimated_speedup_vs_plain=_number(data, "estimated_speedup_vs_plain"),
            auto_mode=_choice(data, "auto_mode", get_args(AutoMode)),
        )


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return value if _is_count(value) else 0


def _as_number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _number(data: Mapping[str, Any], key: str) -> float | None:
    return _as_number(data.get(key))


def _counts(data: Mapping[str, Any], key: str) -> tuple[int, ...]:
    value = data.get(key)
    return tuple(v for v in value if _is_count(v)) if isinstance(value, list | tuple) else ()


def _numbers(data: Mapping[str, Any], key: str) -> tuple[float | None, ...]:
    value = data.get(key)
    return tuple(_as_number(v) for v in value) if isinstance(value, list | tuple) else ()


def _requested_depth(value: object) -> int | str:
    if value == AUTO:
        return AUTO
    return value if _is_count(value) else 0


def _choice(data: Mapping[str, Any], key: str, allowed: tuple[Any, ...]) -> Any:
    value = data.get(key)
    return value if value in allowed else None


# --- what goes wrong ---------------------------------------------------------------------------

# What the adapter reports when a request fails; the app branches on this, never on message text.
FailureKind = Literal[
    "bad_file",  # a model file llama.cpp would refuse (ModelFileError)
    "not_enough_memory",  # the estimate exceeds free memory; nothing was loaded
    "load_failed",  # llama.cpp or the runtime refused to load
    "cancelled",  # the user stopped it
    "no_model",  # a reply was asked for with no model loaded
    "prompt_too_long",  # the conversation does not fit the context
    "bad_image",  # a picture that cannot be used, or pictures for a model loaded without its projector
    "generation_failed",  # an unexpected failure while replying
]


@dataclass(frozen=True)
class Failure:
    """A failed request as the app shows it: the kind to act on, one line to read, details to copy."""

    kind: FailureKind
    message: str
    details: str = ""


class EngineError(Exception):
    """An error the user can act on: the message is one line naming the problem and the fix."""

    failure_kind: ClassVar[FailureKind]


# Why a model file is refused: lets a caller react without parsing the text, e.g. offer to use an
# MTP-only file as the separate MTP file ("mtp_only").
ErrorKind = Literal[
    "missing", "unreadable", "not_gguf", "truncated", "damaged", "unsupported", "mtp_only", "mismatch", "projector"
]


class ModelFileError(EngineError):
    """A model file llama.cpp would refuse (or crash on). str(e) is one line: problem and fix."""

    failure_kind = "bad_file"

    def __init__(self, message: str, kind: ErrorKind = "damaged") -> None:
        super().__init__(" ".join(message.split()))
        self.kind: ErrorKind = kind


class ModelLoadError(EngineError):
    """Loading failed for a reason the user can act on (the message says how)."""

    failure_kind = "load_failed"


class LoadCancelled(EngineError):
    """The caller asked to stop loading."""

    failure_kind = "cancelled"


class PromptTooLong(EngineError, ValueError):
    """The prompt does not fit in the context window."""

    failure_kind = "prompt_too_long"


class NotEnoughMemory(EngineError):
    """The model's estimated memory exceeds what is free; nothing was loaded. The caller refuses or asks."""

    failure_kind = "not_enough_memory"

    def __init__(self, path: Path, needed: int, free: int, n_ctx: int) -> None:
        super().__init__(
            f"{path.name} needs about {format_bytes(needed)} at a context of {n_ctx:,} tokens "
            f"but only {format_bytes(free)} of memory is free"
        )
        self.path = path
        self.needed = needed
        self.free = free
        self.n_ctx = n_ctx
