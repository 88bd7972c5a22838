"""An HTTP proxy in front of the real S3 server that can slow requests down, answer 503 SlowDown,
or be down (`down = True`: every connection is cut before an answer, as when the store restarts or
its pod is gone; clients see ConnectionClosedError).

It forwards every request unchanged (Host header included, so SigV4 signatures still verify) and
serves on 127.0.0.1. Used to show retries recover from throttling and outages, and to make an
upload slow enough to kill it halfway.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FlakyProxy:
    def __init__(self, upstream: str, *, fail_first: int = 0, fail_always: bool = False, delay_s: float = 0.0):
        self.upstream = urlsplit(upstream)
        self.fail_first = fail_first
        self.fail_always = fail_always
        self.delay_s = delay_s
        self.down = False
        self.requests = 0
        self.failed = 0
        self.cut = 0  # connections cut while down
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            break
                        chunks.append(chunk)
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _cut(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                    proxy.cut += 1
                self.close_connection = True
                try:  # RST, not FIN: the client gets no answer and cannot mistake it for one
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass

            def _handle(self):
                if proxy.down:
                    return self._cut()
                body = self._body()
                if proxy.down:
                    return self._cut()
                with proxy._lock:
                    proxy.requests += 1
                    fail = proxy.fail_always or proxy.failed < proxy.fail_first
                    if fail:
                        proxy.failed += 1
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                # HEAD answers carry the object's length but no body.
                length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FlakyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

