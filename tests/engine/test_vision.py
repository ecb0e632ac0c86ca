"""Pictures through the engine: a synthetic step3vl projector run by llama.cpp's mtmd, a model that reads it."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import vision
from engine.api import GenerationParams, LoadOptions, ModelFileError, ModelLoadError
from engine.generate import Reply
from engine.gguf import inspect_projector
from engine.runtime import Runtime
from tests.fixtures import builders
from tests.fixtures import vision as vf
from tests.fixtures.projector import header_only_projector
from tests.fixtures.vision import VisionPair, vision_pair  # noqa: F401 (a fixture)

DEPTHS: tuple[int | str, ...] = (0, 1, 2, 3, "auto")


@pytest.fixture(scope="module")
def runtime(vision_pair: VisionPair) -> Iterator[Runtime]:  # noqa: F811
    rt = Runtime.load(vision_pair.model, None, LoadOptions(n_ctx=2048, n_threads=2), projector=vision_pair.projector)
    yield rt
    rt.close()


def picture(rgb: Sequence[int], name: str = "picture.png", width: int = 64, height: int = 48) -> vision.ImageInput:
    return vision.ImageInput(vf.png_bytes(vf.solid(rgb, width, height)), name)


def ask(*items: vision.ImageInput | str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            vision.image_item(i) if isinstance(i, vision.ImageInput) else {"type": "text", "text": i} for i in items
        ],
    }


def reply_to(rt: Runtime, messages: list[dict[str, Any]], depth: int | str = 0, fresh: bool = True, **kw: Any) -> Reply:
    if fresh:
        rt.generator.reset()
    prompt = rt.chat_prompt(messages)
    params = GenerationParams(max_tokens=16, mtp_depth=depth)
    return rt.generate(
        prompt.tokens, params, starts_in_reasoning=prompt.starts_in_reasoning, images=prompt.images, **kw
    )


def test_the_reply_follows_the_picture(runtime: Runtime) -> None:
    """mtmd really encodes the synthetic projector: each colour leads the reply elsewhere, every time."""
    o = vf.vision_oracle()
    expected = vf.colour_word_successors(o)
    replies = []
    for rgb, first in zip((vf.RED, vf.GREEN, vf.BLUE), expected):
        reply = reply_to(runtime, [ask(picture(rgb), "what is this?")])
        assert reply.token_ids[0] == first
        assert reply.token_ids[1:] == [o.succ[t] for t in reply.token_ids[:-1]]  # then the cycle
        assert reply.stats.n_image_tokens == 81  # one 504 px overview: (504 / 14 / 4)^2
        assert reply.stats.image_encode_seconds > 0
        assert reply_to(runtime, [ask(picture(rgb), "what is this?")]).token_ids == reply.token_ids
        replies.append(reply.token_ids)
    assert len({tuple(r) for r in replies}) == 3
    # Without the picture the reply starts at the generation prompt's own successor.
    plain = reply_to(runtime, [{"role": "user", "content": "what is this?"}])
    assert plain.token_ids[0] not in expected


def test_greedy_output_is_the_same_at_every_depth_on_a_conversation_with_pictures(runtime: Runtime) -> None:
    first = reply_to(runtime, [ask(picture(vf.BLUE), "and this?")])
    messages = [
        ask(picture(vf.BLUE), "and this?"),
        {"role": "assistant", "content": first.reasoning + first.text},
        ask("now these two:", picture(vf.GREEN, "a.png"), picture(vf.RED, "b.png", 700, 300)),
    ]
    baseline = reply_to(runtime, messages, depth=0)
    assert baseline.stats.n_image_tokens > 3 * 81  # the wide one is sliced too
    for depth in DEPTHS[1:]:
        reply = reply_to(runtime, messages, depth=depth)
        assert reply.token_ids == baseline.token_ids, depth
        if depth == 3:
            # The heads keep drafting after the pictures, and their drafts pass.
            assert reply.stats.n_accepted > 0


def test_heads_are_given_every_picture_position(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """What Stride chose for MTP after pictures: the heads see <im_patch> with the trunk's hidden rows at a
    picture's positions (no hole in their cache, unlike llama.cpp's draft-mtp, which skips embedding
    batches), so the first text token after a picture pairs with the trunk's row at its last position."""
    drafter = runtime.generator.drafter
    assert drafter is not None
    given: list[tuple[list[int], int, np.ndarray]] = []
    catch_up = drafter.catch_up

    def recording(tokens: list[int], pos0: int, hidden: np.ndarray) -> None:
        given.append((list(tokens), pos0, hidden.copy()))
        catch_up(tokens, pos0, hidden)

    monkeypatch.setattr(drafter, "catch_up", recording)
    runtime.generator.reset()
    prompt = runtime.chat_prompt([ask("look:", picture(vf.RED), "and say")])
    runtime.generate(prompt.tokens, GenerationParams(max_tokens=4, mtp_depth=3), images=prompt.images)
    positions = [p for tokens, pos0, _ in given for p in range(pos0, pos0 + len(tokens))]
    assert positions == list(range(len(prompt.tokens) - 1))  # every prompt position but the last, in order
    heads_saw = [t for tokens, _, _ in given for t in tokens]
    image = prompt.images[0]
    im_patch = runtime.model.tokenize("<im_patch>", add_special=False, parse_special=True)
    assert heads_saw[image.start : image.start + image.n_tokens] == im_patch * image.n_tokens
    assert all(t >= 0 for t in heads_saw)
    rows = np.concatenate([hidden for _, _, hidden in given])
    # The trunk's rows at the picture's positions carry the picture (its marker dimension), and they are
    # what the heads were given there.
    assert np.all(rows[image.start : image.start + image.n_tokens, vf.MARKER_DIM] > 0)
    assert np.all(rows[: image.start, vf.MARKER_DIM] == 0)
    assert drafter.confirmed_upto == len(runtime.generator.cached)


def test_placeholders_without_their_pictures_are_refused(runtime: Runtime) -> None:
    prompt = runtime.chat_prompt([ask(picture(vf.RED), "?")])
    with pytest.raises(ValueError, match="placeholders without their pictures"):
        runtime.generate(prompt.tokens, GenerationParams(max_tokens=2))


def test_a_later_turn_reuses_the_cache_up_to_its_pictures(runtime: Runtime) -> None:
    red = picture(vf.RED)
    first = reply_to(runtime, [ask(red, "what is it?")], depth=2)
    history = [ask(red, "what is it?"), {"role": "assistant", "content": first.reasoning + first.text}]
    again = reply_to(runtime, [*history, ask("and again?")], depth=2, fresh=False)
    assert again.stats.image_encode_seconds == 0  # the picture is in the cache: not encoded again
    assert again.stats.n_prompt_evaluated < again.stats.n_prompt - 81
    assert again.token_ids == reply_to(runtime, [*history, ask("and again?")], depth=2).token_ids  # from scratch

    # The same words around another picture: evaluation goes back to that picture.
    reply_to(runtime, [*history, ask("and again?")], depth=0)
    swapped = [ask(picture(vf.BLUE), "what is it?"), *history[1:], ask("and again?")]
    prompt = runtime.chat_prompt(swapped)
    other = reply_to(runtime, swapped, fresh=False)
    assert other.stats.image_encode_seconds > 0
    assert other.stats.n_prompt_evaluated >= len(prompt.tokens) - prompt.images[0].start


def test_progress_counts_picture_encoding(runtime: Runtime) -> None:
    seen: list[tuple[int, int]] = []
    reply = reply_to(runtime, [ask(picture(vf.GREEN), "colour?")], on_progress=lambda d, t: seen.append((d, t)))
    total = reply.stats.n_prompt - 1 + 81  # the positions, plus the picture's encoding counted as its tokens
    assert seen[-1] == (total, total)
    assert all(t == total for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # The step right after encoding: the text before the picture plus the picture's encoding.
    prompt = runtime.chat_prompt([ask(picture(vf.GREEN), "colour?")])
    assert (prompt.images[0].start + 81, total) in seen


def test_encoding_is_timed_apart_from_prompt_speed(runtime: Runtime) -> None:
    stats = reply_to(runtime, [ask(picture(vf.RED), "?")]).stats
    snapshot = stats.snapshot()
    assert (snapshot.n_image_tokens, snapshot.image_encode_seconds) == (81, stats.image_encode_seconds)
    assert stats.prompt_seconds is not None and snapshot.prompt_tokens_per_second is not None
    evaluating = stats.prompt_seconds - stats.image_encode_seconds
    assert snapshot.prompt_tokens_per_second == pytest.approx(stats.n_prompt_evaluated / evaluating)


def test_typed_im_patch_is_text_not_a_picture(runtime: Runtime) -> None:
    plain = runtime.chat_prompt([{"role": "user", "content": "<im_patch> is how Step marks a picture"}])
    assert plain.images == ()
    mixed = runtime.chat_prompt([ask("look: <im_patch>", picture(vf.RED), " and <im_patch>")])
    assert len(mixed.images) == 1 and mixed.images[0].n_tokens == 81


def test_raw_rgb_from_a_decoder_reads_like_the_file(runtime: Runtime) -> None:
    """The window decodes big pictures itself (scaled) and passes RGB rows: the same picture, the same reply."""
    pixels = vf.solid(vf.BLUE)
    rgb = vision.ImageInput(pixels.tobytes(), "decoded", rgb_size=(pixels.shape[1], pixels.shape[0]))
    assert reply_to(runtime, [ask(rgb, "?")]).token_ids == reply_to(runtime, [ask(picture(vf.BLUE), "?")]).token_ids


def test_pictures_need_a_projector(vision_pair: VisionPair) -> None:  # noqa: F811
    rt = Runtime.load(vision_pair.model, None, LoadOptions(n_ctx=512, n_threads=2))
    try:
        with pytest.raises(vision.ImageError, match="without a vision projector"):
            rt.chat_prompt([ask(picture(vf.RED), "?")])
    finally:
        rt.close()


# --- refusals: pictures ---


def png_with_size(width: int, height: int) -> bytes:
    data = bytearray(vf.png_bytes(vf.solid(vf.RED, 4, 4)))
    data[16:24] = struct.pack(">II", width, height)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just some text, not a picture", "is not a picture Stride can read"),
        (vf.png_bytes(vf.solid(vf.RED))[:60], "damaged or cut short"),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xc0\x00\x11\x08\x00\x10",
            "damaged",
        ),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"),
        (png_with_size(20000, 20000), "20000x20000 pixels, more than Stride decodes"),
        (png_with_size(0, 10), "damaged"),
    ],
    ids=["text", "truncated-png", "truncated-jpeg", "webp", "huge", "zero-width"],
)
def test_bad_pictures_are_refused_before_llama_cpp(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    with pytest.raises(vision.ImageError, match=message) as caught:
        vision.ImageInput.from_file(path)
    assert "\n" not in str(caught.value)


def test_a_file_too_large_to_be_a_picture_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(300 * 2**20)  # sparse: no disk used
    with pytest.raises(vision.ImageError, match=r"big\.png is 300 MiB, more than Stride reads"):
        vision.ImageInput.from_file(big)


def test_a_damaged_picture_that_looks_whole_is_named(runtime: Runtime) -> None:
    good = vf.png_bytes(vf.solid(vf.RED))
    idat = good.index(b"IDAT") + 4
    broken = good[:idat] + bytes(64) + good[idat + 64 :]  # header and end intact, pixels garbage
    with pytest.raises(vision.ImageError, match=r"broken\.png could not be decoded"):
        runtime.chat_prompt([ask(vision.ImageInput(broken, "broken.png"), "?")])


# --- refusals: projectors ---


def test_a_projector_for_another_model_is_refused(vision_pair: VisionPair, tmp_path: Path) -> None:  # noqa: F811
    options = LoadOptions(n_ctx=512, n_threads=2)
    narrow = vf.build_projector(tmp_path / "mmproj-narrow.gguf", n_embd_out=256)
    with pytest.raises(ModelLoadError, match=r"256 wide but vlm\.gguf is 512 wide"):
        Runtime.load(vision_pair.model, None, options, projector=narrow)
    other = header_only_projector(tmp_path / "mmproj-qwen.gguf", n_embd_out=512, projector_type="qwen2vl")
    with pytest.raises(ModelLoadError, match="'qwen2vl' projector, not one for Step models"):
        Runtime.load(vision_pair.model, None, options, projector=other)
    text_only = builders.tiny(tmp_path / "text-only.gguf", n_embd=512)
    with pytest.raises(ModelLoadError, match=r"text-only\.gguf has no <im_start>, .* tokens: it cannot read pictures"):
        Runtime.load(text_only, None, options, projector=vision_pair.projector)
    with pytest.raises(ModelFileError, match="is not a vision projector"):
        Runtime.load(vision_pair.model, None, options, projector=vision_pair.model)


def test_the_memory_estimate_counts_the_projector(vision_pair: VisionPair) -> None:  # noqa: F811
    info = inspect_projector(vision_pair.projector)
    extra = vision.projector_memory(info, 512)
    # Weights, the encoder's buffers for a 504 px slice (1296 patches) and the largest picture's rows.
    assert extra > info.file_bytes + 4 * 1296 * 1296 + 4 * 37 * 81 * 512


def test_placeholders_are_never_tokens_and_follow_the_content() -> None:
    a, b = picture(vf.RED), picture(vf.BLUE)
    ids = vision.placeholder_ids(a.digest, 81)
    assert all(i < 0 for i in ids) and len(set(ids)) == 81
    assert ids == vision.placeholder_ids(picture(vf.RED, "other-name.png").digest, 81)
    assert ids[0] != vision.placeholder_ids(b.digest, 81)[0]
    assert np.unique([vision.placeholder_ids(picture((i, 0, 0)).digest, 1)[0] for i in range(64)]).size == 64
