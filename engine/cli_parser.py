"""stride-cli's arguments: every command's options, with their defaults and ranges in --help."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine import about, options
from engine.api import AUTO, DEMO_NAME, DRAFT_LENGTHS, DRAFT_SAMPLING
from engine.server.config import ServerConfig  # plain values: no Starlette or uvicorn for every command

DEFAULT_CTX = 4096
DEFAULT_HOST = "127.0.0.1"


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
        help="the most tokens a request may ask for, 1 or more, and what one that asks nothing gets "
        "(default: %(default)s)",
    )
    p_serve.add_argument(
        "--queue",
        type=options.positive_int,
        default=ServerConfig.queue_limit,
        help="requests waiting or running at once, 1 or more; more get a 503 (default: %(default)s)",
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
