"""A local OpenAI-compatible HTTP server around a loaded model (Qt-free; Starlette + uvicorn).

Seams: requests (validation -> OpenAI-style errors), toolcalls (Step's XML -> `tool_calls`),
jobs (what runs on the model's thread), replies and timings (response objects), host (who owns
the model, and the FIFO queue), app (routes, streaming), server (uvicorn on a thread), config.

Names load on first use, so `engine.server.config` (what stride-cli's parser reads for its
defaults) comes without Starlette and uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.server.app import RequestRecord, create_app
    from engine.server.config import ServerConfig
    from engine.server.host import LocalHost, ModelHost, ServedModel
    from engine.server.server import ServerStartError, StrideServer, bind, is_loopback

_MODULE_OF = {
    "LocalHost": "host",
    "ModelHost": "host",
    "RequestRecord": "app",
    "ServedModel": "host",
    "ServerConfig": "config",
    "ServerStartError": "server",
    "StrideServer": "server",
    "bind": "server",
    "create_app": "app",
    "is_loopback": "server",
}

__all__ = [
    "LocalHost",
    "ModelHost",
    "RequestRecord",
    "ServedModel",
    "ServerConfig",
    "ServerStartError",
    "StrideServer",
    "bind",
    "create_app",
    "is_loopback",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'engine.server' has no attribute {name!r}")
    return getattr(importlib.import_module(f"engine.server.{_MODULE_OF[name]}"), name)
