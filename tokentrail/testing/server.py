"""A fake LLM provider server on 127.0.0.1 for tests: real HTTP, real wire shapes.

Each provider module in this package registers its endpoints (exact JSON, SSE and binary
event-stream shapes of the real API) on a ``FakeProviderServer``. Tests point the real
provider SDK at ``server.url`` and may ``enqueue`` a response to script the next call.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    match: re.Match | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class FakeResponse:
    """What the server sends back.

    Exactly one of ``json``, ``sse`` (a list of ``(event, data)`` pairs, event may be None,
    data a dict or a raw string such as ``[DONE]``), or ``body`` (raw bytes) is used.
    ``chunk_delay`` sleeps between streamed pieces; ``abort_after`` closes the connection
    after that many pieces, to simulate a stream that breaks mid-way.
    """

    status: int = 200
    json: Any = None
    sse: list[tuple[str | None, Any]] | None = None
    body: bytes | Iterable[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    chunk_delay: float = 0.0
    abort_after: int | None = None


Handler = Callable[[FakeRequest], FakeResponse]


class FakeProviderServer:
    """A threaded HTTP server with a route table, a request log and scripted overrides."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern, Handler]] = []
        self._scripted: list[FakeResponse | Handler] = []
        self._lock = threading.Lock()
        self.requests: list[FakeRequest] = []
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeProviderServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-provider", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread = None

    def __enter__(self) -> "FakeProviderServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- configuration -----------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve ``method`` requests whose path fully matches the regex ``pattern``."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def enqueue(self, *responses: FakeResponse | Handler) -> None:
        """The next requests (any route) get these responses, in order, instead of the route's."""
        with self._lock:
            self._scripted.extend(responses)

    def reset(self) -> None:
        with self._lock:
            self._scripted.clear()
            self.requests.clear()

    # --- dispatch -------------------------------------------------------------------
    def _dispatch(self, request: FakeRequest) -> FakeResponse:
        with self._lock:
            self.requests.append(request)
        for method, pattern, handler in self._routes:
            if method == request.method and (match := pattern.fullmatch(request.path)):
                request.match = match
                with self._lock:
                    scripted = self._scripted.pop(0) if self._scripted else None
                if scripted is None:
                    return handler(request)
                return scripted(request) if callable(scripted) else scripted
        return FakeResponse(status=404, json={"error": {"message": f"no fake route for {request.method} {request.path}"}})


def _make_handler(server: FakeProviderServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate small writes: without TCP_NODELAY, Nagle plus
        # the client's delayed ACK add ~40 ms to every keep-alive response.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = FakeRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                response = server._dispatch(request)
            except Exception as exc:  # a bug in a fake handler must show up as a 500, not a hang
                response = FakeResponse(status=500, json={"error": {"message": f"fake handler failed: {exc!r}"}})
            self._send(response)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def _send(self, response: FakeResponse) -> None:
            if response.sse is not None:
                pieces = [_sse_piece(event, data) for event, data in response.sse]
                content_type = response.content_type or "text/event-stream"
                streamed = True
            elif response.body is not None and not isinstance(response.body, (bytes, bytearray)):
                pieces = list(response.body)
                content_type = response.content_type or "application/octet-stream"
                streamed = True
            else:
                if response.body is not None:
                    payload = bytes(response.body)
                    content_type = response.content_type or "application/octet-stream"
                else:
                    payload = json.dumps(response.json).encode()
                    content_type = response.content_type or "application/json"
                pieces = [payload]
                streamed = False
            self.send_response(response.status)
            self.send_header("Content-Type", content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if streamed:
                # Streams are sent unframed and ended by closing the connection, as SSE allows.
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(pieces[0])))
            self.end_headers()
            for index, piece in enumerate(pieces):
                if response.abort_after is not None and index >= response.abort_after:
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(piece)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client closed a stream early
                    self.close_connection = True
                    return
                if response.chunk_delay:
                    time.sleep(response.chunk_delay)

    return _Handler


def _sse_piece(event: str | None, data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()
