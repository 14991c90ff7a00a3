"""A fault-injecting HTTP proxy for an S3 endpoint on loopback (standard library only).

Point s3fs at ``proxy.url`` instead of the store's endpoint; every request is relayed to the
store unchanged (the ``Host`` header too, so SigV4 signatures still verify), except where a
:class:`Fault` rule matches and fires::

    with FaultProxy(store.endpoint_url, seed=1) as proxy:
        proxy.add(Fault("status", method="GET", probability=0.3, status=503))
        proxy.add(Fault("reset", method="PUT", times=2, after_forward=True))
        proxy.add(Fault("delay", probability=0.2, delay_s=0.8))
        run_the_job(endpoint_url=proxy.url)
        assert proxy.injected("status") > 0

Kinds: ``status`` answers with an S3-style XML error (500, 503...) without asking the store;
``reset`` closes the client's connection with a TCP RST, before the store sees the request or
(``after_forward``) after it acted on it, so the client cannot know whether a write happened;
``delay`` holds the request ``delay_s`` seconds (before forwarding, or after with
``after_forward``: a slow response). A rule fires with ``probability`` (seeded), at most
``times`` times. The proxy binds 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy"]

KINDS = ("status", "reset", "delay")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
REASONS = {500: ("InternalError", "We encountered an internal error. Please try again."),
           503: ("SlowDown", "Please reduce your request rate.")}  # fmt: skip


@dataclass
class Fault:
    """One injection rule; ``method`` and ``path`` are regular expressions (``path`` includes the query)."""

    kind: str
    method: str = ".*"
    path: str = ".*"
    probability: float = 1.0
    times: int | None = None
    status: int = 503
    delay_s: float = 1.0
    after_forward: bool = False
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {KINDS}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")

    def matches(self, method: str, path: str) -> bool:
        exhausted = self.times is not None and self.fired >= self.times
        if exhausted or re.fullmatch(self.method, method) is None:
            return False
        return re.search(self.path, path) is not None


class FaultProxy:
    """The proxy server (a thread per connection); see the module docstring."""

    def __init__(self, upstream: str, seed: int = 0, timeout_s: float = 60.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.timeout_s = timeout_s
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.proxy = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- rules ----------------------------------------------------------------------------------
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def injected(self, kind: str | None = None) -> int:
        """How many faults fired (of ``kind``, or of every kind)."""
        with self._lock:
            return sum(f.fired for f in self.faults if kind is None or f.kind == kind)

    def pick(self, method: str, path: str) -> Fault | None:
        """The first rule that matches and wins its draw (counted as fired), else None."""
        with self._lock:
            self.requests[method] += 1
            for fault in self.faults:
                if fault.matches(method, path) and self._random.random() < fault.probability:
                    fault.fired += 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the test reads the proxy's counters, not a log

    def do_GET(self) -> None:
        self._relay()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy  # type: ignore[attr-defined]

    def _relay(self) -> None:
        body = self._read_body()
        fault = self.proxy.pick(self.command, self.path)
        kind, late = (fault.kind, fault.after_forward) if fault else ("", False)
        if kind == "delay" and not late:
            time.sleep(fault.delay_s)  # type: ignore[union-attr]
        if kind == "status":
            return self._error(fault.status)  # type: ignore[union-attr]
        if kind == "reset" and not late:
            return self._reset()
        try:
            status, reason, headers, data = self._forward(body)
        except OSError:  # the store is down: what a client of a dead endpoint sees
            return self._reset()
        if kind == "reset":
            return self._reset()
        if kind == "delay":
            time.sleep(fault.delay_s)  # type: ignore[union-attr]
        self._respond(status, reason, headers, data)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = self.proxy.upstream
        conn = http.client.HTTPConnection(host, port, timeout=self.proxy.timeout_s)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, response.reason, kept, data
        finally:
            conn.close()

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "server", "date"):
                self.send_header(name, value)
        length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        self.send_header("Content-Length", length if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int) -> None:
        code, message = REASONS.get(status, ("ServiceUnavailable", "injected fault"))
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><Resource>{self.path}</Resource></Error>").encode()  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Drop the client's connection with a TCP RST (linger 0), as a crashed server would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
