"""A loaded model ready to talk: files inspected, weights loaded, contexts made.

`Runtime.load` is where a user's GGUF (and optional separate MTP-only GGUF)
becomes a trunk context plus, when the heads exist, an MTP draft context.
Every failure a user can cause comes out as a `ModelLoadError` whose message
names the problem and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import automemory, chat, reasoning, vision
from engine.api import (
    AUTO,
    GenerationParams,
    LoadCancelled,
    LoadOptions,
    ModelLoadError,
    NotEnoughMemory,
)
from engine.generate import Generator, Reply
from engine.gguf import (
    ModelInfo,
    ModelPaths,
    effective_context,
    estimate_memory,
    free_memory_bytes,
    inspect_model,
    inspect_projector,
    memory_verdict,
)
from engine.llama import Context, ContextParams, LlamaError, Model
from engine.mtp import MtpDrafter

LoadProgress = Callable[[float, str], None]  # fraction 0..1, what is happening


@dataclass(frozen=True)
class ChatPrompt:
    tokens: list[int]  # a picture's positions hold placeholders (engine.vision)
    starts_in_reasoning: bool
    warning: str | None
    images: tuple[vision.PromptImage, ...] = ()


class Runtime:
    """A model with its contexts; owns llama.cpp resources until close()."""

    def __init__(
        self,
        info: ModelInfo,
        model: Model,
        mtp_model: Model | None,
        target: Context,
        draft: Context | None,
        options: LoadOptions,
        projector: vision.Vision | None = None,
    ) -> None:
        self.info = info
        self.vision = projector
        self.model = model
        self.mtp_model = mtp_model
        self.target = target
        self.draft = draft
        self.options = options
        n_heads = (mtp_model or model).n_mtp_layers if draft else 0
        drafter = MtpDrafter(draft, n_heads) if draft else None
        heads = info.layers[info.n_layer :]
        # Heads with sliding-window attention need only their window of positions to draft exactly.
        window = info.n_swa if info.n_swa > 0 and heads and all(layer.swa for layer in heads) else None
        self.generator = Generator(
            model, target, drafter, weights_absent=info.mtp_weights == "absent", head_window=window
        )
        # What Auto learned about these files on this machine at an earlier load.
        self._auto_key = automemory.memory_key([*info.parts, *info.mtp_parts], options.threads()) if drafter else None
        if self._auto_key and (remembered := automemory.load(self._auto_key)) is not None:
            self.generator.auto(n_heads).restore(remembered)
        self.template = model.chat_template()

    @property
    def n_heads(self) -> int:
        return self.generator.n_heads

    @property
    def n_ctx(self) -> int:
        """Positions a reply may fill: the effective context asked for; a reply that reaches it stops as
        context_full."""
        return self.target.n_ctx

    @property
    def n_ctx_allocated(self) -> int:
        """The cache llama.cpp made for it, rounded up to a multiple of 256."""
        return self.target.n_ctx_allocated

    @classmethod
    def load(
        cls,
        path: ModelPaths,
        mtp_path: ModelPaths | None = None,
        options: LoadOptions = LoadOptions(),
        *,
        progress: LoadProgress | None = None,
        should_cancel: Callable[[], bool] = lambda: False,
        check_memory: bool = False,
        projector: Path | None = None,
    ) -> Runtime:
        """Inspect, then load: `path` is a model file, any part of a multi-part set or several parts of one
        (the whole set loads), likewise `mtp_path`. Raises ModelFileError, ModelLoadError or LoadCancelled, and with
        check_memory NotEnoughMemory (before loading anything) when the estimate exceeds free memory.
        `projector`: a vision projector (mmproj) for pictures, checked against the model."""
        info = inspect_model(path, mtp_path)
        n_ctx = effective_context(options.n_ctx, info.context_length)
        projector_info = inspect_projector(projector) if projector else None
        if projector_info:
            try:
                vision.check_projector(projector_info, info)
            except vision.ImageError as exc:
                raise ModelLoadError(str(exc)) from None
        if check_memory:
            needed, free = estimate_memory(info, n_ctx).total, free_memory_bytes()
            if projector_info:
                needed += vision.projector_memory(projector_info, info.n_embd)
            if memory_verdict(needed, free) == "wont_fit":
                raise NotEnoughMemory(info.path, needed, free, n_ctx)
        separate = info.mtp_weights == "separate"
        trunk_done = 0.75 if separate else 0.95  # progress fraction when the trunk file is loaded

        def stage(start: float, width: float, what: str) -> Callable[[float], bool]:
            def report(fraction: float) -> bool:
                if progress:
                    progress(start + width * fraction, what)
                return not should_cancel()

            return report

        model = mtp_model = None
        target = draft = None
        seeing: vision.Vision | None = None
        try:
            model = _load_model(
                info.parts, info.mtp_weights == "embedded", options, stage(0.0, trunk_done, "Loading weights")
            )
            if separate:
                mtp_model = _load_model(
                    info.mtp_parts, True, options, stage(trunk_done, 0.95 - trunk_done, "Loading MTP heads")
                )
            if progress:
                progress(0.96, "Creating contexts")
            cparams = ContextParams(
                n_ctx=n_ctx,
                n_threads=options.threads(),
                n_batch=options.n_batch,
                n_ubatch=options.n_batch,
                type_k=options.kv_type,
                type_v=options.kv_type,
            )
            target = Context(model, cparams, mtp=False)
            if info.mtp_weights in ("embedded", "separate"):
                draft = Context(mtp_model or model, cparams, mtp=True)
            if projector:
                if progress:
                    progress(0.98, "Loading the vision projector")
                seeing = vision.Vision(projector, model, info, n_threads=options.threads())
            if should_cancel():
                raise LoadCancelled(str(info.path))
        except BaseException as exc:
            for resource in (seeing, draft, target, mtp_model, model):
                if resource is not None:
                    resource.close()
            if isinstance(exc, LlamaError):
                raise ModelLoadError(f"{info.path.name}: {exc}") from exc
            if isinstance(exc, vision.ImageError):
                raise ModelLoadError(str(exc)) from exc
            raise
        if progress:
            progress(1.0, "Ready")
        return cls(info, model, mtp_model, target, draft, options, seeing)

    def close(self) -> None:
        for resource in (self.vision, self.draft, self.target, self.mtp_model, self.model):
            if resource is not None:
                resource.close()

    # Prompts -----------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Raw text as the model sees it: BOS if the model wants one, special tokens not parsed."""
        return self.model.tokenize(text, add_special=True, parse_special=False)

    def chat_prompt(
        self, messages: Sequence[Mapping[str, Any]], variables: Mapping[str, Any] | None = None
    ) -> ChatPrompt:
        """Render messages with the model's own template (sandboxed) and tokenize them.

        Content may hold pictures (engine.vision); without a projector that is a vision.ImageError.
        """
        images: list[vision.ImageInput] = []
        if vision.has_images(messages):
            if self.vision is None:
                raise vision.ImageError(
                    "this model was loaded without a vision projector, so it reads text only; "
                    "load it with its mmproj file to use pictures"
                )
            messages, images = vision.split_images(messages, self.vision.marker)
        bos_text = self.model.piece(self.model.bos).decode("utf-8", "replace") if self.model.add_bos else ""
        text, warning = chat.render_or_fallback(
            self.template,
            messages,
            add_generation_prompt=True,
            bos_token=bos_text,
            eos_token=self.model.piece(self.model.eos).decode("utf-8", "replace"),
            variables=variables,
        )
        # The template writes the BOS text itself; let the tokenizer add the real token once.
        if bos_text and text.startswith(bos_text):
            text = text[len(bos_text) :]
        starts_in_reasoning = reasoning.generation_starts_in_reasoning(text)
        if self.vision is not None and images:
            tokens, placed = self.vision.tokenize(text, images)
            return ChatPrompt(tokens, starts_in_reasoning, warning, placed)
        tokens = self.model.tokenize(text, add_special=True, parse_special=True)
        return ChatPrompt(tokens, starts_in_reasoning, warning)

    def fit_chat_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        variables: Mapping[str, Any] | None,
        *,
        reserve: int,
        drop_oldest: bool,
    ) -> tuple[ChatPrompt, int]:
        """Render the chat; if it leaves fewer than `reserve` tokens free, drop the oldest turns when allowed.

        System messages and the newest message are always kept. Returns the prompt and how
        many messages were dropped (the caller announces it).
        """
        kept = list(messages)
        dropped = 0
        while True:
            prompt = self.chat_prompt(kept, variables)
            if not drop_oldest or len(prompt.tokens) + reserve <= self.target.n_ctx:
                return prompt, dropped
            oldest = next((i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"), None)
            if oldest is None:
                return prompt, dropped
            del kept[oldest]
            dropped += 1

    def generate(self, tokens: Sequence[int], params: GenerationParams, **kw: Any) -> Reply:
        reply = self.generator.generate(tokens, params, **kw)
        if params.mtp_depth == AUTO and self._auto_key and self.n_heads:
            automemory.save(self._auto_key, self.generator.auto(self.n_heads).state())
        return reply

    def forget_auto(self) -> None:
        """Forget what Auto learned about this model here, in memory and on disk."""
        self.generator.forget_auto()
        if self._auto_key:
            automemory.forget(self._auto_key)


def _load_model(
    parts: Sequence[Path], load_mtp: bool, options: LoadOptions, progress: Callable[[float], bool]
) -> Model:
    return Model(parts, load_mtp=load_mtp, n_gpu_layers=options.n_gpu_layers, progress=progress)
