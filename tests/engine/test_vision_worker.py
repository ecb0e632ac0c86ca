"""Pictures through the Qt adapter: what the window will call (a load with a projector, messages with pictures)."""

from __future__ import annotations

from typing import Any

from pytestqt.qtbot import QtBot

from engine import vision
from engine.api import Failure, GenerationParams, LoadOptions
from engine.qt_worker import EngineWorker, GenerateRequest, LoadedModel, LoadRequest, ReplyResult
from tests.fixtures import vision as vf
from tests.fixtures.vision import VisionPair, vision_pair  # noqa: F401 (a fixture)


def run(worker: EngineWorker, slot: str, request: Any) -> list[tuple[str, Any]]:
    """Call a slot in this thread (as the engine thread would) and collect what it signals."""
    got: list[tuple[str, Any]] = []
    for name in ("sig_loaded", "sig_load_failed", "sig_finished", "sig_failed"):
        getattr(worker, name).connect(lambda _id, value, name=name: got.append((name, value)))
    getattr(worker, slot)(1, request)
    for name in ("sig_loaded", "sig_load_failed", "sig_finished", "sig_failed"):
        getattr(worker, name).disconnect()
    return got


def test_the_worker_loads_a_projector_and_replies_to_a_picture(qtbot: QtBot, vision_pair: VisionPair) -> None:  # noqa: F811
    worker = EngineWorker()
    options = LoadOptions(n_ctx=1024, n_threads=2)
    message = {
        "role": "user",
        "content": [
            vision.image_item(vision.ImageInput(vf.png_bytes(vf.solid(vf.RED)), "red.png")),
            {"type": "text", "text": "?"},
        ],
    }
    ask = GenerateRequest([message], GenerationParams(max_tokens=4, mtp_depth=3))
    try:
        [(kind, loaded)] = run(
            worker, "load", LoadRequest(vision_pair.model, None, options, projector=vision_pair.projector)
        )
        assert kind == "sig_loaded" and isinstance(loaded, LoadedModel) and loaded.reads_pictures
        [(kind, result)] = run(worker, "generate", ask)
        assert kind == "sig_finished" and isinstance(result, ReplyResult)
        assert result.stats.n_image_tokens == 81 and result.stats.image_encode_seconds > 0
        o = vf.vision_oracle()
        red_first = vf.colour_word_successors(o)[0]
        assert result.reasoning.startswith(o.text_of([red_first]).decode())  # the reply follows the picture

        # The same conversation under the model loaded without its projector: one clear failure, no crash.
        [(kind, loaded)] = run(worker, "load", LoadRequest(vision_pair.model, None, options))
        assert not loaded.reads_pictures
        [(kind, failure)] = run(worker, "generate", ask)
        assert kind == "sig_failed" and isinstance(failure, Failure)
        assert failure.kind == "bad_image" and "without a vision projector" in failure.message
    finally:
        worker.unload()
