"""stride-cli: inspect, generate and benchmark from the command line (machine-readable with --json).

Every error a user can cause exits with code 2 and one `error:` line on stderr
that names the problem and the fix; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import vision
from engine.api import (
    AUTO,
    DEMO_NAME,
    MTP_NOTE_TEXT,
    Delta,
    GenerationParams,
    LoadCancelled,
    LoadOptions,
    ModelFileError,
    ModelLoadError,
    NotEnoughMemory,
    PromptTooLong,
    SamplerParams,
    format_bytes,
    format_params,
)
from engine.cli_parser import DEFAULT_CTX, DEFAULT_HOST, build_parser
from engine.demo import ensure_demo_model
from engine.generate import Reply
from engine.gguf import (
    ModelInfo,
    ProjectorInfo,
    effective_context,
    estimate_memory,
    inspect_model,
    inspect_projector,
    projector_beside,
)
from engine.logs import configure_logging
from engine.options import EXIT_USAGE
from engine.runtime import Runtime
from engine.stats import ReplyStats

# A closed stdout (`stride-cli generate ... | head`) ends the program quietly with the status a Unix
# tool killed by SIGPIPE has in a shell, 128 + 13, so `set -o pipefail` scripts see what they see of
# `yes` or `cat` there.
EXIT_BROKEN_PIPE = 141


class CliError(Exception):
    """A problem the user can fix; printed as one `error:` line, exit code 2."""


# Commands -------------------------------------------------------------------------


class _Answer:
    """stdout as the answer streams to it: notes on stderr wait until its line is ended, so they never
    glue onto the text on a terminal, and what stdout gets always ends with a newline."""

    def __init__(self) -> None:
        self.mid_line = False

    def write(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        if self.mid_line:
            sys.stdout.write("\n")
            self.mid_line = False
        sys.stdout.flush()


_answer = _Answer()


def _note(text: str) -> None:
    _answer.end_line()
    print(f"note: {text}", file=sys.stderr, flush=True)


def _model_path(text: str) -> Path:
    if text == DEMO_NAME:
        try:
            return ensure_demo_model()
        except OSError as exc:
            raise CliError(
                f"cannot create the demo model ({exc}); check that the user data folder is writable"
            ) from exc
    return Path(text)


def _context(requested: int | None, info: ModelInfo) -> int:
    """The context this run uses (inspect and generate alike), with a note when --ctx was lowered."""
    n_ctx = effective_context(requested or DEFAULT_CTX, info.context_length)
    if requested is not None and n_ctx < requested:
        _note(f"--ctx {requested:,} is more than the model was trained for; using its {n_ctx:,} tokens")
    return n_ctx


def _mtp_unused_note(info: ModelInfo) -> None:
    if info.mtp_unused is not None:
        _note(
            f"--mtp-model {info.mtp_unused.name} is not needed: {info.path.name} has its MTP heads inside, "
            "and those are used"
        )


def info_json(info: ModelInfo, n_ctx: int) -> dict[str, Any]:
    memory = estimate_memory(info, n_ctx)
    projector = projector_beside(info.path)
    return {
        "kind": "model",
        "path": str(info.path),
        "n_parts": info.n_parts,
        "parts": [str(p) for p in info.parts],
        "architecture": info.architecture,
        "name": info.name,
        "n_params": info.n_params,
        "file_bytes": info.file_bytes,
        "mtp_file_bytes": info.mtp_file_bytes,
        "quantization": info.quantization,
        "quantization_types": dict(info.quantization_types),
        "context_length": info.context_length,
        "n_layer": info.n_layer,
        "n_embd": info.n_embd,
        "n_vocab": info.n_vocab,
        "n_expert": info.n_expert,
        "n_expert_used": info.n_expert_used,
        "n_mtp_heads": info.n_mtp_heads,
        "mtp_weights": info.mtp_weights,
        "mtp_path": str(info.mtp_path) if info.mtp_path else None,
        "mtp_parts": [str(p) for p in info.mtp_parts],
        "mtp_unused": str(info.mtp_unused) if info.mtp_unused else None,
        "has_chat_template": info.has_chat_template,
        "mmproj": str(projector) if projector else None,
        "estimated_memory_bytes": memory.total,
        "estimated_memory": {
            "weights": memory.weights,
            "kv_cache": memory.kv_cache,
            "compute": memory.compute,
            "mtp_context": memory.mtp_context,
        },
        "ctx": n_ctx,
    }


def projector_json(info: ProjectorInfo) -> dict[str, Any]:
    return {
        "kind": "vision_projector",
        "path": str(info.path),
        "projector_type": info.projector_type,
        "n_embd_out": info.n_embd_out,
        "image_size": info.image_size,
        "n_params": info.n_params,
        "file_bytes": info.file_bytes,
        "quantization": info.quantization,
    }


def _files_text(paths: Sequence[Path], total: int) -> str:
    if len(paths) == 1:
        return format_bytes(total)
    return f"{format_bytes(total)} in {len(paths)} parts ({paths[0].name} ... {paths[-1].name})"


def cmd_inspect(args: argparse.Namespace) -> int:
    path = _model_path(args.model)
    try:
        info = inspect_model(path, args.mtp_model)
    except ModelFileError as exc:
        if exc.kind != "projector":
            raise CliError(str(exc)) from exc
        return _inspect_projector(path, args.json)
    _mtp_unused_note(info)
    n_ctx = _context(args.ctx, info)
    data = info_json(info, n_ctx)
    if args.mmproj:
        projector = _checked_projector(args.mmproj, info)
        data["mmproj"] = str(projector.path)
        data["projector"] = projector_json(projector)
        data["estimated_memory_bytes"] += vision.projector_memory(projector, info.n_embd)
    if args.json:
        print(json.dumps(data))
        return 0
    where = info.mtp_path.name if info.mtp_path else ""
    heads = {
        "embedded": "in the model's files",
        "separate": f"in {where}",
        "absent": "declared, weights missing: runs without MTP",
        "none": "none",
    }[info.mtp_weights]
    print(f"{info.name or info.path.name}  ({info.architecture}, {info.quantization})")
    if info.opened_part:
        print(f"  note            {path.name} is part {info.opened_part + 1} of {info.n_parts}: the whole set is read")
    print(f"  parameters      {format_params(info.n_params)}")
    print(f"  files           {_files_text(info.parts, info.file_bytes)}")
    if info.n_expert:
        print(f"  experts         {info.n_expert} routed, {info.n_expert_used} per token")
    print(f"  context         {info.context_length:,} tokens (trained)")
    print(f"  MTP heads       {info.n_mtp_heads} ({heads})")
    print(f"  chat template   {'yes' if info.has_chat_template else 'no'}")
    if data["mmproj"]:
        how = "given; it fits the model" if args.mmproj else "beside the model"
        print(f"  vision file     {Path(data['mmproj']).name} ({how})")
    print(f"  memory needed   {format_bytes(data['estimated_memory_bytes'])} at a context of {n_ctx:,} tokens")
    return 0


def _inspect_projector(path: Path, as_json: bool) -> int:
    try:
        info = inspect_projector(path)
    except ModelFileError as exc:
        raise CliError(str(exc)) from exc
    if as_json:
        print(json.dumps(projector_json(info)))
        return 0
    print(f"{path.name}  (vision projector, {info.projector_type}, {info.quantization})")
    print(f"  parameters      {format_params(info.n_params)}")
    print(f"  file size       {format_bytes(info.file_bytes)}")
    if info.n_embd_out:
        print(f"  output width    {info.n_embd_out} (the language model's width)")
    print("  use             open the language model; Stride pairs the projector found beside it")
    return 0


def _checked_projector(path: Path, info: ModelInfo) -> ProjectorInfo:
    """An --mmproj file read and checked against the model."""
    try:
        projector = inspect_projector(path)
        vision.check_projector(projector, info)
    except (ModelFileError, vision.ImageError) as exc:
        raise CliError(str(exc)) from exc
    return projector


def _projector_path(args: argparse.Namespace, info: ModelInfo) -> Path | None:
    """--mmproj, or with --image the projector beside the model (with a note)."""
    if getattr(args, "mmproj", None) is not None:
        return Path(args.mmproj)
    if not getattr(args, "image", None):
        return None
    found = projector_beside(info.path)
    if found is None:
        raise CliError(
            "--image needs the model's vision projector: give --mmproj FILE "
            f"(no mmproj*.gguf is beside {info.path.name})"
        )
    _note(f"reading pictures with {found.name}, the vision projector beside the model")
    return found


def _load(args: argparse.Namespace) -> Runtime:
    path = _model_path(args.model)
    try:
        # Read first: the same effective context (and its note) as `inspect`, and the memory check on it.
        info = inspect_model(path, args.mtp_model)
        n_ctx = _context(args.ctx, info)
        options = LoadOptions(n_ctx=n_ctx, n_threads=args.threads or 0, n_gpu_layers=args.gpu_layers)
        runtime = Runtime.load(
            path,
            args.mtp_model,
            options,
            check_memory=not args.ignore_memory_check,
            projector=_projector_path(args, info),
        )
    except NotEnoughMemory as exc:
        raise CliError(f"{exc}; close other programs, lower --ctx, or pass --ignore-memory-check") from exc
    except (ModelFileError, ModelLoadError) as exc:
        raise CliError(str(exc)) from exc
    _mtp_unused_note(runtime.info)
    return runtime


def _check_fits(runtime: Runtime, n_prompt: int, ctx_given: bool) -> None:
    """A prompt needs its own positions and one for the reply's first token."""
    if n_prompt + 1 > runtime.n_ctx:
        size = f"--ctx is {runtime.n_ctx:,}" if ctx_given else f"the context holds {runtime.n_ctx:,} tokens"
        raise CliError(
            f"the prompt is {n_prompt:,} tokens but {size}: it needs at least {n_prompt + 1:,} "
            "(the prompt and one token of reply); raise --ctx or shorten the prompt"
        )


def reply_json(reply: Reply, chat: bool, runtime: Runtime) -> dict[str, Any]:
    data: dict[str, Any] = {"text": reply.text, "token_ids": reply.token_ids}
    if chat:
        data["reasoning"] = reply.reasoning
    data.update(reply.stats.snapshot().to_json())
    # The context the reply may fill (context_full fires there), and the cache llama.cpp rounded it up to.
    data["ctx"] = runtime.n_ctx
    data["ctx_allocated"] = runtime.n_ctx_allocated
    return data


def cmd_generate(args: argparse.Namespace) -> int:
    if args.prompt_file is not None:
        try:
            prompt_text = args.prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read --prompt-file {args.prompt_file}: {exc}") from exc
    else:
        prompt_text = args.prompt
    if args.system is not None and not args.chat:
        raise CliError("--system needs --chat (a system prompt only exists in a chat)")
    if args.image and not args.chat:
        raise CliError("--image needs --chat (pictures go into a chat message)")
    try:
        images = [vision.ImageInput.from_file(p) for p in args.image]  # checked before the model loads
    except vision.ImageError as exc:
        raise CliError(str(exc)) from exc
    runtime = _load(args)
    try:
        starts_in_reasoning: bool | None = None
        if args.chat:
            content: str | list[dict[str, Any]] = prompt_text
            if images:
                content = [*map(vision.image_item, images), {"type": "text", "text": prompt_text}]
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
                {"role": "user", "content": content}
            ]
            try:
                prompt = runtime.chat_prompt(messages)
            except vision.ImageError as exc:
                raise CliError(str(exc)) from exc
            pictures = prompt.images
            if prompt.warning:
                _note(prompt.warning)
            tokens, starts_in_reasoning = prompt.tokens, prompt.starts_in_reasoning
        else:
            pictures = ()
            tokens = runtime.tokenize(prompt_text)
        _check_fits(runtime, len(tokens), args.ctx is not None)
        sampler = SamplerParams(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
            seed=args.seed if args.seed is not None else SamplerParams().seed,
        )
        params = GenerationParams(
            max_tokens=args.max_tokens,
            sampler=sampler,
            mtp_depth=args.mtp_depth,
            p_min=args.p_min,
            stop=tuple(args.stop),
            draft_sampling=args.draft_sampling,
            draft_length=args.draft_length,
        )
        on_delta = None if args.json else _stream_to_terminal()
        try:
            reply = runtime.generate(
                tokens, params, starts_in_reasoning=starts_in_reasoning, on_delta=on_delta, images=pictures
            )
        except PromptTooLong as exc:
            raise CliError(f"{exc}; raise --ctx or shorten the prompt") from exc
        if args.json:
            print(json.dumps(reply_json(reply, args.chat, runtime)), flush=True)
        else:
            _answer.end_line()
        note = reply.stats.mtp_note
        if note and note != "depth_zero":
            _note(MTP_NOTE_TEXT[note])
        if not args.json:
            _print_summary(reply.stats, runtime.n_ctx)
        return 0
    finally:
        runtime.close()


def _stream_to_terminal() -> Callable[[Delta, ReplyStats], None]:
    state = {"kind": "answer"}

    def on_delta(delta: Delta, _stats: ReplyStats) -> None:
        for seg in delta.segments:
            if seg.kind != state["kind"]:
                _answer.write("[thinking] " if seg.kind == "reasoning" else "\n[answer] ")
                state["kind"] = seg.kind
            _answer.write(seg.text)
        sys.stdout.flush()

    return on_delta


def _print_summary(stats: ReplyStats, n_ctx: int) -> None:
    tps = stats.tokens_per_second
    acc = stats.acceptance
    parts = [f"{stats.n_predicted} tokens", f"{tps:.1f} tok/s" if tps else "", f"depth {stats.mtp_depth}"]
    if acc is not None:
        parts.append(f"acceptance {acc:.0%} ({stats.n_accepted}/{stats.n_drafted})")
    stop = stats.stop_reason
    parts.append(f"stop: {stop} ({n_ctx:,} tokens)" if stop == "context_full" else f"stop: {stop}")
    _answer.end_line()
    print("-- " + ", ".join(p for p in parts if p), file=sys.stderr, flush=True)


def _bench_depths(requested: list[int | str] | None, n_heads: int) -> list[int | str]:
    """--depths as given, each checked against the model's heads; by default 0 to the head count, and auto."""
    if requested is None:
        return [*range(n_heads + 1), AUTO] if n_heads else [0]
    too_deep = [d for d in requested if isinstance(d, int) and d > n_heads]
    if too_deep:
        heads = f"has {n_heads} MTP head{'s' if n_heads != 1 else ''}" if n_heads else "has no usable MTP heads"
        allowed = f"0 to {n_heads} or auto" if n_heads else "0"
        raise CliError(f"--depths {too_deep[0]}: the model {heads}; use depths {allowed}")
    return requested


def cmd_bench(args: argparse.Namespace) -> int:
    runtime = _load(args)
    try:
        depths = _bench_depths(args.depths, runtime.n_heads)
        tokens = runtime.tokenize(args.prompt)
        _check_fits(runtime, len(tokens), args.ctx is not None)
        results = []
        for _ in range(args.repeat):
            for depth in depths:
                runtime.generator.reset()  # each run evaluates the same prompt from scratch
                params = GenerationParams(
                    max_tokens=args.max_tokens,
                    sampler=SamplerParams(temperature=args.temperature, seed=args.seed),
                    mtp_depth=depth,
                    p_min=args.p_min,
                    draft_sampling=args.draft_sampling,
                    draft_length=args.draft_length,
                )
                reply = runtime.generate(tokens, params)
                results.append(reply_json(reply, False, runtime))
                if not args.json:
                    _print_summary(reply.stats, runtime.n_ctx)
        if args.json:
            print(json.dumps(results))
        else:
            print(bench_table(results, depths))
        return 0
    finally:
        runtime.close()


def cmd_serve(args: argparse.Namespace) -> int:
    # Starlette and uvicorn load here, for serve alone: every other command starts without them.
    from engine.server import LocalHost, ServedModel, ServerConfig, ServerStartError, StrideServer, bind, is_loopback

    if not is_loopback(args.host) and not args.api_key:
        raise CliError(
            f"--host {args.host} lets other machines use the model: give --api-key KEY too "
            f"(or keep the default {DEFAULT_HOST})"
        )
    try:  # before loading, so a busy port is said at once
        sock = bind(args.host, args.port)
    except ServerStartError as exc:
        raise CliError(str(exc)) from exc
    try:
        runtime = _load(args)
    except BaseException:
        sock.close()
        raise
    defaults = GenerationParams(
        mtp_depth=args.mtp_depth, p_min=args.p_min, draft_sampling=args.draft_sampling, draft_length=args.draft_length
    )
    host = LocalHost(runtime, ServedModel(runtime.info.path.name, runtime.n_ctx, int(time.time()), defaults))
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        cors_origins=tuple(args.cors_origin),
        max_tokens_limit=args.max_tokens_limit,
        queue_limit=args.queue,
    )
    server = StrideServer(host, config, sock)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop is a Ctrl+C
    try:
        url = server.start()
        print(f"Serving {runtime.info.path.name} at {url}/v1 (Ctrl+C stops)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        print("stopping: ending the replies in flight", file=sys.stderr, flush=True)
    except ServerStartError as exc:
        raise CliError(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        server.stop()
        host.close()
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def bench_table(results: Sequence[dict[str, Any]], depths: Sequence[int | str]) -> str:
    """Depth, tok/s and acceptance (medians over the repeats), and tok/s over plain decoding's."""

    def median_of(depth: int | str, key: str) -> float | None:
        values = [r[key] for r in results if r["mtp_depth_requested"] == depth and r[key] is not None]
        return statistics.median(values) if values else None

    plain = median_of(0, "tokens_per_second")
    rows = [f"{'depth':<6} {'tok/s':>8} {'accepted':>9} {'x plain':>8}"]
    for depth in depths:
        rate, acceptance = median_of(depth, "tokens_per_second"), median_of(depth, "acceptance")
        ratio = f"{rate / plain:.2f}" if rate and plain else "-"
        accepted = f"{acceptance:.0%}" if acceptance is not None else "-"
        rows.append(f"{depth!s:<6} {f'{rate:.1f}' if rate else '-':>8} {accepted:>9} {ratio:>8}")
    return "\n".join(rows)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "inspect": cmd_inspect,
    "generate": cmd_generate,
    "bench": cmd_bench,
    "serve": cmd_serve,
}


def _quiet_stdout() -> None:
    """After a closed pipe: later writes and the flush at exit go nowhere instead of failing again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (a test's capture): nothing will flush it at exit
        pass


def main(argv: Sequence[str] | None = None) -> int:
    global _answer
    _answer = _Answer()
    args = build_parser().parse_args(argv)
    log_path = configure_logging(verbose=args.verbose)
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        _answer.end_line()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LoadCancelled:
        print("error: loading was cancelled", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Unix tools do
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in Stride: still one line, with where to find the details
        import logging

        logging.getLogger("stride.cli").exception("unexpected error")
        where = f"; details in {log_path}" if log_path else ""
        print(f"error: unexpected internal error: {exc.__class__.__name__}: {exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
