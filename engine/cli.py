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

from engine import about, options, vision
from engine.api import (
    AUTO,
    DEMO_NAME,
    DRAFT_LENGTHS,
    DRAFT_SAMPLING,
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
from engine.server import (
    LocalHost,
    ServedModel,
    ServerConfig,
    ServerStartError,
    StrideServer,
    bind,
    is_loopback,
)
from engine.stats import ReplyStats

DEFAULT_CTX = 4096
DEFAULT_HOST = "127.0.0.1"
# A closed stdout (`stride-cli generate ... | head`) ends the program quietly with the status a Unix
# tool killed by SIGPIPE has in a shell, 128 + 13, so `set -o pipefail` scripts see what they see of
# `yes` or `cat` there.
EXIT_BROKEN_PIPE = 141


class CliError(Exception):
    """A problem the user can fix; printed as one `error:` line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = options.Parser(prog="stride-cli", description="Stride's engine from the command line.")
    parser.add_argument(
        "--version",
        action=options.VersionAction,
        about=lambda: about.version_text("stride-cli"),
        help="print Stride's version, llama-cpp-python's and llama.cpp's, and the CPU backend in use, then exit",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="debug logging: llama.cpp's whole log (kept at warnings otherwise) in stride.log, and the log on stderr",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=options.Parser)

    def model_args(p: argparse.ArgumentParser, required: bool) -> None:
        if required:
            p.add_argument("--model", required=True, help=f"GGUF file, or '{DEMO_NAME}' for the built-in demo model")
        p.add_argument(
            "--mtp-model",
            type=Path,
            help="separate MTP-only GGUF holding the heads, for a model without them inside (default: none); "
            "one given for a model that has its heads is checked, then not needed",
        )
        p.add_argument(
            "--ctx",
            type=options.positive_int,
            default=None,
            help=f"context size in tokens, 1 or more (default: {DEFAULT_CTX}); at most the model's trained context "
            "(a larger value is lowered to it, with a note)",
        )

    p_inspect = sub.add_parser(
        "inspect", help="describe a GGUF without loading it", description="Describe a GGUF without loading it."
    )
    p_inspect.add_argument("model", help=f"GGUF file, or '{DEMO_NAME}'")
    model_args(p_inspect, required=False)
    p_inspect.add_argument(
        "--mmproj",
        type=Path,
        metavar="FILE",
        help="a vision projector to check against the model and count in its memory (default: none)",
    )
    p_inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=options.positive_int, default=None, help=options.THREADS_HELP)
        p.add_argument(
            "--gpu-layers",
            type=options.non_negative_int,
            default=0,
            help="layers to offload to a GPU backend, 0 or more (default: 0, everything on the CPU)",
        )
        p.add_argument(
            "--ignore-memory-check", action="store_true", help="load even if the estimate exceeds free memory"
        )

    def draft_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--p-min",
            type=options.ranged_float(0.0, 1.0),
            default=0.0,
            help="with fixed draft length, a head ends the draft when its top token's probability is below "
            "this, 0 to 1 (default: 0, never)",
        )
        p.add_argument("--draft-sampling", choices=DRAFT_SAMPLING, default="greedy", help=DRAFT_SAMPLING_HELP)
        p.add_argument("--draft-length", choices=DRAFT_LENGTHS, default="fixed", help=DRAFT_LENGTH_HELP)

    p_gen = sub.add_parser("generate", help="generate text", description=GENERATE_DESCRIPTION)
    model_args(p_gen, required=True)
    prompt = p_gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt text")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from this UTF-8 file")
    p_gen.add_argument(
        "--chat",
        action="store_true",
        help="wrap the prompt in the model's chat template and print its reasoning apart from the answer "
        "(default: raw mode, see above)",
    )
    p_gen.add_argument("--system", help="system prompt (with --chat; default: none)")
    p_gen.add_argument(
        "--image",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a picture (PNG, JPEG, GIF or BMP) for the model to read before the prompt, repeatable; "
        "with --chat and a vision projector (default: none)",
    )
    p_gen.add_argument(
        "--mmproj",
        type=Path,
        metavar="FILE",
        help="the model's vision projector (mmproj GGUF) for --image (default: the mmproj*.gguf beside the "
        "model, when there is one)",
    )
    p_gen.add_argument("--max-tokens", type=options.positive_int, default=256, help=options.MAX_TOKENS_HELP)
    p_gen.add_argument("--mtp-depth", type=options.depth, default=AUTO, help=options.MTP_DEPTH_HELP)
    draft_args(p_gen)
    p_gen.add_argument(
        "--temperature",
        type=options.ranged_float(0.0, 10.0),
        default=0.0,
        help="0 to 10 (default: 0, greedy: always the likeliest token)",
    )
    p_gen.add_argument(
        "--top-k", type=options.non_negative_int, default=40, help="0 or more, 0 = off (default: 40; with temperature)"
    )
    p_gen.add_argument(
        "--top-p",
        type=options.ranged_float(0.0, 1.0),
        default=0.95,
        help="0 to 1, 1 = off (default: 0.95; with temperature)",
    )
    p_gen.add_argument(
        "--min-p",
        type=options.ranged_float(0.0, 1.0),
        default=0.05,
        help="0 to 1, 0 = off (default: 0.05; with temperature)",
    )
    p_gen.add_argument(
        "--repeat-penalty",
        type=options.ranged_float(0.0, 10.0),
        default=1.0,
        help="0 to 10, 1 = off (default: 1)",
    )
    p_gen.add_argument(
        "--seed",
        type=options.seed,
        default=None,
        help=f"sampling seed, 0 to {options.MAX_SEED} (default: a random one; with temperature)",
    )
    p_gen.add_argument("--stop", action="append", default=[], help="stop string, repeatable (default: none)")
    run_args(p_gen)
    p_gen.add_argument("--json", action="store_true", help="print one JSON object with the text and its numbers")

    p_bench = sub.add_parser(
        "bench",
        help="tokens/s and acceptance at several MTP depths",
        description="Tokens/s and acceptance at several MTP depths, each from a fresh cache, then a table.",
    )
    model_args(p_bench, required=True)
    p_bench.add_argument(
        "--depths",
        type=options.depths,
        default=None,
        help="comma-separated depths, each 0 to the model's head count or auto (default: 0, 1 ... the head "
        "count, auto)",
    )
    p_bench.add_argument("--max-tokens", type=options.positive_int, default=128, help=options.MAX_TOKENS_HELP)
    p_bench.add_argument("--prompt", default="Once upon a time", help="raw prompt (default: %(default)r)")
    p_bench.add_argument(
        "--repeat", type=options.positive_int, default=1, help="runs of each depth, 1 or more (default: 1)"
    )
    draft_args(p_bench)
    p_bench.add_argument(
        "--temperature", type=options.ranged_float(0.0, 10.0), default=0.0, help="0 to 10 (default: 0, greedy)"
    )
    p_bench.add_argument(
        "--seed", type=options.seed, default=0, help=f"sampling seed, 0 to {options.MAX_SEED} (default: 0)"
    )
    run_args(p_bench)
    p_bench.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p_serve = sub.add_parser(
        "serve", help="serve the model over an OpenAI-compatible HTTP API", description=SERVE_DESCRIPTION
    )
    model_args(p_serve, required=True)
    p_serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s, this machine only); any other needs --api-key",
    )
    p_serve.add_argument("--port", type=options.port, default=8080, help="TCP port, 0 to 65535 (default: %(default)s)")
    p_serve.add_argument(
        "--api-key",
        default=os.environ.get("STRIDE_API_KEY"),
        help="key every /v1 request must send as 'Authorization: Bearer KEY' (default: $STRIDE_API_KEY, else none)",
    )
    p_serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="a web page origin allowed to call the API from a browser, repeatable (default: none, CORS off)",
    )
    p_serve.add_argument("--mtp-depth", type=options.depth, default=AUTO, help=options.MTP_DEPTH_HELP)
    draft_args(p_serve)
    p_serve.add_argument(
        "--max-tokens-limit",
        type=options.positive_int,
        default=ServerConfig.max_tokens_limit,
        help="the most tokens a request may ask for, and what one that asks nothing gets (default: %(default)s)",
    )
    p_serve.add_argument(
        "--queue",
        type=options.positive_int,
        default=ServerConfig.queue_limit,
        help="requests waiting or running at once; more get a 503 (default: %(default)s)",
    )
    run_args(p_serve)
    options.name_values(parser)
    return parser


GENERATE_DESCRIPTION = (
    "Generate text. Raw mode (the default) continues the prompt as plain text, a completion: the model's "
    "own markup stays in what it writes, so a reasoning model's thoughts and their closing </think> appear "
    "in the text. With --chat the prompt is a user message in the model's chat template, and the reasoning "
    "comes apart from the answer ([thinking] ... [answer] ... on the terminal; `reasoning` and `text` in "
    "--json)."
)
DRAFT_LENGTH_HELP = (
    "fixed (default): every step drafts --mtp-depth tokens; dynamic: up to that many, each only while "
    "the heads' confidence makes it worth its measured cost to draft and verify on this machine "
    "(auto always drafts dynamically)"
)
DRAFT_SAMPLING_HELP = (
    "greedy (default): heads propose their top token, seeded output is identical at every depth; "
    "probabilistic: drafts are sampled and verified by rejection sampling, so acceptance holds up at "
    "temperature > 0 while the output still follows the model's distribution"
)


SERVE_DESCRIPTION = (
    "Serve the model to other programs over an OpenAI-compatible HTTP API (/v1/chat/completions, "
    "/v1/completions, /v1/models, /health), with MTP as set here. Prints the address once listening; "
    "Ctrl+C stops it, ending the replies in flight."
)


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
