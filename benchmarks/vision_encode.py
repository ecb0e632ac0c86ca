"""Picture encoding on the synthetic step3vl fixture (tests/fixtures/vision.py), through llama.cpp's mtmd.

For pictures of three sizes (one 504 px overview; 2x2 slices plus overview; the largest, 6x6 slices
plus overview at 3024 px) it times, each the median of `--repeat` runs: tokenizing (decoding the
file and slicing it), encoding every chunk, and evaluating the whole chat prompt from a fresh cache
(encoding included, as a reply's prompt does). The fixture's encoder is tiny (width 8, one layer),
so the figures are mtmd's own overhead per slice plus the language model's embedding batches: a
floor, not what a 1.8B-parameter Step encoder costs.

    python -m benchmarks.vision_encode [--repeat 5] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine import vision
from engine.api import GenerationParams, LoadOptions
from engine.runtime import Runtime
from tests.fixtures import vision as vf

SIZES = ((64, 48), (1008, 1008), (3024, 3024))


def noise_png(width: int, height: int, seed: int = 1) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return vf.png_bytes(pixels)


def measure(rt: Runtime, image: vision.ImageInput, repeat: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": [vision.image_item(image), {"type": "text", "text": "describe it"}]}]
    tokenize, encode, prompt = [], [], []
    n_image_tokens = n_chunks = 0
    for _ in range(repeat):
        started = time.perf_counter()
        chat = rt.chat_prompt(messages)
        tokenize.append(time.perf_counter() - started)
        started = time.perf_counter()
        for placed in chat.images:
            placed.embed()
        encode.append(time.perf_counter() - started)
        n_image_tokens, n_chunks = sum(p.n_tokens for p in chat.images), len(chat.images)
        rt.generator.reset()
        started = time.perf_counter()
        rt.generate(chat.tokens, GenerationParams(max_tokens=1, mtp_depth=0), images=chat.images)
        prompt.append(time.perf_counter() - started)
    encode_s = statistics.median(encode)
    return {
        "size": f"{image.name}",
        "n_chunks": n_chunks,
        "n_image_tokens": n_image_tokens,
        "tokenize_s": statistics.median(tokenize),
        "encode_s": encode_s,
        "encode_tokens_per_s": n_image_tokens / encode_s,
        "prompt_with_encoding_s": statistics.median(prompt),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = vf.build_vision_model(folder / "vlm.gguf")
        projector = vf.build_projector(folder / "mmproj-vlm.gguf")
        rt = Runtime.load(model, None, LoadOptions(n_ctx=8192, n_threads=args.threads), projector=projector)
        try:
            rows = [measure(rt, vision.ImageInput(noise_png(w, h), f"{w}x{h}"), args.repeat) for w, h in SIZES]
        finally:
            rt.close()
    if args.json:
        print(json.dumps(rows))
        return
    header = ("picture", "chunks", "tokens", "tokenize s", "encode s", "enc tok/s", "prompt s")
    print(" ".join(f"{h:>10}" for h in header))
    for r in rows:
        print(
            f"{r['size']:>10} {r['n_chunks']:>10} {r['n_image_tokens']:>10} {r['tokenize_s']:>10.3f} "
            f"{r['encode_s']:>10.3f} {r['encode_tokens_per_s']:>10.0f} {r['prompt_with_encoding_s']:>10.3f}"
        )


if __name__ == "__main__":
    main()
