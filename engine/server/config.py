"""How the server listens and what it allows: plain values, so stride-cli's parser can show the
defaults without loading Starlette and uvicorn."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None  # required from every /v1 request when set (Authorization: Bearer KEY)
    cors_origins: tuple[str, ...] = ()  # browsers' pages allowed to call the API; none by default
    max_body_bytes: int = 8 * 1024 * 1024
    max_tokens_limit: int = 32768  # the most a request may ask for, and what it gets when it asks nothing
    queue_limit: int = 16  # requests waiting or running; a 503 beyond
