"""A local OpenAI-compatible HTTP server around a loaded model (Qt-free; Starlette + uvicorn).

Seams: requests (validation -> OpenAI-style errors), toolcalls (Step's XML -> `tool_calls`),
jobs (what runs on the model's thread), replies and timings (response objects), host (who owns
the model, and the FIFO queue), app (routes, streaming), server (uvicorn on a thread).
"""

from engine.server.app import RequestRecord, ServerConfig, create_app
from engine.server.host import LocalHost, ModelHost, ServedModel
from engine.server.server import ServerStartError, StrideServer, bind, is_loopback

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
