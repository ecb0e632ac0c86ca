"""The server on a thread of its own: start, address, stop. The CLI and the GUI both use it."""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.server.app import OnRequest, create_app
from engine.server.config import ServerConfig
from engine.server.host import ModelHost, RequestQueue

GRACEFUL_SHUTDOWN_S = 5.0  # streams in flight get this long to end after their generation is stopped


class ServerStartError(Exception):
    """The address cannot be listened on; str() says why and what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ServerStartError naming the address and the fix."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServerStartError(f"--host {host} is not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "choose another --port" if exc.errno == errno.EADDRINUSE else "check --host and --port"
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc.strerror}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class StrideServer:
    """uvicorn serving `create_app(host, config)` on its own thread."""

    def __init__(
        self,
        host: ModelHost,
        config: ServerConfig,
        sock: socket.socket | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        self.config = config
        self.app = create_app(host, config, on_request)
        self.sock = sock
        uv_config = uvicorn.Config(
            self.app,
            log_config=None,  # Stride's logging stays as configured
            access_log=False,
            http=H11Protocol,  # pure Python, and named here so a frozen build bundles it
            loop="asyncio",
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        )
        self._server = uvicorn.Server(uv_config)
        self._thread: threading.Thread | None = None

    @property
    def queue(self) -> RequestQueue:
        queue: RequestQueue = self.app.state.queue
        return queue

    @property
    def url(self) -> str:
        """Where clients reach it, e.g. http://127.0.0.1:8080 (the API is under /v1)."""
        if self.sock is None:
            raise RuntimeError("the server is not started")
        return url_of(self.sock)

    def start(self, timeout_s: float = 10.0) -> str:
        """Listen (binding config.host:config.port unless given a socket) and serve; returns the URL."""
        if self.sock is None:
            self.sock = bind(self.config.host, self.config.port)
        sock = self.sock
        self._thread = threading.Thread(
            target=lambda: self._server.run(sockets=[sock]), name="stride-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the server did not start within {timeout_s:g} s; see the log")
            time.sleep(0.01)
        return self.url

    def wait(self) -> None:
        """Until the server stops; a Ctrl+C (KeyboardInterrupt) comes through."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        """Stop every request in flight at its next decode step, close the connections, end the thread."""
        self.queue.stop_all()
        # Let stopped streams send their last chunk and [DONE] before uvicorn's shutdown starts:
        # under load its shutdown could cancel a stream still finishing (an incomplete chunked body).
        deadline = time.monotonic() + GRACEFUL_SHUTDOWN_S
        while (self.queue.in_flight or self.queue.streams_open) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(GRACEFUL_SHUTDOWN_S + 5)
            self._thread = None
        if self.sock is not None:
            self.sock.close()
