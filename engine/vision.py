"""Pictures in a chat: checked before llama.cpp sees them, placed in the prompt, encoded by the projector.

A message's content is a string, or a list of items: {"type": "text", "text": ...} and
{"type": "image", "image": ImageInput}. Each picture stands in the rendered prompt as a marker
that only this process knows (Step's own `<im_patch>` can be typed, and typed text must never
become a picture); mtmd splits the prompt there into text and picture chunks. In the token list
a picture's positions hold negative placeholder ids derived from its content hash, so the KV
cache is reused across turns exactly as far as the same pictures in the same places reach.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.api import EngineError
from engine.gguf import ModelInfo, ProjectorInfo, inspect_projector
from engine.gguf.reader import read_gguf
from engine.llama import ImageChunk, LlamaError, Model, Projector

# Step3-VL's picture tokens, which mtmd looks up in the language model's vocabulary.
IMAGE_TOKENS = ("<im_start>", "<im_end>", "<patch_start>", "<patch_end>", "<patch_newline>")
HEAD_TOKEN = "<im_patch>"  # what the MTP heads are given at picture positions (see generate.py)
PROJECTOR_TYPES = ("step3vl",)  # the projectors of Step 3.x vision models in clip.cpp
# llama.cpp decodes the whole file before scaling it to 3024 px: above this it would need
# gigabytes (RGB plus the decoder's own buffers), so such a picture is refused, not decoded.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 256 * 2**20  # a file larger than an uncompressed MAX_PIXELS picture is not read at all
LONGEST_EDGE = 3024  # step3vl scales larger pictures down to this
SLICE = 504  # step3vl's crop size


class ImageError(EngineError, ValueError):
    """A picture that cannot be used; the message names it, the problem and the fix."""

    failure_kind = "bad_image"


@dataclass(frozen=True)
class ImageInput:
    """One picture: a file's bytes (PNG, JPEG, GIF, BMP), or raw RGB rows when `rgb_size` is set
    (a caller that decoded and scaled it already, e.g. Qt's QImageReader for a huge photo)."""

    data: bytes
    name: str = "image"
    rgb_size: tuple[int, int] | None = None  # (width, height) of raw RGB data

    @classmethod
    def from_file(cls, path: Path) -> ImageInput:
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ImageError(
                    f"{path.name} is {size / 2**20:.0f} MiB, more than Stride reads for a picture "
                    f"({MAX_FILE_BYTES // 2**20} MiB); save it smaller (the model sees at most {LONGEST_EDGE} px)"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{path} is a folder; give a picture file") from None
        except OSError as exc:
            raise ImageError(f"{path} cannot be read: {exc.strerror or exc}") from None
        image = cls(data, path.name)
        image_size(image)
        return image

    @cached_property
    def digest(self) -> str:
        """Content hash (SHA-256, hex): the picture's identity in the KV cache and on disk."""
        h = hashlib.sha256()
        if self.rgb_size is not None:
            h.update(b"rgb%dx%d:" % self.rgb_size)
        h.update(self.data)
        return h.hexdigest()


def image_item(image: ImageInput) -> dict[str, Any]:
    """A message content item holding a picture."""
    return {"type": "image", "image": image}


def image_size(image: ImageInput) -> tuple[int, int]:
    """(width, height) from the header; ImageError for anything llama.cpp should not be given."""
    if image.rgb_size is not None:
        width, height = image.rgb_size
        if width <= 0 or height <= 0 or len(image.data) != width * height * 3:
            raise ImageError(f"{image.name}: raw RGB data does not match {width}x{height}")
    else:
        width, height = _sniff(image.data, image.name)
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{image.name} is {width}x{height} pixels, more than Stride decodes "
            f"({MAX_PIXELS // 1_000_000} megapixels); scale it down "
            f"(the model sees at most {LONGEST_EDGE} px on the longest side)"
        )
    return width, height


def _sniff(data: bytes, name: str) -> tuple[int, int]:
    damaged = ImageError(f"{name} is damaged or cut short; open it in an image viewer and save it again")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise damaged
        width, height = struct.unpack(">II", data[16:24])
        if b"IEND" not in data[-64:]:
            raise damaged
    elif data.startswith(b"\xff\xd8\xff"):
        width, height, frame_end = _jpeg_size(data, damaged)
        if data.rfind(b"\xff\xd9") < frame_end:  # no end-of-image marker after the picture's frame
            raise damaged
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            raise damaged
        width, height = struct.unpack("<HH", data[6:10])
        if not data.rstrip(b"\0").endswith(b";"):
            raise damaged
    elif data.startswith(b"BM") and len(data) >= 26:
        (declared,) = struct.unpack("<I", data[2:6])
        width, height = struct.unpack("<ii", data[18:26])
        height = abs(height)
        if len(data) < declared:
            raise damaged
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise ImageError(f"{name} is a WebP picture, which llama.cpp cannot read; convert it to PNG or JPEG")
    else:
        raise ImageError(f"{name} is not a picture Stride can read; give a PNG, JPEG, GIF or BMP file")
    if width <= 0 or height <= 0:
        raise damaged
    return width, height


def _jpeg_size(data: bytes, damaged: ImageError) -> tuple[int, int, int]:
    """Width, height and where the frame header ends, from the first SOF marker."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise damaged
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(data):
                raise damaged
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height, i + 2 + length
        i += 2 + length
    raise damaged


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(isinstance(m.get("content"), list) and any(_is_image(item) for item in m["content"]) for m in messages)


def _is_image(item: object) -> bool:
    return isinstance(item, Mapping) and item.get("type") == "image"


def split_images(messages: Sequence[Mapping[str, Any]], marker: str) -> tuple[list[dict[str, Any]], list[ImageInput]]:
    """Messages with string content (each picture replaced by `marker`) and the pictures in order."""
    out: list[dict[str, Any]] = []
    images: list[ImageInput] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            out.append(dict(message))
            continue
        parts: list[str] = []
        for item in content:
            if _is_image(item):
                image = item.get("image")
                if not isinstance(image, ImageInput):
                    raise ImageError("an image item holds no picture")
                images.append(image)
                parts.append(marker)
            elif isinstance(item, Mapping) and item.get("type") == "text":
                parts.append(str(item.get("text", "")))
        out.append({**message, "content": "".join(parts)})
    return out, images


def placeholder_ids(digest: str, n_tokens: int, offset: int = 0) -> list[int]:
    """Negative ids, never a real token, that are equal exactly when the pictures are (offset: where a
    slice's tokens start among its picture's)."""
    base = int(digest[:15], 16) + offset
    return [-1 - ((base + i) % (1 << 60)) for i in range(n_tokens)]


@dataclass
class PromptImage:
    """A picture's (or one slice's) place in a prompt: positions start..start+n_tokens, encoded when first needed."""

    start: int
    digest: str
    head_token: int
    chunk: ImageChunk = field(repr=False)

    @property
    def n_tokens(self) -> int:
        return self.chunk.n_tokens

    def embed(self) -> Any:
        """The picture's embedding rows, (n_tokens, n_embd) float32."""
        try:
            return self.chunk.encode()
        except LlamaError as exc:
            raise ImageError(f"the picture could not be encoded: {exc}") from exc


def check_projector(projector: ProjectorInfo, model: ModelInfo) -> None:
    """Refuse a projector made for another model, before llama.cpp loads it (ImageError)."""
    name = projector.path.name
    if model.architecture in ("step35",) and projector.projector_type not in PROJECTOR_TYPES:
        raise ImageError(
            f"{name} is a '{projector.projector_type}' projector, not one for Step models "
            f"({', '.join(PROJECTOR_TYPES)}); choose the mmproj file published with this model"
        )
    if projector.n_embd_out is not None and projector.n_embd_out != model.n_embd:
        raise ImageError(
            f"{name} makes image tokens {projector.n_embd_out} wide but {model.path.name} is {model.n_embd} wide: "
            "it belongs to another model; choose the mmproj file published with this model"
        )


def missing_image_tokens(model: Model) -> list[str]:
    """Picture tokens the projector needs that the model's vocabulary lacks."""
    missing = []
    for text in (*IMAGE_TOKENS, HEAD_TOKEN):
        tokens = model.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) != 1 or model.piece(tokens[0]) != text.encode():
            missing.append(text)
    return missing


def projector_memory(info: ProjectorInfo, n_embd_text: int) -> int:
    """Bytes the projector adds: its weights, the encoder's work buffers for one 504 px slice,
    and the embedding rows of the largest picture (image tokens take context positions, which
    the KV-cache estimate already counts)."""
    f = read_gguf(info.path)
    width = f.uint("clip.vision.embedding_length") or 0
    n_ff = f.uint("clip.vision.feed_forward_length") or 4 * width
    n_head = f.uint("clip.vision.attention.head_count") or 1
    patch = f.uint("clip.vision.patch_size") or 14
    n_patches = (SLICE // patch) ** 2
    compute = 4 * (n_patches * (4 * width + 2 * n_ff) + n_head * n_patches * n_patches)
    n_slices = (LONGEST_EDGE // SLICE) ** 2 + 1  # the slices of the largest picture plus its overview
    rows = n_slices * n_patches // 16  # step3vl merges 4x4 patches into one token
    return info.file_bytes + compute + 4 * rows * n_embd_text


class Vision:
    """A model's projector, loaded and checked: turns rendered prompts with pictures into tokens."""

    def __init__(self, path: Path, model: Model, info: ModelInfo, *, n_threads: int) -> None:
        projector = inspect_projector(path)
        check_projector(projector, info)
        # step3vl wraps pictures in these tokens (other projectors have their own, which mtmd checks).
        missing = missing_image_tokens(model) if projector.projector_type in PROJECTOR_TYPES else []
        if missing:
            raise ImageError(
                f"{info.path.name} has no {', '.join(missing)} token{'s' if len(missing) > 1 else ''}: "
                f"it cannot read pictures, so {path.name} does not belong to it; "
                "load the projector with the model it was published with"
            )
        self.info = projector
        # A vocabulary without <im_patch> (not a Step model) splits it: its first piece stands in.
        self.head_token = model.tokenize(HEAD_TOKEN, add_special=False, parse_special=True)[0]
        self.marker = f"<__stride_picture_{secrets.token_hex(8)}__>"
        try:
            self.projector = Projector(path, model, n_threads=n_threads, marker=self.marker)
        except LlamaError as exc:
            raise ImageError(str(exc)) from exc

    def close(self) -> None:
        self.projector.close()

    def tokenize(self, text: str, images: Sequence[ImageInput]) -> tuple[list[int], tuple[PromptImage, ...]]:
        """The prompt's tokens (placeholders at picture positions) and where each picture goes."""
        if text.count(self.marker) != len(images):
            raise ImageError("the chat template dropped a picture; this model's template cannot show pictures")
        for image in images:
            image_size(image)
        try:
            chunks = self.projector.tokenize(text, images)
        except LlamaError as exc:
            raise ImageError(
                f"{_which(exc, images)} could not be decoded: the file is damaged; "
                "open it in an image viewer and save it again"
            ) from exc
        tokens: list[int] = []
        placed: list[PromptImage] = []
        offsets = [0] * len(images)  # tokens placed so far of each picture (a large one comes in slices)
        for chunk in chunks:
            if isinstance(chunk, ImageChunk):
                digest = images[chunk.picture].digest
                placed.append(PromptImage(len(tokens), digest, self.head_token, chunk))
                tokens.extend(placeholder_ids(digest, chunk.n_tokens, offsets[chunk.picture]))
                offsets[chunk.picture] += chunk.n_tokens
            else:
                tokens.extend(chunk)
        return tokens, tuple(placed)


def _which(exc: LlamaError, images: Sequence[ImageInput]) -> str:
    """The picture a decoding error names ("picture 2 could not be decoded")."""
    words = str(exc).split()
    if len(words) > 1 and words[0] == "picture" and words[1].isdigit() and int(words[1]) <= len(images):
        return images[int(words[1]) - 1].name
    return "a picture"
