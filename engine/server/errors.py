"""OpenAI-style error objects: every failure a client can cause is one of these, never a traceback.

The body is `{"error": {"message", "type", "param", "code"}}` as OpenAI's API sends it; the
types and status codes are llama-server's (server-common.cpp, format_error_response), so
clients written against either read them.
"""

from __future__ import annotations

from typing import Any, Literal

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "not_found_error",
    "server_error",
    "unavailable_error",
    "exceed_context_size_error",
]


class ApiError(Exception):
    """A request the server refuses or cannot serve; str() is the message a client shows."""

    def __init__(self, status: int, message: str, kind: ErrorType, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


def invalid(message: str, param: str | None = None) -> ApiError:
    """400: the request itself is wrong; the message names the field and what it takes."""
    return ApiError(400, message, "invalid_request_error", param)


def unsupported(feature: str, param: str, instead: str) -> ApiError:
    """400 for an OpenAI feature Stride does not do yet; says what to send instead."""
    return ApiError(400, f"{feature} is not supported by Stride yet; {instead}", "invalid_request_error", param)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, "unavailable_error")
