"""stride-cli with pictures: --image and --mmproj, the JSON figures, and one `error:` line for each bad input."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from tests.engine.test_cli import run_cli
from tests.fixtures import builders
from tests.fixtures import vision as vf
from tests.fixtures.vision import VisionPair, vision_pair  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    red = vf.write_png(folder / "red.png", vf.solid(vf.RED))
    huge = bytearray(red.read_bytes())
    huge[16:24] = struct.pack(">II", 30000, 30000)  # a header only: nothing that large is ever decoded
    good = red.read_bytes()
    idat = good.index(b"IDAT") + 4
    files = {
        "red": red,
        "blue": vf.write_png(folder / "blue.png", vf.solid(vf.BLUE)),
        "text": folder / "notes.png",
        "truncated": folder / "truncated.png",
        "huge": folder / "huge.png",
        "garbled": folder / "garbled.png",
    }
    files["text"].write_text("not a picture at all")
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["huge"].write_bytes(bytes(huge))
    files["garbled"].write_bytes(good[:idat] + bytes(64) + good[idat + 64 :])
    return files


def generate(pair: VisionPair, *args: str) -> list[str]:
    base = ["generate", "--model", str(pair.model), "--chat", "--prompt", "what is it?", "--max-tokens", "8"]
    return [*base, "--mmproj", str(pair.projector), *args]


def test_generate_reads_pictures_and_reports_them(vision_pair: VisionPair, pictures: dict[str, Path]) -> None:  # noqa: F811
    o = vf.vision_oracle()
    red_first, _, blue_first = vf.colour_word_successors(o)
    proc = run_cli(*generate(vision_pair, "--image", str(pictures["red"]), "--mtp-depth", "3", "--json"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["token_ids"][0] == red_first
    assert data["n_image_tokens"] == 81 and data["image_encode_seconds"] > 0
    two = run_cli(*generate(vision_pair, "--image", str(pictures["red"]), "--image", str(pictures["blue"]), "--json"))
    assert two.returncode == 0, two.stderr
    assert json.loads(two.stdout)["n_image_tokens"] == 162
    blue = run_cli(*generate(vision_pair, "--image", str(pictures["blue"]), "--json"))
    assert json.loads(blue.stdout)["token_ids"][0] == blue_first


def test_the_projector_beside_the_model_is_used_with_a_note(vision_pair: VisionPair, pictures: dict[str, Path]) -> None:  # noqa: F811
    args = ["generate", "--model", str(vision_pair.model), "--chat", "--prompt", "?", "--max-tokens", "2"]
    proc = run_cli(*args, "--image", str(pictures["red"]))
    assert proc.returncode == 0, proc.stderr
    assert "note: reading pictures with mmproj-vlm.gguf, the vision projector beside the model" in proc.stderr


def test_inspect_shows_the_projector(vision_pair: VisionPair) -> None:  # noqa: F811
    alone = run_cli("inspect", str(vision_pair.projector), "--json")
    assert json.loads(alone.stdout)["projector_type"] == "step3vl"
    plain = json.loads(run_cli("inspect", str(vision_pair.model), "--json").stdout)
    paired = run_cli("inspect", str(vision_pair.model), "--mmproj", str(vision_pair.projector), "--json")
    data = json.loads(paired.stdout)
    assert data["projector"]["n_embd_out"] == 512
    assert data["estimated_memory_bytes"] > plain["estimated_memory_bytes"] + data["projector"]["file_bytes"]
    text = run_cli("inspect", str(vision_pair.model), "--mmproj", str(vision_pair.projector)).stdout
    assert "vision file     mmproj-vlm.gguf (given; it fits the model)" in text


def test_bad_input_exits_2_with_one_error_line(
    vision_pair: VisionPair,  # noqa: F811
    pictures: dict[str, Path],
    tmp_path: Path,
) -> None:
    lone = tmp_path / "lone"  # a model with no projector beside it
    lone.mkdir()
    lone_model = shutil.copy(vision_pair.model, lone / "vlm.gguf")
    narrow = vf.build_projector(tmp_path / "mmproj-narrow.gguf", n_embd_out=256)
    text_only = builders.tiny(tmp_path / "text-only.gguf", n_embd=512)
    red = str(pictures["red"])
    cases = {
        "not a picture": (generate(vision_pair, "--image", str(pictures["text"])), "is not a picture Stride can read"),
        "truncated": (generate(vision_pair, "--image", str(pictures["truncated"])), "damaged or cut short"),
        "huge": (generate(vision_pair, "--image", str(pictures["huge"])), "30000x30000 pixels"),
        "garbled": (generate(vision_pair, "--image", str(pictures["garbled"])), "garbled.png could not be decoded"),
        "missing": (generate(vision_pair, "--image", str(tmp_path / "nope.png")), "no such file"),
        "without --chat": (
            ["generate", "--model", str(vision_pair.model), "--prompt", "?", "--image", red],
            "--image needs --chat",
        ),
        "no projector": (
            ["generate", "--model", str(lone_model), "--chat", "--prompt", "?", "--image", red],
            "--image needs the model's vision projector",
        ),
        "another model's width": (
            [
                "generate",
                "--model",
                str(vision_pair.model),
                "--chat",
                "--prompt",
                "?",
                "--mmproj",
                str(narrow),
                "--image",
                red,
            ],
            "256 wide but vlm.gguf is 512 wide",
        ),
        "no picture tokens": (
            [
                "generate",
                "--model",
                str(text_only),
                "--chat",
                "--prompt",
                "?",
                "--mmproj",
                str(vision_pair.projector),
                "--image",
                red,
            ],
            "has no <im_start>",
        ),
        "projector as the model": (
            ["generate", "--model", str(vision_pair.projector), "--chat", "--prompt", "?"],
            "is a vision projector (mmproj), not a language model",
        ),
        "model as the projector": (
            [
                "generate",
                "--model",
                str(vision_pair.model),
                "--chat",
                "--prompt",
                "?",
                "--mmproj",
                str(vision_pair.model),
                "--image",
                red,
            ],
            "is not a vision projector (mmproj) file",
        ),
        "inspect with another model's projector": (
            ["inspect", str(vision_pair.model), "--mmproj", str(narrow)],
            "256 wide",
        ),
    }
    for name, (args, message) in cases.items():
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert message in lines[0], (name, lines[0])
