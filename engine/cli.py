"""stride-cli: inspect, generate and benchmark from the command line (machine-readable with --json).

Every error a user can cause exits with code 2 and one `error:` line on stderr
that names the problem and the fix; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from engine import stats as stats_mod
from engine.demo import DEMO_NAME, ensure_demo_model
from engine.generate import AUTO, DRAFT_LENGTHS, DRAFT_SAMPLING, Delta, GenerationParams, PromptTooLong, Reply
from engine.gguf import (
    ModelFileError,
    ModelInfo,
    ProjectorInfo,
    estimate_memory,
    inspect_model,
    inspect_projector,
    projector_beside,
)
from engine.llama import LoadCancelled, SamplerParams
from engine.logs import configure_logging
from engine.runtime import LoadOptions, ModelLoadError, NotEnoughMemory, Runtime
from engine.stats import ReplyStats
from engine.units import format_bytes, format_params

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed as one `error:` line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage plus a message and exits 2; keep it to one `error:` line.
        self.exit(EXIT_USAGE, f"error: {message}; see `{self.prog} --help`\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def _ranged_float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def parse_depth(text: str) -> int | str:
    """A depth: a whole number 0 or more, or "auto"."""
    return AUTO if text.strip().lower() == AUTO else _non_negative_int(text)


def _depths(text: str) -> list[int | str]:
    values = [parse_depth(x) for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of depths like 0,1,2,3,auto")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stride-cli", description="Stride's engine from the command line.")
    parser.add_argument("--verbose", action="store_true", help="also print the log (llama.cpp included) on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def model_args(p: argparse.ArgumentParser, required: bool) -> None:
        flag = ["--model"] if required else []
        if required:
            p.add_argument(*flag, required=True, help=f"GGUF file, or '{DEMO_NAME}' for the built-in demo model")
        p.add_argument("--mtp-model", type=Path, help="separate MTP-only GGUF holding the heads")
        p.add_argument("--ctx", type=_positive_int, default=4096, help="context size in tokens (default 4096)")

    p_inspect = sub.add_parser("inspect", help="describe a GGUF without loading it")
    p_inspect.add_argument("model", help=f"GGUF file, or '{DEMO_NAME}'")
    model_args(p_inspect, required=False)
    p_inspect.add_argument("--json", action="store_true")

    def run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all cores)")
        p.add_argument("--gpu-layers", type=_non_negative_int, default=0)
        p.add_argument(
            "--ignore-memory-check", action="store_true", help="load even if the estimate exceeds free memory"
        )
        p.add_argument("--json", action="store_true")

    p_gen = sub.add_parser("generate", help="generate text")
    model_args(p_gen, required=True)
    prompt = p_gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt")
    prompt.add_argument("--prompt-file", type=Path)
    p_gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p_gen.add_argument("--system", help="system prompt (with --chat)")
    p_gen.add_argument("--max-tokens", type=_positive_int, default=256)
    p_gen.add_argument(
        "--mtp-depth",
        type=parse_depth,
        default=AUTO,
        help="auto (default: plain decoding or dynamic drafting, whichever is faster here), 0 = off, "
        "or 1 to the model's head count",
    )
    p_gen.add_argument("--p-min", type=_ranged_float(0.0, 1.0), default=0.0)
    p_gen.add_argument("--draft-sampling", choices=DRAFT_SAMPLING, default="greedy", help=DRAFT_SAMPLING_HELP)
    p_gen.add_argument("--draft-length", choices=DRAFT_LENGTHS, default="fixed", help=DRAFT_LENGTH_HELP)
    p_gen.add_argument("--temperature", type=_ranged_float(0.0, 10.0), default=0.0)
    p_gen.add_argument("--top-k", type=_non_negative_int, default=40)
    p_gen.add_argument("--top-p", type=_ranged_float(0.0, 1.0), default=0.95)
    p_gen.add_argument("--min-p", type=_ranged_float(0.0, 1.0), default=0.05)
    p_gen.add_argument("--repeat-penalty", type=_ranged_float(0.0, 10.0), default=1.0)
    p_gen.add_argument("--seed", type=_non_negative_int, default=None)
    p_gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    run_args(p_gen)

    p_bench = sub.add_parser("bench", help="tokens/s and acceptance at several MTP depths")
    model_args(p_bench, required=True)
    p_bench.add_argument(
        "--depths", type=_depths, default=[0, 1, 2, 3, AUTO], help="comma-separated depths (default 0,1,2,3,auto)"
    )
    p_bench.add_argument("--max-tokens", type=_positive_int, default=128)
    p_bench.add_argument("--prompt", default="Once upon a time")
    p_bench.add_argument("--repeat", type=_positive_int, default=1)
    p_bench.add_argument("--p-min", type=_ranged_float(0.0, 1.0), default=0.0)
    p_bench.add_argument("--temperature", type=_ranged_float(0.0, 10.0), default=0.0)
    p_bench.add_argument("--seed", type=_non_negative_int, default=0)
    p_bench.add_argument("--draft-sampling", choices=DRAFT_SAMPLING, default="greedy", help=DRAFT_SAMPLING_HELP)
    p_bench.add_argument("--draft-length", choices=DRAFT_LENGTHS, default="fixed", help=DRAFT_LENGTH_HELP)
    run_args(p_bench)
    return parser


DRAFT_LENGTH_HELP = (
    "fixed (default): every step drafts --mtp-depth tokens; dynamic: up to that many, each only while "
    "the heads' confidence makes it worth its measured cost to draft and verify on this machine"
)
DRAFT_SAMPLING_HELP = (
    "greedy (default): heads propose their top token, seeded output is identical at every depth; "
    "probabilistic: drafts are sampled and verified by rejection sampling, so acceptance holds up at "
    "temperature > 0 while the output still follows the model's distribution"
)


# Commands -------------------------------------------------------------------------


def _model_path(text: str) -> Path:
    if text == DEMO_NAME:
        try:
            return ensure_demo_model()
        except OSError as exc:
            raise CliError(
                f"cannot create the demo model ({exc}); check that the user data folder is writable"
            ) from exc
    return Path(text)


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
    data = info_json(info, args.ctx)
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
        print(f"  vision file     {Path(data['mmproj']).name} (beside the model)")
    print(f"  memory needed   {format_bytes(data['estimated_memory_bytes'])} at --ctx {args.ctx}")
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


def _load(args: argparse.Namespace) -> Runtime:
    path = _model_path(args.model)
    options = LoadOptions(n_ctx=args.ctx, n_threads=args.threads or 0, n_gpu_layers=args.gpu_layers)
    try:
        return Runtime.load(path, args.mtp_model, options, check_memory=not args.ignore_memory_check)
    except NotEnoughMemory as exc:
        raise CliError(f"{exc}; close other programs, lower --ctx, or pass --ignore-memory-check") from exc
    except (ModelFileError, ModelLoadError) as exc:
        raise CliError(str(exc)) from exc


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def reply_json(reply: Reply, chat: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"text": reply.text, "token_ids": reply.token_ids}
    if chat:
        data["reasoning"] = reply.reasoning
    data.update(reply.stats.snapshot())
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
    runtime = _load(args)
    try:
        starts_in_reasoning: bool | None = None
        if args.chat:
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
                {"role": "user", "content": prompt_text}
            ]
            prompt = runtime.chat_prompt(messages)
            if prompt.warning:
                _note(prompt.warning)
            tokens, starts_in_reasoning = prompt.tokens, prompt.starts_in_reasoning
        else:
            tokens = runtime.tokenize(prompt_text)
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
            reply = runtime.generate(tokens, params, starts_in_reasoning=starts_in_reasoning, on_delta=on_delta)
        except PromptTooLong as exc:
            raise CliError(f"{exc}; raise --ctx or shorten the prompt") from exc
        note = reply.stats.mtp_note
        if note and note != "depth_zero":
            _note(stats_mod.MTP_NOTE_TEXT[note])
        if args.json:
            print(json.dumps(reply_json(reply, args.chat)))
        else:
            print()
            _print_summary(reply.stats)
        return 0
    finally:
        runtime.close()


def _stream_to_terminal() -> Callable[[Delta, ReplyStats], None]:
    state = {"kind": "answer"}

    def on_delta(delta: Delta, _stats: ReplyStats) -> None:
        for seg in delta.segments:
            if seg.kind != state["kind"]:
                sys.stdout.write("[thinking] " if seg.kind == "reasoning" else "\n[answer] ")
                state["kind"] = seg.kind
            sys.stdout.write(seg.text)
        sys.stdout.flush()

    return on_delta


def _print_summary(stats: ReplyStats) -> None:
    tps = stats.tokens_per_second
    acc = stats.acceptance
    parts = [f"{stats.n_predicted} tokens", f"{tps:.1f} tok/s" if tps else "", f"depth {stats.mtp_depth}"]
    if acc is not None:
        parts.append(f"acceptance {acc:.0%} ({stats.n_accepted}/{stats.n_drafted})")
    parts.append(f"stop: {stats.stop_reason}")
    print("-- " + ", ".join(p for p in parts if p), file=sys.stderr)


def cmd_bench(args: argparse.Namespace) -> int:
    runtime = _load(args)
    try:
        tokens = runtime.tokenize(args.prompt)
        results = []
        for _ in range(args.repeat):
            for depth in args.depths:
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
                results.append(reply_json(reply, chat=False))
                if not args.json:
                    _print_summary(reply.stats)
        if args.json:
            print(json.dumps(results))
        else:
            print(bench_table(results, args.depths))
        return 0
    finally:
        runtime.close()


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
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_path = configure_logging(verbose=args.verbose)
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LoadCancelled:
        print("error: loading was cancelled", file=sys.stderr)
        return EXIT_USAGE
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
