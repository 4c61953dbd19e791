"""A fault-injecting HTTP proxy on 127.0.0.1, placed between the tool and a test registry.

The tool talks to the proxy as if it were the registry (`proxy.host` in image references). Faults are
rules matched against the request path, each firing a given number of times:

    proxy.add(Fault("drop", match="/blobs/", after=5000))          # close the connection mid-body
    proxy.add(Fault("cut", methods=("PATCH",), after=4096))        # close mid-request-body: never forwarded
    proxy.add(Fault("lose", methods=("PATCH",)))                   # forwarded, then closed: the answer is lost
    proxy.add(Fault("status", match="/manifests/", status=500))     # answer 500 (a request body is read first)
    proxy.add(Fault("status", status=429, retry_after="1"))         # 429 with Retry-After
    proxy.add(Fault("corrupt", match="/blobs/sha256:ab..."))        # flip one byte of the body
    proxy.add(Fault("header", match="/manifests/v1",                 # rewrite a response header
                    header=("Docker-Content-Digest", "sha256:00...")))
    proxy.add(Fault("redirect", match="/blobs/", location="http://127.0.0.1:PORT"))  # 307 elsewhere
    pause = proxy.add(Fault("pause", match="/blobs/sha256:ab...", after=2_000_000))
    pause.reached.wait(60)   # set once `after` body bytes were sent; the response then blocks ...
    pause.release.set()      # ... until released (stop() and clear() release every pause)
    proxy.throttle = 2_000_000                                      # bytes per second, per response
    hold = proxy.add(Fault("hold", match="/blobs/uploads/", methods=("POST",), skip=2))
    hold.reached.wait(); ...; hold.release.set()                    # park the third upload until released

Every request is recorded (`proxy.log`: method, path, Range, Content-Range and Authorization headers,
body size, status sent) so tests can count requests, check that Range was used and which credentials
reached which host. `Location` headers that name the registry are rewritten to the proxy, so an upload's
later requests come through it too. Tests wait on the events a fault sets, never on the clock. Test
support only.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from dataclasses import dataclass, field

import requests

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    kind: str                    # drop | cut | lose | status | corrupt | header | redirect | pause | hold
    match: str = "/v2/"
    times: int = 1
    after: int = 0               # drop, pause: bytes of body sent before closing or pausing; cut: received
    status: int = 500
    retry_after: str | None = None
    methods: tuple[str, ...] = ("GET",)
    header: tuple[str, str] | None = None  # header: (name, value) sent instead of the upstream's
    location: str = ""           # redirect: base URL; the request path is appended
    fired: int = 0
    skip: int = 0                # let this many matching requests through before firing
    reached: threading.Event = field(default_factory=threading.Event)  # pause/hold: the point was reached
    release: threading.Event = field(default_factory=threading.Event)  # pause/hold: let the response go on


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    sent: int = 0
    connection: str | None = None
    content_range: str | None = None
    received: int = 0
    authorization: str | None = None


@dataclass
class FaultProxy:
    upstream: str                               # http://127.0.0.1:PORT of the registry
    faults: list[Fault] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)
    throttle: int | None = None                 # bytes/second per response body
    host: str = ""
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.release.set()
            self.faults.clear()
            self.log.clear()

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.fired < fault.times and fault.match in path and method in fault.methods:
                    if fault.skip:
                        fault.skip -= 1
                        continue
                    fault.fired += 1
                    return fault
        return None

    def requests_to(self, fragment: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if fragment in r.path]

    def start(self, port: int = 0) -> FaultProxy:
        proxy = self
        session = requests.Session()
        session.trust_env = False

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                method = self.command
                fault = proxy._take(method, self.path)
                record = Request(method, self.path, self.headers.get("Range"), 0,
                                 connection=self.headers.get("Connection"),
                                 content_range=self.headers.get("Content-Range"),
                                 received=int(self.headers.get("Content-Length") or 0),
                                 authorization=self.headers.get("Authorization"))
                with proxy._lock:
                    proxy.log.append(record)
                if fault is not None and fault.kind == "hold":
                    fault.reached.set()
                    fault.release.wait(60)
                if fault is not None and fault.kind == "cut":
                    record.received = len(self.rfile.read(min(fault.after, record.received)))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.kind == "status":
                    if record.received:  # read the request body, so the client hears the answer
                        self.rfile.read(record.received)
                    record.status = fault.status
                    self.send_response(fault.status)
                    if fault.retry_after is not None:
                        self.send_header("Retry-After", fault.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault is not None and fault.kind == "redirect":
                    record.status = 307
                    self.send_response(307)
                    self.send_header("Location", fault.location + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                # Go clients (docker-registry as a pull-through cache) send one Accept line per media type:
                # join repeated headers, or only the last one would reach the registry.
                headers = {k: ", ".join(self.headers.get_all(k) or []) for k in dict.fromkeys(self.headers.keys())
                           if k.lower() not in HOP_HEADERS | {"host"}}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = session.request(method, proxy.upstream + self.path, headers=headers, data=body,
                                           stream=True, allow_redirects=False, timeout=60)
                record.status = upstream.status_code
                if fault is not None and fault.kind == "lose":
                    upstream.close()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(upstream.status_code)
                replaced = fault.header if fault is not None and fault.kind == "header" else None
                for key, value in upstream.headers.items():
                    if key.lower() == "location":
                        value = value.replace(proxy.upstream, f"http://{proxy.host}")
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, replaced[1] if replaced and key.lower() == replaced[0].lower() else value)
                self.end_headers()
                if method == "HEAD":
                    upstream.close()
                    return
                sent, started = 0, time.monotonic()
                try:
                    for chunk in upstream.raw.stream(64 * 1024, decode_content=False):
                        if fault is not None and fault.kind == "drop" and sent + len(chunk) >= fault.after:
                            self.wfile.write(chunk[: max(0, fault.after - sent)])
                            self.wfile.flush()
                            record.sent = fault.after
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        if fault is not None and fault.kind == "pause" and sent + len(chunk) >= fault.after:
                            head, chunk = chunk[: max(0, fault.after - sent)], chunk[max(0, fault.after - sent):]
                            self.wfile.write(head)
                            self.wfile.flush()
                            sent += len(head)
                            record.sent = sent
                            fault.reached.set()
                            fault.release.wait()
                            fault = None
                        if fault is not None and fault.kind == "corrupt" and sent == 0 and chunk:
                            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        record.sent = sent
                        if proxy.throttle:
                            ahead = sent / proxy.throttle - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_proxy(upstream_url: str, port: int = 0) -> FaultProxy:
    return FaultProxy(upstream_url).start(port)

