"""What the model picker says about a model: its size, MTP heads, parts, vision projector and
memory verdict, as sentences; no widgets here."""

from __future__ import annotations

from pathlib import Path

from app.engine_calls import ModelInfo, ProjectorInfo, Verdict
from engine.api import format_bytes

_VERDICT_WORDS: dict[Verdict, tuple[str, str]] = {
    "fits": ("Fits", ""),
    "tight": ("Tight", "close other programs first"),
    "wont_fit": ("Won't fit", "choose a smaller quantization or context"),
}


def size_text(n_bytes: int, n_parts: int) -> str:
    """116.4 GiB, or 116.4 GiB in 3 parts for a set."""
    size = format_bytes(n_bytes)
    return size if n_parts <= 1 else f"{size} in {n_parts} parts"


def mtp_text(info: ModelInfo, mtp_path: str = "") -> str:
    """Where the MTP heads' weights come from, and what that means for decoding."""
    n = info.n_mtp_heads
    heads = f"{n} head" if n == 1 else f"{n} heads"
    if info.mtp_weights == "embedded":
        # inspect_model ignores a separate MTP file when the main file embeds the heads.
        where = "this file" if info.n_parts == 1 else "this set"
        return f"{heads}, in {where}" + (" (the separate MTP file is not needed)" if mtp_path else "")
    if info.mtp_weights == "separate":
        name = info.mtp_path.name if info.mtp_path else Path(mtp_path).name
        n_parts = len(info.mtp_parts)
        return f"{heads}, in {name}" + (f" ({n_parts} parts)" if n_parts > 1 else "")
    if info.mtp_weights == "absent":
        return f"{heads} declared, weights missing: runs without MTP"
    return "none: plain decoding"


def parts_note(info: ModelInfo, n_chosen: int) -> str:
    """How the files the user chose became the set that loads; "" for a single file."""
    if n_chosen > 1:
        return f"{n_chosen} files picked together: Stride loads them as one model in {info.n_parts} parts."
    if info.opened_part > 0:
        return (
            f"Opened from part {info.opened_part + 1} of {info.n_parts}: Stride loads the whole set "
            f"from part 1 ({info.path.name})."
        )
    return ""


def vision_text(projector: ProjectorInfo, info: ModelInfo) -> str:
    """The projector beside the model, said plainly: paired (it loads, pictures can be attached) or not."""
    name = projector.path.name
    if projector.n_embd_out is not None and projector.n_embd_out != info.n_embd:
        return (
            f"{name}, found beside the model, is made for another model (image tokens {projector.n_embd_out:,} "
            f"wide, this model's {info.n_embd:,}); it is not paired"
        )
    return (
        f"{name} ({format_bytes(projector.file_bytes)}), found beside the model; it loads with it, "
        "so the model reads pictures you attach"
    )


def verdict_text(verdict: Verdict, needed: int, free: int) -> str:
    word, advice = _VERDICT_WORDS[verdict]
    if free <= 0:  # memory_verdict calls an unknown amount "tight"
        return f"{word}: needs {format_bytes(needed)}; free memory could not be measured"
    text = f"{word}: needs {format_bytes(needed)} of {format_bytes(free)} free"
    return f"{text}; {advice}" if advice else text
