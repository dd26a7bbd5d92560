"""A scriptable misbehaving HTTP server on 127.0.0.1, for fault tests.

Each connection reads one request and answers with the next ``Fault`` of the script (the last
one repeats): fixed bytes (``json_reply``, ``sse_reply`` or any raw bytes, so malformed HTTP
too), cut after some bytes, or stalled first. ``json.dumps`` writes Python ints exactly, so
oversized numbers (``10**19`` tokens) reach the SDK as sent.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Fault:
    """``data`` sent after ``stall_s`` seconds, cut (connection closed) after ``cut_after`` bytes."""

    data: bytes = b""
    stall_s: float = 0.0
    cut_after: int | None = None


def http_reply(body: bytes, *, status: int = 200, content_type: str = "application/json",
               headers: dict[str, str] | None = None, length: bool = True) -> bytes:
    """A whole HTTP/1.1 response (``length=False``: no Content-Length, the body ends at close)."""
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
    if length:
        head.append(f"Content-Length: {len(body)}")
    head.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_reply(obj: Any, *, status: int = 200, **kwargs: Any) -> bytes:
    return http_reply(json.dumps(obj).encode(), status=status, **kwargs)


def sse_reply(events: Iterable[Any], *, done: bool = True) -> bytes:
    """A server-sent event stream of JSON ``data:`` events (and ``[DONE]``), ended by the close."""
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    if done:
        body += b"data: [DONE]\n\n"
    return http_reply(body, content_type="text/event-stream", length=False)


class FaultServer:
    """``with FaultServer() as server: server.script(Fault(...), ...)``; ``server.url``."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._faults: list[Fault] = [Fault(http_reply(b"{}"))]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[bytes] = []
        self.connections = 0  # accepted, whatever the client then sent (any protocol, e.g. Redis)
        self._thread = threading.Thread(target=self._serve, name="fault-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def script(self, *faults: Fault | bytes) -> None:
        """The answers of the next connections, in order; the last one repeats."""
        with self._lock:
            self._faults = [f if isinstance(f, Fault) else Fault(f) for f in faults]

    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone does not)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _next(self) -> Fault:
        with self._lock:
            return self._faults.pop(0) if len(self._faults) > 1 else self._faults[0]

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.requests.append(_read_request(conn))
                fault = self._next()
                if fault.stall_s and self._stopping.wait(fault.stall_s):
                    return
                data = fault.data if fault.cut_after is None else fault.data[:fault.cut_after]
                conn.sendall(data)
                if fault.cut_after is not None:  # a reset, not an orderly end of the body
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _read_request(conn: socket.socket) -> bytes:
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < length:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return head + b"\r\n\r\n" + body
